//! `cargo xtask cluster up | down | status | kill N | stop N | start N | move N | logs N`:
//! a three-node Apache Kafka cluster on demand, for what only a cluster
//! shows (followers, racks, a node dying under load).
//!
//! Three KRaft nodes, each a combined broker and controller (a static
//! three-voter quorum), from the same Maven jars as the single broker
//! (`broker.rs`), beside it: own ports, own directory, small heaps
//! (-Xms128m -Xmx384m each) and the C1 compiler only, so it runs next to
//! the test broker on two cores. Node `N` (1..=3) sits in rack `rN`; the
//! brokers run the rack-aware replica selector (KIP-392: a consumer reads
//! from a replica in its own rack), replicate everything three times with
//! `min.insync.replicas=2` (one node may die without stopping acks=all
//! producers), and listen on PLAINTEXT, SASL_SSL and SASL_PLAINTEXT (PLAIN,
//! SCRAM-SHA-256/512, OAUTHBEARER like the single broker), the SASL
//! listeners with `connections.max.reauth.ms` = [`REAUTH_MS`] (KIP-368).
//!
//! ```text
//! target/cluster/
//!   certs/           test CA and broker keystore for SASL_SSL (certs.rs)
//!   config/          node-N.properties, log4j2.properties
//!   data/node-N/     node N's log.dirs and KRaft metadata log; wiped by a fresh `up`
//!   node-N.pid       pid of node N's java (only such a pid is ever signalled)
//!   node-N.log       its stdout and stderr, appended across restarts
//!   env              `export KEY=value` lines (`source target/cluster/env`), see below
//! ```
//!
//! The env file (written by a fresh `up`, rewritten by `move`: it always
//! holds the current ports):
//!
//! | key | value |
//! |---|---|
//! | `KAFKA_CLUSTER_BOOTSTRAP` | the three PLAINTEXT addresses, comma-separated |
//! | `KAFKA_CLUSTER_BOOTSTRAP_SASL_SSL`, `..._SASL_PLAINTEXT` | the three SASL_SSL, SASL_PLAINTEXT addresses |
//! | `KAFKA_CLUSTER_NODES` | `1,2,3` |
//! | `KAFKA_CLUSTER_NODE_<N>` | node N's PLAINTEXT address |
//! | `KAFKA_CLUSTER_NODE_<N>_SASL_SSL`, `..._SASL_PLAINTEXT`, `..._CONTROLLER`, `..._RACK` | its other addresses, its rack |
//! | `KAFKA_CLUSTER_CA_PEM`, `KAFKA_CLUSTER_SASL_USER`, `KAFKA_CLUSTER_SASL_PASSWORD` | TLS trust and SASL credentials |
//! | `KAFKA_CLUSTER_REAUTH_MS` | the SASL listeners' `connections.max.reauth.ms` |
//! | `KAFKA_CLUSTER_VERSION` | the Kafka version |
//! | `KAFKA_CLUSTER_ENV_FILE` | this file: a test handed these variables reads the file instead, so it sees the ports `move` changed |
//!
//! - `up` is idempotent: a running cluster is reused; one with nodes down
//!   gets them started again on their ports and data; with none of ours
//!   running it starts fresh. It returns once every node serves and each
//!   one's metadata lists all three brokers.
//! - `kill N` is `kill -9` (a power cut); `stop N` a clean shutdown
//!   (SIGTERM, controlled shutdown: leadership moves first); `start N`
//!   starts it again on the same ports and data and waits as `up` does.
//! - `move N` stops node N cleanly and starts it again with its broker
//!   listeners (PLAINTEXT, SASL_SSL, SASL_PLAINTEXT) on new free ports; the
//!   controller port stays (the static voter set names it), as do the
//!   data and the node id. It waits until every running node's metadata
//!   lists node N at its new address. Clients that knew the old address
//!   must find the new one through their bootstrap addresses (KIP-899
//!   rebootstrap, `consumer-core/tests/it/cluster/rebootstrap.rs`).
//! - `down` stops all three at once (a quorum losing its last voters cannot
//!   shut down cleanly one by one), SIGKILL after 30 s.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::broker::{self, KAFKA_VERSION, SASL_PASSWORD, SASL_USER};
use crate::certs;
use crate::shell::workspace_root;

/// Node ids, and the number of nodes.
pub const NODES: [u8; 3] = [1, 2, 3];

/// `connections.max.reauth.ms` on the SASL listeners (KIP-368): a client
/// that does not re-authenticate within it has its connection cut.
pub const REAUTH_MS: u32 = 6_000;

