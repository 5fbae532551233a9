//! Test support shared by every crate's integration tests.
//!
//! [`broker()`] finds the broker that `cargo xtask broker up` started (from the
//! process environment, or from `target/broker/env`), or the cluster that
//! `KAFKA_BOOTSTRAP` names. When none is reachable a test **fails** if
//! `CI=true` or `KAFKA_REQUIRE_BROKER=1` (set by `cargo xtask test`), and
//! otherwise skips with a message, so `cargo test` on a laptop without a
//! broker still runs the unit tests.
//!
//! ```text
//! #[tokio::test]
//! async fn talks_to_kafka() {
//!     let broker = testkit::require_broker!();
//!     let client = testkit::client(&broker).await;
//!     let topic = testkit::numbered_topic(&broker, &client, "demo", 3, 100, |i| format!("k{i}")).await;
//!     assert!(testkit::eventually(Duration::from_secs(10), || /* what the test waits for */ true).await);
//! }
//! ```
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | this file | broker (and PostgreSQL, Redis) discovery, [`unique_name`], [`restart_broker`], [`PostgresServer`] (stop and start the xtask's PostgreSQL) |
//! | `cluster` | [`cluster()`]: the three-node cluster of `cargo xtask cluster up` ([`ClusterEnv`], racks r1..r3), skipped or failed like [`broker()`]; [`kill_node`], [`stop_node`], [`start_node`] through the xtask |
//! | `fixtures` | [`client`], [`create_topic`], [`produce`], [`numbered_topic`], producer configs, [`consumer_props`] (classic, or the protocol `KAFKA_GROUP_PROTOCOL` or [`set_group_protocol`] names), [`speaks_848`]: one version for every crate |
//! | `schema_registry` | [`StandInSchemaRegistry`]: the documented subset of the Confluent schema registry REST API, in process (no real registry can be installed here) |
//! | `wait` | [`eventually`], [`eventually_async`], [`eventually_blocking`]: wait for a condition, never a fixed sleep; [`stays_for`], [`stays_for_async`], [`stays_for_blocking`]: prove nothing more happens, failing the moment it does; [`DrainedChild`]: a child process whose output is read as it comes |

mod cluster;
mod fixtures;
mod schema_registry;
mod wait;

pub use cluster::{cluster, kill_node, move_node, start_node, stop_node, ClusterEnv, ClusterNode};
pub use fixtures::{
    client, consumer_props, create_topic, create_topic_with, group_protocol, kip848,
    numbered_records, numbered_topic, produce, producer_builder, producer_config,
    set_group_protocol, speaks_848, CLASSIC_ONLY, CONSUMER_DEFAULTS,
};
pub use schema_registry::StandInSchemaRegistry;
pub use wait::{
    eventually, eventually_async, eventually_blocking, stays_for, stays_for_async,
    stays_for_blocking, DrainedChild, Finished,
};

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Endpoints and credentials of the test broker.
#[derive(Debug, Clone)]
pub struct BrokerEnv {
    /// PLAINTEXT listener, `host:port`.
    pub bootstrap: String,
    /// SSL listener, if the harness started one.
    pub bootstrap_ssl: Option<String>,
    /// SASL_SSL listener (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER).
    pub bootstrap_sasl_ssl: Option<String>,
    /// The CA that signed the broker certificate.
    pub ca_pem: Option<PathBuf>,
    /// A client certificate signed by that CA (mTLS).
    pub client_cert_pem: Option<PathBuf>,
    /// The client certificate's key.
    pub client_key_pem: Option<PathBuf>,
    /// SASL user known to the broker.
    pub sasl_user: Option<String>,
    /// Its password.
    pub sasl_password: Option<String>,
}

impl BrokerEnv {
    /// A broker known only by its PLAINTEXT address.
    pub fn plaintext(bootstrap: impl Into<String>) -> BrokerEnv {
        BrokerEnv {
            bootstrap: bootstrap.into(),
            bootstrap_ssl: None,
            bootstrap_sasl_ssl: None,
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            sasl_user: None,
            sasl_password: None,
        }
    }
}

/// Is a missing broker a failure (CI, `cargo xtask test`) or a skip?
pub fn broker_required() -> bool {
    let truthy = |k: &str| {
        std::env::var(k)
            .map(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
            .unwrap_or(false)
    };
    truthy("CI") || truthy("KAFKA_REQUIRE_BROKER")
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

fn env_file() -> PathBuf {
    workspace_root().join("target/broker/env")
}

fn env_file_pairs() -> Vec<(String, String)> {
    std::fs::read_to_string(env_file())
        .unwrap_or_default()
        .lines()
        .filter_map(env_line)
        .collect()
}

/// One `KEY=value` line of an env file (an `export ` prefix is optional,
/// so that `source target/broker/env` exports it).
fn env_line(line: &str) -> Option<(String, String)> {
    let line = line.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (k, v) = line.split_once('=')?;
    Some((k.trim().to_string(), v.to_string()))
}

/// A harness variable: the process env, else `target/broker/env`.
fn env_var(key: &str) -> Option<String> {
    lookup(key, &env_file_pairs())
}

/// Read a variable from the process env, else from `target/broker/env`.
fn lookup(key: &str, file: &[(String, String)]) -> Option<String> {
    std::env::var(key)
        .ok()
        .or_else(|| file.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
}

fn reachable(addr: &str) -> bool {
    let Some(addrs) = addr
        .to_socket_addrs()
        .ok()
        .map(|a| a.collect::<Vec<SocketAddr>>())
    else {
        return false;
    };
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
}

/// The test broker, or `None` (skip) when there is none and none is required.
///
/// # Panics
/// When no broker is reachable and [`broker_required`] is true.
pub fn broker() -> Option<BrokerEnv> {
    // With KAFKA_BOOTSTRAP in the env, the env is the whole truth: do not mix
    // in a stale file from an earlier `broker up`.
    let file: Vec<(String, String)> = if std::env::var_os("KAFKA_BOOTSTRAP").is_some() {
        Vec::new()
    } else {
        env_file_pairs()
    };
    let get = |k: &str| lookup(k, &file);
    let problem = match get("KAFKA_BOOTSTRAP") {
        None => "KAFKA_BOOTSTRAP is not set and target/broker/env does not exist".to_string(),
        Some(b) if !reachable(&b) => format!("no broker answers at KAFKA_BOOTSTRAP={b}"),
        Some(bootstrap) => {
            return Some(BrokerEnv {
                bootstrap,
                bootstrap_ssl: get("KAFKA_BOOTSTRAP_SSL"),
                bootstrap_sasl_ssl: get("KAFKA_BOOTSTRAP_SASL_SSL"),
                ca_pem: get("KAFKA_CA_PEM").map(PathBuf::from),
                client_cert_pem: get("KAFKA_CLIENT_CERT_PEM").map(PathBuf::from),
                client_key_pem: get("KAFKA_CLIENT_KEY_PEM").map(PathBuf::from),
                sasl_user: get("KAFKA_SASL_USER"),
                sasl_password: get("KAFKA_SASL_PASSWORD"),
            })
        }
    };
    if broker_required() {
        panic!(
            "this test needs a Kafka broker and none is reachable: {problem}. \
             Start one with `cargo xtask broker up`, or run `cargo xtask test`"
        );
    }
    eprintln!("SKIPPED (no broker): {problem}. Start one with `cargo xtask broker up`.");
    None
}

/// `let broker = require_broker!();` — the broker, or return early (skip).
#[macro_export]
macro_rules! require_broker {
    () => {
        match $crate::broker() {
            Some(broker) => broker,
            None => return,
        }
    };
}

/// A name no other test (or earlier run) uses: `prefix-<time>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{prefix}-{millis}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server of `cargo xtask postgres up` (or `PG_URL`), as a
/// libpq-style connection string; `None` (skip) when there is none and none
/// is required, as for the broker.
///
/// # Panics
/// When no server is reachable and [`broker_required`] is true.
pub fn postgres() -> Option<String> {
    let file = workspace_root().join("target/postgres/env");
    let url = std::env::var("PG_URL").ok().or_else(|| {
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("PG_URL=").map(str::to_string))
    });
    let problem = match &url {
        None => "PG_URL is not set and target/postgres/env does not exist".to_string(),
        Some(u) => {
            let field = |k: &str| {
                u.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k).map(str::to_string))
            };
            let host = field("host=").unwrap_or_else(|| "127.0.0.1".into());
            let port = field("port=").unwrap_or_else(|| "5432".into());
            if reachable(&format!("{host}:{port}")) {
                return url;
            }
            format!("no PostgreSQL answers at {host}:{port}")
        }
    };
    if broker_required() {
        panic!(
            "this test needs PostgreSQL and none is reachable: {problem}. \
             Start one with `cargo xtask postgres up`, or run `cargo xtask test`"
        );
    }
    eprintln!("SKIPPED (no PostgreSQL): {problem}. Start one with `cargo xtask postgres up`.");
    None
}

/// `let pg_url = require_postgres!();` — the server, or return early (skip).
#[macro_export]
macro_rules! require_postgres {
    () => {
        match $crate::postgres() {
            Some(url) => url,
            None => return,
        }
    };
}

/// The PostgreSQL server `cargo xtask postgres up` started (its data in
/// `target/postgres/data`), to stop and start again with the commands the
/// xtask uses (`pg_ctl`, as the `postgres` user when we are root). Every
/// other PostgreSQL test shares it: a test that stops it belongs under an
/// `alone::` module path (run by itself, last, by `cargo xtask test`).
#[derive(Debug)]
pub struct PostgresServer {
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
}

impl PostgresServer {
    /// The xtask's server if it is the one `pg_url` names (same port) and
    /// it runs; `None` for any other server (`PG_URL` pointing elsewhere).
    pub fn of(pg_url: &str) -> Option<PostgresServer> {
        let dir = workspace_root().join("target/postgres");
        let data = dir.join("data");
        // postmaster.pid: pid, data dir, start time, port, ...
        let pid = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        let port = pid.lines().nth(3)?.trim().to_string();
        let url_port = pg_url
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("port="))
            .unwrap_or("5432");
        if port != url_port {
            return None;
        }
        // postmaster.opts: the server binary (pg_ctl sits beside it), then
        // its options, each in double quotes.
        let opts = std::fs::read_to_string(data.join("postmaster.opts")).ok()?;
        let server = opts.split(" \"").next()?.trim();
        let pg_ctl = PathBuf::from(server).with_file_name("pg_ctl");
        pg_ctl.exists().then(|| PostgresServer {
            pg_ctl,
            data,
            log: dir.join("server.log"),
        })
    }

    /// `pg_ctl stop -m fast`, as `cargo xtask postgres down`: every session
    /// is terminated (SQLSTATE 57P01, then its connection closes) and the
    /// call returns once the server has exited.
    ///
    /// # Errors
    /// `pg_ctl` failed; its output.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"])
    }

    /// Start the stopped server again with the options it had, on the
    /// same port: `pg_ctl restart`, which reads them from
    /// `postmaster.opts` (and, with no server running, just starts one).
    /// Returns once it accepts connections.
    ///
    /// # Errors
    /// `pg_ctl` failed; its output.
    pub fn start(&self) -> Result<(), String> {
        let log = self.log.display().to_string();
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "restart"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        // The server refuses root: as root, run it as the user Debian's
        // package created (the xtask made it own target/postgres).
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let mut cmd = if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&self.pg_ctl);
            c
        } else {
            std::process::Command::new(&self.pg_ctl)
        };
        cmd.arg("-D").arg(&self.data).args(args);
        // `-l` sends the server's own output to the log: these pipes close
        // when pg_ctl exits.
        let out = cmd
            .output()
            .map_err(|e| format!("running {}: {e}", self.pg_ctl.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// The Redis server of `cargo xtask redis up` (or `REDIS_URL`), as a
/// `redis://host:port` URL; `None` (skip) when there is none and none is
/// required, as for the broker and PostgreSQL.
///
/// # Panics
/// When no server is reachable and [`broker_required`] is true.
pub fn redis() -> Option<String> {
    let file = workspace_root().join("target/redis/env");
    let url = std::env::var("REDIS_URL").ok().or_else(|| {
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("REDIS_URL=").map(str::to_string))
    });
    let problem = match &url {
        None => "REDIS_URL is not set and target/redis/env does not exist".to_string(),
        Some(u) => {
            let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            let hostport = rest.rsplit('@').next().unwrap_or(rest);
            let hostport = hostport.split('/').next().unwrap_or(hostport);
            if reachable(hostport) {
                return url;
            }
            format!("no Redis answers at {hostport}")
        }
    };
    if broker_required() {
        panic!(
            "this test needs Redis and none is reachable: {problem}. \
             Start one with `cargo xtask redis up`, or run `cargo xtask test`"
        );
    }
    eprintln!("SKIPPED (no Redis): {problem}. Start one with `cargo xtask redis up`.");
    None
}

/// Restart the test broker through the harness (`xtask broker restart`):
/// stopped with SIGTERM (or SIGKILL if `hard`), down for `down_for`, then
/// started on the same ports and data. Blocks until it serves again. Only
/// for tests that run alone (`cargo xtask test` runs them after the rest):
/// every other test would see the broker vanish.
///
/// Uses the xtask binary in `KAFKA_BROKER_CONTROL` (set by `cargo xtask
/// test`), else `target/debug/xtask` (built by any `cargo xtask` call).
pub fn restart_broker(hard: bool, down_for: Duration) -> Result<(), String> {
    let xtask = std::env::var_os("KAFKA_BROKER_CONTROL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/xtask"));
    let mut cmd = std::process::Command::new(&xtask);
    cmd.arg("broker");
    // The broker `cargo xtask test` started (target/broker-test), or yours.
    if let Some(instance) = env_var("KAFKA_BROKER_INSTANCE") {
        cmd.args(["--instance", &instance]);
    }
    cmd.args(["restart", "--down-for"])
        .arg(down_for.as_secs_f64().to_string());
    if let Some(v) = env_var("KAFKA_BROKER_VERSION") {
        cmd.args(["--kafka-version", &v]);
    }
    if hard {
        cmd.arg("--hard");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {}: {e}", xtask.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`xtask broker restart` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_lines_parse_with_or_without_export() {
        assert_eq!(
            super::env_line("export KAFKA_BOOTSTRAP=127.0.0.1:9092"),
            Some(("KAFKA_BOOTSTRAP".into(), "127.0.0.1:9092".into()))
        );
        assert_eq!(
            super::env_line("KAFKA_SASL_USER=alice"),
            Some(("KAFKA_SASL_USER".into(), "alice".into()))
        );
        assert_eq!(super::env_line("# nothing"), None);
    }
}
