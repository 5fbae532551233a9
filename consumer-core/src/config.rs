//! Consumer configuration: defaults in one place, Kafka property names accepted.

use std::sync::Arc;
use std::time::Duration;

use kafka_wire::{ClientConfig, ClientConfigBuilder, Error, Result};

use crate::assignor::{self, Assignor};

/// `auto.offset.reset`: where to start when there is no committed offset
/// (or the committed one is out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail with an error that names the partition.
    None,
}

/// `group.protocol`: which group protocol a subscribing consumer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup/Heartbeat, client-side assignors.
    Classic,
    /// KIP-848's ConsumerGroupHeartbeat: the broker assigns, members
    /// reconcile incrementally. Fails (naming the fix) on a broker without it.
    Consumer,
    /// The consumer protocol when the broker speaks it (it advertises
    /// ConsumerGroupHeartbeat and the first heartbeat is not refused),
    /// otherwise classic, with one info line saying why.
    Auto,
}

/// `isolation.level` (one type for the whole stack; see its docs).
pub use kafka_wire::IsolationLevel;

/// Consumer settings; see [`ConsumerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Connection settings. Its `metadata.max.age.ms` (default 5 min) is
    /// also how often a group member checks for partition-count changes,
    /// subscribed topics created since, and new pattern matches; a change
    /// causes one rebalance.
    pub client: ClientConfig,
    /// `group.id`; `None` for manual assignment only.
    pub group_id: Option<String>,
    /// `group.instance.id` (static membership).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`. Default 45 s.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`. Default 3 s.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`: also the rebalance timeout. Default 300 s.
    pub max_poll_interval: Duration,
    /// `auto.offset.reset`. Default latest (as Java). Partitions that
    /// appear after `subscribe` start at the earliest offset instead; see
    /// [`ConsumerConfig::new_partitions_from_earliest`].
    pub auto_offset_reset: OffsetReset,
    /// `new.partitions.from.earliest` (this client's own property; Java has
    /// none). Default **true**: a partition that did not exist when the
    /// consumer first saw its subscription's metadata (a topic grown with
    /// CreatePartitions, a topic created after `subscribe`, or one a
    /// pattern matches later) starts at the EARLIEST offset when the group
    /// has no committed offset for it, whatever `auto.offset.reset` says
    /// (even `none`). With `latest`, the records produced to such a
    /// partition between its creation and the rebalance that assigns it
    /// (up to `metadata.max.age.ms` plus a rebalance) would be skipped
    /// forever (Java's KAFKA-12478). `false`: `auto.offset.reset` applies
    /// to them too, as in Java. Partitions that existed at subscribe (and
    /// every partition of a consumer started later) follow
    /// `auto.offset.reset`.
    pub new_partitions_from_earliest: bool,
    /// `enable.auto.commit`. Default **false**: commit after processing.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`. Default 5 s.
    pub auto_commit_interval: Duration,
    /// `fetch.min.bytes`. Default 1.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`. Default 50 MiB.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`. Default 1 MiB.
    pub max_partition_fetch_bytes: i32,
    /// `fetch.max.wait.ms`. Default 500 ms.
    pub fetch_max_wait: Duration,
    /// `isolation.level`. Default read_uncommitted.
    pub isolation_level: IsolationLevel,
    /// `max.poll.records`. Default 500.
    pub max_poll_records: usize,
    /// `partition.assignment.strategy`. Default [range, cooperative-sticky] (Java's).
    pub assignors: Vec<Arc<dyn Assignor>>,
    /// Ceiling on one batch's decompressed size. Default 64 MiB.
    pub max_decompressed_bytes: usize,
    /// `group.protocol`: classic, consumer (KIP-848) or auto. Default classic.
    pub group_protocol: GroupProtocol,
    /// `group.remote.assignor`: the broker-side assignor under the consumer
    /// protocol (`uniform`, `range`); `None`: the broker's default.
    pub group_remote_assignor: Option<String>,
    /// `client.rack`: the rack (or availability zone) this consumer runs
    /// in. Sent in every Fetch (KIP-392: a broker with a `replica.selector`
    /// may point the consumer at a replica in its rack), in the classic
    /// subscription (v3, for rack-aware assignors) and in KIP-848
    /// heartbeats (the broker's rack-aware assignment). Default none.
    pub client_rack: Option<String>,
}

