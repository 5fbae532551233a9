//! consumer-core's integration tests: `testkit`'s fixtures and consumer
//! settings (classic, or the protocol `KAFKA_GROUP_PROTOCOL` names),
//! applied to consumer-core's builder.

use consumer_core::config::ConsumerConfigBuilder;
use consumer_core::{Consumer, ConsumerConfig};

/// [`testkit::consumer_props`] plus 50 ms fetch waits: these tests watch
/// the fetch path itself (assignments, pauses, seeks) and want its turns
/// quick.
pub fn config(b: &testkit::BrokerEnv, group: Option<&str>) -> ConsumerConfigBuilder {
    with(b, group, &[("fetch.max.wait.ms", "50")])
}

/// A consumer builder with [`testkit::consumer_props`] and `extra`.
pub fn with(
    b: &testkit::BrokerEnv,
    group: Option<&str>,
    extra: &[(&str, &str)],
) -> ConsumerConfigBuilder {
    testkit::consumer_props(b, group, extra)
        .into_iter()
        .fold(ConsumerConfig::builder(), |c, (k, v)| {
            c.set(k, &v).expect("a valid consumer property")
        })
}

/// A consumer with [`config`]'s settings plus `props` (Kafka property
/// names; classic-only ones dropped under KIP-848).
pub async fn connect(
    b: &testkit::BrokerEnv,
    group: Option<&str>,
    props: &[(&str, &str)],
) -> Consumer {
    let mut extra = vec![("fetch.max.wait.ms", "50")];
    extra.extend_from_slice(props);
    Consumer::connect(with(b, group, &extra).build().unwrap())
        .await
        .unwrap()
}

/// Set a classic-only property, except under KIP-848 (where the broker
/// assigns and every rebalance is incremental); under `auto` too, which
/// uses it where it falls back to classic (the Redpanda-shaped pass).
pub fn classic(c: ConsumerConfigBuilder, key: &str, value: &str) -> ConsumerConfigBuilder {
    if testkit::kip848() {
        c
    } else {
        c.set(key, value).unwrap()
    }
}

/// Is KIP-848 on at the broker? ([`testkit::speaks_848`].)
pub async fn speaks_848(b: &testkit::BrokerEnv) -> bool {
    testkit::speaks_848(b).await
}

/// The harness's jar directory (`target/broker/jars`, the main version's)
/// when it holds a jar named `<jar>-<version>.jar` (`kafka-clients`,
/// `kafka-tools`) and `java` runs; `None` (the test skips) outside CI;
/// a panic naming the fix under CI.
pub fn harness_jars(jar: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/broker/jars");
    let prefix = format!("{jar}-");
    let has_jar = std::fs::read_dir(&dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".jar")
        })
    });
    let found = has_jar
        && std::process::Command::new("java")
            .arg("-version")
            .output()
            .is_ok();
    match (found, testkit::broker_required()) {
        (true, _) => Some(dir),
        (false, true) => panic!(
            "the Java jars ({jar}) are missing from {}: run `cargo xtask broker up` first",
            dir.display()
        ),
        (false, false) => {
            eprintln!("SKIPPED: no {jar} jar in {}", dir.display());
            None
        }
    }
}
