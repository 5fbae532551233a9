//! `cargo xtask bench`: this project's consumer, runtime and producer side
//! by side with librdkafka (rust-rdkafka, in `bench/`, its own workspace),
//! franz-go (Go, `bench/franz/`, built with `go build`) and the Java client
//! (`ConsumerPerformance`, `ProducerPerformance`, and for share groups
//! `ShareConsumerPerformance`, from the broker's `kafka-tools` jar), on
//! one broker, the same pre-produced topics and the
//! same knobs, in the same run.
//!
//! Every measurement is its own process; `wait4` gives its CPU time (user +
//! sys) and peak RSS. Peers alternate (A B C A B C …) for `rounds` rounds;
//! the report gives median, min and max, the ratio to librdkafka from the
//! same round, and the ratio to the best other client in the workload.
//! Output: `target/bench/report.json`, `report.md` and `chart.svg`.
//! `--quick` (small counts, one round) is the CI smoke test: it asserts only
//! that every peer read or wrote every record, on one codec per kind of
//! workload (not the lz4 variants) and two rebalance variants (cooperative,
//! KIP-848).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::broker::{self, Engine, KAFKA_VERSION};
use crate::shell::{self, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Small counts and one round: a smoke test (CI).
    #[arg(long)]
    quick: bool,
    /// Rounds of alternating peers (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Only the workloads whose name contains this (e.g. `rebalance`); the
    /// report goes to `target/bench/only-<this>/`, beside the full one.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Build the peers (release) and stop: no broker, nothing measured.
    /// CI runs it beside `cargo xtask test`, at the lowest CPU priority,
    /// so the measuring run after the tests starts with them built.
    #[arg(long, conflicts_with_all = ["quick", "rounds", "only"])]
    build_only: bool,
}

/// Settings every consumer gets (Kafka's names; librdkafka's where they differ).
const CONSUMER_KNOBS: &[(&str, &str, &str)] = &[
    // (Java / ours, librdkafka, value)
    ("fetch.min.bytes", "fetch.min.bytes", "1"),
    ("fetch.max.bytes", "fetch.max.bytes", "52428800"),
    (
        "max.partition.fetch.bytes",
        "max.partition.fetch.bytes",
        "1048576",
    ),
    ("fetch.max.wait.ms", "fetch.wait.max.ms", "500"),
    // This project always verifies CRC32C (a corrupt batch is never
    // delivered), so every peer checks CRCs here: equal work, equal safety.
    // (librdkafka's default is off; ConsumerPerformance's is off too.)
    ("check.crcs", "check.crcs", "true"),
];

/// librdkafka only: its 2.x default `fetch.queue.backoff.ms=1000` holds
/// fetches back for a second whenever its local queue is "full" enough,
/// which cut its throughput here to a third (446k vs 1.29M records/s).
const RDKAFKA_CONSUMER_EXTRA: &[(&str, &str)] = &[("fetch.queue.backoff.ms", "0")];

/// franz-go's producer only: its buffer limits, equalised with the others.
/// kgo's default `MaxBufferedRecords` (50,000) would make `Produce` block
/// long before ours (`buffer.memory`, 32 MiB ≈ 290k records of 100 B) or
/// librdkafka (`queue.buffering.max.messages=1000000`, as bench-peer sets
/// it) wait. The record cap is librdkafka's; the byte cap is ours and
/// Java's `buffer.memory` (kgo counts key + value bytes). The partitioner is
/// fixed in `bench/franz/main.go`: KIP-480 sticky, as ours.
const FRANZ_PRODUCER_EXTRA: &[(&str, &str)] = &[
    ("max.buffered.records", "1000000"),
    ("max.buffered.bytes", "33554432"),
];

/// Settings every producer gets.
const PRODUCER_KNOBS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
    ("batch.size", "262144"),
];

/// The producer of the latency and rebalance runs: every record on its
/// own (no linger), fully acknowledged.
const STREAM_PRODUCER_KNOBS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "0"),
];

/// Workload 5's fixed rate and workload 6's steady stream, records/s.
const LATENCY_RATE: u64 = 10_000;
const REBALANCE_RATE: u64 = 6_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Peer {
    OursConsume,
    OursRuntimePartition,
    OursRuntimeKey,
    OursProduce,
    RdkafkaConsume,
    RdkafkaProduce,
    JavaConsume,
    JavaProduce,
    OursLatency,
    RdkafkaLatency,
    OursRebalanceCooperative,
    OursRebalanceEager,
    OursRebalanceConsumer,
    OursRebalanceCooperativeFast,
    FranzConsume,
    FranzProduce,
    FranzLatency,
    OursShareConsume,
    JavaShareConsume,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::OursConsume => "ours (consumer-core)",
            Peer::OursRuntimePartition => "ours (runtime, per partition)",
            Peer::OursRuntimeKey => "ours (runtime, per key, 8 workers)",
            Peer::OursProduce => "ours (kafka-wire producer)",
            Peer::RdkafkaConsume => "librdkafka (BaseConsumer)",
            Peer::RdkafkaProduce => "librdkafka (BaseProducer)",
            Peer::JavaConsume => "Java (ConsumerPerformance)",
            Peer::JavaProduce => "Java (ProducerPerformance)",
            Peer::OursLatency => "ours (producer → runtime handler)",
            Peer::RdkafkaLatency => "librdkafka (BaseProducer → BaseConsumer)",
            Peer::OursRebalanceCooperative => "ours (runtime, cooperative-sticky)",
            Peer::OursRebalanceEager => "ours (runtime, eager range)",
            Peer::OursRebalanceConsumer => "ours (runtime, KIP-848 consumer protocol)",
            Peer::OursRebalanceCooperativeFast => {
                "ours (runtime, cooperative-sticky, 500 ms heartbeat)"
            }
            Peer::FranzConsume => "franz-go (kgo, direct partitions)",
            Peer::FranzProduce => "franz-go (kgo)",
            Peer::FranzLatency => "franz-go (kgo producer → consumer)",
            Peer::OursShareConsume => "ours (ShareConsumer, share group)",
            Peer::JavaShareConsume => "Java (ShareConsumerPerformance, share group)",
        }
    }

    /// This project's own peers (never the "best peer" of a workload).
    fn is_ours(self) -> bool {
        self.name().starts_with("ours ")
    }

    /// Run by `target/bench/franz-peer` (Go).
    fn is_franz(self) -> bool {
        matches!(
            self,
            Peer::FranzConsume | Peer::FranzProduce | Peer::FranzLatency
        )
    }

    fn is_reference(self) -> bool {
        matches!(
            self,
            Peer::RdkafkaConsume | Peer::RdkafkaProduce | Peer::RdkafkaLatency
        )
    }
}

