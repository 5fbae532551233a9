//! `cargo xtask broker up | down | status | logs`: a real broker on demand.
//!
//! The default engine is Apache Kafka in KRaft mode (one combined broker and
//! controller), started with the machine's Java from jars that Maven fetches
//! from Maven Central (`broker/pom.xml`). No tarball, no Docker. Everything it
//! owns lives under `target/broker/`:
//!
//! ```text
//! target/broker/
//!   jars/            Maven's copy-dependencies output (+ .pom-hash marker)
//!   certs/           test CA, broker keystore, client cert (see certs.rs)
//!   config/          server.properties, log4j2.properties
//!   data/            log.dirs; wiped on every fresh start
//!   broker.pid       pid of the java process we started (only that is ever killed)
//!   broker.log       its stdout and stderr
//!   env              `export KEY=value` lines for tests and users (`source target/broker/env`)
//! ```
//!
//! `--engine redpanda` runs the repo's `docker-compose.yml` instead, when a
//! Docker engine answers.
//!
//! `cargo xtask test` runs its own instance, `target/broker-test/` (same
//! layout, own ports; `cargo xtask broker --instance broker-test status`), so
//! that its topics, groups and restarts never touch the broker a user
//! explores. Cleaning up after the suite instead would miss whatever a failed
//! or interrupted run left behind; a separate broker cannot.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};

use crate::certs;
use crate::shell::{self, workspace_root};

/// The Kafka version the harness runs; keep in step with `broker/pom.xml`.
pub const KAFKA_VERSION: &str = "4.4.0";
/// The SASL user every broker of the harness knows (PLAIN and SCRAM).
pub(crate) const SASL_USER: &str = "alice";
/// Its password.
pub(crate) const SASL_PASSWORD: &str = "alice-secret";
const REDPANDA_BOOTSTRAP: &str = "127.0.0.1:19092";

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Start the broker, or reuse the one already running; print its endpoints.
    Up {
        #[arg(long, value_enum, default_value_t = Engine::Kafka)]
        engine: Engine,
        /// Apache Kafka version from Maven Central (3.9+ for `--standalone` KRaft).
        #[arg(long, default_value = KAFKA_VERSION)]
        kafka_version: String,
        /// An extra line for the broker's server.properties (repeatable),
        /// e.g. `group.coordinator.rebalance.protocols=classic,consumer`
        /// to turn KIP-848 on in Kafka 3.9. Applies when the broker starts
        /// fresh; a running one is reused as it is.
        #[arg(long = "server-property", value_name = "KEY=VALUE")]
        server_properties: Vec<String>,
    },
    /// Stop the broker this harness started (by pid), and nothing else.
    Down {
        #[arg(long, default_value = KAFKA_VERSION)]
        kafka_version: String,
    },
    /// Stop the broker (SIGTERM, or SIGKILL with --hard), keep it down a
    /// while, and start it again on the same ports and data.
    Restart {
        #[arg(long, default_value = KAFKA_VERSION)]
        kafka_version: String,
        /// SIGKILL instead of a clean shutdown.
        #[arg(long)]
        hard: bool,
        /// Seconds to stay down before starting again.
        #[arg(long, default_value_t = 0.0)]
        down_for: f64,
    },
    /// Say what is running and where.
    Status {
        #[arg(long, default_value = KAFKA_VERSION)]
        kafka_version: String,
    },
    /// Show the broker log.
    Logs {
        #[arg(long, default_value = KAFKA_VERSION)]
        kafka_version: String,
        /// How many trailing lines to show.
        #[arg(long, short = 'n', default_value_t = 200)]
        lines: usize,
        /// Keep printing new lines as they arrive.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// Apache Kafka (KRaft) from Maven Central jars with the machine's Java.
    Kafka,
    /// Redpanda through `docker compose` (needs a Docker engine).
    Redpanda,
}

pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Up {
            engine,
            kafka_version,
            server_properties,
        } => {
            set_server_properties(&server_properties);
            let up = up(engine, &kafka_version)?;
            if !up.started_now && !server_properties.is_empty() {
                eprintln!(
                    "note: the broker was already running, so --server-property did not apply; \
                     `cargo xtask broker down` first"
                );
            }
            println!(
                "{} broker {} ({})",
                if up.started_now { "started" } else { "reusing" },
                up.describe(),
                Dirs::new(&kafka_version).env.display()
            );
            print!("{}", up.env_lines());
            Ok(())
        }
        Action::Down { kafka_version } => down(&kafka_version),
        Action::Restart {
            kafka_version,
            hard,
            down_for,
        } => restart(
            &kafka_version,
            hard,
            Duration::from_secs_f64(down_for.max(0.0)),
        ),
        Action::Status { kafka_version } => status(&kafka_version),
        Action::Logs {
            kafka_version,
            lines,
            follow,
        } => logs(&kafka_version, lines, follow),
    }
}

/// The default instance: the broker `cargo xtask broker up` and `cargo
/// xtask lab` start for the user, in `target/broker/`.
pub const USER_INSTANCE: &str = "broker";

/// The instance `cargo xtask test` starts, in `target/broker-test/`: its own
/// data and ports, so the test topics and groups never land on the broker a
/// user explores, and a test run never stops or restarts that broker.
pub const TEST_INSTANCE: &str = "broker-test";

static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Extra server.properties lines for the brokers this process starts next.
static EXTRA_PROPERTIES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Add `lines` (`key=value`) to the server.properties of every broker this
/// process starts from now on (replacing earlier ones; empty: none).
pub fn set_server_properties(lines: &[String]) {
    *EXTRA_PROPERTIES.lock().expect("properties lock") = lines.to_vec();
}

/// Make every later call in this process use `instance` (before the first
/// call; later calls are ignored).
pub fn use_instance(instance: &str) {
    let _ = INSTANCE.set(instance.to_string());
}

fn instance() -> &'static str {
    INSTANCE.get().map_or(USER_INSTANCE, String::as_str)
}

/// Where the harness keeps its state.
struct Dirs {
    version: String,
    root: PathBuf,
    jars: PathBuf,
    certs: PathBuf,
    config: PathBuf,
    data: PathBuf,
    pid: PathBuf,
    log: PathBuf,
    env: PathBuf,
}

impl Dirs {
    /// `target/<instance>` for the default version, `target/<instance>-<version>`
    /// otherwise; the jars are shared by every instance of a version.
    fn new(version: &str) -> Self {
        let dir = |instance: &str| {
            let name = if version == KAFKA_VERSION {
                instance.to_string()
            } else {
                format!("{instance}-{version}")
            };
            workspace_root().join("target").join(name)
        };
        let root = dir(instance());
        Self {
            version: version.to_string(),
            jars: dir(USER_INSTANCE).join("jars"),
            certs: root.join("certs"),
            config: root.join("config"),
            data: root.join("data"),
            pid: root.join("broker.pid"),
            log: root.join("broker.log"),
            env: root.join("env"),
            root,
        }
    }
}

/// A running broker and how to reach it.
#[derive(Debug, Clone)]
pub struct RunningBroker {
    pub engine: Engine,
    pub started_now: bool,
    pub pid: Option<u32>,
    /// `KEY=value` pairs, in the order they are written to `target/broker/env`.
    pub env: Vec<(String, String)>,
}