impl ConsumerConfig {
    /// The classic-protocol settings this config changes from their
    /// defaults (`session.timeout.ms`, `heartbeat.interval.ms`,
    /// `partition.assignment.strategy`): unused when the consumer protocol
    /// (KIP-848) runs, which `group.protocol=auto` may choose.
    pub(crate) fn classic_settings_changed(&self) -> Vec<&'static str> {
        let default = Self::builder();
        let mut changed = Vec::new();
        if self.session_timeout != default.session_timeout {
            changed.push("session.timeout.ms");
        }
        if self.heartbeat_interval != default.heartbeat_interval {
            changed.push("heartbeat.interval.ms");
        }
        let names =
            |a: &[Arc<dyn Assignor>]| a.iter().map(|a| a.name().to_string()).collect::<Vec<_>>();
        if names(&self.assignors) != names(&default.assignors) {
            changed.push("partition.assignment.strategy");
        }
        changed
    }

    pub fn builder() -> ConsumerConfigBuilder {
        ConsumerConfigBuilder {
            client: ClientConfig::builder(),
            group_id: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            auto_offset_reset: OffsetReset::Latest,
            new_partitions_from_earliest: true,
            enable_auto_commit: false,
            auto_commit_interval: Duration::from_secs(5),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            isolation_level: IsolationLevel::ReadUncommitted,
            max_poll_records: 500,
            assignors: vec![
                Arc::new(assignor::RangeAssignor),
                Arc::new(assignor::CooperativeStickyAssignor),
            ],
            max_decompressed_bytes: 64 * 1024 * 1024,
            group_protocol: GroupProtocol::Classic,
            group_remote_assignor: None,
            client_rack: None,
            classic_only_set: Vec::new(),
        }
    }
}

/// Builds a [`ConsumerConfig`].
#[derive(Debug, Clone)]
pub struct ConsumerConfigBuilder {
    client: ClientConfigBuilder,
    group_id: Option<String>,
    group_instance_id: Option<String>,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    max_poll_interval: Duration,
    auto_offset_reset: OffsetReset,
    new_partitions_from_earliest: bool,
    enable_auto_commit: bool,
    auto_commit_interval: Duration,
    fetch_min_bytes: i32,
    fetch_max_bytes: i32,
    max_partition_fetch_bytes: i32,
    fetch_max_wait: Duration,
    isolation_level: IsolationLevel,
    max_poll_records: usize,
    assignors: Vec<Arc<dyn Assignor>>,
    max_decompressed_bytes: usize,
    group_protocol: GroupProtocol,
    group_remote_assignor: Option<String>,
    client_rack: Option<String>,
    /// Classic-only properties the user set (refused under `consumer`).
    classic_only_set: Vec<&'static str>,
}

use kafka_wire::__private::parse::{boolean, ms, number as int};

