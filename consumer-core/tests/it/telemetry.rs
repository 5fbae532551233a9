//! Client telemetry (KIP-714) against the real broker.
//!
//! The harness's broker runs without a `ClientTelemetry` metrics reporter
//! and without a client-metrics subscription: the consumer must cost it at
//! most one GetTelemetrySubscriptions per push interval (none at all when
//! the broker does not advertise the API), never a push, and consume as
//! usual. What a subscribed broker receives is tested with a receiver
//! plugin on a broker of its own (`broker/telemetry-plugin/`; see there).

use std::time::{Duration, Instant};

use consumer_core::TopicPartition;
use kafka_wire::messages::ApiKey;
use kafka_wire::Lane;

use crate::common;

/// Poll `consumer` until it returned `n` records (within 30 s).
async fn consume(consumer: &mut consumer_core::Consumer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut values = Vec::new();
    while values.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records in 30 s",
            values.len()
        );
        for part in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            for r in part.records {
                values.push(
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
                );
            }
        }
    }
    values
}

#[tokio::test]
async fn a_broker_without_telemetry_is_sent_nothing_and_the_consumer_consumes() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "telemetry", 1, 20, |i| format!("k{i}")).await;
    // Does this broker serve KIP-714 at all? (Kafka advertises the two
    // APIs only when a metrics reporter implementing ClientTelemetry is
    // configured.)
    let conn = admin.any_connection(Lane::Control).await.unwrap();
    let advertised = conn
        .info()
        .versions
        .broker_range(ApiKey::GetTelemetrySubscriptions)
        .is_some()
        && conn
            .info()
            .versions
            .broker_range(ApiKey::PushTelemetry)
            .is_some();

    // enable.metrics.push is on by default.
    let mut consumer = common::connect(&b, None, &[]).await;
    consumer.assign(&[TopicPartition::new(&topic, 0)]);
    let values = consume(&mut consumer, 20).await;
    assert_eq!(values, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());

    // The first GetTelemetrySubscriptions goes at start; its answer (no
    // metric requested) schedules the next one a push interval later
    // (5 min by default), so what is seen now is final for the test.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected_state = if advertised {
        "subscription-needed"
    } else {
        "terminated"
    };
    loop {
        let stats = consumer.telemetry().stats();
        if stats.state == expected_state || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broker without KIP-714: nothing is gathered per poll or fetch.
    assert_eq!(
        consumer.telemetry().metrics().is_recording(),
        advertised,
        "recording only while a push may come"
    );
    let stats = consumer.telemetry().stats();
    eprintln!("telemetry APIs advertised: {advertised}; stats: {stats:?}");
    assert_eq!(stats.state, expected_state, "{stats:?}");
    assert_eq!(
        stats.subscription_requests,
        u64::from(advertised),
        "{stats:?}"
    );
    assert_eq!(
        stats.pushes, 0,
        "no metric requested: nothing pushed; {stats:?}"
    );

    consumer.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn enable_metrics_push_false_sends_nothing() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "telemetry-off", 1, 5, |i| format!("k{i}")).await;
    let mut consumer = common::connect(&b, None, &[("enable.metrics.push", "false")]).await;
    consumer.assign(&[TopicPartition::new(&topic, 0)]);
    assert_eq!(consume(&mut consumer, 5).await.len(), 5);
    let stats = consumer.telemetry().stats();
    assert_eq!(stats.state, "disabled");
    assert_eq!((stats.subscription_requests, stats.pushes), (0, 0));
    // Nothing gathered per poll or fetch for a push that never comes.
    assert!(!consumer.telemetry().metrics().is_recording());
    consumer.close(Duration::from_secs(5)).await;
}

/// A private single-node Kafka (KRaft) from the harness's jars, with the
/// test receiver plugin (`broker/telemetry-plugin/`) as its metrics
/// reporter, on free ports in a directory of its own. The harness's shared
/// broker cannot be restarted with a plugin; this one lives for one test
/// and is killed (by its pid, through `Child`) when dropped.
struct TelemetryBroker {
    child: std::process::Child,
    bootstrap: String,
    pushes: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for TelemetryBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept after a failure: its broker.log and pushes.txt say why.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl TelemetryBroker {
    /// Compile the plugin, format storage and start the broker; `None`
    /// (skip) without the jars outside CI.
    async fn start() -> Option<TelemetryBroker> {
        use std::process::{Command, Stdio};
        let jars = common::harness_jars("kafka-clients")?;
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(testkit::unique_name("telemetry-broker"));
        let classes = dir.join("classes");
        std::fs::create_dir_all(&classes).unwrap();
        let plugin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../broker/telemetry-plugin/TelemetryFileReceiver.java");
        let javac = Command::new("javac")
            .args(["-nowarn", "-d"])
            .arg(&classes)
            .arg("-cp")
            .arg(format!("{}/*", jars.display()))
            .arg(&plugin)
            .output()
            .expect("javac runs (a JDK is on the machine with the broker's Java)");
        assert!(
            javac.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&javac.stderr)
        );
        let (port, controller) = (free_port(), free_port());
        let pushes = dir.join("pushes.txt");
        let props = dir.join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={data}\nnum.partitions=1\ndefault.replication.factor=1\n\
                 offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n\
                 transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
                 metric.reporters=TelemetryFileReceiver\ntelemetry.receiver.file={pushes}\n",
                data = dir.join("data").display(),
                pushes = pushes.display(),
            ),
        )
        .unwrap();
        let classpath = format!("{}/*:{}", jars.display(), classes.display());
        let java = |main: &str| {
            let mut c = Command::new("java");
            c.args(["-Xmx512m", "-cp", &classpath, main]);
            c
        };
        let format = java("kafka.tools.StorageTool")
            .args([
                "format",
                "--standalone",
                "-t",
                "MkU3OEVBNTcwNTJENDM2Qg",
                "-c",
            ])
            .arg(&props)
            .output()
            .expect("java runs");
        assert!(
            format.status.success(),
            "formatting the private broker's storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let log = std::fs::File::create(dir.join("broker.log")).unwrap();
        let child = java("kafka.Kafka")
            .arg(&props)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java starts");
        let broker = TelemetryBroker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            pushes,
            dir,
        };
        // Up when a client gets metadata with the broker in it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let config = kafka_wire::ClientConfig::builder()
                .bootstrap(&broker.bootstrap)
                .unwrap()
                .set("enable.metrics.push", "false")
                .unwrap()
                .build()
                .unwrap();
            if let Ok(c) = kafka_wire::Client::connect(config).await {
                if !c.metadata().brokers.is_empty() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the private broker did not start in 60 s; see {}",
                broker.dir.join("broker.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("private telemetry broker up at {}", broker.bootstrap);
        Some(broker)
    }

    /// The pushes received so far: (terminating, OTLP bytes).
    fn pushes(&self) -> Vec<(bool, Vec<u8>)> {
        let text = std::fs::read_to_string(&self.pushes).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let hex = fields.get(3).copied().unwrap_or("");
                let bytes = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect();
                Some((*fields.get(1)? == "true", bytes))
            })
            .collect()
    }
}

