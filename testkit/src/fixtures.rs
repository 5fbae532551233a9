//! The one version of what every crate's real-broker tests start from: a
//! client, a uniquely named topic, records produced and acknowledged, and
//! the consumer settings a test group uses. Only kafka-wire types: the
//! consumer settings are Kafka property names, which every crate feeds to
//! its own config builder (testkit depending on consumer-core would make
//! kafka-wire's tests depend on a crate above it).

use kafka_wire::{
    Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerConfigBuilder, ProducerRecord,
};

use crate::BrokerEnv;

/// A client on the harness's PLAINTEXT listener, with every default.
///
/// # Panics
/// When the broker does not answer.
pub async fn client(b: &BrokerEnv) -> Client {
    let config = ClientConfig::builder()
        .bootstrap(&b.bootstrap)
        .expect("bootstrap address")
        .build()
        .expect("valid client config");
    Client::connect(config)
        .await
        .expect("connect to the test broker")
}

/// Producer settings for the test broker, every other default kept; add
/// to them before `build`.
pub fn producer_builder(b: &BrokerEnv) -> ProducerConfigBuilder {
    ProducerConfig::builder()
        .bootstrap(&b.bootstrap)
        .expect("bootstrap address")
}

/// [`producer_builder`], built.
pub fn producer_config(b: &BrokerEnv) -> ProducerConfig {
    producer_builder(b).build().expect("valid producer config")
}

/// A new topic named `prefix-<unique>` with `partitions` partitions; every
/// partition has a leader when this returns.
pub async fn create_topic(admin: &Client, prefix: &str, partitions: i32) -> String {
    create_topic_with(admin, NewTopic::new(crate::unique_name(prefix), partitions)).await
}

/// Create `topic` (a [`NewTopic`] with configs, say); returns its name.
pub async fn create_topic_with(admin: &Client, topic: NewTopic) -> String {
    let name = topic.name.clone();
    admin.create_topic(topic).await.expect("create topic");
    name
}

/// Produce `records` through a producer sharing `client`, and wait until
/// every one is acknowledged.
pub async fn produce(
    client: &Client,
    b: &BrokerEnv,
    records: impl IntoIterator<Item = ProducerRecord>,
) {
    let p = Producer::with_client(client.clone(), producer_config(b));
    for r in records {
        p.send(r).await.expect("send");
    }
    p.flush().await.expect("every record acknowledged");
}

/// Records with values "0".."n-1" for `topic`, the i-th keyed `key(i)`
/// (so placed by the key's hash).
pub fn numbered_records<'a>(
    topic: &'a str,
    n: u32,
    key: impl Fn(u32) -> String + 'a,
) -> impl Iterator<Item = ProducerRecord> + 'a {
    (0..n).map(move |i| ProducerRecord::new(topic).key(key(i)).value(i.to_string()))
}

/// A new topic (as [`create_topic`]) holding [`numbered_records`].
pub async fn numbered_topic(
    b: &BrokerEnv,
    admin: &Client,
    prefix: &str,
    partitions: i32,
    n: u32,
    key: impl Fn(u32) -> String,
) -> String {
    let topic = create_topic(admin, prefix, partitions).await;
    produce(admin, b, numbered_records(&topic, n, key)).await;
    topic
}

/// What a test consumer sets beyond the broker's address under the classic
/// protocol (Kafka property names): read from the earliest offset; a 6 s
/// session and 300 ms heartbeats, so a dead member or a rebalance is
/// noticed in seconds.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "300"),
];

/// Settings the consumer group protocol (KIP-848) refuses: the broker owns
/// the session and the heartbeat interval, and assigns partitions.
pub const CLASSIC_ONLY: [&str; 3] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
];

/// The protocol [`set_group_protocol`] chose for this process, if it did.
static CHOSEN_PROTOCOL: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Run this process's group members under `protocol` (`classic`,
/// `consumer` or `auto`) from now on, whatever `KAFKA_GROUP_PROTOCOL` says:
/// the lab runs its scenarios under each protocol in turn this way.
pub fn set_group_protocol(protocol: &str) {
    *CHOSEN_PROTOCOL.lock().expect("protocol lock") = Some(protocol.to_string());
}

/// The group protocol a suite runs under when it is not classic: the one
/// [`set_group_protocol`] chose, else `KAFKA_GROUP_PROTOCOL` (`consumer`
/// for KIP-848, or `auto`), as `cargo xtask test` sets it for its second
/// pass.
pub fn group_protocol() -> Option<String> {
    let chosen = CHOSEN_PROTOCOL.lock().expect("protocol lock").clone();
    chosen
        .or_else(|| std::env::var("KAFKA_GROUP_PROTOCOL").ok())
        .filter(|p| !p.is_empty() && p != "classic")
}

/// Whether the suite runs under KIP-848 (`KAFKA_GROUP_PROTOCOL=consumer`).
pub fn kip848() -> bool {
    group_protocol().is_some_and(|p| p == "consumer")
}

/// Every property of a test consumer, in the order to apply them (a later
/// one wins): `bootstrap.servers`, `group.id` (when a member of `group`),
/// then under classic [`CONSUMER_DEFAULTS`] and `extra`; under `auto`
/// the same and `group.protocol=auto`; under `consumer`,
/// `auto.offset.reset=earliest`, `group.protocol` and `extra` without its
/// [`CLASSIC_ONLY`] settings. Feed each to the
/// consumer config builder's `set`.
pub fn consumer_props<'a>(
    b: &'a BrokerEnv,
    group: Option<&'a str>,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, String)> {
    let mut props = vec![("bootstrap.servers", b.bootstrap.clone())];
    if let Some(g) = group {
        props.push(("group.id", g.to_string()));
    }
    let protocol = group_protocol();
    // `auto` keeps the classic settings: it uses them where it falls back
    // to the classic protocol (a broker without KIP-848, as the
    // Redpanda-shaped pass's), and leaves them unused otherwise.
    let classic_settings = protocol.as_deref().is_none_or(|p| p == "auto");
    if classic_settings {
        props.extend(CONSUMER_DEFAULTS.iter().map(|(k, v)| (*k, v.to_string())));
    } else {
        props.push(("auto.offset.reset", "earliest".into()));
    }
    if let Some(p) = &protocol {
        props.push(("group.protocol", p.clone()));
    }
    props.extend(
        extra
            .iter()
            .filter(|(k, _)| classic_settings || !CLASSIC_ONLY.contains(k))
            .map(|(k, v)| (*k, v.to_string())),
    );
    props
}

/// Is KIP-848 on at the broker? Kafka 3.9 advertises ConsumerGroupHeartbeat
/// and ConsumerGroupDescribe even while the feature is off, and answers
/// UNSUPPORTED_VERSION in the response body: ask, do not read the API list.
pub async fn speaks_848(b: &BrokerEnv) -> bool {
    use kafka_wire::messages::{ApiKey, ConsumerGroupDescribeRequest, GroupId};
    let client = client(b).await;
    let md = client.refresh_metadata(None).await.unwrap();
    let id = *md.brokers.keys().next().expect("a broker");
    let conn = client
        .connection(id, kafka_wire::Lane::Control)
        .await
        .unwrap();
    if conn.version(ApiKey::ConsumerGroupDescribe).is_err() {
        return false;
    }
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(
        kafka_wire::StrBytes::from_string(crate::unique_name("probe-848")),
    )]);
    let resp = client
        .send_to(
            id,
            kafka_wire::Lane::Control,
            &req,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    resp.groups
        .first()
        .is_some_and(|g| g.error_code != kafka_wire::KafkaCode::UnsupportedVersion.code())
}