impl ConsumerConfigBuilder {
    /// Set many Kafka properties (`key=value` pairs from a Java or
    /// librdkafka config, or a service's own settings), in order.
    ///
    /// # Errors
    /// As [`Self::set`]: the first unknown key or bad value, named.
    pub fn properties<'a>(
        mut self,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        for (k, v) in props {
            self = self.set(k, v)?;
        }
        Ok(self)
    }

    /// Set one Kafka property (consumer or client). Unknown keys are an error.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "group.id" => self.group_id = Some(value.to_string()),
            "group.instance.id" => self.group_instance_id = Some(value.to_string()),
            "session.timeout.ms" => {
                self.session_timeout = ms(key, value)?;
                self.classic_only_set.push("session.timeout.ms");
            }
            "heartbeat.interval.ms" => {
                self.heartbeat_interval = ms(key, value)?;
                self.classic_only_set.push("heartbeat.interval.ms");
            }
            "group.protocol" => {
                self.group_protocol = match value.trim().to_ascii_lowercase().as_str() {
                    "classic" => GroupProtocol::Classic,
                    "consumer" => GroupProtocol::Consumer,
                    "auto" => GroupProtocol::Auto,
                    _ => {
                        return Err(Error::Config(format!(
                            "group.protocol={value:?}: expected classic, consumer or auto"
                        )))
                    }
                }
            }
            "client.rack" => {
                self.client_rack = Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "group.remote.assignor" => {
                self.group_remote_assignor =
                    Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "max.poll.interval.ms" => self.max_poll_interval = ms(key, value)?,
            "auto.offset.reset" => {
                self.auto_offset_reset = match value.trim() {
                    "earliest" | "smallest" | "beginning" => OffsetReset::Earliest,
                    "latest" | "largest" | "end" => OffsetReset::Latest,
                    "none" | "error" => OffsetReset::None,
                    _ => {
                        return Err(Error::Config(format!(
                            "auto.offset.reset={value:?}: expected earliest, latest or none"
                        )))
                    }
                }
            }
            "new.partitions.from.earliest" => {
                self.new_partitions_from_earliest = boolean(key, value)?
            }
            "enable.auto.commit" => self.enable_auto_commit = boolean(key, value)?,
            "auto.commit.interval.ms" => self.auto_commit_interval = ms(key, value)?,
            "fetch.min.bytes" => self.fetch_min_bytes = int(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = int(key, value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = int(key, value)?,
            "fetch.max.wait.ms" | "fetch.wait.max.ms" => self.fetch_max_wait = ms(key, value)?,
            "isolation.level" => {
                self.isolation_level = match value.trim() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => {
                        return Err(Error::Config(format!(
                            "isolation.level={value:?}: expected read_uncommitted or read_committed"
                        )))
                    }
                }
            }
            "max.poll.records" => self.max_poll_records = int(key, value)?,
            "check.crcs" => {
                if !boolean(key, value)? {
                    return Err(Error::Config(
                        "check.crcs=false is not supported: every batch's CRC32C is verified"
                            .into(),
                    ));
                }
            }
            "partition.assignment.strategy" => {
                self.classic_only_set.push("partition.assignment.strategy");
                self.assignors = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|name| {
                        assignor::by_name(name).map(Arc::from).ok_or_else(|| {
                            Error::Config(format!(
                                "partition.assignment.strategy: unknown assignor {name:?} \
                                 (range, roundrobin, sticky, cooperative-sticky)"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            // Accepted for compatibility; this client has no use for them.
            "key.deserializer" | "value.deserializer" | "allow.auto.create.topics" => {}
            _ => {
                if !self.client.try_set(key, value)? {
                    return Err(Error::Config(format!("unknown consumer property {key:?}")));
                }
            }
        }
        Ok(self)
    }

    pub fn bootstrap(self, servers: &str) -> Result<Self> {
        self.set("bootstrap.servers", servers)
    }

    pub fn client(mut self, f: impl FnOnce(ClientConfigBuilder) -> ClientConfigBuilder) -> Self {
        self.client = f(self.client);
        self
    }

    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.group_id = Some(id.into());
        self
    }

    pub fn assignor(mut self, a: Arc<dyn Assignor>) -> Self {
        self.classic_only_set.push("partition.assignment.strategy");
        self.assignors = vec![a];
        self
    }

    pub fn auto_offset_reset(mut self, r: OffsetReset) -> Self {
        self.auto_offset_reset = r;
        self
    }

    pub fn isolation_level(mut self, l: IsolationLevel) -> Self {
        self.isolation_level = l;
        self
    }

    /// Validate and build.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn build(self) -> Result<ConsumerConfig> {
        let client = self.client.build()?;
        if self.heartbeat_interval >= self.session_timeout {
            return Err(Error::Config(
                "heartbeat.interval.ms must be lower than session.timeout.ms".into(),
            ));
        }
        if self.assignors.is_empty() {
            return Err(Error::Config(
                "partition.assignment.strategy needs at least one assignor".into(),
            ));
        }
        if self.group_instance_id.is_some() && self.group_id.is_none() {
            return Err(Error::Config("group.instance.id needs group.id".into()));
        }
        if self.group_protocol == GroupProtocol::Consumer {
            if let Some(key) = self.classic_only_set.first() {
                return Err(Error::Config(format!(
                    "{key} is a classic-protocol setting and group.protocol=consumer does not \
                     use it: the broker assigns partitions (choose its assignor with \
                     group.remote.assignor) and sets the session timeout and heartbeat \
                     interval (group.consumer.* broker configs). Remove {key}, or use \
                     group.protocol=classic"
                )));
            }
        }
        Ok(ConsumerConfig {
            client,
            group_id: self.group_id,
            group_instance_id: self.group_instance_id,
            session_timeout: self.session_timeout,
            heartbeat_interval: self.heartbeat_interval,
            max_poll_interval: self.max_poll_interval,
            auto_offset_reset: self.auto_offset_reset,
            new_partitions_from_earliest: self.new_partitions_from_earliest,
            enable_auto_commit: self.enable_auto_commit,
            auto_commit_interval: self.auto_commit_interval,
            fetch_min_bytes: self.fetch_min_bytes,
            fetch_max_bytes: self.fetch_max_bytes,
            max_partition_fetch_bytes: self.max_partition_fetch_bytes,
            fetch_max_wait: self.fetch_max_wait,
            isolation_level: self.isolation_level,
            max_poll_records: self.max_poll_records.max(1),
            assignors: self.assignors,
            max_decompressed_bytes: self.max_decompressed_bytes,
            group_protocol: self.group_protocol,
            group_remote_assignor: self.group_remote_assignor,
            client_rack: self.client_rack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer's builder and config, formatted, never show the SASL
    /// password (their client part redacts it).
    #[test]
    fn debug_never_shows_the_sasl_password() {
        let b = ConsumerConfig::builder()
            .properties([
                ("bootstrap.servers", "a:9092"),
                ("group.id", "g"),
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
                ("sasl.password", "hunter2-s3cr3t"),
            ])
            .unwrap();
        let c = b.clone().build().unwrap();
        for shown in [
            format!("{b:?}"),
            format!("{b:#?}"),
            format!("{c:?}"),
            format!("{c:#?}"),
        ] {
            assert!(!shown.contains("hunter2-s3cr3t"), "{shown}");
        }
    }

    fn builder() -> ConsumerConfigBuilder {
        ConsumerConfig::builder()
            .bootstrap("127.0.0.1:9092")
            .unwrap()
    }

    #[test]
    fn classic_settings_changed_names_what_auto_would_leave_unused() {
        let c = builder()
            .set("group.protocol", "auto")
            .unwrap()
            .build()
            .unwrap();
        assert!(c.classic_settings_changed().is_empty(), "defaults only");
        let c = builder()
            .set("group.protocol", "auto")
            .unwrap()
            .set("session.timeout.ms", "10000")
            .unwrap()
            .set("partition.assignment.strategy", "cooperative-sticky")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            c.classic_settings_changed(),
            vec!["session.timeout.ms", "partition.assignment.strategy"]
        );
    }

    #[test]
    fn properties_set_client_and_consumer_keys_and_name_a_bad_one() {
        let c = ConsumerConfig::builder()
            .properties([
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("group.id", "billing"),
                ("max.poll.interval.ms", "3000"),
            ])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.group_id.as_deref(), Some("billing"));
        let err = ConsumerConfig::builder()
            .properties([("group.id", "g"), ("max.pol.records", "5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max.pol.records"), "{err}");
    }

    #[test]
    fn client_rack_is_kept_and_an_empty_one_means_none() {
        let base = || {
            ConsumerConfig::builder()
                .set("bootstrap.servers", "127.0.0.1:9092")
                .unwrap()
        };
        let c = base()
            .set("client.rack", " rack-a ")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.client_rack.as_deref(), Some("rack-a"));
        let c = base().set("client.rack", "").unwrap().build().unwrap();
        assert_eq!(c.client_rack, None);
        assert_eq!(base().build().unwrap().client_rack, None, "default: none");
    }

    #[test]
    fn new_partitions_start_earliest_by_default_and_the_property_turns_it_off() {
        assert!(builder().build().unwrap().new_partitions_from_earliest);
        let off = builder()
            .set("new.partitions.from.earliest", "false")
            .unwrap()
            .build()
            .unwrap();
        assert!(!off.new_partitions_from_earliest);
        assert!(builder()
            .set("new.partitions.from.earliest", "yes")
            .is_err());
        let aged = builder()
            .set("metadata.max.age.ms", "1000")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(aged.client.metadata_max_age, Duration::from_secs(1));
    }

    #[test]
    fn group_protocol_is_classic_by_default_and_consumer_refuses_classic_only_settings() {
        assert_eq!(
            builder().build().unwrap().group_protocol,
            GroupProtocol::Classic
        );
        let c = builder()
            .set("group.protocol", "consumer")
            .unwrap()
            .set("group.remote.assignor", "uniform")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.group_protocol, GroupProtocol::Consumer);
        assert_eq!(c.group_remote_assignor.as_deref(), Some("uniform"));
        for key in ["partition.assignment.strategy", "session.timeout.ms"] {
            let value = if key.ends_with(".ms") {
                "30000"
            } else {
                "range"
            };
            let err = builder()
                .set("group.protocol", "consumer")
                .unwrap()
                .set(key, value)
                .unwrap()
                .build()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains("group.protocol=classic"),
                "{err}"
            );
        }
        // auto keeps them for the classic fallback.
        assert!(builder()
            .set("group.protocol", "auto")
            .unwrap()
            .set("partition.assignment.strategy", "range")
            .unwrap()
            .build()
            .is_ok());
        assert!(builder().set("group.protocol", "new").is_err());
    }
}