/// What a workload measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Read a pre-produced topic: records/s, CPU, RSS.
    Consume,
    /// Write `count` records: records/s, CPU, RSS.
    Produce,
    /// Produce → handler latency at a fixed rate (workload 5).
    Latency,
    /// Processing gap on unmoved partitions when a member joins (workload 6).
    Rebalance,
}

struct Workload {
    name: &'static str,
    topic: String,
    kind: Kind,
    count: u64,
    size: usize,
    compression: &'static str,
    peers: Vec<Peer>,
}

/// One measured process.
#[derive(Debug, Clone)]
struct Run {
    round: usize,
    peer: Peer,
    records: u64,
    secs: f64,
    cpu_secs: f64,
    max_rss_kb: u64,
    broker_cpu_secs: f64,
    /// `LATENCY …` or `REBALANCE …` figures, by name.
    figures: Vec<(String, f64)>,
}

impl Run {
    fn figure(&self, name: &str) -> f64 {
        self.figures
            .iter()
            .find(|(k, _)| k == name)
            .map_or(f64::NAN, |(_, v)| *v)
    }

    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs.max(1e-9)
    }
    fn cpu_per_million(&self) -> f64 {
        self.cpu_secs / (self.records.max(1) as f64 / 1e6)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.build_only {
        build_peers()?;
        return build_franz(&franz_bin());
    }
    eprintln!("==> broker");
    let b = broker::up(Engine::Kafka, KAFKA_VERSION)?;
    let result = measure_all(&args, &b);
    if b.started_now {
        // Stop what we started, even when a measurement failed.
        let _ = broker::down(KAFKA_VERSION);
    }
    result
}