impl RunningBroker {
    pub fn bootstrap(&self) -> &str {
        self.get("KAFKA_BOOTSTRAP").unwrap_or("?")
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn describe(&self) -> String {
        match self.engine {
            Engine::Kafka => format!(
                "Apache Kafka {} pid {} at {}",
                self.get("KAFKA_BROKER_VERSION").unwrap_or(KAFKA_VERSION),
                self.pid.unwrap_or(0),
                self.bootstrap()
            ),
            Engine::Redpanda => format!(
                "Redpanda {} (docker compose) at {}",
                self.get("KAFKA_BROKER_VERSION").unwrap_or("?"),
                self.bootstrap()
            ),
        }
    }

    /// `export KEY=value` lines: `source target/broker/env` exports them.
    /// Values are plain (addresses, paths, names) and need no quoting.
    fn env_lines(&self) -> String {
        self.env
            .iter()
            .map(|(k, v)| format!("export {k}={v}\n"))
            .collect()
    }
}

/// Start the broker unless ours is already running. Idempotent.
pub fn up(engine: Engine, version: &str) -> anyhow::Result<RunningBroker> {
    let dirs = Dirs::new(version);
    if let Some(running) = find_running(&dirs)? {
        if running.engine != engine {
            bail!(
                "a {:?} broker from this harness is already running; `cargo xtask broker down` first",
                running.engine
            );
        }
        return Ok(running);
    }
    match engine {
        Engine::Kafka => start_kafka(&dirs),
        Engine::Redpanda => start_redpanda(&dirs),
    }
}

/// The broker this harness started, if it is still running.
fn find_running(dirs: &Dirs) -> anyhow::Result<Option<RunningBroker>> {
    let Ok(text) = fs::read_to_string(&dirs.env) else {
        return Ok(None);
    };
    let env = parse_env(&text);
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let engine = match get("KAFKA_BROKER_ENGINE").as_deref() {
        Some("redpanda") => Engine::Redpanda,
        _ => Engine::Kafka,
    };
    let pid = get("KAFKA_BROKER_PID").and_then(|p| p.parse::<u32>().ok());
    let alive = match engine {
        Engine::Kafka => pid.is_some_and(|p| is_our_java(p, dirs)),
        Engine::Redpanda => true,
    };
    let reachable = get("KAFKA_BOOTSTRAP").is_some_and(|b| tcp_ready(&b));
    if alive && reachable {
        Ok(Some(RunningBroker {
            engine,
            started_now: false,
            pid,
            env,
        }))
    } else {
        Ok(None)
    }
}

/// The `KEY=value` pairs of an env file; an `export ` prefix is optional.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.trim_start().strip_prefix("export ").unwrap_or(l))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

/// Is `pid` the java process we started with our config? Guards `down` from
/// killing anything else that happens to reuse a stale pid.
fn is_our_java(pid: u32, dirs: &Dirs) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    let config = dirs.config.join("server.properties");
    cmdline.contains("kafka.Kafka") && cmdline.contains(&*config.to_string_lossy())
}

/// Does something accept a TCP connection at `addr` (`ip:port`) within 500 ms?
pub(crate) fn tcp_ready(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok())
        .is_some()
}

/// Check for Java 17+ and Maven; on a fresh Debian machine where we are root,
/// install them, because the README's commands must do all the set-up.
fn ensure_java_and_maven() -> anyhow::Result<()> {
    // javac too: tests compile small Java programs against the broker's
    // jars (the telemetry receiver plugin), which a JRE cannot.
    let java_ok = java_major().is_some_and(|v| v >= 17) && shell::available("javac", "-version");
    let mvn_ok = shell::available("mvn", "-v");
    if java_ok && mvn_ok {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !java_ok {
        missing.push("openjdk-17-jdk-headless");
    }
    if !mvn_ok {
        missing.push("maven");
    }
    if shell::apt_install(&missing)? {
        return Ok(());
    }
    bail!(
        "the Kafka broker and its tests need a Java 17+ JDK (java and javac) and Maven on PATH. Install them \
         (Debian/Ubuntu: `sudo apt-get install {}`; macOS: `brew install openjdk@17 maven`), \
         or run Redpanda with `cargo xtask broker up --engine redpanda` if Docker is available, \
         or point KAFKA_BOOTSTRAP at an existing cluster",
        missing.join(" ")
    )
}

fn java_major() -> Option<u32> {
    let out = Command::new("java").arg("-version").output().ok()?;
    // `openjdk version "17.0.15" 2025-04-15` (printed on stderr)
    let text = String::from_utf8_lossy(&out.stderr);
    let quoted = text.split('"').nth(1)?;
    let major = quoted.split('.').next()?;
    // Java 8 and older print "1.8.0_..."
    match major.parse::<u32>().ok()? {
        1 => quoted.split('.').nth(1)?.parse().ok(),
        v => Some(v),
    }
}

/// Java 17+ and the jars of Kafka `version` (fetched once, as for the
/// broker); the directory that holds them, shared by every instance.
pub(crate) fn kafka_jars(version: &str) -> anyhow::Result<PathBuf> {
    let dirs = Dirs::new(version);
    ensure_java_and_maven()?;
    ensure_jars(&dirs)?;
    Ok(dirs.jars)
}

/// Gather the broker's jars with Maven, once per change of `broker/pom.xml`.
fn ensure_jars(dirs: &Dirs) -> anyhow::Result<()> {
    let pom = workspace_root().join("broker").join("pom.xml");
    let pom_text =
        fs::read_to_string(&pom).with_context(|| format!("reading {}", pom.display()))?;
    let mut hasher = DefaultHasher::new();
    pom_text.hash(&mut hasher);
    dirs.version.hash(&mut hasher);
    let hash = format!("{:016x}", hasher.finish());
    let marker = dirs.jars.join(".pom-hash");
    if fs::read_to_string(&marker).ok().as_deref() == Some(hash.as_str()) {
        return Ok(());
    }
    eprintln!(
        "xtask: fetching Apache Kafka {} jars from Maven Central (cached after the first run)",
        dirs.version
    );
    let _ = fs::remove_dir_all(&dirs.jars);
    shell::run(
        Command::new("mvn")
            .args(["-q", "-B", "-f"])
            .arg(&pom)
            .args([
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                "-DoverWriteReleases=true",
            ])
            .arg(format!("-Dkafka.version={}", dirs.version))
            .arg(format!("-DoutputDirectory={}", dirs.jars.display())),
    )
    .context("Maven could not fetch the Kafka jars; is Maven Central reachable?")?;
    fs::write(marker, hash)?;
    Ok(())
}

/// `N` distinct free ports on 127.0.0.1 (held together so they differ).
pub(crate) fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut ports = [0u16; N];
    for (slot, l) in ports.iter_mut().zip(&listeners) {
        *slot = l.local_addr()?.port();
    }
    Ok(ports)
}

