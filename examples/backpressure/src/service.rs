//! The service: one topic's records through the runtime into a
//! deliberately slow downstream, configured by property names.
//!
//! ```text
//!  poll task ──▶ bounded in-flight queue ──▶ workers (≤ processor.concurrency)
//!     ▲   pause at the bound,                 │  slow downstream: at most
//!     │   resume below half                   │  downstream.records.per.second
//!     └── commits only what workers finished ◀┘
//! ```
//!
//! Kafka's own names go to the consumer (`bootstrap.servers`, `group.id`,
//! `max.poll.records`, `session.timeout.ms`, …); the runtime's bounds and
//! the simulated downstream have names in the same style, listed in
//! [`SERVICE_PROPERTIES`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use kafka_wire::records::Record;
use resilience::consumer_core::{ConsumerConfig, TopicPartition};
use resilience::{CommitPolicy, Handler, HandlerError, Processor, ProcessorConfig};
use sim_tests::support::{rate_limited, Behaviour};

/// The properties this service reads itself (everything else is a Kafka
/// consumer property): name, default, meaning.
pub const SERVICE_PROPERTIES: [(&str, &str, &str); 7] = [
    (
        "processor.max.in.flight.records",
        "1000",
        "pause fetching at this many records polled and not finished (records)",
    ),
    (
        "processor.max.in.flight.bytes",
        "65536",
        "pause fetching at this many bytes polled and not finished (bytes)",
    ),
    (
        "processor.max.queued.per.partition",
        "2000",
        "pause one partition at this many of its records in flight (records); the runtime \
         also caps it at the partition's share of the records bound (1000 / 6 = 166 here), \
         so one partition cannot fill the whole bound and leave the other workers idle",
    ),
    (
        "processor.concurrency",
        "8",
        "records handled at once (one per partition at a time: per-partition order)",
    ),
    (
        "processor.commit.interval.ms",
        "200",
        "commit what workers finished this often (ms)",
    ),
    (
        "downstream.records.per.second",
        "2000",
        "what the slow downstream accepts in all (records/s)",
    ),
    (
        "downstream.latency.ms",
        "1",
        "the shortest downstream call (ms)",
    ),
];

/// Kafka consumer properties the service sets unless told otherwise.
pub const CONSUMER_DEFAULTS: [(&str, &str); 4] = [
    ("auto.offset.reset", "earliest"),
    ("max.poll.records", "200"),
    // A dead instance's partitions move within 6 s.
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
];

/// Everything the service runs with, parsed and validated once.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub topic: String,
    pub consumer: ConsumerConfig,
    /// Records bound (records).
    pub max_in_flight_records: usize,
    /// Bytes bound (bytes, as `resilience::processor::record_bytes` counts).
    pub max_in_flight_bytes: usize,
    /// One partition's share (records).
    pub max_queued_per_partition: usize,
    pub concurrency: usize,
    pub commit_interval: Duration,
    /// The downstream's capacity (records/s, all workers together).
    pub downstream_per_second: u32,
    /// The shortest downstream call.
    pub downstream_latency: Duration,
}

impl ServiceConfig {
    /// [`CONSUMER_DEFAULTS`] and [`SERVICE_PROPERTIES`]' defaults, then
    /// `props` (a later one wins).
    ///
    /// # Errors
    /// An unknown property, or a value that does not parse.
    pub fn from_properties(topic: &str, props: &[(&str, &str)]) -> anyhow::Result<Self> {
        let defaults = SERVICE_PROPERTIES.iter().map(|(k, v, _)| (*k, *v));
        let all = CONSUMER_DEFAULTS
            .into_iter()
            .chain(defaults)
            .chain(props.iter().copied());
        let mut consumer = ConsumerConfig::builder();
        let mut own = std::collections::HashMap::new();
        for (k, v) in all {
            if SERVICE_PROPERTIES.iter().any(|(name, _, _)| *name == k) {
                own.insert(k, v);
            } else {
                consumer = consumer.set(k, v).with_context(|| format!("{k}={v}"))?;
            }
        }
        let num = |k: &str| -> anyhow::Result<u64> {
            own[k]
                .parse()
                .with_context(|| format!("{k}={}: expected a whole number", own[k]))
        };
        let consumer = consumer.build()?;
        if consumer.group_id.is_none() {
            bail!("group.id is required: the service commits as a consumer group");
        }
        Ok(ServiceConfig {
            topic: topic.to_string(),
            consumer,
            max_in_flight_records: num("processor.max.in.flight.records")? as usize,
            max_in_flight_bytes: num("processor.max.in.flight.bytes")? as usize,
            max_queued_per_partition: num("processor.max.queued.per.partition")? as usize,
            concurrency: num("processor.concurrency")? as usize,
            commit_interval: Duration::from_millis(num("processor.commit.interval.ms")?),
            downstream_per_second: num("downstream.records.per.second")? as u32,
            downstream_latency: Duration::from_millis(num("downstream.latency.ms")?),
        })
    }

    /// The runtime's settings.
    pub fn processor_config(&self) -> ProcessorConfig {
        let mut cfg = ProcessorConfig::new(self.consumer.clone(), &[&self.topic]);
        cfg.max_queued_per_partition = self.max_queued_per_partition.max(1);
        cfg.concurrency(self.concurrency)
            .max_in_flight(self.max_in_flight_records, self.max_in_flight_bytes)
            .commit_policy(CommitPolicy::Interval(self.commit_interval))
    }

    /// The slow downstream: each call takes its turn at
    /// `downstream.records.per.second`, and at least `downstream.latency.ms`.
    pub fn downstream(&self) -> Behaviour {
        slow_downstream(self.downstream_per_second, self.downstream_latency)
    }

    /// How far past a bound the runtime may go: one poll of records
    /// (`max.poll.records`, and that many of the largest record, in bytes).
    pub fn one_poll(&self, largest_record_bytes: usize) -> (usize, usize) {
        let records = self.consumer.max_poll_records;
        (records, records * largest_record_bytes)
    }
}

/// A downstream accepting `per_second` records in all, each call taking at
/// least `latency` (see `sim_tests::support::rate_limited`).
pub fn slow_downstream(per_second: u32, latency: Duration) -> Behaviour {
    let turn = rate_limited(per_second);
    Arc::new(move |n, attempt| Ok(turn(n, attempt)?.max(latency)))
}

/// The service's handler: hand each record to the slow downstream.
pub struct SlowDownstream(pub Behaviour);

impl std::fmt::Debug for SlowDownstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowDownstream")
    }
}

impl Handler for SlowDownstream {
    async fn handle(&self, _tp: &TopicPartition, _r: &Record) -> Result<(), HandlerError> {
        let took = (self.0)(0, 1)?;
        tokio::time::sleep(took).await;
        Ok(())
    }
}

/// Run the service until `shutdown`, printing a [`crate::live::Line`]
/// every second.
///
/// # Errors
/// A fatal consumer error (see `Processor::run`).
pub async fn run(
    cfg: &ServiceConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let processor = Processor::new(cfg.processor_config(), SlowDownstream(cfg.downstream()));
    let mut live = crate::live::Live::default();
    let (snapshots, stats) = (processor.snapshots(), processor.stats());
    let printer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let snap = snapshots.borrow().clone();
            println!("{}", live.line(&[(&snap, &stats)], None));
        }
    });
    let result = processor.run(shutdown).await;
    printer.abort();
    Ok(result?)
}
