//! `kafka-lab process`: run the resilient runtime on a topic with a
//! simulated handler (latency, poison and transient failures on demand),
//! printing progress each second and a summary at the end; optionally
//! exposing Prometheus metrics (`resilience::observe::prometheus`: every
//! metric with `# HELP`/`# TYPE`, labelled by group, the two lags by
//! topic and partition).

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant};

use clap::Args;
use consumer_core::{ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::ProducerConfig;
use resilience::{Handler, HandlerError, Ordering, Processor, ProcessorConfig};

use crate::connect::ConnectArgs;

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The topic to process.
    #[arg(short = 't', long)]
    topic: String,
    /// The consumer group (members share the partitions; a new group starts
    /// at the earliest offset).
    #[arg(short = 'G', long)]
    group: String,
    /// per-partition, per-key or unordered.
    #[arg(long, default_value = "per-partition")]
    ordering: String,
    /// Records handled at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Simulated handler time per record, in milliseconds.
    #[arg(long, default_value_t = 0)]
    handler_ms: u64,
    /// Every Nth record is poison (non-retryable): it goes to the DLT.
    #[arg(long)]
    poison_every: Option<u64>,
    /// Every Nth record fails once (retryable), then succeeds.
    #[arg(long)]
    transient_every: Option<u64>,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Serve Prometheus metrics here (GET /metrics), e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Consumer property as key=value (repeatable).
    #[arg(short = 'C', value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
}

struct Simulated {
    delay: Duration,
    poison_every: Option<u64>,
    transient_every: Option<u64>,
    failed_once: std::sync::Mutex<std::collections::HashSet<(i32, i64)>>,
}

impl Handler for Simulated {
    async fn handle(&self, tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        let n = r.offset as u64;
        if self.poison_every.is_some_and(|k| k > 0 && n % k == 0) {
            return Err(HandlerError::NonRetryable(format!("poison at offset {n}")));
        }
        if self.transient_every.is_some_and(|k| k > 0 && n % k == 1)
            && self
                .failed_once
                .lock()
                .expect("lock")
                .insert((tp.partition, r.offset))
        {
            return Err(HandlerError::Retryable(
                "simulated downstream timeout".into(),
            ));
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(())
    }
}

pub async fn run(connect: &ConnectArgs, args: ProcessArgs) -> anyhow::Result<()> {
    if let Some(addr) = &args.metrics_addr {
        let socket = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| anyhow::anyhow!("--metrics-addr: not an address: {addr}"))?;
        resilience::observe::prometheus::install(socket)?;
        eprintln!("metrics: http://{addr}/metrics");
    }
    let admin = kafka_wire::Client::connect(connect.client_config()?).await?;
    crate::exists::require_topic(&admin, &args.topic).await?;
    let (consumer_client, dlt_client) = (connect.client_builder()?, connect.client_builder()?);
    let mut b = ConsumerConfig::builder()
        .client(|_| consumer_client)
        .group_id(&args.group)
        .set("auto.offset.reset", "earliest")?;
    for kv in &args.consumer_properties {
        let (k, v) = crate::connect::key_value("-C", kv)?;
        b = b.set(k, v)?;
    }
    let consumer = b.build()?;
    let dlt = ProducerConfig::builder().client(|_| dlt_client).build()?;
    let ordering = match args.ordering.as_str() {
        "per-partition" => Ordering::PerPartition,
        "per-key" => Ordering::PerKey,
        "unordered" => Ordering::Unordered,
        other => anyhow::bail!("--ordering: per-partition, per-key or unordered, not {other}"),
    };
    let cfg = ProcessorConfig::new(consumer, &[&args.topic])
        .ordering(ordering)
        .concurrency(args.concurrency)
        .dead_letter(dlt);
    let processor = Processor::new(
        cfg,
        Simulated {
            delay: Duration::from_millis(args.handler_ms),
            poison_every: args.poison_every,
            transient_every: args.transient_every,
            failed_once: Default::default(),
        },
    );
    let stats = processor.stats();
    let started = Instant::now();
    let seconds = args.seconds;
    // Graceful either way: stop polling, drain, commit, leave.
    let shutdown = async move {
        let timer = async {
            match seconds {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = timer => {}
            _ = tokio::signal::ctrl_c() => eprintln!("stopping: draining in-flight work, then committing"),
        }
    };
    let progress_stats = stats.clone();
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = &progress_stats;
            eprintln!(
                "[{:>4}s] handled {} · retried {} · dead-lettered {} · commits {} · pauses {}",
                started.elapsed().as_secs(),
                s.handled.load(AtomicOrdering::Relaxed),
                s.retried.load(AtomicOrdering::Relaxed),
                s.dead_lettered.load(AtomicOrdering::Relaxed),
                s.commits.load(AtomicOrdering::Relaxed),
                s.pauses.load(AtomicOrdering::Relaxed),
            );
        }
    });
    let result = processor.run(shutdown).await;
    progress.abort();
    result?;
    println!(
        "processed {} records in {:.1} s: {} handled, {} retried, {} dead-lettered to {}.DLT, {} commits",
        stats.finished(),
        started.elapsed().as_secs_f64(),
        stats.handled.load(AtomicOrdering::Relaxed),
        stats.retried.load(AtomicOrdering::Relaxed),
        stats.dead_lettered.load(AtomicOrdering::Relaxed),
        args.topic,
        stats.commits.load(AtomicOrdering::Relaxed),
    );
    Ok(())
}