fn measure_all(args: &Args, b: &broker::RunningBroker) -> anyhow::Result<()> {
    let started = Instant::now();
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let (big, small) = if args.quick {
        (20_000, 5_000)
    } else {
        (5_000_000, 1_000_000)
    };
    let out = match &args.only {
        Some(only) => workspace_root().join("target/bench").join(format!(
            "only-{}",
            only.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        )),
        None => workspace_root().join("target/bench"),
    };
    fs::create_dir_all(&out)?;

    let bootstrap = b.bootstrap().to_string();
    let broker_pid = b.pid;

    let peer_bin = build_peers()?;
    let franz_bin = franz_bin();

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let topic = |what: &str| format!("bench-{what}-{stamp}");
    use Peer::*;
    // Other clients at the same positions in every workload, so the
    // chart's colours (by position) mean the same client throughout.
    let consumers = vec![
        OursConsume,
        RdkafkaConsume,
        JavaConsume,
        FranzConsume,
        OursRuntimePartition,
        OursRuntimeKey,
    ];
    let producers = vec![OursProduce, RdkafkaProduce, JavaProduce, FranzProduce];
    let workloads = vec![
        Workload {
            name: "consume 100 B, uncompressed",
            topic: topic("100b-none"),
            kind: Kind::Consume,
            count: big,
            size: 100,
            compression: "none",
            peers: consumers.clone(),
        },
        Workload {
            name: "consume 100 B, lz4",
            topic: topic("100b-lz4"),
            kind: Kind::Consume,
            count: big,
            size: 100,
            compression: "lz4",
            peers: consumers.clone(),
        },
        Workload {
            name: "consume 1 KiB, zstd",
            topic: topic("1k-zstd"),
            kind: Kind::Consume,
            count: small,
            size: 1024,
            compression: "zstd",
            peers: vec![OursConsume, RdkafkaConsume, JavaConsume, FranzConsume],
        },
        // KIP-932: the same kind of read in a share group (each record
        // acquired, then ACCEPTed at the next poll), beside a consumer
        // group's; on Kafka 4.2+ with share groups on.
        Workload {
            name: "share-group consume 100 B, uncompressed",
            topic: topic("share-100b-none"),
            kind: Kind::Consume,
            count: small,
            size: 100,
            compression: "none",
            peers: vec![OursConsume, OursShareConsume, JavaConsume, JavaShareConsume],
        },
        Workload {
            name: "produce 100 B, uncompressed",
            topic: topic("produce-none"),
            kind: Kind::Produce,
            count: big,
            size: 100,
            compression: "none",
            peers: producers.clone(),
        },
        Workload {
            name: "produce 100 B, lz4",
            topic: topic("produce-lz4"),
            kind: Kind::Produce,
            count: big,
            size: 100,
            compression: "lz4",
            peers: producers,
        },
        Workload {
            name: "latency at 10k records/s",
            topic: topic("latency"),
            kind: Kind::Latency,
            count: LATENCY_RATE * if args.quick { 2 } else { 30 },
            size: 100,
            compression: "none",
            peers: vec![OursLatency, RdkafkaLatency, FranzLatency],
        },
        Workload {
            name: "rebalance: a 4th member joins",
            topic: topic("rebalance"),
            kind: Kind::Rebalance,
            count: 0,
            size: 100,
            compression: "none",
            peers: vec![
                OursRebalanceCooperative,
                OursRebalanceEager,
                OursRebalanceConsumer,
                OursRebalanceCooperativeFast,
            ],
        },
    ];
    let workloads: Vec<Workload> = workloads
        .into_iter()
        .filter(|w| {
            args.only
                .as_ref()
                .is_none_or(|o| w.name.contains(o.as_str()))
        })
        .collect();
    // The smoke test proves that every peer reads or writes every record
    // and that each kind of workload runs. A second codec of the same kind
    // and four rebalance variants add minutes, not coverage (our codecs
    // are tested against the Java client in the test suite): CI's budget.
    let workloads: Vec<Workload> = if args.quick && args.only.is_none() {
        workloads
            .into_iter()
            .filter(|w| !w.name.ends_with(", lz4"))
            .map(|mut w| {
                if w.kind == Kind::Rebalance {
                    w.peers
                        .retain(|p| matches!(p, OursRebalanceCooperative | OursRebalanceConsumer));
                }
                // The consumer-group peers ran in the consume workload.
                if w.name.starts_with("share-group") {
                    w.peers
                        .retain(|p| matches!(p, OursShareConsume | JavaShareConsume));
                }
                w
            })
            .collect()
    } else {
        workloads
    };
    if workloads.is_empty() {
        bail!(
            "--only {:?} matches no workload",
            args.only.as_deref().unwrap_or_default()
        );
    }

    if workloads
        .iter()
        .any(|w| w.peers.iter().any(|p| p.is_franz()))
    {
        build_franz(&franz_bin)?;
    }
    let bins = Bins {
        peer: peer_bin.clone(),
        franz: franz_bin,
    };

    eprintln!("==> topics (12 partitions) and data, produced once (not timed)");
    for w in &workloads {
        let status = Command::new(&peer_bin)
            .args(["create-topic", &bootstrap, &w.topic, "12"])
            .status()?;
        if !status.success() {
            bail!("could not create {}", w.topic);
        }
        if w.kind == Kind::Consume {
            let t = Instant::now();
            let mut cmd = Command::new(&peer_bin);
            cmd.args(["ours-produce", &bootstrap, &w.topic, &w.count.to_string()])
                .arg(format!("size={}", w.size))
                .arg(format!("compression.type={}", w.compression))
                .args(PRODUCER_KNOBS.iter().map(|(k, v)| format!("{k}={v}")));
            measure(&mut cmd, None).with_context(|| format!("producing {}", w.topic))?;
            eprintln!(
                "    {}: {} records in {:.1} s",
                w.topic,
                w.count,
                t.elapsed().as_secs_f64()
            );
        }
    }

    let java_config = out.join("java-consumer.properties");
    fs::write(
        &java_config,
        CONSUMER_KNOBS
            .iter()
            .map(|(k, _, v)| format!("{k}={v}\n"))
            .collect::<String>(),
    )?;

    let mut results: Vec<(&Workload, Vec<Run>)> = Vec::new();
    for w in &workloads {
        let mut runs = Vec::new();
        for round in 1..=rounds {
            for &peer in &w.peers {
                eprint!(
                    "==> {} | round {round}/{rounds} | {} … ",
                    w.name,
                    peer.name()
                );
                settle_disk();
                let mut cmd = command(peer, w, &bins, &bootstrap, &java_config);
                let broker_before = broker_pid.and_then(process_cpu_secs);
                let m = measure(&mut cmd, Some(peer))
                    .with_context(|| format!("{} on {}", peer.name(), w.name))?;
                let broker_cpu = match (broker_before, broker_pid.and_then(process_cpu_secs)) {
                    (Some(a), Some(b)) => b - a,
                    _ => 0.0,
                };
                if w.kind != Kind::Rebalance && m.records != w.count {
                    bail!(
                        "{} on {}: {} of {} records",
                        peer.name(),
                        w.name,
                        m.records,
                        w.count
                    );
                }
                let run = Run {
                    round,
                    peer,
                    records: m.records,
                    secs: m.secs,
                    cpu_secs: m.cpu_secs,
                    max_rss_kb: m.max_rss_kb,
                    broker_cpu_secs: broker_cpu,
                    figures: m.figures,
                };
                match w.kind {
                    Kind::Consume | Kind::Produce => eprintln!(
                        "{:.0} records/s, {:.2} CPU s per M records",
                        run.records_per_sec(),
                        run.cpu_per_million()
                    ),
                    Kind::Latency => eprintln!(
                        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                        run.figure("p50_us") / 1e3,
                        run.figure("p99_us") / 1e3,
                        run.figure("max_us") / 1e3
                    ),
                    Kind::Rebalance => eprintln!(
                        "longest gap {:.0} ms on {} unmoved partitions ({:.0} ms on {} moved)",
                        run.figure("unmoved_max_gap_ms"),
                        run.figure("unmoved"),
                        run.figure("moved_max_gap_ms"),
                        run.figure("moved")
                    ),
                }
                runs.push(run);
            }
        }
        results.push((w, runs));
    }

    let md = markdown(&results, rounds, args.quick);
    fs::write(out.join("report.md"), &md)?;
    fs::write(out.join("report.json"), json(&results))?;
    let throughput: Vec<(&Workload, Vec<Run>)> = results
        .iter()
        .filter(|(w, _)| matches!(w.kind, Kind::Consume | Kind::Produce))
        .cloned()
        .collect();
    if !throughput.is_empty() {
        fs::write(out.join("chart.svg"), chart(&throughput))?;
    }
    println!("{md}");
    println!(
        "bench: {} workloads × {rounds} round(s), every peer read or wrote every record, in {:.0} s; wrote {}/report.md, report.json, chart.svg",
        results.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// The Go toolchain: `go` on PATH, else Go's default install directory.
fn go() -> anyhow::Result<PathBuf> {
    if shell::available("go", "version") {
        return Ok(PathBuf::from("go"));
    }
    let fallback = PathBuf::from("/usr/local/go/bin/go");
    if fallback.is_file() {
        return Ok(fallback);
    }
    bail!(
        "the franz-go peer needs Go 1.26 or newer: `go` is not on PATH and {} does not exist (install it from https://go.dev/dl/, or leave franz-go out with --only)",
        fallback.display()
    )
}

/// `cargo build --release` of `bench/` (ours and librdkafka, in its own
/// workspace and target directory): the `bench-peer` executable's path.
fn build_peers() -> anyhow::Result<PathBuf> {
    eprintln!("==> building the peers (release; librdkafka's first build takes a few minutes)");
    shell::run(shell::cargo().args([
        "build",
        "--release",
        "--quiet",
        "--manifest-path",
        "bench/Cargo.toml",
    ]))?;
    Ok(workspace_root().join("bench/target/release/bench-peer"))
}

/// Where [`build_franz`] puts the franz-go peer.
fn franz_bin() -> PathBuf {
    workspace_root().join("target/bench/franz-peer")
}

/// `go build` the franz-go peer (`bench/franz/`) into `bin`. The module
/// versions are pinned by the committed go.mod and go.sum (`-mod=readonly`
/// refuses to change them), so every machine builds the same peer.
fn build_franz(bin: &Path) -> anyhow::Result<()> {
    eprintln!("==> building franz-go peer (Go, first build downloads modules)");
    if let Some(dir) = bin.parent() {
        fs::create_dir_all(dir)?;
    }
    shell::run(
        Command::new(go()?)
            .args([
                "build",
                "-mod=readonly",
                "-trimpath",
                "-buildvcs=false",
                "-o",
            ])
            .arg(bin)
            .arg(".")
            .current_dir(workspace_root().join("bench/franz")),
    )
}

/// The peers' executables.
struct Bins {
    /// `bench-peer` (Rust: ours and librdkafka).
    peer: PathBuf,
    /// `franz-peer` (Go: franz-go).
    franz: PathBuf,
}

fn command(peer: Peer, w: &Workload, bins: &Bins, bootstrap: &str, java_cfg: &Path) -> Command {
    let count = w.count.to_string();
    let bench_peer = |role: &str| {
        let bin = if peer.is_franz() {
            &bins.franz
        } else {
            &bins.peer
        };
        let mut c = Command::new(bin);
        c.args([role, bootstrap, &w.topic, &count]);
        c
    };
    let consumer_knobs = |c: &mut Command, librdkafka: bool| {
        for (java, rd, v) in CONSUMER_KNOBS {
            c.arg(format!("{}={v}", if librdkafka { rd } else { java }));
        }
    };
    let producer_knobs = |c: &mut Command| {
        c.arg(format!("size={}", w.size))
            .arg(format!("compression.type={}", w.compression))
            .args(PRODUCER_KNOBS.iter().map(|(k, v)| format!("{k}={v}")));
    };
    let stream_producer = |c: &mut Command, rate: u64| {
        c.arg(format!("rate={rate}")).args(
            STREAM_PRODUCER_KNOBS
                .iter()
                .map(|(k, v)| format!("producer.{k}={v}")),
        );
    };
    match peer {
        Peer::FranzConsume => {
            let mut c = bench_peer("franz-consume");
            consumer_knobs(&mut c, false);
            c
        }
        Peer::FranzProduce => {
            let mut c = bench_peer("franz-produce");
            producer_knobs(&mut c);
            c.args(FRANZ_PRODUCER_EXTRA.iter().map(|(k, v)| format!("{k}={v}")));
            c
        }
        Peer::FranzLatency => {
            let mut c = bench_peer("franz-latency");
            consumer_knobs(&mut c, false);
            stream_producer(&mut c, LATENCY_RATE);
            c
        }
        Peer::OursLatency | Peer::RdkafkaLatency => {
            let rd = peer == Peer::RdkafkaLatency;
            let mut c = bench_peer(if rd {
                "rdkafka-latency"
            } else {
                "ours-latency"
            });
            consumer_knobs(&mut c, rd);
            stream_producer(&mut c, LATENCY_RATE);
            c
        }
        Peer::OursRebalanceCooperative
        | Peer::OursRebalanceEager
        | Peer::OursRebalanceConsumer
        | Peer::OursRebalanceCooperativeFast => {
            let mut c = bench_peer("ours-rebalance");
            consumer_knobs(&mut c, false);
            stream_producer(&mut c, REBALANCE_RATE);
            c.args(match peer {
                Peer::OursRebalanceCooperative => {
                    &["partition.assignment.strategy=cooperative-sticky"][..]
                }
                Peer::OursRebalanceEager => &["partition.assignment.strategy=range"],
                // The heartbeat the harness broker gives KIP-848 members.
                Peer::OursRebalanceCooperativeFast => &[
                    "partition.assignment.strategy=cooperative-sticky",
                    "heartbeat.interval.ms=500",
                    "session.timeout.ms=6000",
                ],
                // The broker assigns (its default assignor, uniform).
                _ => &["group.protocol=consumer"],
            });
            c
        }
        Peer::OursConsume | Peer::OursRuntimePartition | Peer::OursRuntimeKey => {
            let role = match peer {
                Peer::OursConsume => "ours-consume",
                Peer::OursRuntimePartition => "ours-runtime-partition",
                _ => "ours-runtime-key",
            };
            let mut c = bench_peer(role);
            consumer_knobs(&mut c, false);
            c
        }
        Peer::RdkafkaConsume => {
            let mut c = bench_peer("rdkafka-consume");
            consumer_knobs(&mut c, true);
            c.args(
                RDKAFKA_CONSUMER_EXTRA
                    .iter()
                    .map(|(k, v)| format!("{k}={v}")),
            );
            c
        }
        Peer::OursProduce | Peer::RdkafkaProduce => {
            let mut c = bench_peer(if peer == Peer::OursProduce {
                "ours-produce"
            } else {
                "rdkafka-produce"
            });
            producer_knobs(&mut c);
            c
        }
        Peer::JavaConsume => {
            let mut c = broker::java_with_kafka(KAFKA_VERSION);
            c.args([
                "org.apache.kafka.tools.ConsumerPerformance",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                &w.topic,
                "--num-records",
                &count,
                "--timeout",
                "120000",
                "--group",
            ])
            .arg(format!(
                "bench-java-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ))
            .arg("--command-config")
            .arg(java_cfg);
            c
        }
        Peer::OursShareConsume => {
            let mut c = bench_peer("ours-share-consume");
            consumer_knobs(&mut c, false);
            c
        }
        Peer::JavaShareConsume => {
            // A fresh share group, made to start at the earliest offset
            // (`share-group-earliest`, a few ms, counted in the CPU time),
            // then the JVM in its place (`exec`: the measured process).
            let group = format!(
                "bench-java-share-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            let java = broker::java_with_kafka(KAFKA_VERSION);
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"p="$1"; b="$2"; g="$3"; shift 3; "$p" share-group-earliest "$b" "$g" 0 && exec "$@""#)
                .arg("sh")
                .arg(&bins.peer)
                .arg(bootstrap)
                .arg(&group)
                .arg(java.get_program())
                .args(java.get_args())
                .args([
                    "org.apache.kafka.tools.ShareConsumerPerformance",
                    "--bootstrap-server",
                    bootstrap,
                    "--topic",
                    &w.topic,
                    "--num-records",
                    &count,
                    "--timeout",
                    "120000",
                    "--group",
                    &group,
                    "--command-config",
                ])
                .arg(java_cfg);
            c
        }
        Peer::JavaProduce => {
            let mut c = broker::java_with_kafka(KAFKA_VERSION);
            c.args([
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic",
                &w.topic,
                "--num-records",
                &count,
                "--record-size",
                &w.size.to_string(),
                "--throughput",
                "-1",
                "--producer-props",
            ])
            .arg(format!("bootstrap.servers={bootstrap}"))
            .arg(format!("compression.type={}", w.compression))
            .args(PRODUCER_KNOBS.iter().map(|(k, v)| format!("{k}={v}")));
            c
        }
    }
}

/// What one process reported and used.
struct Measured {
    records: u64,
    secs: f64,
    cpu_secs: f64,
    max_rss_kb: u64,
    figures: Vec<(String, f64)>,
}

/// Run `cmd` to completion; its own figures (from its output), its CPU
/// time (the growth of our reaped children's CPU time in /proc/self/stat)
/// and its peak RSS (VmHWM, sampled every 20 ms while it runs).
/// `peer` None: a bench-peer setup step.
fn measure(cmd: &mut Command, peer: Option<Peer>) -> anyhow::Result<Measured> {
    let children_cpu_before = children_cpu_secs()?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start the peer")?;
    let pid = child.id();
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped")));
    let err = read_all(Box::new(child.stderr.take().expect("piped")));
    let mut max_rss_kb = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        max_rss_kb = max_rss_kb.max(peak_rss_kb(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu_secs = children_cpu_secs()? - children_cpu_before;
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        bail!("exited with {status}:\n{stdout}\n{stderr}");
    }
    let (records, secs) = match peer {
        Some(Peer::JavaConsume | Peer::JavaShareConsume) => parse_consumer_performance(&stdout)?,
        Some(Peer::JavaProduce) => parse_producer_performance(&stdout)?,
        _ => parse_result_line(&stdout)?,
    };
    Ok(Measured {
        records,
        secs,
        cpu_secs,
        max_rss_kb,
        figures: parse_figures(&stdout),
    })
}

/// Clock ticks per second in /proc (USER_HZ: 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Fields of /proc/<pid>/stat after the command name (index 0 = state).
fn stat_fields(pid: &str) -> Option<Vec<f64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(
        after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect(),
    )
}

/// Write out the page cache's dirty pages (`sync`) before a run, so no
/// run pays for the disk writes of the one before: the produce workloads
/// leave gigabytes the kernel writes back later, and a broker appending
/// while the kernel throttles writers (`vm.dirty_ratio`) acknowledges late.
fn settle_disk() {
    // Best effort: a machine without `sync` runs without it.
    let _ = Command::new("sync").status();
}

/// user + sys CPU seconds of our reaped children so far (cutime + cstime).
fn children_cpu_secs() -> anyhow::Result<f64> {
    let f = stat_fields("self").context("reading /proc/self/stat")?;
    Ok((f.get(13).copied().unwrap_or(0.0) + f.get(14).copied().unwrap_or(0.0)) / USER_HZ)
}

/// user + sys CPU seconds of a process so far (utime + stime).
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let f = stat_fields(&pid.to_string())?;
    Some((f.get(11)? + f.get(12)?) / USER_HZ)
}

/// A process's peak resident set so far (VmHWM), in KiB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `RESULT records=<n> bytes=<n> secs=<f>` from bench-peer.
fn parse_result_line(out: &str) -> anyhow::Result<(u64, f64)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("RESULT "))
        .with_context(|| format!("no RESULT line in:\n{out}"))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .with_context(|| format!("no {k} in {line}"))
    };
    Ok((field("records")?.parse()?, field("secs")?.parse()?))
}

/// The `key=number` pairs of a `LATENCY …` or `REBALANCE …` line.
fn parse_figures(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .filter(|l| l.starts_with("LATENCY ") || l.starts_with("REBALANCE "))
        .flat_map(|l| l.split_whitespace().skip(1))
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            // `records` is already a field of the run.
            (k != "records").then(|| Some((k.to_string(), v.parse().ok()?)))?
        })
        .collect()
}

