//! Wire compatibility with the reference implementation: confluent-kafka's
//! Python `AvroSerializer` / `AvroDeserializer` (with its
//! `MockSchemaRegistryClient`), run by `tests/confluent_compat.py`.
//!
//! For each schema, in the same order on both sides (so both registries
//! hand out ids 1, 2, …): the same values serialized by us and by them
//! must be the same bytes; our bytes decoded by them, and theirs by us,
//! must give the values back.
//!
//! The interpreter is `CONFLUENT_PYTHON` (`cargo xtask test` creates a venv
//! with `confluent-kafka[avro,schemaregistry]` in `target/python-venv` and
//! sets it). Without it the test skips, or **fails** when `CI=true` or
//! `KAFKA_REQUIRE_BROKER=1`.

use std::io::Write;
use std::process::{Command, Stdio};

use schema_registry::apache_avro::types::Value;
use schema_registry::{AvroDeserializer, AvroSerializer, RegistryClient};
use serde_json::{json, Value as Json};
use testkit::StandInSchemaRegistry;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"id","type":"string"},{"name":"price","type":"double"}]}"#;

const RICH: &str = r#"{"type":"record","name":"Rich","namespace":"com.example","fields":[
  {"name":"n","type":"int"},
  {"name":"l","type":"long"},
  {"name":"f","type":"float"},
  {"name":"ok","type":"boolean"},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"attrs","type":{"type":"map","values":"long"}},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}},
  {"name":"line","type":{"type":"record","name":"Line","fields":[{"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}
]}"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn python() -> Option<String> {
    match std::env::var("CONFLUENT_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if testkit::broker_required() => panic!(
            "CONFLUENT_PYTHON is not set: `cargo xtask test` sets it to a venv with \
             confluent-kafka[avro,schemaregistry] (target/python-venv)"
        ),
        _ => {
            eprintln!("skipped: CONFLUENT_PYTHON is not set (cargo xtask test sets it)");
            None
        }
    }
}

fn run_python(python: &str, request: &Json) -> Json {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/confluent_compat.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {python}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.to_string().as_bytes()).unwrap();
    drop(stdin);
    // wait_with_output reads stdout and stderr together: no full pipe.
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "confluent_compat.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn our_bytes_and_confluents_are_the_same_both_ways() {
    let Some(python) = python() else { return };
    let cases: Vec<(&str, &str, Vec<Json>)> = vec![
        (
            "orders",
            ORDER,
            vec![
                json!({"id": "a", "price": 9.99}),
                json!({"id": "ünï©ødé ✓ 注文 🚀", "price": 123.45}),
                json!({"id": "", "price": -1.5e300}),
                json!({"id": "max", "price": 1.7976931348623157e308}),
                json!({"id": "tiny", "price": -5e-324}),
                json!({"id": "negzero", "price": -0.0}),
                json!({"id": "fe048d1e-fbac-4fcc-8ad7-a0b2c4513520", "price": 999.99}),
            ],
        ),
        (
            "rich",
            RICH,
            vec![
                json!({"n": -2147483648, "l": 9007199254740993i64, "f": 1.5, "ok": true,
                       "tags": ["a", "βγ", ""], "attrs": {"k": -9223372036854775807i64},
                       "note": "hé", "status": "PAID", "line": {"sku": "S-1", "qty": 3}}),
                json!({"n": 0, "l": -1, "f": -0.25, "ok": false, "tags": [], "attrs": {},
                       "note": null, "status": "NEW", "line": {"sku": "", "qty": 2147483647}}),
            ],
        ),
    ];

    // Our side: serialize every value through the stand-in registry.
    let registry = StandInSchemaRegistry::start().await;
    let client = RegistryClient::from_url(registry.url()).unwrap();
    let de = AvroDeserializer::new(client.clone());
    let mut ours: Vec<Vec<Vec<u8>>> = Vec::new();
    for (topic, schema, values) in &cases {
        let ser = AvroSerializer::new(client.clone(), schema).unwrap();
        let mut frames = Vec::new();
        for v in values {
            frames.push(ser.serialize(topic, Value::from(v.clone())).await.unwrap());
        }
        ours.push(frames);
    }

    let request = json!({ "cases": cases.iter().zip(&ours).map(|((topic, schema, values), frames)| json!({
        "topic": topic, "schema": schema, "values": values,
        "frames": frames.iter().map(|f| hex(f)).collect::<Vec<_>>(),
    })).collect::<Vec<_>>() });
    let answer = run_python(&python, &request);
    println!("confluent-kafka {} (Python)", answer["version"]);

    let mut compared = 0;
    for (i, ((topic, _, values), frames)) in cases.iter().zip(&ours).enumerate() {
        let theirs = &answer["cases"][i];
        assert_eq!(theirs["id"], json!(i + 1), "{topic}: schema ids differ");
        for (j, value) in values.iter().enumerate() {
            let their_hex = theirs["serialized"][j].as_str().unwrap();
            // 1. The same value, the same bytes.
            assert_eq!(hex(&frames[j]), their_hex, "{topic} value {j}: {value}");
            // 2. Theirs decoded by us.
            let back = de.deserialize(&unhex(their_hex)).await.unwrap();
            assert_eq!(
                Json::try_from(back).unwrap(),
                *value,
                "{topic} value {j}: ours of theirs"
            );
            // 3. Ours decoded by them.
            assert_eq!(
                theirs["decoded"][j], *value,
                "{topic} value {j}: theirs of ours"
            );
            println!("{topic} #{j}: {their_hex} == ours, decoded both ways");
            compared += 1;
        }
    }
    assert_eq!(compared, 9);
    // The issue's reference bytes.
    assert_eq!(
        answer["cases"][0]["serialized"][0],
        json!("000000000102617b14ae47e1fa2340")
    );
}
