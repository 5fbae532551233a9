//! The client against `testkit::StandInSchemaRegistry` (the documented
//! subset of the Confluent REST API; no real registry can be installed
//! here), and the serdes' typed errors on hostile bytes.

use schema_registry::apache_avro::types::Value;
use schema_registry::error::codes;
use schema_registry::{
    AvroDeserializer, AvroSerializer, DeserializeError, RegistryClient, RegistryError, SchemaId,
    Version,
};
use testkit::StandInSchemaRegistry;

const ORDER: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"price","type":"double"}]}"#;
/// ORDER plus a field with a default: BACKWARD compatible.
const ORDER_V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"price","type":"double"},{"name":"product","type":"string","default":""}]}"#;
/// A new required field: not BACKWARD compatible.
const ORDER_BAD: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#;

fn order(id: &str, price: f64) -> Value {
    Value::Record(vec![
        ("id".into(), Value::String(id.into())),
        ("price".into(), Value::Double(price)),
    ])
}

async fn setup() -> (StandInSchemaRegistry, RegistryClient) {
    let registry = StandInSchemaRegistry::start().await;
    let client = RegistryClient::from_url(registry.url()).unwrap();
    (registry, client)
}

#[tokio::test]
async fn register_then_look_up_by_id_and_by_version() {
    let (_registry, client) = setup().await;
    let id = client.register("orders-value", ORDER).await.unwrap();
    assert_eq!(id, SchemaId(1));
    assert_eq!(&*client.schema_by_id(id).await.unwrap(), ORDER);
    let v2 = client.register("orders-value", ORDER_V2).await.unwrap();
    assert_eq!(v2, SchemaId(2));

    let latest = client
        .subject_version("orders-value", Version::Latest)
        .await
        .unwrap();
    assert_eq!((latest.id, latest.version), (SchemaId(2), 2));
    assert_eq!(latest.subject, "orders-value");
    assert_eq!(latest.schema_type, "AVRO");
    let first = client
        .subject_version("orders-value", Version::Number(1))
        .await
        .unwrap();
    assert_eq!(
        (first.id, first.version, first.schema.as_str()),
        (SchemaId(1), 1, ORDER)
    );
    // The same schema under another subject keeps its global id.
    assert_eq!(client.register("other-value", ORDER).await.unwrap(), id);
}

#[tokio::test]
async fn errors_carry_the_registrys_error_code_and_message() {
    let (_registry, client) = setup().await;
    let code = |r: Result<_, RegistryError>| r.err().and_then(|e| e.error_code());
    assert_eq!(
        code(client.schema_by_id(SchemaId(42)).await.map(|_| ())),
        Some(codes::SCHEMA_NOT_FOUND)
    );
    assert_eq!(
        code(
            client
                .subject_version("nope", Version::Latest)
                .await
                .map(|_| ())
        ),
        Some(codes::SUBJECT_NOT_FOUND)
    );
    client.register("orders-value", ORDER).await.unwrap();
    assert_eq!(
        code(
            client
                .subject_version("orders-value", Version::Number(9))
                .await
                .map(|_| ())
        ),
        Some(codes::VERSION_NOT_FOUND)
    );
    assert_eq!(
        code(
            client
                .register("orders-value", "{not json")
                .await
                .map(|_| ())
        ),
        Some(codes::INVALID_SCHEMA)
    );
    let err = client
        .register("orders-value", ORDER_BAD)
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some(codes::INCOMPATIBLE_SCHEMA));
    assert!(
        matches!(err, RegistryError::Api { status: 409, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("incompatible"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn compatibility_follows_backward() {
    let (_registry, client) = setup().await;
    client.register("orders-value", ORDER).await.unwrap();
    assert!(client
        .is_compatible("orders-value", Version::Latest, ORDER_V2)
        .await
        .unwrap());
    assert!(!client
        .is_compatible("orders-value", Version::Number(1), ORDER_BAD)
        .await
        .unwrap());
    let missing = client
        .is_compatible("nope-value", Version::Latest, ORDER)
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}

#[tokio::test]
async fn the_serdes_register_once_and_fetch_each_id_once() {
    let (registry, client) = setup().await;
    let ser = AvroSerializer::new(client.clone(), ORDER).unwrap();
    let de = AvroDeserializer::new(RegistryClient::from_url(registry.url()).unwrap());
    for i in 0..20 {
        let bytes = ser
            .serialize("orders", order(&format!("o{i}"), 9.99))
            .await
            .unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1]);
        assert_eq!(
            de.deserialize(&bytes).await.unwrap(),
            order(&format!("o{i}"), 9.99)
        );
    }
    assert_eq!(
        registry.requests(),
        vec!["POST /subjects/orders-value/versions", "GET /schemas/ids/1"]
    );
}

#[tokio::test]
async fn a_reader_schema_resolves_old_data() {
    let (_registry, client) = setup().await;
    let ser = AvroSerializer::new(client.clone(), ORDER).unwrap();
    let de = AvroDeserializer::new(client)
        .with_reader_schema(ORDER_V2)
        .unwrap();
    let bytes = ser.serialize("orders", order("a", 1.5)).await.unwrap();
    let Value::Record(fields) = de.deserialize(&bytes).await.unwrap() else {
        panic!("a record")
    };
    assert_eq!(fields[2], ("product".into(), Value::String(String::new())));
}

#[tokio::test]
async fn auto_register_off_uses_the_latest_version() {
    let (registry, client) = setup().await;
    let ser = AvroSerializer::new(client.clone(), ORDER)
        .unwrap()
        .set("auto.register.schemas", "false")
        .unwrap();
    assert!(ser.serialize("orders", order("a", 1.0)).await.is_err());
    registry.register("orders-value", ORDER);
    let bytes = ser.serialize("orders", order("a", 1.0)).await.unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1]);
}