/// ConsumerPerformance prints a CSV header and one data line:
/// `start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
/// nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec`.
/// Records and fetch time (which excludes the group join).
fn parse_consumer_performance(out: &str) -> anyhow::Result<(u64, f64)> {
    let mut lines = out.lines().filter(|l| l.contains(','));
    let header: Vec<&str> = lines
        .find(|l| l.contains("nMsg"))
        .with_context(|| format!("no ConsumerPerformance header in:\n{out}"))?
        .split(',')
        .map(str::trim)
        .collect();
    // The data line has as many fields as the header (log lines may come between).
    let data: Vec<&str> = lines
        .map(|l| l.split(',').map(str::trim).collect::<Vec<_>>())
        .find(|fields| fields.len() == header.len())
        .with_context(|| format!("no ConsumerPerformance data line in:\n{out}"))?;
    let col = |name: &str| -> anyhow::Result<f64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no column {name}"))?;
        Ok(data.get(i).context("short data line")?.parse()?)
    };
    Ok((
        col("data.consumed.in.nMsg")? as u64,
        col("fetch.time.ms")? / 1000.0,
    ))
}

/// ProducerPerformance ends with `N records sent, X records/sec (…)`.
fn parse_producer_performance(out: &str) -> anyhow::Result<(u64, f64)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.contains("records sent,"))
        .with_context(|| format!("no ProducerPerformance summary in:\n{out}"))?;
    let mut words = line.split_whitespace();
    let n: u64 = words.next().context("count")?.parse()?;
    let rate: f64 = line
        .split("records sent,")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("rate")?
        .parse()?;
    Ok((n, n as f64 / rate.max(1e-9)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Per peer: (median, min, max) of a figure over its runs.
fn spread(runs: &[Run], peer: Peer, f: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
    let v: Vec<f64> = runs.iter().filter(|r| r.peer == peer).map(f).collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (median(v), min, max)
}

/// The other client (not ours) with the best median of a figure in a
/// workload: the highest if `higher_is_better`, else the lowest.
fn best_peer(
    w: &Workload,
    runs: &[Run],
    f: impl Fn(&Run) -> f64,
    higher_is_better: bool,
) -> Option<(Peer, f64)> {
    w.peers
        .iter()
        .filter(|p| !p.is_ours())
        .map(|&p| (p, spread(runs, p, &f).0))
        .filter(|(_, m)| m.is_finite() && *m > 0.0)
        .max_by(|a, b| {
            let o = a.1.total_cmp(&b.1);
            if higher_is_better {
                o
            } else {
                o.reverse()
            }
        })
}

/// Median over rounds of (peer's figure / librdkafka's figure in the same round).
fn ratio(runs: &[Run], peer: Peer, f: impl Fn(&Run) -> f64) -> Option<f64> {
    let reference = runs.iter().find(|r| r.peer.is_reference())?.peer;
    let v: Vec<f64> = runs
        .iter()
        .filter(|r| r.peer == peer)
        .filter_map(|r| {
            let base = runs
                .iter()
                .find(|b| b.peer == reference && b.round == r.round)?;
            Some(f(r) / f(base).max(1e-12))
        })
        .collect();
    (!v.is_empty()).then(|| median(v))
}

fn markdown(results: &[(&Workload, Vec<Run>)], rounds: usize, quick: bool) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmark report{}\n\n{} round(s), peers alternating; median (min–max). \"vs librdkafka\" is the median over rounds of the ratio to librdkafka in the same round; \"vs best\" is the ratio of medians to the best other client in the workload (ours excluded: the highest records/s, the lowest CPU s per M records), named under each table. CPU is the client process's user + sys time (whole process: start-up and group join included; for Java, JVM start-up and JIT too); throughput runs from the first record to the last. Broker CPU is the broker's user + sys time during the run. Each run starts after a `sync`, so none pays for the disk writes of the run before.\n",
        if quick { " (--quick smoke test: small counts, not for comparison)" } else { "" },
        rounds
    );
    let consumer: Vec<(&str, &str)> = CONSUMER_KNOBS.iter().map(|(k, _, v)| (*k, *v)).collect();
    let _ = writeln!(md, "Consumer settings: {}  ", settings(&consumer));
    let _ = writeln!(
        md,
        "librdkafka consumer only: {}  ",
        settings(RDKAFKA_CONSUMER_EXTRA)
    );
    let _ = writeln!(
        md,
        "franz-go consumer: no group (`ConsumeTopics` without `ConsumerGroup`, every partition from the start; the others join a fresh group, whose join is outside the clock); its clock starts when the client is created, because kgo fetches in the background before the first poll returns (a few ms of metadata and first fetch that the other clocks leave out); CRC32C is always checked (kgo's default)  "
    );
    let _ = writeln!(md, "Producer settings: {}  ", settings(PRODUCER_KNOBS));
    let _ = writeln!(
        md,
        "franz-go producer only: {}, `RecordPartitioner(StickyPartitioner())` (KIP-480, as ours; librdkafka sticks for `sticky.partitioning.linger.ms=10`, Java uses KIP-794's uniform sticky); librdkafka producer only: `queue.buffering.max.messages=1000000`  ",
        settings(FRANZ_PRODUCER_EXTRA)
    );
    let _ = writeln!(
        md,
        "Latency and rebalance producers: {}; latency at {LATENCY_RATE} records/s, measured from each record's scheduled send time to its handler call (after 1 s of warm-up); rebalance stream at {REBALANCE_RATE} records/s round-robin over the partitions\n",
        settings(STREAM_PRODUCER_KNOBS)
    );
    for (w, runs) in results {
        match w.kind {
            Kind::Latency => latency_table(&mut md, w, runs),
            Kind::Rebalance => rebalance_table(&mut md, w, runs),
            Kind::Consume | Kind::Produce => throughput_table(&mut md, w, runs),
        }
    }
    md
}

