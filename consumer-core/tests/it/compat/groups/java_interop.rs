//! A group that mixes our consumer with the Java client (kafka-clients, via
//! `ConsoleConsumer` from the jars `cargo xtask broker up` fetched): both
//! speak the same consumer protocol and assignor, so the partitions split
//! between them and every record is read by one of them (at least once).
//! And the Java client reads every codec our producer writes.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::{Assignment, Consumer, TopicPartition};
use kafka_wire::ProducerRecord;

fn java_client_jars() -> Option<PathBuf> {
    crate::common::harness_jars("kafka-clients")
}

#[tokio::test]
async fn our_member_and_a_java_member_share_one_group() {
    let b = testkit::require_broker!();
    let protocol = testkit::group_protocol().unwrap_or_else(|| "classic".into());
    interop(&b, &protocol).await;
}

/// The mixed group of KIP-848: the Java console consumer with
/// `group.protocol=consumer` beside ours; the broker assigns both.
#[tokio::test]
async fn our_member_and_a_java_member_share_one_kip_848_group() {
    let b = testkit::require_broker!();
    if !common::speaks_848(&b).await {
        return; // Kafka 3.9 by default: no KIP-848 to mix
    }
    interop(&b, "consumer").await;
}

async fn interop(b: &testkit::BrokerEnv, protocol: &str) {
    let kip848 = protocol == "consumer";
    let Some(jars) = java_client_jars() else {
        return;
    };
    let admin = testkit::client(b).await;
    let topic = testkit::create_topic(&admin, "interop", 6).await;
    testkit::produce(
        &admin,
        b,
        (0..600u32).map(|i| {
            ProducerRecord::new(&topic)
                .partition((i % 6) as i32)
                .value(format!("{i}"))
        }),
    )
    .await;
    let group = testkit::unique_name("interop-group");

    // The Java member: range assignor under classic; under KIP-848 the
    // broker's uniform assignor for both.
    let java_props: Vec<String> = if kip848 {
        vec![
            "group.protocol=consumer".into(),
            "group.remote.assignor=uniform".into(),
        ]
    } else {
        vec![
            "group.protocol=classic".into(),
            "partition.assignment.strategy=org.apache.kafka.clients.consumer.RangeAssignor".into(),
        ]
    };
    let mut java = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg("org.apache.kafka.tools.consumer.ConsoleConsumer")
        .args([
            "--bootstrap-server",
            &b.bootstrap,
            "--topic",
            &topic,
            "--group",
            &group,
        ])
        .args(["--consumer-property", "auto.offset.reset=earliest"])
        .args(
            java_props
                .iter()
                .flat_map(|p| ["--consumer-property", p.as_str()]),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("java");
    let java_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let seen = java_seen.clone();
        let out = java.stdout.take().unwrap();
        std::thread::spawn(move || {
            // Record values are the numbers we produced; skip any log line.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.trim().parse::<u32>().is_ok() {
                    seen.lock().unwrap().push(line.trim().to_string());
                }
            }
        })
    };

    // Our member joins once the Java one is in; same protocol name ("range").
    // (One minute for all of it.)
    let end = Instant::now() + Duration::from_secs(60);
    testkit::eventually(Duration::from_secs(60), || {
        !java_seen.lock().unwrap().is_empty()
    })
    .await;
    let ours_cfg = if kip848 {
        consumer_core::ConsumerConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .group_id(&group)
            .set("auto.offset.reset", "earliest")
            .unwrap()
            .set("group.protocol", "consumer")
            .unwrap()
            .set("group.remote.assignor", "uniform")
            .unwrap()
    } else {
        common::config(b, Some(&group))
            .set("partition.assignment.strategy", "range")
            .unwrap()
    };
    let mut ours = Consumer::connect(ours_cfg.build().unwrap()).await.unwrap();
    ours.subscribe(&[&topic]).unwrap();
    let mut ours_seen: Vec<String> = Vec::new();
    let mut split = false;
    while Instant::now() < end {
        for batch in ours.poll(Duration::from_millis(100)).await.unwrap() {
            for r in batch.records {
                ours_seen.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        // The group's view: two members, disjoint assignments covering all 6.
        if !split {
            if let Ok(d) = admin.describe_group(&group).await {
                let sets: Vec<BTreeSet<TopicPartition>> = d
                    .members
                    .iter()
                    .map(|m| {
                        if kip848 {
                            m.assigned.iter().cloned().collect()
                        } else {
                            Assignment::decode(&m.assignment)
                                .unwrap_or_default()
                                .partitions
                                .into_iter()
                                .collect()
                        }
                    })
                    .collect();
                let union: BTreeSet<&TopicPartition> = sets.iter().flatten().collect();
                split = d.members.len() == 2
                    && d.protocol == if kip848 { "uniform" } else { "range" }
                    && union.len() == 6
                    && sets.iter().all(|s| s.len() == 3);
            }
        }
        let total = java_seen.lock().unwrap().len() + ours_seen.len();
        if split && total >= 600 && ours.commit_positions().await.is_ok() {
            break;
        }
    }
    let _ = java.kill();
    let _ = java.wait();
    let _ = reader.join();
    assert!(
        split,
        "the Java and Rust members never split the partitions"
    );
    let java_values: BTreeSet<String> = java_seen.lock().unwrap().iter().cloned().collect();
    let all: BTreeSet<String> = java_values
        .iter()
        .cloned()
        .chain(ours_seen.iter().cloned())
        .collect();
    assert_eq!(
        all.len(),
        600,
        "every record read by one of the two members"
    );
}

/// Records per codec in the codec tests: 30-digit values, about 90 KB a
/// codec, so a batch spans more than one 64 KiB LZ4 block.
const PER_CODEC: u64 = 3_000;

/// Each codec this build has (`none` only `with_none`) with the numbers
/// its run of records carries: codec `n` gets `n * 1,000,000 + i`.
fn codec_runs(with_none: bool) -> Vec<(kafka_wire::records::Compression, Vec<u64>)> {
    use kafka_wire::records::Compression;
    Compression::ALL
        .into_iter()
        .filter(|c| c.is_built() && (with_none || *c != Compression::None))
        .enumerate()
        .map(|(n, c)| {
            (
                c,
                (0..PER_CODEC).map(|i| n as u64 * 1_000_000 + i).collect(),
            )
        })
        .collect()
}

/// The Java client reads what our producer writes in every codec this
/// build has, batches above 64 KiB included (our LZ4 frames are written
/// block by block, and Java's reader checks the frame's header checksum).
/// One partition holds a run of batches per codec; one Java consumer
/// reads them all and must print every value exactly once.
#[tokio::test]
async fn the_java_client_reads_every_codec_our_producer_writes() {
    let b = testkit::require_broker!();
    let Some(jars) = java_client_jars() else {
        return;
    };
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "java-reads-codecs", 1).await;
    let mut want = BTreeSet::new();
    for (codec, numbers) in codec_runs(true) {
        let producer = kafka_wire::Producer::with_client(
            admin.clone(),
            testkit::producer_builder(&b)
                .set("compression.type", codec.name())
                .unwrap()
                .set("batch.size", "1048576")
                .unwrap()
                .set("linger.ms", "50")
                .unwrap()
                .build()
                .unwrap(),
        );
        let mut deliveries = Vec::new();
        for v in numbers {
            want.insert(v);
            let value = format!("{v:030}");
            deliveries.push(
                producer
                    .send(ProducerRecord::new(&topic).partition(0).value(value))
                    .await
                    .unwrap(),
            );
        }
        for d in deliveries {
            d.await.unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        }
        producer.close().await;
    }
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg("org.apache.kafka.tools.consumer.ConsoleConsumer")
        .args(["--bootstrap-server", &b.bootstrap, "--topic", &topic])
        .args(["--from-beginning", "--timeout-ms", "60000"])
        .args(["--max-messages", &want.len().to_string()])
        .stderr(Stdio::null())
        .output()
        .expect("java");
    let got: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(got.len(), want.len(), "Java printed every record once");
    assert_eq!(got.into_iter().collect::<BTreeSet<u64>>(), want);
}

