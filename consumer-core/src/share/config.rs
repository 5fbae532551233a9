//! Share consumer configuration: defaults in one place, Kafka property
//! names accepted (those of Java's `KafkaShareConsumer`).
//!
//! Settings a share group takes from the broker are refused with the name
//! of the setting that does the job there (`auto.offset.reset` is the
//! group config `share.auto.offset.reset`, for instance), so that a pasted
//! consumer config fails loudly instead of being silently ignored.

use std::time::Duration;

use kafka_wire::__private::parse::{boolean, ms, number};
use kafka_wire::{ClientConfig, ClientConfigBuilder, Error, Result};

/// `share.acknowledgement.mode` (KIP-932): who acknowledges the records a
/// poll returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcknowledgementMode {
    /// Every record a poll returned is accepted (ACCEPT) when the next
    /// poll starts, or by `commit_sync`/`commit_async`/`close`.
    #[default]
    Implicit,
    /// The application acknowledges every record with
    /// [`ShareConsumer::acknowledge`](super::ShareConsumer::acknowledge)
    /// (ACCEPT, RELEASE, REJECT, or RENEW while it still works on it)
    /// before the next poll; a poll with records left unacknowledged fails
    /// with [`ShareError::Unacknowledged`](super::ShareError::Unacknowledged).
    Explicit,
}

/// `share.acquire.mode` (KIP-1206): how the broker bounds the records one
/// ShareFetch acquires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcquireMode {
    /// The broker acquires whole record batches, so a fetch may acquire
    /// more than `max.poll.records`; the rest waits (its acquisition lock
    /// running) for the next poll. ShareFetch `share_acquire_mode` 0.
    #[default]
    BatchOptimized,
    /// The broker acquires at most `max.poll.records` records per
    /// ShareFetch, splitting batches. Needs ShareFetch v2 (Kafka 4.2+);
    /// against an older broker `poll` fails with [`Error::Config`] naming
    /// the broker.
    RecordLimit,
}

impl AcquireMode {
    /// ShareFetch's `share_acquire_mode`.
    pub(crate) fn wire(self) -> i8 {
        match self {
            AcquireMode::BatchOptimized => 0,
            AcquireMode::RecordLimit => 1,
        }
    }
}

/// Share consumer settings; see [`ShareConsumerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ShareConsumerConfig {
    /// Connection settings (`bootstrap.servers`, TLS, SASL, timeouts).
    pub client: ClientConfig,
    /// `group.id`: the share group. Required. A group id already used by a
    /// consumer (classic or KIP-848) or streams group is refused by the
    /// broker.
    pub group_id: String,
    /// `share.acknowledgement.mode`. Default implicit.
    pub acknowledgement_mode: AcknowledgementMode,
    /// `share.acquire.mode`. Default batch_optimized.
    pub acquire_mode: AcquireMode,
    /// `max.poll.records`: the most records one `poll` returns, and the
    /// ShareFetch `max_records` and `batch_size`. Default 500.
    pub max_poll_records: usize,
    /// `fetch.max.wait.ms`: how long a ShareFetch waits at the broker for
    /// `fetch.min.bytes`. Default 500 ms.
    pub fetch_max_wait: Duration,
    /// `fetch.min.bytes`. Default 1.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`. Default 50 MiB.
    pub fetch_max_bytes: i32,
    /// `retry.backoff.ms`: the pause before a share session is opened again
    /// after a failure, and between heartbeats retried. Default 100 ms.
    pub retry_backoff: Duration,
    /// `max.poll.interval.ms`: the longest the application may go between
    /// polls. Past it the member leaves the share group and gives back
    /// the records it holds (RELEASE: delivered again, to any member, with
    /// their delivery count up by one); it joins again at the next poll.
    /// Default 300 000 ms (5 min). Too low, and a slow batch is handed to
    /// another member while still being processed.
    pub max_poll_interval: Duration,
    /// `client.rack`: sent in ShareGroupHeartbeat. Default none.
    pub client_rack: Option<String>,
    /// Ceiling on one batch's decompressed size. Default 64 MiB.
    pub max_decompressed_bytes: usize,
}

impl ShareConsumerConfig {
    pub fn builder() -> ShareConsumerConfigBuilder {
        ShareConsumerConfigBuilder {
            client: ClientConfig::builder(),
            group_id: None,
            acknowledgement_mode: AcknowledgementMode::Implicit,
            acquire_mode: AcquireMode::BatchOptimized,
            max_poll_records: 500,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            retry_backoff: Duration::from_millis(100),
            max_poll_interval: Duration::from_secs(300),
            client_rack: None,
            max_decompressed_bytes: kafka_wire::records::DEFAULT_MAX_DECOMPRESSED,
        }
    }
}