struct Ports {
    plaintext: u16,
    ssl: u16,
    sasl_ssl: u16,
    controller: u16,
}

fn server_properties(dirs: &Dirs, ports: &Ports, certs: &certs::CertPaths) -> String {
    let p = ports;
    let jaas_plain = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required \
         username=\"{SASL_USER}\" password=\"{SASL_PASSWORD}\" user_{SASL_USER}=\"{SASL_PASSWORD}\";"
    );
    // Java properties files have no trailing comments: keep comments on their own lines.
    format!(
        "# Written by `cargo xtask broker up`; regenerated on every fresh start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{ctl}
listeners=PLAINTEXT://127.0.0.1:{pt},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{ctl}
advertised.listeners=PLAINTEXT://127.0.0.1:{pt},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{ctl}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
log.dirs={data}
# Test-friendly: one replica, no rebalance delay, explicit topic creation.
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
# A transaction past its transaction.timeout.ms is aborted within 1 s
# (default 10 s), so the tests of that case take seconds.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# KIP-848 groups: the broker owns the session timeout and heartbeat
# interval; as short as the classic tests' own (6 s, sub-second).
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=100
group.consumer.heartbeat.interval.ms=500
auto.create.topics.enable=false
# TLS: PEM keystore (PKCS#8 key + chain) and the test CA as truststore.
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
listener.name.ssl.ssl.client.auth=requested
# SASL over TLS: PLAIN, both SCRAM variants (users added at format time) and unsecured OAUTHBEARER.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.plain.sasl.jaas.config={jaas_plain}
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"{SASL_USER}\";
",
        pt = p.plaintext,
        ssl = p.ssl,
        sasl = p.sasl_ssl,
        ctl = p.controller,
        data = dirs.data.display(),
        keystore = certs.broker_keystore.display(),
        ca = certs.ca_pem.display(),
    ) + &extra_properties()
}

