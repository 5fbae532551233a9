//! The three-node cluster of `cargo xtask cluster up` (`target/cluster/`):
//! where it is ([`cluster`]), and its nodes' faults ([`kill_node`],
//! [`stop_node`], [`start_node`], [`move_node`]), driven through the xtask.
//!
//! Tests that use it sit under a `cluster::` module path and are
//! `#[ignore]`d in the shared run; `cargo xtask test` brings the cluster up
//! and runs them (`--ignored cluster::`, one at a time: they kill nodes),
//! then brings it down.

use std::path::PathBuf;

use crate::{broker_required, env_line, reachable, workspace_root, BrokerEnv};

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its `node.id` (1..=3), as metadata and Fetch responses name it.
    pub id: i32,
    /// Its `broker.rack` (`r1`..`r3`).
    pub rack: String,
    /// Its PLAINTEXT listener, `host:port`.
    pub address: String,
    /// Its SASL_SSL listener, `host:port`.
    pub address_sasl_ssl: Option<String>,
}

/// Endpoints and credentials of the three-node cluster.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    /// Every node's PLAINTEXT listener, comma-separated (a bootstrap list).
    pub bootstrap: String,
    /// Every node's SASL_SSL listener (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER;
    /// `connections.max.reauth.ms` = [`ClusterEnv::reauth_ms`]).
    pub bootstrap_sasl_ssl: Option<String>,
    /// Every node's SASL_PLAINTEXT listener (the same mechanisms and
    /// `connections.max.reauth.ms`, without TLS).
    pub bootstrap_sasl_plaintext: Option<String>,
    /// The nodes, by id.
    pub nodes: Vec<ClusterNode>,
    /// The CA that signed the nodes' certificate.
    pub ca_pem: Option<PathBuf>,
    /// SASL user known to the cluster.
    pub sasl_user: Option<String>,
    /// Its password.
    pub sasl_password: Option<String>,
    /// The SASL listener's `connections.max.reauth.ms` (KIP-368), if set.
    pub reauth_ms: Option<u64>,
}

impl ClusterEnv {
    /// The cluster as a [`BrokerEnv`] (bootstrap: every node), for the
    /// fixtures ([`client`](crate::client), [`consumer_props`](crate::consumer_props), ...).
    pub fn broker_env(&self) -> BrokerEnv {
        BrokerEnv {
            bootstrap: self.bootstrap.clone(),
            bootstrap_ssl: None,
            bootstrap_sasl_ssl: self.bootstrap_sasl_ssl.clone(),
            ca_pem: self.ca_pem.clone(),
            client_cert_pem: None,
            client_key_pem: None,
            sasl_user: self.sasl_user.clone(),
            sasl_password: self.sasl_password.clone(),
        }
    }

    /// Node `id`.
    ///
    /// # Panics
    /// When the cluster has no such node.
    pub fn node(&self, id: i32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("the cluster has no node {id}"))
    }

    /// The node in rack `rack`.
    ///
    /// # Panics
    /// When no node is in that rack.
    pub fn node_in_rack(&self, rack: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.rack == rack)
            .unwrap_or_else(|| panic!("the cluster has no node in rack {rack}"))
    }
}

fn cluster_env_file() -> PathBuf {
    workspace_root().join("target/cluster/env")
}

/// The cluster, or `None` (skip) when there is none and none is required.
/// Every node must answer: a test starts from a whole cluster.
///
/// Read from the process env (`KAFKA_CLUSTER_*`, as `cargo xtask test`
/// passes it), else from `target/cluster/env`. When the process env names
/// its env file (`KAFKA_CLUSTER_ENV_FILE`, the xtask's own cluster) and the
/// file exists, the file: [`move_node`] rewrites it with the new ports
/// after the process env was handed out.
///
/// # Panics
/// When a node does not answer (or there is no cluster) and
/// [`broker_required`] is true (`CI=true`, `KAFKA_REQUIRE_BROKER=1`).
pub fn cluster() -> Option<ClusterEnv> {
    cluster_healing(true)
}

