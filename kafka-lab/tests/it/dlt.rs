//! `kafka-lab dlt tail|replay` from the outside, against the real broker,
//! with a forged dead letter in the DLT: one whose provenance names
//! another topic, and whose key carries a terminal escape.

use std::process::{Command, Stdio};

use bytes::Bytes;
use kafka_wire::records::Record;
use kafka_wire::{NewTopic, OffsetSpec};
use resilience::dlt::{self, Provenance};
use resilience::HandlerError;
use testkit::DrainedChild;

/// Run the CLI to its end; asserts it succeeded; stdout then stderr.
fn run_ok(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-lab"));
    cmd.args(args).stdin(Stdio::null());
    let out = DrainedChild::spawn(&mut cmd).unwrap().wait().unwrap();
    assert!(out.success(), "{args:?}\n{}", out.all());
    out.all()
}

fn record(key: &[u8], offset: i64) -> Record {
    Record {
        offset,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::copy_from_slice(key)),
        value: Some(Bytes::from_static(b"{\"amount\":100}")),
        headers: vec![],
    }
}

#[test]
fn replay_refuses_a_forged_origin_and_tail_prints_no_terminal_escapes() {
    let broker = testkit::require_broker!();
    let b = broker.bootstrap.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(testkit::client(&broker));
    let (origin, payments, dlt_name) = rt.block_on(async {
        let origin = testkit::create_topic(&admin, "lab-dlt-orders", 1).await;
        let payments = testkit::create_topic(&admin, "lab-dlt-payments", 1).await;
        let dlt_name =
            testkit::create_topic_with(&admin, NewTopic::new(dlt::dlt_topic(&origin), 1)).await;
        let err = HandlerError::NonRetryable("bad\x1b[2J price".into());
        // A real dead letter of `origin`, and a forged one naming `payments`.
        let real = dlt::dead_letter(&dlt_name, &origin, 0, "g", &record(b"order-1", 3), &err, 1);
        let elsewhere = Provenance {
            topic: payments.clone(),
            partition: 0,
            offset: 0,
            timestamp: 0,
        };
        let forged = dlt::forward(
            &dlt_name,
            &elsewhere,
            "g",
            &record(b"\x1b]0;pwned\x07", 0),
            &err,
            1,
        );
        testkit::produce(&admin, &broker, [real, forged]).await;
        (origin, payments, dlt_name)
    });

    let tail = run_ok(&["-b", &b, "dlt", "tail", &dlt_name, "--no-follow"]);
    assert!(
        !tail.contains('\x1b') && !tail.contains('\x07'),
        "terminal escapes reach the terminal: {tail:?}"
    );
    assert!(tail.contains("key=order-1"), "{tail}");
    assert!(tail.contains("key=base64:"), "{tail}");
    assert!(tail.contains("2 dead records"), "{tail}");

    let replay = run_ok(&["-b", &b, "dlt", "replay", &dlt_name]);
    assert!(replay.contains("replayed 1 record from"), "{replay}");
    assert!(
        replay.contains(&format!(
            "refused 1 record whose provenance names another topic than {origin}"
        )),
        "{replay}"
    );
    let end = |topic: &str| {
        rt.block_on(admin.list_offsets(topic, OffsetSpec::Latest))
            .unwrap()
            .into_iter()
            .map(|(_, end)| end)
            .sum::<i64>()
    };
    assert_eq!(
        end(&payments),
        0,
        "nothing went where the forged header says"
    );
    assert!(end(&origin) >= 1, "the real dead letter went back");
}