fn throughput_table(md: &mut String, w: &Workload, runs: &[Run]) {
    let _ = writeln!(
        md,
        "## {} ({} records × {} B, 12 partitions)\n\n| peer | records/s | MB/s | CPU s per M records | peak RSS MB | broker CPU s per M | records/s vs librdkafka | records/s vs best | CPU vs librdkafka | CPU vs best |\n|---|---|---|---|---|---|---|---|---|---|",
        w.name, w.count, w.size
    );
    let best_rps = best_peer(w, runs, Run::records_per_sec, true);
    let best_cpu = best_peer(w, runs, Run::cpu_per_million, false);
    let vs_best = |x: f64, best: Option<(Peer, f64)>| best.map(|(_, b)| x / b);
    for &peer in &w.peers {
        let (rps, rmin, rmax) = spread(runs, peer, Run::records_per_sec);
        let (cpu, cmin, cmax) = spread(runs, peer, Run::cpu_per_million);
        let (rss, _, _) = spread(runs, peer, |r| r.max_rss_kb as f64 / 1024.0);
        let (bcpu, _, _) = spread(runs, peer, |r| {
            r.broker_cpu_secs / (r.records.max(1) as f64 / 1e6)
        });
        let fmt_ratio = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.2} ({:.2}–{:.2}) | {:.0} | {:.2} | {} | {} | {} | {} |",
            peer.name(),
            rps,
            rmin,
            rmax,
            rps * w.size as f64 / 1e6,
            cpu,
            cmin,
            cmax,
            rss,
            bcpu,
            fmt_ratio(ratio(runs, peer, Run::records_per_sec)),
            fmt_ratio(vs_best(rps, best_rps)),
            fmt_ratio(ratio(runs, peer, Run::cpu_per_million)),
            fmt_ratio(vs_best(cpu, best_cpu)),
        );
    }
    let name = |b: Option<(Peer, f64)>| b.map_or("–", |(p, _)| p.name());
    let _ = writeln!(
        md,
        "\nBest other client: records/s {}; CPU {}.\n",
        name(best_rps),
        name(best_cpu)
    );
}