/// [`cluster`]; with `heal`, under `cargo xtask test` (which sets
/// `KAFKA_BROKER_CONTROL`), a node found not answering (a test before
/// this one killed it and its restart had not finished, or failed) is
/// started again once with `cargo xtask cluster up` before giving up:
/// every cluster test starts from three nodes.
fn cluster_healing(heal: bool) -> Option<ClusterEnv> {
    // With KAFKA_CLUSTER_BOOTSTRAP in the env, the env is the whole truth,
    // unless it names the file that is (moved nodes).
    let named_file = std::env::var_os("KAFKA_CLUSTER_ENV_FILE")
        .map(PathBuf::from)
        .filter(|f| f.exists());
    let read = |path: PathBuf| -> Vec<(String, String)> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(env_line)
            .collect()
    };
    let file_first = named_file.is_some();
    let file = match named_file {
        Some(path) => read(path),
        None if std::env::var_os("KAFKA_CLUSTER_BOOTSTRAP").is_some() => Vec::new(),
        None => read(cluster_env_file()),
    };
    let get = |k: &str| {
        if file_first {
            file.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(k).ok())
        } else {
            crate::lookup(k, &file)
        }
    };
    let problem = match parse(&get) {
        Err(problem) => problem,
        Ok(env) => match env.nodes.iter().find(|n| !reachable(&n.address)) {
            Some(n) if heal && std::env::var_os("KAFKA_BROKER_CONTROL").is_some() => {
                eprintln!(
                    "node {} does not answer at {}: `cargo xtask cluster up` to start it again",
                    n.id, n.address
                );
                if let Err(e) = xtask_cluster_up() {
                    eprintln!("cargo xtask cluster up failed: {e}");
                }
                return cluster_healing(false);
            }
            Some(n) => format!(
                "node {} (rack {}) does not answer at {}; `cargo xtask cluster start {}` \
                 (or `cargo xtask cluster up`)",
                n.id, n.rack, n.address, n.id
            ),
            None => return Some(env),
        },
    };
    if broker_required() {
        panic!(
            "this test needs the three-node cluster and it is not reachable: {problem}. \
             Start it with `cargo xtask cluster up`, or run `cargo xtask test`"
        );
    }
    eprintln!("SKIPPED (no cluster): {problem}. Start it with `cargo xtask cluster up`.");
    None
}

/// The cluster's env from `get` (a variable's value by name).
fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<ClusterEnv, String> {
    let bootstrap = get("KAFKA_CLUSTER_BOOTSTRAP").ok_or_else(|| {
        "KAFKA_CLUSTER_BOOTSTRAP is not set and target/cluster/env does not exist".to_string()
    })?;
    let ids = get("KAFKA_CLUSTER_NODES").unwrap_or_else(|| "1,2,3".into());
    let mut nodes = Vec::new();
    for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id: i32 = id
            .parse()
            .map_err(|_| format!("KAFKA_CLUSTER_NODES holds {id:?}, not a node id"))?;
        let address = get(&format!("KAFKA_CLUSTER_NODE_{id}"))
            .ok_or_else(|| format!("KAFKA_CLUSTER_NODE_{id} is not set"))?;
        nodes.push(ClusterNode {
            id,
            rack: get(&format!("KAFKA_CLUSTER_NODE_{id}_RACK")).unwrap_or_default(),
            address,
            address_sasl_ssl: get(&format!("KAFKA_CLUSTER_NODE_{id}_SASL_SSL")),
        });
    }
    Ok(ClusterEnv {
        bootstrap,
        bootstrap_sasl_ssl: get("KAFKA_CLUSTER_BOOTSTRAP_SASL_SSL"),
        bootstrap_sasl_plaintext: get("KAFKA_CLUSTER_BOOTSTRAP_SASL_PLAINTEXT"),
        nodes,
        ca_pem: get("KAFKA_CLUSTER_CA_PEM").map(PathBuf::from),
        sasl_user: get("KAFKA_CLUSTER_SASL_USER"),
        sasl_password: get("KAFKA_CLUSTER_SASL_PASSWORD"),
        reauth_ms: get("KAFKA_CLUSTER_REAUTH_MS").and_then(|v| v.parse().ok()),
    })
}

/// `let cluster = require_cluster!();` — the cluster, or return early (skip).
#[macro_export]
macro_rules! require_cluster {
    () => {
        match $crate::cluster() {
            Some(cluster) => cluster,
            None => return,
        }
    };
}

