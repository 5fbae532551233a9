//! One node cut off from the clients (not from the cluster) through the
//! fault proxy: every connection to it reset, new ones refused, for a few
//! seconds, as a firewall rule or a dead route on the client's side would.
//!
//! The cluster sees nothing wrong: the node keeps its leaderships and its
//! place in every ISR, so nothing fails over, and its partitions wait for
//! the cut to heal. What the client must do is come back by itself, and
//! write nothing twice: the producer's requests to the node reset after
//! being written may or may not have been appended, and it must retry
//! them under the same sequence numbers (the broker then answers
//! DUPLICATE_SEQUENCE_NUMBER for those it has).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::{BrokerAddress, ConnectFuture, Connector, TcpConnector};
use sim_tests::proxy::{FaultProxy, Faults};

use super::load::{Load, Setup};
use super::nodes;

/// How long the node stays cut off: less than the group's session (the
/// coordinator may be the node), more than a few retries.
const CUT: Duration = Duration::from_secs(3);

/// Dials each node through a fault proxy of its own (any other address,
/// a bootstrap one say, straight): a fault set on one proxy cuts one node.
#[derive(Debug)]
struct PerNode {
    proxies: HashMap<BrokerAddress, FaultProxy>,
}

impl Connector for PerNode {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        match self.proxies.get(addr) {
            Some(proxy) => proxy.connect(addr, timeout),
            None => TcpConnector.connect(addr, timeout),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn a_node_cut_off_from_the_clients_loses_and_duplicates_nothing_and_they_come_back() {
    let cluster = testkit::require_cluster!();
    let proxies: HashMap<i32, FaultProxy> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, FaultProxy::new(31 + n.id as u64)))
        .collect();
    let connector = PerNode {
        proxies: cluster
            .nodes
            .iter()
            .map(|n| {
                let addr = BrokerAddress::parse(&n.address).expect("the node's address");
                (addr, proxies[&n.id].clone())
            })
            .collect(),
    };
    let setup = Setup {
        connector: Some(Arc::new(connector)),
        ..Setup::default()
    };
    let mut load = Load::start_with("node-cut-off", cluster, setup).await;
    // A leader of the input that is not the group's coordinator: the fault
    // is a leader out of reach.
    let coordinator = nodes::coordinator(&load.admin, &load.group).await;
    let leaders = nodes::leaders(&load.admin, &load.topic).await;
    let victim = leaders
        .values()
        .copied()
        .find(|&n| n != coordinator)
        .expect("three leaders, one coordinator");
    let leads: Vec<i32> = leaders
        .iter()
        .filter(|&(_, &l)| l == victim)
        .map(|(&p, _)| p)
        .collect();
    eprintln!(
        "node-cut-off: cutting node {victim} (leads partitions {leads:?}; coordinator {coordinator}) off for {CUT:?}"
    );

    let proxy = &proxies[&victim];
    let cut_at = load.fault_begins();
    proxy.set(Faults {
        refuse_connections: true,
        ..Faults::default()
    });
    proxy.reset_all();
    // The cut lasts its time: it is the fault, not a wait for a condition.
    tokio::time::sleep(CUT).await;
    proxy.set(Faults::default());
    let healed = Instant::now();
    eprintln!(
        "node-cut-off: healed {:.2} s after the cut; {} dials refused meanwhile",
        (healed - cut_at).as_secs_f64(),
        proxy.stats.refused.load(Ordering::Relaxed)
    );
    load.wait_flowing("after the cut healed").await;
    load.finish((
        CUT + Duration::from_secs(3),
        "the cut, then the client's retry and reconnect backoffs (1 s each at most), + 1 s",
    ))
    .await;
}