/// `median (min–max)` of a figure, scaled.
fn figure_spread(runs: &[Run], peer: Peer, name: &str, scale: f64) -> String {
    let (m, lo, hi) = spread(runs, peer, |r| r.figure(name) * scale);
    if m.is_nan() {
        return "–".into(); // this peer does not report it
    }
    format!("{m:.1} ({lo:.1}–{hi:.1})")
}

fn latency_table(md: &mut String, w: &Workload, runs: &[Run]) {
    let _ = writeln!(
        md,
        "## {} ({} measured records × {} B, 12 partitions)\n\n| peer | p50 ms | p99 ms | max ms | of which produce → ack, p50 / p99 ms | CPU s per M records | peak RSS MB |\n|---|---|---|---|---|---|---|",
        w.name, w.count, w.size
    );
    for &peer in &w.peers {
        let (cpu, _, _) = spread(runs, peer, Run::cpu_per_million);
        let (rss, _, _) = spread(runs, peer, |r| r.max_rss_kb as f64 / 1024.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} | {cpu:.2} | {rss:.0} |",
            peer.name(),
            figure_spread(runs, peer, "p50_us", 1e-3),
            figure_spread(runs, peer, "p99_us", 1e-3),
            figure_spread(runs, peer, "max_us", 1e-3),
            figure_spread(runs, peer, "ack_p50_us", 1e-3),
            figure_spread(runs, peer, "ack_p99_us", 1e-3),
        );
    }
    let _ = writeln!(
        md,
        "\nCPU covers the whole process: producer and consumer.\n"
    );
}