/// How long a node may take to serve after its java starts (three JVMs
/// start at once on two shared cores).
const START_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Start the three nodes, or reuse (and complete) the running cluster;
    /// print its endpoints.
    Up,
    /// Stop every node this harness started, and nothing else.
    Down,
    /// Say which nodes run, where, and which brokers the metadata lists.
    Status,
    /// `kill -9` node N (1..=3), like a power cut; wait until it is gone.
    Kill {
        #[arg(value_parser = clap::value_parser!(u8).range(1..=3))]
        node: u8,
    },
    /// Stop node N cleanly (SIGTERM: controlled shutdown); wait until it exits.
    Stop {
        #[arg(value_parser = clap::value_parser!(u8).range(1..=3))]
        node: u8,
    },
    /// Start node N again on its ports and data; wait until it serves and
    /// the metadata lists all three brokers.
    Start {
        #[arg(value_parser = clap::value_parser!(u8).range(1..=3))]
        node: u8,
    },
    /// Restart node N with its broker listeners on new free ports (the
    /// controller port, data and id kept); rewrite the env file; wait until
    /// every running node's metadata lists it at the new address.
    Move {
        #[arg(value_parser = clap::value_parser!(u8).range(1..=3))]
        node: u8,
    },
    /// Show node N's log.
    Logs {
        #[arg(value_parser = clap::value_parser!(u8).range(1..=3))]
        node: u8,
        /// How many trailing lines to show.
        #[arg(long, short = 'n', default_value_t = 200)]
        lines: usize,
    },
}

pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Up => {
            let cluster = up()?;
            println!(
                "{} three-node cluster at {} ({})",
                if cluster.started_now {
                    "started"
                } else {
                    "reusing"
                },
                cluster.bootstrap(),
                Layout::new().env.display()
            );
            print!("{}", env_lines(&cluster.env));
            Ok(())
        }
        Action::Down => down(),
        Action::Status => status(),
        Action::Kill { node } => {
            let t = Instant::now();
            let pid = signal(node, true)?;
            println!(
                "killed node {node} (pid {pid}, SIGKILL) in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Action::Stop { node } => {
            let t = Instant::now();
            let pid = signal(node, false)?;
            println!(
                "stopped node {node} (pid {pid}, SIGTERM) in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Action::Start { node } => {
            let t = Instant::now();
            let pid = start(node)?;
            println!(
                "node {node} serves (pid {pid}) and the metadata lists every running node, {:.1} s after the start",
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Action::Move { node } => {
            let t = Instant::now();
            let (pid, p) = move_node(node)?;
            println!(
                "node {node} serves (pid {pid}) on new ports, PLAINTEXT 127.0.0.1:{}, SASL_SSL 127.0.0.1:{}, \
                 SASL_PLAINTEXT 127.0.0.1:{} (controller 127.0.0.1:{} kept), and every running node's \
                 metadata lists it there, {:.1} s after the stop",
                p.plaintext,
                p.sasl_ssl,
                p.sasl_plaintext,
                p.controller,
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Action::Logs { node, lines } => {
            let log = Layout::new().log(node);
            if !log.exists() {
                bail!("no log for node {node} at {}", log.display());
            }
            println!("{}", broker::tail(&log, lines));
            Ok(())
        }
    }
}

/// Where the cluster keeps its state.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    certs: PathBuf,
    config: PathBuf,
    data: PathBuf,
    env: PathBuf,
}

impl Layout {
    fn new() -> Self {
        let root = workspace_root().join("target").join("cluster");
        Self {
            certs: root.join("certs"),
            config: root.join("config"),
            data: root.join("data"),
            env: root.join("env"),
            root,
        }
    }

    fn properties(&self, node: u8) -> PathBuf {
        self.config.join(format!("node-{node}.properties"))
    }

    fn pid(&self, node: u8) -> PathBuf {
        self.root.join(format!("node-{node}.pid"))
    }

    fn log(&self, node: u8) -> PathBuf {
        self.root.join(format!("node-{node}.log"))
    }

    fn log4j(&self) -> PathBuf {
        self.config.join("log4j2.properties")
    }
}

/// The cluster, as the env file describes it.
#[derive(Debug, Clone)]
pub struct RunningCluster {
    /// Some node was (re)started by this call.
    pub started_now: bool,
    /// `KEY=value` pairs, in the order they are written to the env file.
    pub env: Vec<(String, String)>,
}

impl RunningCluster {
    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn bootstrap(&self) -> &str {
        self.get("KAFKA_CLUSTER_BOOTSTRAP").unwrap_or("?")
    }

    /// Node `node`'s PLAINTEXT address.
    fn node_address(&self, node: u8) -> anyhow::Result<String> {
        self.node_listener(node, "")
    }

    /// Node `node`'s address of the listener whose env key ends in
    /// `suffix` (`""` PLAINTEXT, `_SASL_SSL`, `_SASL_PLAINTEXT`, `_CONTROLLER`).
    fn node_listener(&self, node: u8, suffix: &str) -> anyhow::Result<String> {
        let key = format!("KAFKA_CLUSTER_NODE_{node}{suffix}");
        self.get(&key)
            .map(str::to_string)
            .with_context(|| format!("the cluster's env file has no {key}"))
    }

    /// Node `node`'s ports, as the env file gives them.
    fn node_ports(&self, node: u8) -> anyhow::Result<NodePorts> {
        let port = |suffix: &str| -> anyhow::Result<u16> {
            let addr = self.node_listener(node, suffix)?;
            addr.rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .with_context(|| format!("node {node}'s address {addr:?} has no port"))
        };
        Ok(NodePorts {
            plaintext: port("")?,
            sasl_ssl: port("_SASL_SSL")?,
            sasl_plaintext: port("_SASL_PLAINTEXT")?,
            controller: port("_CONTROLLER")?,
        })
    }

    /// Set `key` (appended if new).
    fn set(&mut self, key: &str, value: String) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.env.push((key.to_string(), value)),
        }
    }

    /// Node `node`'s broker listeners at ports `p`, and the bootstrap
    /// lists rebuilt from every node's.
    fn set_node_ports(&mut self, node: u8, p: &NodePorts) {
        let addr = |port: u16| format!("127.0.0.1:{port}");
        self.set(&format!("KAFKA_CLUSTER_NODE_{node}"), addr(p.plaintext));
        self.set(
            &format!("KAFKA_CLUSTER_NODE_{node}_SASL_SSL"),
            addr(p.sasl_ssl),
        );
        self.set(
            &format!("KAFKA_CLUSTER_NODE_{node}_SASL_PLAINTEXT"),
            addr(p.sasl_plaintext),
        );
        for (list, suffix) in [
            ("KAFKA_CLUSTER_BOOTSTRAP", ""),
            ("KAFKA_CLUSTER_BOOTSTRAP_SASL_SSL", "_SASL_SSL"),
            ("KAFKA_CLUSTER_BOOTSTRAP_SASL_PLAINTEXT", "_SASL_PLAINTEXT"),
        ] {
            let all: Vec<String> = NODES
                .iter()
                .filter_map(|&n| self.node_listener(n, suffix).ok())
                .collect();
            self.set(list, all.join(","));
        }
    }
}

fn env_lines(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect()
}

/// The env file (of the last fresh `up`, with the ports `move` changed),
/// if there is one.
fn read_env(layout: &Layout) -> Option<RunningCluster> {
    let text = fs::read_to_string(&layout.env).ok()?;
    let mut cluster = RunningCluster {
        started_now: false,
        env: broker::parse_env(&text),
    };
    // Files written before the key existed.
    if cluster.get(ENV_FILE).is_none() {
        cluster.set(ENV_FILE, layout.env.display().to_string());
    }
    Some(cluster)
}

/// The env key naming the env file: tests handed the cluster's variables
/// read the file instead while it exists, because `move` changes ports
/// after the variables were handed out.
const ENV_FILE: &str = "KAFKA_CLUSTER_ENV_FILE";

/// Write the env file whole, or not at all.
fn write_env(layout: &Layout, cluster: &RunningCluster) -> anyhow::Result<()> {
    let tmp = layout.env.with_extension("tmp");
    fs::write(&tmp, env_lines(&cluster.env))?;
    fs::rename(&tmp, &layout.env)?;
    Ok(())
}

/// Start the cluster unless it runs; start the nodes of ours that are down.
/// Idempotent. Returns once every node serves and each one's metadata
/// lists all three brokers.
///
/// # Errors
/// Java, Maven or the jars are missing; a node exits during start-up
/// (the error holds the end of its log), or does not serve within
/// [`START_TIMEOUT`].
pub fn up() -> anyhow::Result<RunningCluster> {
    let layout = Layout::new();
    if let Some(mut cluster) = read_env(&layout) {
        let running: Vec<u8> = NODES
            .into_iter()
            .filter(|&n| running_pid(&layout, n).is_some())
            .collect();
        if !running.is_empty() {
            broker::kafka_jars(KAFKA_VERSION)?;
            let mut started = Vec::new();
            for n in NODES.into_iter().filter(|n| !running.contains(n)) {
                eprintln!("xtask: node {n} of the running cluster is down: starting it");
                launch(&layout, n)?;
                started.push(n);
            }
            wait_serving(&layout, &cluster, &NODES)?;
            cluster.started_now = !started.is_empty();
            return Ok(cluster);
        }
    }
    start_fresh(&layout)
}

/// Ports of one node.
#[derive(Debug, Clone, Copy)]
struct NodePorts {
    plaintext: u16,
    sasl_ssl: u16,
    sasl_plaintext: u16,
    controller: u16,
}

fn start_fresh(layout: &Layout) -> anyhow::Result<RunningCluster> {
    let started = Instant::now();
    let jars = broker::kafka_jars(KAFKA_VERSION)?;
    let certs = certs::ensure(&layout.certs)?;
    let p = broker::free_ports::<12>()?;
    let ports: Vec<NodePorts> = (0..NODES.len())
        .map(|i| NodePorts {
            plaintext: p[4 * i],
            sasl_ssl: p[4 * i + 1],
            sasl_plaintext: p[4 * i + 2],
            controller: p[4 * i + 3],
        })
        .collect();
    let _ = fs::remove_dir_all(&layout.data);
    fs::create_dir_all(&layout.config)?;
    fs::write(layout.log4j(), broker::LOG4J2_PROPERTIES)?;
    let voters: Vec<String> = NODES
        .iter()
        .zip(&ports)
        .map(|(n, p)| format!("{n}@127.0.0.1:{}", p.controller))
        .collect();
    for (&n, p) in NODES.iter().zip(&ports) {
        let data = layout.data.join(format!("node-{n}"));
        fs::create_dir_all(&data)?;
        fs::write(
            layout.properties(n),
            node_properties(n, p, &voters.join(","), &data, &certs),
        )?;
    }

    // Every node formatted with the same cluster id and the same SCRAM
    // users (the active controller writes them into the metadata log), all
    // three at once: each is a JVM start.
    eprintln!("xtask: formatting the three nodes' KRaft storage");
    let cluster_id = random_cluster_id()?;
    let scram = |mech: &str| format!("{mech}=[name={SASL_USER},password={SASL_PASSWORD}]");
    let formats: Vec<(u8, std::process::Child)> = NODES
        .iter()
        .map(|&n| {
            broker::java_on(&jars, &layout.log4j())
                .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
                .arg(layout.properties(n))
                .arg("--add-scram")
                .arg(scram("SCRAM-SHA-256"))
                .arg("--add-scram")
                .arg(scram("SCRAM-SHA-512"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map(|c| (n, c))
                .context("could not start java")
        })
        .collect::<anyhow::Result<_>>()?;
    for (n, child) in formats {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "formatting node {n}'s KRaft storage failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    for n in NODES {
        let _ = fs::remove_file(layout.log(n)); // a fresh cluster, fresh logs
    }
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let all = |f: fn(&NodePorts) -> u16| {
        ports
            .iter()
            .map(|p| addr(f(p)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let path = |p: &Path| p.display().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("KAFKA_CLUSTER_BOOTSTRAP".into(), all(|p| p.plaintext)),
        (
            "KAFKA_CLUSTER_BOOTSTRAP_SASL_SSL".into(),
            all(|p| p.sasl_ssl),
        ),
        (
            "KAFKA_CLUSTER_BOOTSTRAP_SASL_PLAINTEXT".into(),
            all(|p| p.sasl_plaintext),
        ),
        (
            "KAFKA_CLUSTER_NODES".into(),
            NODES.map(|n| n.to_string()).join(","),
        ),
    ];
    for (&n, p) in NODES.iter().zip(&ports) {
        env.push((format!("KAFKA_CLUSTER_NODE_{n}"), addr(p.plaintext)));
        env.push((format!("KAFKA_CLUSTER_NODE_{n}_SASL_SSL"), addr(p.sasl_ssl)));
        env.push((
            format!("KAFKA_CLUSTER_NODE_{n}_SASL_PLAINTEXT"),
            addr(p.sasl_plaintext),
        ));
        env.push((
            format!("KAFKA_CLUSTER_NODE_{n}_CONTROLLER"),
            addr(p.controller),
        ));
        env.push((format!("KAFKA_CLUSTER_NODE_{n}_RACK"), rack(n)));
    }
    env.extend([
        ("KAFKA_CLUSTER_CA_PEM".into(), path(&certs.ca_pem)),
        ("KAFKA_CLUSTER_SASL_USER".into(), SASL_USER.into()),
        ("KAFKA_CLUSTER_SASL_PASSWORD".into(), SASL_PASSWORD.into()),
        ("KAFKA_CLUSTER_REAUTH_MS".into(), REAUTH_MS.to_string()),
        ("KAFKA_CLUSTER_VERSION".into(), KAFKA_VERSION.into()),
        (ENV_FILE.into(), path(&layout.env)),
    ]);
    let cluster = RunningCluster {
        started_now: true,
        env,
    };
    // The quorum needs two voters to elect a controller: start all three
    // before waiting for any.
    eprintln!("xtask: starting three Apache Kafka {KAFKA_VERSION} nodes");
    for n in NODES {
        launch(layout, n)?;
    }
    wait_serving(layout, &cluster, &NODES)?;
    write_env(layout, &cluster)?;
    eprintln!(
        "xtask: cluster ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(cluster)
}

fn rack(node: u8) -> String {
    format!("r{node}")
}

fn node_properties(
    node: u8,
    p: &NodePorts,
    voters: &str,
    data: &Path,
    certs: &certs::CertPaths,
) -> String {
    let jaas_plain = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required \
         username=\"{SASL_USER}\" password=\"{SASL_PASSWORD}\" user_{SASL_USER}=\"{SASL_PASSWORD}\";"
    );
    // Java properties files have no trailing comments: keep comments on their own lines.
    format!(
        "# Written by `cargo xtask cluster up`; regenerated on every fresh start.
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{pt},SASL_SSL://127.0.0.1:{sasl},SASL_PLAINTEXT://127.0.0.1:{saslpt},CONTROLLER://127.0.0.1:{ctl}
advertised.listeners=PLAINTEXT://127.0.0.1:{pt},SASL_SSL://127.0.0.1:{sasl},SASL_PLAINTEXT://127.0.0.1:{saslpt},CONTROLLER://127.0.0.1:{ctl}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
# Racks r1..r3, and KIP-392: a consumer with client.rack is pointed at the
# in-sync replica in its rack.
broker.rack={rack}
replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector
# Every topic on every node; acks=all needs two of them.
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=4
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# Heartbeats to the controller every 0.5 s (default 2 s): a controlled
# shutdown and a restarted node's unfencing each wait for heartbeats, so
# `stop`, `start` and `move` take seconds less.
broker.heartbeat.interval.ms=500
# The session: a killed node is fenced (its leaderships move, it leaves
# every ISR, so acks=all producers go on) this long after its last
# heartbeat, and a restarted node's registration is refused
# (DUPLICATE_BROKER_REGISTRATION) until its old session ends, stopped
# cleanly or not. 4 s instead of 9 (the default): every kill's failover
# and every restart (JVM start ~4 s) take 5 s less. Tests read it from
# the broker (sim-tests' cluster faults) or name it (FENCE in
# consumer-core's follower_fetch.rs).
broker.session.timeout.ms=4000
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=100
group.consumer.heartbeat.interval.ms=500
auto.create.topics.enable=false
# Small: three nodes share two cores and run beside the test broker
# (the cleaner's dedupe buffer alone defaults to 128 MiB of a 384 MiB heap).
num.network.threads=2
num.io.threads=4
log.cleaner.dedupe.buffer.size=16777216
# TLS: PEM keystore (PKCS#8 key + chain) and the test CA as truststore.
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
# SASL over TLS and in the clear: PLAIN, both SCRAM variants (users added
# at format time) and unsecured OAUTHBEARER.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER
{sasl_listeners}",
        pt = p.plaintext,
        sasl = p.sasl_ssl,
        saslpt = p.sasl_plaintext,
        ctl = p.controller,
        sasl_listeners = ["sasl_ssl", "sasl_plaintext"]
            .map(|l| sasl_listener(l, &jaas_plain))
            .concat(),
        data = data.display(),
        rack = rack(node),
        keystore = certs.broker_keystore.display(),
        ca = certs.ca_pem.display(),
    )
}

/// The JAAS configs of SASL listener `l` (lower case), and its
/// `connections.max.reauth.ms`.
fn sasl_listener(l: &str, jaas_plain: &str) -> String {
    format!(
        "listener.name.{l}.plain.sasl.jaas.config={jaas_plain}
listener.name.{l}.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.{l}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.{l}.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"{SASL_USER}\";
# KIP-368: a SASL session lives at most this long; a client that does not
# re-authenticate before has its connection cut at its next request.
listener.name.{l}.connections.max.reauth.ms={REAUTH_MS}
"
    )
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding
/// (as `kafka-storage random-uuid` prints), never starting with `-` (a
/// command line would take it for an option).
fn random_cluster_id() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut urandom = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    loop {
        let mut bytes = [0u8; 16];
        urandom.read_exact(&mut bytes)?;
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut id = String::with_capacity(22);
        for b in bytes {
            bits = (bits << 8) | u32::from(b);
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                id.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
            }
        }
        if nbits > 0 {
            id.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
        }
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

/// Start node `node`'s java on the config and data already in place; its
/// pid (also written to `node-N.pid`). Does not wait.
fn launch(layout: &Layout, node: u8) -> anyhow::Result<u32> {
    let jars = broker::kafka_jars(KAFKA_VERSION)?;
    // Appended: a restart keeps the log of the run before it.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log(node))?;
    // C1 only (`TieredStopAtLevel=1`): a node started again under load
    // (the fault suite kills, stops and starts nodes while clients run)
    // otherwise spends more than a core for half a minute compiling with
    // C2, on a machine of two that the two other nodes and the test share;
    // with it, sim-tests' `cluster::` faults took 50 s instead of 64–77,
    // a rolling restart 13 s instead of 20–36. The nodes carry test loads,
    // which C1's code serves well enough.
    let child = broker::java_on(&jars, &layout.log4j())
        .args([
            "-Xms128m",
            "-Xmx384m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
        ])
        .arg("kafka.Kafka")
        .arg(layout.properties(node))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C on xtask must not take the node down with it.
        .process_group(0)
        .spawn()
        .context("could not start java")?;
    let pid = child.id();
    fs::write(layout.pid(node), pid.to_string())?;
    Ok(pid)
}

/// Node `node`'s pid, if the java process we started for it still runs.
fn running_pid(layout: &Layout, node: u8) -> Option<u32> {
    let pid: u32 = fs::read_to_string(layout.pid(node))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_our_node(pid, layout, node).then_some(pid)
}

/// Is `pid` the java process of node `node` (its config on the command
/// line)? Guards every signal from reaching a process that reused a pid.
fn is_our_node(pid: u32, layout: &Layout, node: u8) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    // Exited but not reaped (a zombie): gone for our purposes.
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(false);
    !zombie
        && cmdline.contains("kafka.Kafka")
        && cmdline.contains(&*layout.properties(node).to_string_lossy())
}

/// Wait until each of `nodes` serves and its metadata lists exactly those
/// nodes (registered and unfenced), each at the PLAINTEXT address the env
/// gives (after a `move`, the new one).
fn wait_serving(layout: &Layout, cluster: &RunningCluster, nodes: &[u8]) -> anyhow::Result<()> {
    let want: Vec<i32> = nodes.iter().map(|&n| i32::from(n)).collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|&n| cluster.node_address(n))
        .collect::<anyhow::Result<_>>()?;
    let deadline = Instant::now() + START_TIMEOUT;
    for &n in nodes {
        let addr = cluster.node_address(n)?;
        loop {
            let seen = if broker::tcp_ready(&addr) {
                metadata_brokers(&addr).ok()
            } else {
                None
            };
            if seen.as_ref().is_some_and(|b| {
                b.iter().map(|b| b.id).eq(want.iter().copied())
                    && b.iter().map(|b| &b.address).eq(addresses.iter())
            }) {
                break;
            }
            // Asked twice, 50 ms apart: right after `launch` the node's
            // cmdline may read empty for a moment (see `running_and`).
            if running_pid(layout, n).is_none() && {
                std::thread::sleep(Duration::from_millis(50));
                running_pid(layout, n).is_none()
            } {
                bail!(
                    "node {n} exited during start-up; last lines of {}:\n{}",
                    layout.log(n).display(),
                    broker::tail(&layout.log(n), 40)
                );
            }
            if Instant::now() > deadline {
                let seen = seen.map_or("nothing (not serving)".to_string(), |b| {
                    let b: Vec<String> = b
                        .iter()
                        .map(|b| format!("{} at {}", b.id, b.address))
                        .collect();
                    format!("brokers {}", b.join(", "))
                });
                bail!(
                    "node {n} ({addr}) did not list brokers {want:?} at {addresses:?} within {} s \
                     (it lists {seen}); see `cargo xtask cluster logs {n}`",
                    START_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Ok(())
}

/// One broker of a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BrokerSeen {
    id: i32,
    address: String,
    rack: Option<String>,
}

/// The brokers `addr` lists in its metadata (registered and unfenced):
/// a Metadata v4 request for no topics, written by hand (xtask does not
/// link the client crates).
fn metadata_brokers(addr: &str) -> anyhow::Result<Vec<BrokerSeen>> {
    let sock: SocketAddr = addr.parse()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let client_id = b"xtask-cluster";
    let mut body = Vec::new();
    body.extend(3i16.to_be_bytes()); // api key: Metadata
    body.extend(4i16.to_be_bytes()); // version 4 (request header v1)
    body.extend(1i32.to_be_bytes()); // correlation id
    body.extend((client_id.len() as i16).to_be_bytes());
    body.extend(client_id);
    body.extend(0i32.to_be_bytes()); // topics: none (null would be all)
    body.push(0); // allow_auto_topic_creation
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = usize::try_from(i32::from_be_bytes(len)).context("negative frame size")?;
    if len > 1 << 20 {
        bail!("a {len}-byte metadata response is not one");
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)?;
    parse_metadata_brokers(&buf)
}

/// The broker list of a Metadata v4 response (after its size).
fn parse_metadata_brokers(buf: &[u8]) -> anyhow::Result<Vec<BrokerSeen>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        let s = buf
            .get(at..at + n)
            .context("metadata response ends early")?;
        at += n;
        Ok(s)
    };
    let i32_of = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let _correlation = take(4)?;
    let _throttle = take(4)?;
    let count = i32_of(take(4)?);
    let mut brokers = Vec::new();
    for _ in 0..count.max(0) {
        let id = i32_of(take(4)?);
        let host_len = i16::from_be_bytes(take(2)?.try_into()?);
        let host = String::from_utf8_lossy(take(usize::try_from(host_len)?)?).into_owned();
        let port = i32_of(take(4)?);
        let rack_len = i16::from_be_bytes(take(2)?.try_into()?);
        let rack = if rack_len < 0 {
            None
        } else {
            Some(String::from_utf8_lossy(take(rack_len as usize)?).into_owned())
        };
        brokers.push(BrokerSeen {
            id,
            address: format!("{host}:{port}"),
            rack,
        });
    }
    brokers.sort_by_key(|b| b.id);
    Ok(brokers)
}

/// The cluster's env, or an error saying to start it.
fn existing(layout: &Layout) -> anyhow::Result<RunningCluster> {
    read_env(layout).with_context(|| {
        format!(
            "no cluster: {} is missing; run `cargo xtask cluster up`",
            layout.env.display()
        )
    })
}

/// SIGKILL (`hard`) or SIGTERM node `node` and wait until it has exited
/// (after SIGTERM, 60 s at most: then SIGKILL). Its pid.
fn signal(node: u8, hard: bool) -> anyhow::Result<u32> {
    let layout = Layout::new();
    existing(&layout)?;
    let pid = running_pid(&layout, node)
        .with_context(|| format!("node {node} is not running (`cargo xtask cluster status`)"))?;
    stop_pid(&layout, node, pid, hard, Duration::from_secs(60));
    Ok(pid)
}

/// Signal node `node`'s `pid` and wait until it is gone: SIGKILL at once
/// with `hard`, else SIGTERM and SIGKILL after `grace`.
fn stop_pid(layout: &Layout, node: u8, pid: u32, hard: bool, grace: Duration) {
    send(pid, if hard { "-KILL" } else { "-TERM" });
    wait_gone(layout, node, pid, grace);
}

/// `kill <sig> <pid>` (quiet: the process may have exited already).
fn send(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Wait until node `node`'s `pid` is gone; SIGKILL it after `grace`.
fn wait_gone(layout: &Layout, node: u8, pid: u32, grace: Duration) {
    let deadline = Instant::now() + grace;
    while is_our_node(pid, layout, node) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_our_node(pid, layout, node) {
        eprintln!(
            "xtask: node {node} (pid {pid}) still runs {} s after SIGTERM; sending SIGKILL",
            grace.as_secs()
        );
        send(pid, "-KILL");
        while is_our_node(pid, layout, node) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Start node `node` again (a no-op if it runs) and wait until it serves
/// and every running node's metadata lists every running node. Its pid.
fn start(node: u8) -> anyhow::Result<u32> {
    let layout = Layout::new();
    let cluster = existing(&layout)?;
    let pid = match running_pid(&layout, node) {
        Some(pid) => pid,
        None => launch(&layout, node)?,
    };
    let up = running_and(&layout, node);
    wait_serving(&layout, &cluster, &up)?;
    Ok(pid)
}

/// The nodes running now, `node` (just launched) among them whatever its
/// `/proc` entry says yet.
///
/// A child's `spawn` returns once its `execve` has replaced the memory
/// map, but before the kernel has set the new argument area: for that
/// moment `/proc/<pid>/cmdline` reads empty, and [`is_our_node`] says no.
/// Filtering the just-launched node through it left it out of the nodes
/// to wait for, and `start` then waited 180 s for a metadata listing
/// without it (seen once in a few `kill 3; start 3`).
fn running_and(layout: &Layout, node: u8) -> Vec<u8> {
    NODES
        .into_iter()
        .filter(|&n| n == node || running_pid(layout, n).is_some())
        .collect()
}

/// Stop node `node` cleanly (if it runs), rewrite its config and the env
/// file with its broker listeners on new free ports, start it, and wait
/// until every running node lists it there. Its pid and ports.
///
/// The controller port stays: `controller.quorum.voters` (a static
/// quorum, in every node's config) names it.
fn move_node(node: u8) -> anyhow::Result<(u32, NodePorts)> {
    let layout = Layout::new();
    let mut cluster = existing(&layout)?;
    let old = cluster.node_ports(node)?;
    // Every port the env names stays out: a new port must not be one a
    // client may still know for another node.
    let mut taken = Vec::new();
    for n in NODES {
        let p = cluster.node_ports(n)?;
        taken.extend([p.plaintext, p.sasl_ssl, p.sasl_plaintext, p.controller]);
    }
    let new = loop {
        let p = broker::free_ports::<3>()?;
        if p.iter().all(|port| !taken.contains(port)) {
            break NodePorts {
                plaintext: p[0],
                sasl_ssl: p[1],
                sasl_plaintext: p[2],
                controller: old.controller,
            };
        }
    };
    let voters: Vec<String> = NODES
        .iter()
        .map(|&n| {
            cluster
                .node_ports(n)
                .map(|p| format!("{n}@127.0.0.1:{}", p.controller))
        })
        .collect::<anyhow::Result<_>>()?;
    let certs = certs::ensure(&layout.certs)?;
    if let Some(pid) = running_pid(&layout, node) {
        stop_pid(&layout, node, pid, false, Duration::from_secs(60));
    }
    let data = layout.data.join(format!("node-{node}"));
    fs::write(
        layout.properties(node),
        node_properties(node, &new, &voters.join(","), &data, &certs),
    )?;
    cluster.set_node_ports(node, &new);
    write_env(&layout, &cluster)?;
    let pid = launch(&layout, node)?;
    let up = running_and(&layout, node);
    wait_serving(&layout, &cluster, &up)?;
    Ok((pid, new))
}

/// Stop every node of ours at once (SIGTERM; SIGKILL after 30 s).
pub fn down() -> anyhow::Result<()> {
    let layout = Layout::new();
    let running: Vec<(u8, u32)> = NODES
        .into_iter()
        .filter_map(|n| running_pid(&layout, n).map(|p| (n, p)))
        .collect();
    // All at once: one by one, the last node would wait for a quorum
    // that is gone.
    for &(_, pid) in &running {
        send(pid, "-TERM");
    }
    for &(n, pid) in &running {
        wait_gone(&layout, n, pid, Duration::from_secs(30));
    }
    for n in NODES {
        let _ = fs::remove_file(layout.pid(n));
    }
    let _ = fs::remove_file(&layout.env);
    if running.is_empty() {
        println!("no node of ours is running");
    } else {
        let pids: Vec<String> = running
            .iter()
            .map(|(n, p)| format!("{n} (pid {p})"))
            .collect();
        println!("stopped nodes {}", pids.join(", "));
    }
    Ok(())
}

fn status() -> anyhow::Result<()> {
    let layout = Layout::new();
    let Some(cluster) = read_env(&layout) else {
        println!("no cluster (start one with `cargo xtask cluster up`)");
        return Ok(());
    };
    let mut listing = None;
    for n in NODES {
        let addr = cluster.node_address(n)?;
        match running_pid(&layout, n) {
            Some(pid) => {
                let md = metadata_brokers(&addr);
                println!(
                    "node {n}: running, pid {pid}, rack {}, PLAINTEXT {addr}, {}",
                    rack(n),
                    if md.is_ok() { "serving" } else { "not serving" }
                );
                if listing.is_none() {
                    listing = md.ok().map(|b| (n, b));
                }
            }
            None => println!("node {n}: down, rack {}, PLAINTEXT {addr}", rack(n)),
        }
    }
    match listing {
        Some((n, brokers)) => {
            let shown: Vec<String> = brokers
                .iter()
                .map(|b| {
                    format!(
                        "{} at {} (rack {})",
                        b.id,
                        b.address,
                        b.rack.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            println!("node {n}'s metadata lists: {}", shown.join(", "));
        }
        None => println!("no node serves"),
    }
    print!("{}", env_lines(&cluster.env));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        for _ in 0..100 {
            let id = random_cluster_id().unwrap();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'));
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    #[test]
    fn a_moved_node_changes_its_addresses_and_the_bootstrap_lists_only() {
        let mut env = Vec::new();
        for n in NODES {
            let base = 1000 * u16::from(n);
            for (suffix, port) in [
                ("", base),
                ("_SASL_SSL", base + 1),
                ("_SASL_PLAINTEXT", base + 2),
                ("_CONTROLLER", base + 3),
            ] {
                env.push((
                    format!("KAFKA_CLUSTER_NODE_{n}{suffix}"),
                    format!("127.0.0.1:{port}"),
                ));
            }
        }
        let mut c = RunningCluster {
            started_now: false,
            env,
        };
        let p = c.node_ports(2).unwrap();
        assert_eq!((p.plaintext, p.controller), (2000, 2003));
        c.set_node_ports(
            2,
            &NodePorts {
                plaintext: 5000,
                sasl_ssl: 5001,
                sasl_plaintext: 5002,
                controller: p.controller,
            },
        );
        assert_eq!(c.node_address(2).unwrap(), "127.0.0.1:5000");
        assert_eq!(c.node_ports(2).unwrap().controller, 2003, "kept");
        assert_eq!(
            c.bootstrap(),
            "127.0.0.1:1000,127.0.0.1:5000,127.0.0.1:3000"
        );
        assert_eq!(
            c.get("KAFKA_CLUSTER_BOOTSTRAP_SASL_PLAINTEXT"),
            Some("127.0.0.1:1002,127.0.0.1:5002,127.0.0.1:3002")
        );
        assert_eq!(c.node_address(1).unwrap(), "127.0.0.1:1000");
    }

    #[test]
    fn metadata_v4_broker_lists_parse() {
        let mut b = Vec::new();
        b.extend(7i32.to_be_bytes()); // correlation id
        b.extend(0i32.to_be_bytes()); // throttle
        b.extend(2i32.to_be_bytes());
        for (id, rack) in [(2i32, Some("r2")), (1, None)] {
            b.extend(id.to_be_bytes());
            b.extend(9i16.to_be_bytes());
            b.extend(b"127.0.0.1");
            b.extend(9092i32.to_be_bytes());
            match rack {
                Some(r) => {
                    b.extend((r.len() as i16).to_be_bytes());
                    b.extend(r.as_bytes());
                }
                None => b.extend((-1i16).to_be_bytes()),
            }
        }
        b.extend([0u8; 8]); // the rest of the response, unread
        let brokers = parse_metadata_brokers(&b).unwrap();
        assert_eq!(brokers.len(), 2);
        assert_eq!(brokers[0].id, 1);
        assert_eq!(brokers[0].rack, None);
        assert_eq!(brokers[1].rack.as_deref(), Some("r2"));
        assert_eq!(brokers[1].address, "127.0.0.1:9092");
        assert!(parse_metadata_brokers(&b[..20]).is_err(), "cut short");
    }
}