#[tokio::test]
async fn hostile_payloads_are_typed_errors() {
    let (registry, client) = setup().await;
    registry.register("orders-value", ORDER);
    let de = AvroDeserializer::new(client);
    let good: Vec<u8> = vec![
        0, 0, 0, 0, 1, 0x02, b'a', 0x7b, 0x14, 0xae, 0x47, 0xe1, 0xfa, 0x23, 0x40,
    ];
    assert!(de.deserialize(&good).await.is_ok());

    let err = |r: Result<Value, DeserializeError>| r.unwrap_err();
    assert!(matches!(
        err(de.deserialize(&[]).await),
        DeserializeError::Wire(_)
    ));
    assert!(matches!(
        err(de.deserialize(&good[..4]).await),
        DeserializeError::Wire(_)
    ));
    assert!(matches!(
        err(de.deserialize(b"{\"id\":\"a\"}").await),
        DeserializeError::Wire(_)
    ));
    let mut unknown = good.clone();
    unknown[4] = 99;
    assert!(matches!(
        err(de.deserialize(&unknown).await),
        DeserializeError::UnknownSchema {
            id: SchemaId(99),
            ..
        }
    ));
    // Every truncation, and trailing garbage.
    for cut in 5..good.len() {
        assert!(matches!(
            err(de.deserialize(&good[..cut]).await),
            DeserializeError::Corrupt { .. }
        ));
    }
    let mut long = good.clone();
    long.extend_from_slice(b"junk");
    assert!(matches!(
        err(de.deserialize(&long).await),
        DeserializeError::Corrupt { .. }
    ));
    // A string length of 2^62 and invalid UTF-8.
    let huge = [
        0, 0, 0, 0, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ];
    assert!(matches!(
        err(de.deserialize(&huge).await),
        DeserializeError::Corrupt { .. }
    ));
    let mut latin1 = good.clone();
    latin1[6] = 0xe9;
    assert!(matches!(
        err(de.deserialize(&latin1).await),
        DeserializeError::Corrupt { .. }
    ));

    // Pseudo-random bytes behind a valid header: never a panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut p = vec![0, 0, 0, 0, 1];
        for _ in 0..(x % 40) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.push(x as u8);
        }
        let _ = de.deserialize(&p).await;
        x = x.wrapping_add(1);
    }
}

#[cfg(feature = "resilience")]
#[tokio::test]
async fn a_bad_payload_dead_letters_and_a_registry_outage_retries() {
    use resilience::HandlerError;
    let (_registry, client) = setup().await;
    let de = AvroDeserializer::new(client);
    let e: HandlerError = de.deserialize(&[1, 2, 3]).await.unwrap_err().into();
    assert!(matches!(e, HandlerError::Deserialization(_)), "{e}");
    assert!(!e.is_retryable());

    // Nothing listens on port 9 (discard): a transport error.
    let down = AvroDeserializer::new(RegistryClient::from_url("http://127.0.0.1:9").unwrap());
    let e: HandlerError = down
        .deserialize(&[0, 0, 0, 0, 1, 0])
        .await
        .unwrap_err()
        .into();
    assert!(e.is_retryable(), "{e}");
}