/// `kill -9` node `id` (`cargo xtask cluster kill`): a power cut. Returns
/// once the process is gone. The controller fences the node after
/// `broker.session.timeout.ms` (4 s on this cluster, Kafka's default 9 s);
/// until then the metadata still lists it.
///
/// # Errors
/// The xtask failed (no cluster, node not running); its stderr.
pub fn kill_node(id: i32) -> Result<(), String> {
    xtask_cluster("kill", id)
}

/// Stop node `id` cleanly (`cargo xtask cluster stop`: SIGTERM, controlled
/// shutdown, so its leaderships move first). Returns once it has exited.
///
/// # Errors
/// The xtask failed (no cluster, node not running); its stderr.
pub fn stop_node(id: i32) -> Result<(), String> {
    xtask_cluster("stop", id)
}

/// Start node `id` again on its ports and data (`cargo xtask cluster
/// start`). Returns once it serves and every running node's metadata
/// lists every running node (up to 180 s).
///
/// # Errors
/// The xtask failed (no cluster, the node exited or did not serve in time); its stderr.
pub fn start_node(id: i32) -> Result<(), String> {
    xtask_cluster("start", id)
}

/// Restart node `id` with its broker listeners on new ports (`cargo xtask
/// cluster move`: a clean stop, the controller port, data and id kept).
/// Returns once it serves and every running node's metadata lists it at
/// its new address; [`cluster`] then gives the new addresses. A client
/// that knew only the old ones must find it through its bootstrap
/// addresses (KIP-899).
///
/// # Errors
/// The xtask failed (no cluster, the node did not serve in time); its stderr.
pub fn move_node(id: i32) -> Result<(), String> {
    xtask_cluster("move", id)
}

/// `xtask cluster up`: starts every node that is down and waits until all
/// serve.
fn xtask_cluster_up() -> Result<(), String> {
    xtask_cluster_args(&["up"])
}

/// Run `xtask cluster <action> <id>`: the xtask binary in
/// `KAFKA_BROKER_CONTROL` (set by `cargo xtask test`), else
/// `target/debug/xtask` (built by any `cargo xtask` call).
fn xtask_cluster(action: &str, id: i32) -> Result<(), String> {
    xtask_cluster_args(&[action, &id.to_string()])
}

/// Run `xtask cluster <args>`.
fn xtask_cluster_args(args: &[&str]) -> Result<(), String> {
    let xtask = std::env::var_os("KAFKA_BROKER_CONTROL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/xtask"));
    let out = std::process::Command::new(&xtask)
        .arg("cluster")
        .args(args)
        .output()
        .map_err(|e| format!("could not run {}: {e}", xtask.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`xtask cluster {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_file_names_every_node() {
        let vars = [
            ("KAFKA_CLUSTER_BOOTSTRAP", "127.0.0.1:1,127.0.0.1:2"),
            ("KAFKA_CLUSTER_NODES", "1,2"),
            ("KAFKA_CLUSTER_NODE_1", "127.0.0.1:1"),
            ("KAFKA_CLUSTER_NODE_1_RACK", "r1"),
            ("KAFKA_CLUSTER_NODE_2", "127.0.0.1:2"),
            ("KAFKA_CLUSTER_NODE_2_RACK", "r2"),
            ("KAFKA_CLUSTER_NODE_2_SASL_SSL", "127.0.0.1:12"),
            ("KAFKA_CLUSTER_REAUTH_MS", "10000"),
        ];
        let get = |k: &str| {
            vars.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        let env = parse(&get).unwrap();
        assert_eq!(env.nodes.len(), 2);
        assert_eq!(env.node_in_rack("r2").id, 2);
        assert_eq!(
            env.node(2).address_sasl_ssl.as_deref(),
            Some("127.0.0.1:12")
        );
        assert_eq!(env.reauth_ms, Some(10_000));
        assert_eq!(env.broker_env().bootstrap, "127.0.0.1:1,127.0.0.1:2");

        let none = |_: &str| None;
        assert!(parse(&none)
            .unwrap_err()
            .contains("KAFKA_CLUSTER_BOOTSTRAP"));
    }
}
