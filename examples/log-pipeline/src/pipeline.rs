//! The whole system in one process, for the demo, the load test and the
//! test: the gateway and N consumer instances (each its own group member,
//! its own PostgreSQL connections and Redis connection). The binary's
//! `gateway` and `consumer` commands run the same parts as separate
//! processes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::Producer;
use resilience::observe::Snapshot;
use resilience::processor::Stats;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aggregates::Aggregates;
use crate::consumer::{self, LogHandler, WORKERS};
use crate::gateway::Gateway;
use crate::store::Store;

/// Where everything lives; one per run in the demo and the test.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bootstrap: String,
    pub pg_url: String,
    pub redis_url: String,
    pub topic: String,
    pub dlq: String,
    pub group: String,
    pub table: String,
    pub redis_prefix: String,
}

impl Settings {
    /// The seed's names with a per-run prefix (`<run>.application-logs`,
    /// `<run>.logs-dlq`, table `logs_<run>`), so runs never mix.
    pub fn for_run(bootstrap: &str, pg_url: &str, redis_url: &str, run: &str) -> Self {
        let ident: String = run
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Self {
            bootstrap: bootstrap.into(),
            pg_url: pg_url.into(),
            redis_url: redis_url.into(),
            topic: format!("{run}.{}", crate::TOPIC),
            dlq: format!("{run}.{}", crate::DLQ),
            group: format!("{run}.{}", crate::GROUP),
            table: format!("logs_{ident}"),
            redis_prefix: format!("logs:{run}"),
        }
    }

    /// Create the topics and the table.
    ///
    /// # Errors
    /// Kafka or PostgreSQL unreachable or refusing.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        crate::ensure_topics(
            &self.bootstrap,
            &[
                (&self.topic, crate::PARTITIONS),
                (&self.dlq, crate::DLQ_PARTITIONS),
            ],
        )
        .await?;
        Store::open(&self.pg_url, &self.table, 1).await?;
        Ok(())
    }

    pub async fn store(&self) -> anyhow::Result<Arc<Store>> {
        Ok(Arc::new(
            Store::open(&self.pg_url, &self.table, WORKERS).await?,
        ))
    }

    pub async fn aggregates(&self) -> anyhow::Result<Arc<Aggregates>> {
        Ok(Arc::new(
            Aggregates::open(&self.redis_url, &self.redis_prefix).await?,
        ))
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Start the gateway on `addr` (port 0: any).
///
/// # Errors
/// Kafka unreachable, or `addr` cannot be bound.
pub async fn start_gateway(s: &Settings, addr: SocketAddr) -> anyhow::Result<RunningGateway> {
    let producer =
        Producer::connect(crate::producer_config(&s.bootstrap, crate::PRODUCER)?).await?;
    let (stop, mut stopped) = watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let gateway = Gateway::new(producer, &s.topic);
    let task = tokio::spawn(gateway.serve(addr, bound_tx, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let addr = bound_rx.await?;
    tracing::info!(%addr, topic = %s.topic, "gateway listening");
    Ok(RunningGateway { addr, stop, task })
}

impl RunningGateway {
    /// Stop accepting, finish the requests in flight.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

/// Running consumer instances.
#[derive(Debug)]
pub struct RunningConsumers {
    pub snapshots: Vec<watch::Receiver<Snapshot>>,
    pub stats: Vec<Arc<Stats>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), resilience::consumer_core::ConsumerError>>>,
}

/// Start `instances` consumer instances in this process.
///
/// # Errors
/// A bad property, PostgreSQL or Redis unreachable.
pub async fn start_consumers(s: &Settings, instances: usize) -> anyhow::Result<RunningConsumers> {
    let (stop, stopped) = watch::channel(false);
    let mut out = RunningConsumers {
        snapshots: Vec::new(),
        stats: Vec::new(),
        stop,
        tasks: Vec::new(),
    };
    for i in 0..instances {
        let consumer = crate::consumer_config(&s.bootstrap, &s.group, crate::CONSUMER)?;
        let dlt = crate::producer_config(&s.bootstrap, crate::PRODUCER)?;
        let cfg = consumer::processor_config(consumer, &s.topic, &s.dlq, dlt)?;
        let handler = LogHandler {
            store: s.store().await?,
            aggregates: s.aggregates().await?,
            instance: format!("consumer-{i}"),
        };
        let processor = consumer::processor(cfg, handler);
        out.snapshots.push(processor.snapshots());
        out.stats.push(processor.stats());
        let mut stopped = stopped.clone();
        out.tasks.push(tokio::spawn(processor.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    Ok(out)
}

impl RunningConsumers {
    /// Partitions assigned across the instances right now.
    pub fn assigned(&self) -> usize {
        self.snapshots
            .iter()
            .map(|s| s.borrow().partitions.len())
            .sum()
    }

    /// Wait until `partitions` are assigned and every instance has some
    /// (the group settled: the first instance to join takes them all, and
    /// gives some up when the others join).
    pub async fn wait_assigned(&self, partitions: usize, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            let each = self
                .snapshots
                .iter()
                .all(|s| !s.borrow().partitions.is_empty());
            if self.assigned() >= partitions && each {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Dead-lettered records, over the instances.
    pub fn dead_lettered(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats
            .iter()
            .map(|s| s.dead_lettered.load(Relaxed))
            .sum()
    }

    /// Quarantines, over the instances.
    pub fn quarantines(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.iter().map(|s| s.quarantines.load(Relaxed)).sum()
    }

    /// Stop every instance (drain, commit, leave the group).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}