/// The [`set_server_properties`] lines, under a comment; empty without any.
fn extra_properties() -> String {
    let extra = EXTRA_PROPERTIES.lock().expect("properties lock");
    if extra.is_empty() {
        return String::new();
    }
    let mut s = String::from("# Added with --server-property:\n");
    for line in extra.iter() {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Everything on stdout (the process's log file), state changes and the
/// controller only from WARN.
pub(crate) const LOG4J2_PROPERTIES: &str = "status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
";

/// `java` with the Kafka jars of `version` on the class path (the tools in
/// `kafka-tools`, e.g. the benchmark's `ConsumerPerformance`).
pub fn java_with_kafka(version: &str) -> Command {
    java(&Dirs::new(version))
}

fn java(dirs: &Dirs) -> Command {
    java_on(&dirs.jars, &dirs.config.join("log4j2.properties"))
}

/// `java` with the jars in `jars` on the class path and `log4j` as its
/// log4j2 configuration.
pub(crate) fn java_on(jars: &Path, log4j: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()));
    cmd
}

fn start_kafka(dirs: &Dirs) -> anyhow::Result<RunningBroker> {
    let started = Instant::now();
    ensure_java_and_maven()?;
    ensure_jars(dirs)?;
    let certs = certs::ensure(&dirs.certs)?;

    let [plaintext, ssl, sasl_ssl, controller] = free_ports::<4>()?;
    let ports = Ports {
        plaintext,
        ssl,
        sasl_ssl,
        controller,
    };
    let _ = fs::remove_dir_all(&dirs.data);
    fs::create_dir_all(&dirs.data)?;
    fs::create_dir_all(&dirs.config)?;
    let server_props = dirs.config.join("server.properties");
    fs::write(&server_props, server_properties(dirs, &ports, &certs))?;
    fs::write(dirs.config.join("log4j2.properties"), LOG4J2_PROPERTIES)?;

    eprintln!("xtask: formatting KRaft storage");
    // Log lines may precede the id on stdout: the id is the last line.
    let cluster_id = shell::output(java(dirs).args(["kafka.tools.StorageTool", "random-uuid"]))?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .context("StorageTool random-uuid printed nothing")?
        .to_string();
    let scram = |mech: &str| format!("{mech}=[name={SASL_USER},password={SASL_PASSWORD}]");
    shell::output(
        java(dirs)
            .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
            .arg(&cluster_id)
            .arg("-c")
            .arg(&server_props)
            .arg("--add-scram")
            .arg(scram("SCRAM-SHA-256"))
            .arg("--add-scram")
            .arg(scram("SCRAM-SHA-512")),
    )
    .context("formatting the KRaft log dir failed")?;

    let _ = fs::remove_file(&dirs.log); // a fresh broker, a fresh log
    let bootstrap = format!("127.0.0.1:{}", ports.plaintext);
    let pid = launch(dirs, &bootstrap)?;

    let path = |p: &Path| p.display().to_string();
    let env = vec![
        ("KAFKA_BOOTSTRAP".into(), bootstrap),
        (
            "KAFKA_BOOTSTRAP_SSL".into(),
            format!("127.0.0.1:{}", ports.ssl),
        ),
        (
            "KAFKA_BOOTSTRAP_SASL_SSL".into(),
            format!("127.0.0.1:{}", ports.sasl_ssl),
        ),
        ("KAFKA_CA_PEM".into(), path(&certs.ca_pem)),
        ("KAFKA_CLIENT_CERT_PEM".into(), path(&certs.client_cert)),
        ("KAFKA_CLIENT_KEY_PEM".into(), path(&certs.client_key)),
        ("KAFKA_SASL_USER".into(), SASL_USER.into()),
        ("KAFKA_SASL_PASSWORD".into(), SASL_PASSWORD.into()),
        ("KAFKA_BROKER_ENGINE".into(), "kafka".into()),
        ("KAFKA_BROKER_VERSION".into(), dirs.version.clone()),
        ("KAFKA_BROKER_PID".into(), pid.to_string()),
        ("KAFKA_BROKER_INSTANCE".into(), instance().to_string()),
    ];
    let running = RunningBroker {
        engine: Engine::Kafka,
        started_now: true,
        pid: Some(pid),
        env,
    };
    write_env(dirs, &running)?;
    eprintln!(
        "xtask: broker ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(running)
}

/// Start the java process on the config and data already in `dirs` and
/// wait until it serves `bootstrap`; its pid.
fn launch(dirs: &Dirs, bootstrap: &str) -> anyhow::Result<u32> {
    let server_props = dirs.config.join("server.properties");
    eprintln!("xtask: starting Apache Kafka {}", dirs.version);
    // Appended: a restart keeps the log of the run before it.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&dirs.log)?;
    let mut child = java(dirs)
        .args([
            "-Xms512m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
        ])
        .arg("kafka.Kafka")
        .arg(&server_props)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C on xtask must not take the broker down with it.
        .process_group(0)
        .spawn()
        .context("could not start java")?;
    let pid = child.id();
    fs::write(&dirs.pid, pid.to_string())?;

    let deadline = Instant::now() + Duration::from_secs(120);
    // The broker opens its client port only once it is ready to serve.
    while !tcp_ready(bootstrap) {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the broker exited during start-up ({status}); last lines of {}:\n{}",
                dirs.log.display(),
                tail(&dirs.log, 40)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the broker did not open {bootstrap} within 120 s; see `cargo xtask broker logs`"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    Ok(pid)
}

fn write_env(dirs: &Dirs, running: &RunningBroker) -> anyhow::Result<()> {
    fs::create_dir_all(&dirs.root)?;
    let mut f = fs::File::create(&dirs.env)?;
    f.write_all(running.env_lines().as_bytes())?;
    Ok(())
}

/// Why Docker cannot run the compose file here, if it cannot: no `docker`
/// on PATH, no `docker compose` (v2), or no engine answering.
fn docker_unavailable() -> Option<&'static str> {
    if !shell::available("docker", "--version") {
        return Some("`docker` is not installed (not on PATH)");
    }
    let compose = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !compose {
        return Some("`docker compose` (Compose v2) is not installed");
    }
    if !shell::available("docker", "info") {
        return Some("no Docker engine answers (`docker info` failed)");
    }
    None
}

/// The Redpanda version the compose file pins (its image tag), for the env
/// file's `KAFKA_BROKER_VERSION`.
fn redpanda_version() -> String {
    fs::read_to_string(workspace_root().join("docker-compose.yml"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("image: docker.redpanda.com/redpandadata/redpanda:")
                })
                .map(|tag| tag.trim().trim_start_matches('v').to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `docker compose up -d redpanda` with the repo's `docker-compose.yml`,
/// then the same env file as the Kafka engine's (`KAFKA_BOOTSTRAP`, the
/// engine, version and instance; no TLS or SASL listeners, which the
/// compose file does not open) plus the schema registry's and admin API's
/// URLs. Redpanda Console: `docker compose up -d console`.
fn start_redpanda(dirs: &Dirs) -> anyhow::Result<RunningBroker> {
    if let Some(why) = docker_unavailable() {
        bail!(
            "--engine redpanda runs `docker compose up -d redpanda`, but {why}; \
             install Docker (with Compose v2) and start its engine, or use the default \
             engine (Apache Kafka from Maven jars: Java 17+ and Maven, no Docker)"
        );
    }
    shell::run(
        Command::new("docker")
            .args(["compose", "-f"])
            .arg(workspace_root().join("docker-compose.yml"))
            .args(["up", "-d", "redpanda"]),
    )?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !tcp_ready(REDPANDA_BOOTSTRAP) {
        if Instant::now() > deadline {
            bail!(
                "Redpanda did not open {REDPANDA_BOOTSTRAP} within 90 s; see `docker compose logs redpanda`"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let running = RunningBroker {
        engine: Engine::Redpanda,
        started_now: true,
        pid: None,
        env: vec![
            ("KAFKA_BOOTSTRAP".into(), REDPANDA_BOOTSTRAP.into()),
            ("KAFKA_BROKER_ENGINE".into(), "redpanda".into()),
            ("KAFKA_BROKER_VERSION".into(), redpanda_version()),
            ("KAFKA_BROKER_INSTANCE".into(), instance().to_string()),
            (
                "SCHEMA_REGISTRY_URL".into(),
                "http://127.0.0.1:18081".into(),
            ),
            ("REDPANDA_ADMIN_URL".into(), "http://127.0.0.1:19644".into()),
        ],
    };
    write_env(dirs, &running)?;
    eprintln!(
        "xtask: Redpanda Console too: `docker compose up -d console` (http://127.0.0.1:8080)"
    );
    Ok(running)
}

/// Stop the broker this harness started. Never touches other processes.
pub fn down(version: &str) -> anyhow::Result<()> {
    let dirs = Dirs::new(version);
    let engine_is_redpanda = fs::read_to_string(&dirs.env)
        .map(|t| {
            parse_env(&t)
                .iter()
                .any(|(k, v)| k == "KAFKA_BROKER_ENGINE" && v == "redpanda")
        })
        .unwrap_or(false);
    if engine_is_redpanda {
        shell::run(
            Command::new("docker")
                .args(["compose", "-f"])
                .arg(workspace_root().join("docker-compose.yml"))
                .arg("down"),
        )?;
        let _ = fs::remove_file(&dirs.env);
        println!("stopped Redpanda");
        return Ok(());
    }
    let pid = fs::read_to_string(&dirs.pid)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let Some(pid) = pid.filter(|&p| is_our_java(p, &dirs)) else {
        let _ = fs::remove_file(&dirs.pid);
        let _ = fs::remove_file(&dirs.env);
        println!("no broker of ours is running");
        return Ok(());
    };
    stop_pid(pid, &dirs, false);
    let _ = fs::remove_file(&dirs.pid);
    let _ = fs::remove_file(&dirs.env);
    println!("stopped broker pid {pid}");
    Ok(())
}

/// Stop our java process: SIGTERM and a clean shutdown (SIGKILL only if it
/// hangs for 30 s), or with `hard` SIGKILL at once, like a power cut.
fn stop_pid(pid: u32, dirs: &Dirs, hard: bool) {
    if hard {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    } else {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_our_java(pid, dirs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_our_java(pid, dirs) {
        eprintln!("xtask: broker pid {pid} ignored SIGTERM for 30 s; sending SIGKILL");
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stop the running broker, keep it down for `down_for`, and start it again
/// on the same ports and data (for the broker-restart scenarios).
fn restart(version: &str, hard: bool, down_for: Duration) -> anyhow::Result<()> {
    let dirs = Dirs::new(version);
    let env = fs::read_to_string(&dirs.env).with_context(|| {
        format!(
            "no broker to restart: {} is missing; run `cargo xtask broker up`",
            dirs.env.display()
        )
    })?;
    let pairs = parse_env(&env);
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    if value("KAFKA_BROKER_ENGINE").as_deref() != Some("kafka") {
        bail!("`broker restart` drives the Apache Kafka engine only");
    }
    let bootstrap = value("KAFKA_BOOTSTRAP").context("env has no KAFKA_BOOTSTRAP")?;
    let old = value("KAFKA_BROKER_PID")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|&p| is_our_java(p, &dirs))
        .context("the broker in the env file is not running; run `cargo xtask broker up`")?;
    let started = Instant::now();
    stop_pid(old, &dirs, hard);
    eprintln!(
        "xtask: broker pid {old} stopped ({}) in {:.1} s; down for {:.1} s",
        if hard { "SIGKILL" } else { "SIGTERM" },
        started.elapsed().as_secs_f64(),
        down_for.as_secs_f64()
    );
    std::thread::sleep(down_for);
    let pid = launch(&dirs, &bootstrap)?;
    let env: String = pairs
        .iter()
        .map(|(k, v)| {
            let v = if k == "KAFKA_BROKER_PID" {
                pid.to_string()
            } else {
                v.clone()
            };
            format!("export {k}={v}\n")
        })
        .collect();
    fs::write(&dirs.env, env)?;
    println!(
        "restarted broker: pid {pid} at {bootstrap}, {:.1} s after the stop began",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn status(version: &str) -> anyhow::Result<()> {
    let dirs = Dirs::new(version);
    match find_running(&dirs)? {
        Some(running) => {
            println!("running: {}", running.describe());
            print!("{}", running.env_lines());
        }
        None => println!("no broker of ours is running (start one with `cargo xtask broker up`)"),
    }
    Ok(())
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(f) = fs::File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn logs(version: &str, lines: usize, follow: bool) -> anyhow::Result<()> {
    let dirs = Dirs::new(version);
    if !dirs.log.exists() {
        bail!("no broker log at {} yet", dirs.log.display());
    }
    if follow {
        shell::run(
            Command::new("tail")
                .arg(format!("-n{lines}"))
                .arg("-F")
                .arg(&dirs.log),
        )
    } else {
        println!("{}", tail(&dirs.log, lines));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_with_or_without_export() {
        let text = "export KAFKA_BOOTSTRAP=127.0.0.1:1\nKAFKA_SASL_USER=alice\n\n# comment\n";
        assert_eq!(
            parse_env(text),
            vec![
                ("KAFKA_BOOTSTRAP".to_string(), "127.0.0.1:1".to_string()),
                ("KAFKA_SASL_USER".to_string(), "alice".to_string()),
            ]
        );
    }
}