/// Builder for [`ShareConsumerConfig`]; [`ShareConsumerConfigBuilder::set`]
/// takes Kafka property names.
#[derive(Debug)]
pub struct ShareConsumerConfigBuilder {
    client: ClientConfigBuilder,
    group_id: Option<String>,
    acknowledgement_mode: AcknowledgementMode,
    acquire_mode: AcquireMode,
    max_poll_records: usize,
    fetch_max_wait: Duration,
    fetch_min_bytes: i32,
    fetch_max_bytes: i32,
    retry_backoff: Duration,
    max_poll_interval: Duration,
    client_rack: Option<String>,
    max_decompressed_bytes: usize,
}

/// Consumer-group settings a share group takes from elsewhere, and where.
fn not_for_share_groups(key: &str) -> Option<&'static str> {
    Some(match key {
        "auto.offset.reset" => {
            "a share group starts where its group config share.auto.offset.reset says \
             (default latest): set it with Client::alter_configs(ConfigResource::Group(..)) \
             or kafka-configs.sh --entity-type groups"
        }
        "isolation.level" => "a share group reads by its group config share.isolation.level",
        "enable.auto.commit" | "auto.commit.interval.ms" => {
            "a share group has no offsets to commit: records are acknowledged \
             (share.acknowledgement.mode)"
        }
        "group.instance.id" => "share groups have no static membership",
        "session.timeout.ms" | "heartbeat.interval.ms" => {
            "the broker sets a share group's (group.share.session.timeout.ms, \
             group.share.heartbeat.interval.ms, or the group configs share.session.timeout.ms \
             and share.heartbeat.interval.ms)"
        }
        "partition.assignment.strategy" | "group.remote.assignor" => {
            "the broker assigns a share group's partitions (group.share.assignors)"
        }
        "group.protocol" => "a share consumer always speaks the share group protocol",
        "group.share.record.lock.duration.ms" | "share.record.lock.duration.ms" => {
            "the acquisition lock is the broker's setting (group.share.record.lock.duration.ms) \
             or the group config share.record.lock.duration.ms; RENEW extends a record's lock"
        }
        _ => return None,
    })
}

impl ShareConsumerConfigBuilder {
    /// Set one Kafka property. Client properties (`bootstrap.servers`,
    /// `security.protocol`, …) go to [`ClientConfigBuilder`].
    ///
    /// # Errors
    /// [`Error::Config`] naming the key: an unknown key, a bad value, or a
    /// consumer-group setting share groups take from the broker (the
    /// message names the one to use).
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "group.id" => self.group_id = Some(value.to_string()),
            "share.acknowledgement.mode" => {
                self.acknowledgement_mode = match value.trim().to_ascii_lowercase().as_str() {
                    "implicit" => AcknowledgementMode::Implicit,
                    "explicit" => AcknowledgementMode::Explicit,
                    _ => {
                        return Err(Error::Config(format!(
                            "share.acknowledgement.mode={value:?}: expected implicit or explicit"
                        )))
                    }
                }
            }
            "share.acquire.mode" => {
                self.acquire_mode = match value.trim().to_ascii_lowercase().as_str() {
                    "batch_optimized" => AcquireMode::BatchOptimized,
                    "record_limit" => AcquireMode::RecordLimit,
                    _ => {
                        return Err(Error::Config(format!(
                            "share.acquire.mode={value:?}: expected batch_optimized or record_limit"
                        )))
                    }
                }
            }
            "max.poll.records" => self.max_poll_records = number(key, value)?,
            "fetch.max.wait.ms" => self.fetch_max_wait = ms(key, value)?,
            "fetch.min.bytes" => self.fetch_min_bytes = number(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = number(key, value)?,
            "retry.backoff.ms" => self.retry_backoff = ms(key, value)?,
            "max.poll.interval.ms" => self.max_poll_interval = ms(key, value)?,
            "client.rack" => {
                self.client_rack = Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "check.crcs" => {
                if !boolean(key, value)? {
                    return Err(Error::Config(
                        "check.crcs=false is not supported: every batch's CRC32C is verified"
                            .into(),
                    ));
                }
            }
            // Accepted for compatibility; this client has no use for them.
            "key.deserializer" | "value.deserializer" => {}
            _ => {
                if let Some(why) = not_for_share_groups(key) {
                    return Err(Error::Config(format!(
                        "{key} is not a share consumer setting: {why}"
                    )));
                }
                if !self.client.try_set(key, value)? {
                    return Err(Error::Config(format!(
                        "unknown share consumer property {key:?}"
                    )));
                }
            }
        }
        Ok(self)
    }