fn rebalance_table(md: &mut String, w: &Workload, runs: &[Run]) {
    let _ = writeln!(
        md,
        "## {} (3 members, then 4; 12 partitions)\n\n| peer | partitions kept | longest gap on kept partitions, ms | partitions moved | longest gap on moved ones, ms | longest gap before the join (noise floor), ms |\n|---|---|---|---|---|---|",
        w.name
    );
    for &peer in &w.peers {
        let (kept, _, _) = spread(runs, peer, |r| r.figure("unmoved"));
        let (moved, _, _) = spread(runs, peer, |r| r.figure("moved"));
        let _ = writeln!(
            md,
            "| {} | {kept:.0} | {} | {moved:.0} | {} | {} |",
            peer.name(),
            figure_spread(runs, peer, "unmoved_max_gap_ms", 1.0),
            figure_spread(runs, peer, "moved_max_gap_ms", 1.0),
            figure_spread(runs, peer, "quiet_max_gap_ms", 1.0),
        );
    }
    let _ = writeln!(
        md,
        "\nA kept partition has the same owner before the join and at the end. Its gap runs from its last record handled before the join; records arrive every {:.0} ms per partition. The noise floor is the same measure over the 2 s of steady consumption before the join. Members start 1.37 s apart, but every member's heartbeat timer restarts when a rebalance completes, so all of them hear of the next one on the same heartbeat. Heartbeat intervals differ by protocol: the classic members use the client default (`heartbeat.interval.ms=3000`); under KIP-848 the broker sets it (`group.consumer.heartbeat.interval.ms`, 500 ms in the harness broker, 5 s by Kafka's default), so KIP-848's figures here are for a 500 ms interval; the last peer is cooperative-sticky at that interval.\n",
        12e3 / REBALANCE_RATE as f64
    );
}

