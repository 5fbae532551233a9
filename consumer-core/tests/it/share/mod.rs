//! Share groups (KIP-932) against the real broker: the share member on
//! the group driver (ShareGroupHeartbeat), ShareFetch and
//! ShareAcknowledge. Kafka 4.2+ with the cluster feature `share.version`
//! at 1 or more (on by default for clusters formatted at 4.2+); on a
//! broker without share groups each test checks the error says so, and
//! stops.

mod crash;
mod delivery;
mod java_mixed;
mod outcomes;
mod parallel;
mod seam;

use std::time::{Duration, Instant};

use consumer_core::share::{ShareConsumer, ShareConsumerConfig, ShareError, ShareRecord};
use kafka_wire::{Client, ConfigResource};

/// A share consumer of `group` on the test broker, with `extra` settings
/// (Kafka property names).
pub async fn share_consumer(
    b: &testkit::BrokerEnv,
    group: &str,
    extra: &[(&str, &str)],
) -> ShareConsumer {
    let mut c = ShareConsumerConfig::builder()
        .set("bootstrap.servers", &b.bootstrap)
        .unwrap()
        .set("group.id", group)
        .unwrap()
        .set("fetch.max.wait.ms", "200")
        .unwrap();
    for (k, v) in extra {
        c = c.set(k, v).unwrap();
    }
    ShareConsumer::connect(c.build().unwrap()).await.unwrap()
}

/// A new share group id that starts from the earliest offset (the group
/// config `share.auto.offset.reset`; its default, latest, would skip the
/// records produced before the group first reads).
pub async fn share_group(admin: &Client, prefix: &str) -> String {
    share_group_with(admin, prefix, &[]).await
}

/// [`share_group`] with more group configs (`share.record.lock.duration.ms`, …).
pub async fn share_group_with(admin: &Client, prefix: &str, configs: &[(&str, &str)]) -> String {
    let group = testkit::unique_name(prefix);
    let mut set = vec![("share.auto.offset.reset", Some("earliest"))];
    set.extend(configs.iter().map(|(k, v)| (*k, Some(*v))));
    admin
        .alter_configs(&ConfigResource::Group(group.clone()), &set)
        .await
        .expect("set the share group's configs");
    group
}

/// The shortest acquisition lock a group may set: the broker's
/// `group.share.min.record.lock.duration.ms` default.
pub const SHORTEST_LOCK: Duration = Duration::from_secs(15);

/// Subscribe, or `None` when the broker has no share groups (after
/// checking the error names the fix).
pub async fn subscribe(c: &mut ShareConsumer, topics: &[&str]) -> Option<()> {
    match c.subscribe(topics).await {
        Ok(()) => Some(()),
        Err(e @ ShareError::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("share.version") || text.contains("Kafka 4.1"),
                "the error names the setting or the upgrade: {text}"
            );
            eprintln!("SKIPPED (no share groups on this broker): {text}");
            None
        }
        Err(e) => panic!("subscribe: {e}"),
    }
}

/// Poll until `until` says enough or `limit` passes; `each` sees every
/// poll's records (and may acknowledge them).
pub async fn poll_until(
    c: &mut ShareConsumer,
    limit: Duration,
    mut each: impl FnMut(&mut ShareConsumer, &[ShareRecord]) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let records = c.poll(Duration::from_millis(500)).await.unwrap();
        if each(c, &records) {
            return true;
        }
    }
    false
}