    /// Change the client settings in code.
    pub fn client(mut self, f: impl FnOnce(ClientConfigBuilder) -> ClientConfigBuilder) -> Self {
        self.client = f(self.client);
        self
    }

    /// Validate and build.
    ///
    /// # Errors
    /// [`Error::Config`]: no `group.id`, `max.poll.records` 0, or a client
    /// setting the client builder refuses.
    pub fn build(self) -> Result<ShareConsumerConfig> {
        let group_id = self
            .group_id
            .filter(|g| !g.trim().is_empty())
            .ok_or_else(|| {
                Error::Config("a share consumer needs group.id (its share group)".into())
            })?;
        if self.max_poll_records == 0 || self.max_poll_records > i32::MAX as usize {
            return Err(Error::Config(format!(
                "max.poll.records={} must be at least 1",
                self.max_poll_records
            )));
        }
        Ok(ShareConsumerConfig {
            client: self.client.build()?,
            group_id,
            acknowledgement_mode: self.acknowledgement_mode,
            acquire_mode: self.acquire_mode,
            max_poll_records: self.max_poll_records,
            fetch_max_wait: self.fetch_max_wait,
            fetch_min_bytes: self.fetch_min_bytes,
            fetch_max_bytes: self.fetch_max_bytes,
            retry_backoff: self.retry_backoff,
            max_poll_interval: self.max_poll_interval,
            client_rack: self.client_rack,
            max_decompressed_bytes: self.max_decompressed_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ShareConsumerConfigBuilder {
        ShareConsumerConfig::builder()
            .set("bootstrap.servers", "127.0.0.1:9092")
            .unwrap()
    }

    #[test]
    fn kafka_property_names_are_accepted() {
        let c = base()
            .set("group.id", "g")
            .unwrap()
            .set("share.acknowledgement.mode", "explicit")
            .unwrap()
            .set("share.acquire.mode", "record_limit")
            .unwrap()
            .set("max.poll.records", "7")
            .unwrap()
            .set("fetch.max.wait.ms", "50")
            .unwrap()
            .set("max.poll.interval.ms", "4000")
            .unwrap()
            .set("client.id", "me")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.acknowledgement_mode, AcknowledgementMode::Explicit);
        assert_eq!(c.acquire_mode, AcquireMode::RecordLimit);
        assert_eq!(c.max_poll_records, 7);
        assert_eq!(c.fetch_max_wait, Duration::from_millis(50));
        assert_eq!(c.max_poll_interval, Duration::from_secs(4));
        assert_eq!(c.client.client_id, "me");
    }

    #[test]
    fn defaults_are_javas() {
        let c = base().set("group.id", "g").unwrap().build().unwrap();
        assert_eq!(c.acknowledgement_mode, AcknowledgementMode::Implicit);
        assert_eq!(c.acquire_mode, AcquireMode::BatchOptimized);
        assert_eq!(c.max_poll_records, 500);
        assert_eq!(c.max_poll_interval, Duration::from_secs(300));
    }

    #[test]
    fn consumer_group_settings_name_the_share_group_one() {
        let e = base().set("auto.offset.reset", "earliest").unwrap_err();
        assert!(e.to_string().contains("share.auto.offset.reset"), "{e}");
        let e = base().set("isolation.level", "read_committed").unwrap_err();
        assert!(e.to_string().contains("share.isolation.level"), "{e}");
        let e = base().set("nonsense", "1").unwrap_err();
        assert!(e.to_string().contains("\"nonsense\""), "{e}");
    }

    #[test]
    fn group_id_is_required_and_modes_are_checked() {
        let e = base().build().unwrap_err();
        assert!(e.to_string().contains("group.id"), "{e}");
        let e = base().set("share.acquire.mode", "all").unwrap_err();
        assert!(e.to_string().contains("record_limit"), "{e}");
        let e = base()
            .set("group.id", "g")
            .unwrap()
            .set("max.poll.records", "0")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("max.poll.records"), "{e}");
    }
}