/// We read what the Java producer writes in every codec this build has,
/// batches above 64 KiB included: Java's LZ4 frames are read block by
/// block straight into the records' buffer, its gzip, snappy (xerial
/// framing) and zstd through their decoders. One partition holds a run of
/// batches per codec; our consumer must see every value exactly once.
#[tokio::test]
async fn we_read_every_codec_the_java_producer_writes() {
    use std::io::Write;
    let b = testkit::require_broker!();
    let Some(jars) = java_client_jars() else {
        return;
    };
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "reads-java-codecs", 1).await;
    let mut want = BTreeSet::new();
    for (codec, numbers) in codec_runs(false) {
        want.extend(&numbers);
        let values: String = numbers.iter().map(|v| format!("{v:030}\n")).collect();
        let mut java = Command::new("java")
            .arg("-cp")
            .arg(format!("{}/*", jars.display()))
            .arg("org.apache.kafka.tools.ConsoleProducer")
            .args(["--bootstrap-server", &b.bootstrap, "--topic", &topic])
            .args(["--compression-codec", codec.name()])
            .args(["--batch-size", "1048576", "--timeout", "1000"])
            .args(["--producer-property", "batch.size=1048576"])
            .args(["--producer-property", "linger.ms=1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("java");
        java.stdin
            .take()
            .unwrap()
            .write_all(values.as_bytes())
            .unwrap();
        let out = java.wait_with_output().expect("java");
        assert!(
            out.status.success(),
            "{codec:?}: the Java producer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut consumer = common::connect(&b, None, &[("auto.offset.reset", "earliest")]).await;
    consumer.assign(&[TopicPartition::new(&topic, 0)]);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while got.len() < want.len() && Instant::now() < end {
        for batch in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            for r in &batch.records {
                let v = r.value.as_deref().expect("a value");
                got.push(
                    std::str::from_utf8(v)
                        .unwrap()
                        .trim()
                        .parse::<u64>()
                        .unwrap(),
                );
            }
        }
    }
    assert_eq!(got.len(), want.len(), "every record read once");
    assert_eq!(got.into_iter().collect::<BTreeSet<u64>>(), want);
}