/// `` `k=v`, `k=v` `` for the report.
fn settings(knobs: &[(&str, &str)]) -> String {
    knobs
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json(results: &[(&Workload, Vec<Run>)]) -> String {
    let mut s = String::from("{\n  \"workloads\": [\n");
    for (i, (w, runs)) in results.iter().enumerate() {
        let _ = writeln!(
            s,
            "    {{\"name\": \"{}\", \"records\": {}, \"record_bytes\": {}, \"compression\": \"{}\", \"runs\": [",
            w.name, w.count, w.size, w.compression
        );
        for (j, r) in runs.iter().enumerate() {
            let _ = writeln!(
                s,
                "      {{\"round\": {}, \"peer\": \"{}\", \"records\": {}, \"secs\": {:.6}, \"records_per_sec\": {:.1}, \"cpu_secs\": {:.4}, \"cpu_secs_per_million\": {:.4}, \"max_rss_kb\": {}, \"broker_cpu_secs\": {:.4}{}}}{}",
                r.round,
                r.peer.name(),
                r.records,
                r.secs,
                r.records_per_sec(),
                r.cpu_secs,
                r.cpu_per_million(),
                r.max_rss_kb,
                r.broker_cpu_secs,
                r.figures
                    .iter()
                    .map(|(k, v)| format!(", \"{k}\": {v}"))
                    .collect::<String>(),
                if j + 1 < runs.len() { "," } else { "" }
            );
        }
        let _ = writeln!(s, "    ]}}{}", if i + 1 < results.len() { "," } else { "" });
    }
    s.push_str("  ]\n}\n");
    s
}

/// Two bar charts (records/s, CPU s per M records), one group per workload.
fn chart(results: &[(&Workload, Vec<Run>)]) -> String {
    const W: f64 = 1000.0;
    const PANEL: f64 = 300.0;
    let colors = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    ];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * PANEL + 140.0
    );
    type Figure = fn(&Run) -> f64;
    let panels: [(&str, Figure); 2] = [
        ("records/s (median)", Run::records_per_sec),
        ("CPU s per million records (median)", Run::cpu_per_million),
    ];
    for (pi, (title, f)) in panels.iter().enumerate() {
        let top = 20.0 + pi as f64 * (PANEL + 50.0);
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{top}\" font-size=\"14\">{title}</text>"
        );
        let max = results
            .iter()
            .flat_map(|(w, runs)| w.peers.iter().map(|&p| spread(runs, p, f).0))
            .fold(0.0, f64::max)
            .max(1e-9);
        let group_w = (W - 40.0) / results.len() as f64;
        for (gi, (w, runs)) in results.iter().enumerate() {
            let x0 = 20.0 + gi as f64 * group_w;
            let bar_w = (group_w - 20.0) / w.peers.len() as f64;
            for (bi, &peer) in w.peers.iter().enumerate() {
                let v = spread(runs, peer, f).0;
                let h = v / max * (PANEL - 60.0);
                let x = x0 + bi as f64 * bar_w;
                let y = top + PANEL - 30.0 - h;
                let color = colors[bi % colors.len()];
                let _ = writeln!(svg, "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{}: {v:.2}</title></rect>", bar_w - 2.0, peer.name());
                let _ = writeln!(svg, "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>", x + bar_w / 2.0, y - 3.0, short(v));
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x0 + (group_w - 20.0) / 2.0,
                top + PANEL - 14.0,
                w.name
            );
        }
    }
    // Legend: peers by position within a workload.
    let mut y = 2.0 * PANEL + 90.0;
    let names: Vec<Vec<&str>> = results
        .iter()
        .map(|(w, _)| w.peers.iter().map(|p| p.name()).collect())
        .collect();
    let longest = names
        .iter()
        .max_by_key(|n| n.len())
        .cloned()
        .unwrap_or_default();
    for (i, _) in longest.iter().enumerate() {
        let label: Vec<&str> = names
            .iter()
            .filter_map(|n| n.get(i).copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(svg, "<rect x=\"20\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"36\" y=\"{:.1}\">{}</text>", y - 9.0, colors[i % colors.len()], y, label.join(" / "));
        y += 14.0;
    }
    svg.push_str("</svg>\n");
    svg
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_consumer_performance_output() {
        let out = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n2026-11-23 12:00:00:000, 2026-11-23 12:00:05:000, 476.8372, 95.3674, 5000000, 1000000.0000, 3000, 2000, 238.4186, 2500000.0000\n";
        assert_eq!(parse_consumer_performance(out).unwrap(), (5_000_000, 2.0));
    }

    #[test]
    fn parses_producer_performance_output() {
        let out = "500000 records sent, 99990.0 records/sec (9.54 MB/sec), 5.0 ms avg latency\n5000000 records sent, 250000.0 records/sec (23.84 MB/sec), 100.00 ms avg latency, 300.00 ms max latency, 50 ms 50th, 200 ms 95th, 250 ms 99th, 290 ms 99.9th.\n";
        assert_eq!(parse_producer_performance(out).unwrap(), (5_000_000, 20.0));
    }

    #[test]
    fn parses_result_lines() {
        assert_eq!(
            parse_result_line("noise\nRESULT records=10 bytes=1000 secs=0.5\n").unwrap(),
            (10, 0.5)
        );
    }

    #[test]
    fn parses_latency_and_rebalance_figures() {
        let out = "x\nLATENCY records=5 p50_us=800 p99_us=2500 max_us=9000\nRESULT records=5 bytes=0 secs=1\nREBALANCE unmoved=9 moved=3 unmoved_max_gap_ms=12.5\n";
        let f = parse_figures(out);
        assert_eq!(f[0], ("p50_us".to_string(), 800.0));
        assert_eq!(f.len(), 6, "records is not a figure");
        assert_eq!(f[5], ("unmoved_max_gap_ms".to_string(), 12.5));
    }

    #[test]
    fn the_best_peer_is_another_client_never_ours() {
        let run = |peer, records, secs, cpu_secs| Run {
            round: 1,
            peer,
            records,
            secs,
            cpu_secs,
            max_rss_kb: 0,
            broker_cpu_secs: 0.0,
            figures: Vec::new(),
        };
        let w = Workload {
            name: "produce",
            topic: String::new(),
            kind: Kind::Produce,
            count: 100,
            size: 100,
            compression: "none",
            peers: vec![Peer::OursProduce, Peer::RdkafkaProduce, Peer::FranzProduce],
        };
        let runs = [
            run(Peer::OursProduce, 100, 0.5, 0.1), // fastest and cheapest: ours
            run(Peer::RdkafkaProduce, 100, 2.0, 0.2),
            run(Peer::FranzProduce, 100, 1.0, 0.4),
        ];
        let (fastest, rps) = best_peer(&w, &runs, Run::records_per_sec, true).unwrap();
        assert_eq!((fastest, rps), (Peer::FranzProduce, 100.0));
        let (cheapest, _) = best_peer(&w, &runs, Run::cpu_per_million, false).unwrap();
        assert_eq!(cheapest, Peer::RdkafkaProduce);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