/// Does `haystack` hold `needle` (a metric name: protobuf strings are raw
/// UTF-8 inside the OTLP bytes)?
fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A broker with a receiver plugin: without a subscription a consumer
/// costs it one GetTelemetrySubscriptions and no push; with a
/// client-metrics subscription for `org.apache.kafka.consumer.` every
/// second, the consumer's fetch and lag metrics arrive, and closing sends
/// one terminating push. About 25 s, most of it the private broker's start.
#[tokio::test]
async fn a_subscribed_broker_receives_the_consumers_fetch_and_lag_metrics() {
    let Some(broker) = TelemetryBroker::start().await else {
        return;
    };
    let b = testkit::BrokerEnv::plaintext(&broker.bootstrap);
    let admin = testkit::client(&b).await;

    // Before any subscription: one GetTelemetrySubscriptions (answered
    // with no metric and the default 5 min interval), no push.
    let idle = common::connect(&b, None, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while idle.telemetry().stats().state != "subscription-needed" {
        assert!(Instant::now() < deadline, "{:?}", idle.telemetry().stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = idle.telemetry().stats();
    assert_eq!(
        (stats.subscription_requests, stats.pushes),
        (1, 0),
        "{stats:?}"
    );

    // The subscription (KIP-714's CLIENT_METRICS config resource, type 16).
    {
        use kafka_wire::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_wire::messages::IncrementalAlterConfigsRequest;
        use kafka_wire::StrBytes;
        let set = |k: &str, v: &str| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.into()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v.into())))
        };
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(16)
                .with_resource_name(StrBytes::from_static_str("rust-consumers"))
                .with_configs(vec![
                    set("metrics", "org.apache.kafka.consumer."),
                    set("interval.ms", "1000"),
                ]),
        ]);
        let conn = admin.any_connection(Lane::Control).await.unwrap();
        let resp = conn
            .send(&req, Duration::from_secs(10), Duration::ZERO)
            .await
            .unwrap();
        for r in &resp.responses {
            assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        }
    }
    let topic = testkit::numbered_topic(&b, &admin, "telemetry", 1, 20, |i| format!("k{i}")).await;
    let mut consumer = common::connect(&b, None, &[]).await;
    consumer.assign(&[TopicPartition::new(&topic, 0)]);
    assert_eq!(consume(&mut consumer, 20).await.len(), 20);

    // The first push comes 0.5–1.5 s after the subscription; wait for one
    // carrying the fetch and lag metrics (the averages need a fetch since
    // the push before).
    let wanted = [
        kafka_wire::FETCH_LATENCY_AVG,
        kafka_wire::RECORDS_LAG_MAX,
        kafka_wire::RECORDS_CONSUMED_TOTAL,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::<&str>::new();
    while seen.len() < wanted.len() {
        for (_, bytes) in broker.pushes() {
            seen.extend(wanted.iter().copied().filter(|name| holds(&bytes, name)));
        }
        assert!(
            Instant::now() < deadline,
            "in 20 s the broker got {} pushes with {seen:?} of {wanted:?}; stats {:?}",
            broker.pushes().len(),
            consumer.telemetry().stats()
        );
        // Keep fetching so each push window has a fetch latency.
        let _ = consumer.poll(Duration::from_millis(200)).await;
    }
    let stats = consumer.telemetry().stats();
    assert!(
        stats.subscription_requests >= 1 && stats.pushes >= 1,
        "{stats:?}"
    );
    assert!(
        !broker.pushes().iter().any(|(t, _)| *t),
        "no terminating push before close"
    );
    consumer.close(Duration::from_secs(5)).await;
    // The consumer that started before the subscription never pushed,
    // and closing it sends nothing (its subscription wants no metric).
    let stats = idle.telemetry().stats();
    assert_eq!(
        (stats.subscription_requests, stats.pushes),
        (1, 0),
        "{stats:?}"
    );
    idle.close(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !broker.pushes().iter().any(|(t, _)| *t) {
        assert!(Instant::now() < deadline, "no terminating push after close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(broker.pushes().iter().filter(|(t, _)| *t).count(), 1);
}
