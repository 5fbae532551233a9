//! The seed's five tested situations, each on its own topic and group,
//! against the same slow downstream (2,000 records/s):
//!
//! | # | situation | what happens |
//! |---|---|---|
//! | 1 | slow processing | 1,500 records/s arrive for 8 s: the downstream keeps up, barely |
//! | 2 | burst | 12,000 records arrive at once: 6 s of work |
//! | 3 | queue saturation | 3,000 records/s for 5 s: the in-flight bound stays full |
//! | 4 | restart mid-processing | 1,500/s; the instance stops at 2.5 s and restarts; the new one is killed at 5 s and another starts |
//! | 5 | rebalance under load | 1,500/s; a second instance joins at 3 s, the first leaves at 6 s |
//!
//! Every one ends by waiting until every record was handled and the group
//! committed the log end, then checks the seed's claims ([`Row`]).
//! Producing, counting (handled, duplicates, lost), the group's lag and
//! starting, stopping and killing members are the lab's (`sim-tests`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use resilience::observe::{EventLog, Snapshot};
use resilience::{Processor, Stats};
use sim_tests::scenarios::{outside_uncommitted_window, Report};
use sim_tests::support::{self, GroupLag, Running, Sink, SinkHandler};
use testkit::BrokerEnv;
use tokio::sync::watch;

use crate::live::{Line, Live};
use crate::service::ServiceConfig;

/// Partitions of every situation's topic.
pub const PARTITIONS: i32 = 6;
/// Bytes of the largest record the demo writes, as the runtime counts
/// them: 96 of overhead, a key `k<n>` and a value `<n>` of at most 7 each.
pub const LARGEST_RECORD_BYTES: usize = 96 + 7 + 7;

/// Scales every duration and the burst (1.0: the demo, ~75 s; the test
/// runs shorter).
#[derive(Debug, Clone, Copy)]
pub struct Pace(pub f64);

impl Pace {
    fn secs(self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.0)
    }
}

/// What one situation showed: one row of the summary.
#[derive(Debug, Clone)]
pub struct Row {
    /// Produced, handled, duplicates, lost, unhandled (the lab's counts).
    pub report: Report,
    /// Most records between the group's committed offsets and the log end
    /// (records), sampled every second.
    pub peak_lag: i64,
    /// The same at the end (records): 0 when drained.
    pub end_lag: i64,
    /// From the end of the load until every offset was committed.
    pub drained_after: Duration,
    /// Assignments each member saw, in start order.
    pub assignments: Vec<usize>,
    /// What the membership changes call for.
    pub expected_assignments: Vec<usize>,
    /// A committed offset that went backwards: per member (its commits)
    /// and group-wide (sampled every second, across members).
    pub commit_regressions: usize,
    /// Commits for a partition after this member gave it up.
    pub commits_after_revoke: usize,
    /// Most in flight at once in any member (records, bytes).
    pub peak_in_flight: (usize, usize),
    /// The configured bound (records, bytes).
    pub bound: (usize, usize),
    /// One poll past the bound, which the runtime allows (records, bytes).
    pub one_poll: (usize, usize),
    /// Times the in-flight bound paused fetching, and most partitions
    /// paused at once (sampled).
    pub pauses: u64,
    pub peak_paused: usize,
    /// Duplicates the killed member's uncommitted window does not explain
    /// (only where a member is killed).
    pub unexplained_duplicates: Option<usize>,
    /// The live lines.
    pub lines: Vec<Line>,
}

impl Row {
    /// Peak in flight ≤ bound + one poll, for records and for bytes.
    pub fn within_bound(&self) -> bool {
        self.peak_in_flight.0 <= self.bound.0 + self.one_poll.0
            && self.peak_in_flight.1 <= self.bound.1 + self.one_poll.1
    }
}

/// The service's settings for one situation.
pub fn service_config(b: &BrokerEnv, topic: &str, group: &str) -> anyhow::Result<ServiceConfig> {
    ServiceConfig::from_properties(
        topic,
        &[("bootstrap.servers", &b.bootstrap), ("group.id", group)],
    )
}

/// One group member and what the lab keeps of it.
struct Member {
    running: Option<Running>,
    log: Arc<EventLog>,
    stats: Arc<Stats>,
}

/// What the one-second sampler reads: the running members' snapshots and
/// every member's counters.
#[derive(Default)]
struct Board {
    live: HashMap<usize, watch::Receiver<Snapshot>>,
    stats: Vec<Arc<Stats>>,
}

/// One situation in progress: its topic, group, members, sampler.
struct Situation<'a> {
    b: &'a BrokerEnv,
    name: &'static str,
    cfg: ServiceConfig,
    group: String,
    sink: Arc<Sink>,
    members: Vec<Member>,
    board: Arc<Mutex<Board>>,
    sampler: tokio::task::JoinHandle<(Vec<Line>, usize)>,
    stop_sampler: Arc<AtomicBool>,
}

impl<'a> Situation<'a> {
    async fn start(b: &'a BrokerEnv, number: usize, name: &'static str) -> anyhow::Result<Self> {
        let admin = testkit::client(b).await;
        let topic = testkit::create_topic(&admin, "bp", PARTITIONS).await;
        let group = testkit::unique_name("bp");
        let cfg = service_config(b, &topic, &group)?;
        println!("\n== {number}. {name} (topic {topic}, group {group})");
        let board = Arc::new(Mutex::new(Board::default()));
        let stop_sampler = Arc::new(AtomicBool::new(false));
        let lag = GroupLag::connect(b, &group, &topic).await;
        let sampler = tokio::spawn(sample(lag, board.clone(), stop_sampler.clone()));
        Ok(Situation {
            b,
            name,
            cfg,
            group,
            sink: Arc::new(Sink::default()),
            members: Vec::new(),
            board,
            sampler,
            stop_sampler,
        })
    }

    /// Start one more instance of the service.
    fn join(&mut self) {
        let log = Arc::new(EventLog::default());
        let cfg = self.cfg.processor_config().observer(log.clone());
        let handler = SinkHandler::new(&self.sink, self.cfg.downstream());
        let running = support::start(Processor::new(cfg, handler));
        let mut board = self.board.lock().expect("board");
        board
            .live
            .insert(self.members.len(), running.snapshots.clone());
        board.stats.push(running.stats.clone());
        self.members.push(Member {
            stats: running.stats.clone(),
            running: Some(running),
            log,
        });
    }

    fn leave(&mut self, i: usize) -> Option<Running> {
        self.board.lock().expect("board").live.remove(&i);
        self.members[i].running.take()
    }

    /// Member `i` stops gracefully: drains, commits, leaves the group.
    async fn stop(&mut self, i: usize) {
        if let Some(r) = self.leave(i) {
            r.stop().await;
        }
    }

    /// Member `i` dies: nothing more is handled or committed.
    async fn kill(&mut self, i: usize) {
        if let Some(r) = self.leave(i) {
            r.crash().await;
        }
    }

    /// Produce `per_second` records until the returned flag is set; the
    /// task returns how many were acknowledged.
    fn load(&self, per_second: u32) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u32>) {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(support::produce_steadily(
            testkit::producer_config(self.b),
            self.cfg.topic.clone(),
            0,
            per_second,
            stop.clone(),
        ));
        (stop, task)
    }

    /// Wait until all `produced` records are handled and committed, stop
    /// the members, and sum it up.
    async fn finish(mut self, produced: u32, expected: Vec<usize>) -> anyhow::Result<Row> {
        let load_ended = Instant::now();
        let all = produced as usize;
        testkit::eventually(Duration::from_secs(60), || self.sink.distinct() >= all).await;
        let lag = GroupLag::connect(self.b, &self.group, &self.cfg.topic).await;
        lag.wait_committed_to_end(Duration::from_secs(15)).await;
        let drained_after = load_ended.elapsed();
        let end_lag = lag.total().await?;
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
        self.stop_sampler.store(true, Ordering::SeqCst);
        let (lines, sampled_regressions) = self.sampler.await?;
        let topic = &self.cfg.topic;
        let report = Report::of(self.name, "resilient", produced, &self.sink, None)
            .split_missing(self.b, &self.group, topic, &self.sink)
            .await;
        let logs: Vec<&EventLog> = self.members.iter().map(|m| &*m.log).collect();
        let peak = |f: fn(&Stats) -> usize| self.members.iter().map(|m| f(&m.stats)).max();
        Ok(Row {
            peak_lag: lines.iter().map(|l| l.lag).max().unwrap_or(0).max(end_lag),
            end_lag,
            drained_after,
            assignments: logs.iter().map(|l| l.assignments()).collect(),
            expected_assignments: expected,
            commit_regressions: sampled_regressions
                + logs.iter().map(|l| l.commit_regressions()).sum::<usize>(),
            commits_after_revoke: logs.iter().map(|l| l.commits_after_revoke().len()).sum(),
            peak_in_flight: (
                peak(|s| s.peak_in_flight_records.load(Ordering::Relaxed)).unwrap_or(0),
                peak(|s| s.peak_in_flight_bytes.load(Ordering::Relaxed)).unwrap_or(0),
            ),
            bound: (self.cfg.max_in_flight_records, self.cfg.max_in_flight_bytes),
            one_poll: self.cfg.one_poll(LARGEST_RECORD_BYTES),
            pauses: self
                .members
                .iter()
                .map(|m| m.stats.pauses.load(Ordering::Relaxed))
                .sum(),
            peak_paused: lines.iter().map(|l| l.paused).max().unwrap_or(0),
            unexplained_duplicates: None,
            lines,
            report,
        })
    }
}

/// Every second until `stop`: the live line (printed), and whether a
/// committed offset went backwards. Returns the lines and the regressions.
async fn sample(
    lag: GroupLag,
    board: Arc<Mutex<Board>>,
    stop: Arc<AtomicBool>,
) -> (Vec<Line>, usize) {
    let mut live = Live::default();
    let (mut lines, mut regressions) = (Vec::new(), 0);
    let mut committed: HashMap<i32, i64> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let group_lag = match lag.read().await {
            Ok(parts) => {
                for p in &parts {
                    let Some(c) = p.committed else { continue };
                    if committed
                        .insert(p.partition, c)
                        .is_some_and(|before| before > c)
                    {
                        regressions += 1;
                    }
                }
                Some(parts.iter().map(|p| p.lag()).sum())
            }
            Err(_) => None, // a slow answer: the members' own lag instead
        };
        let line = {
            let board = board.lock().expect("board");
            let snaps: Vec<Snapshot> = board.live.values().map(|r| r.borrow().clone()).collect();
            let handled = board
                .stats
                .iter()
                .map(|s| s.handled.load(Ordering::Relaxed))
                .sum();
            live.line_of(&snaps.iter().collect::<Vec<_>>(), handled, group_lag)
        };
        println!("  {line}");
        lines.push(line);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (lines, regressions)
}

/// 1. The downstream is slow but keeps up: lag stays flat, nobody leaves.
pub async fn slow_processing(b: &BrokerEnv, pace: Pace) -> anyhow::Result<Row> {
    let mut s = Situation::start(b, 1, "slow processing").await?;
    s.join();
    let (stop, load) = s.load(1_500);
    tokio::time::sleep(pace.secs(8.0)).await;
    stop.store(true, Ordering::SeqCst);
    let produced = load.await?;
    s.finish(produced, vec![1]).await
}

/// 2. A burst far beyond the downstream: memory stays at the bound,
///    fetching pauses and resumes, the lag drains.
pub async fn burst(b: &BrokerEnv, pace: Pace) -> anyhow::Result<Row> {
    let mut s = Situation::start(b, 2, "burst").await?;
    s.join();
    tokio::time::sleep(pace.secs(1.0)).await;
    let n = (12_000.0 * pace.0) as u32;
    let admin = testkit::client(b).await;
    let records = testkit::numbered_records(&s.cfg.topic, n, |i| format!("k{i}"));
    testkit::produce(&admin, b, records).await;
    s.finish(n, vec![1]).await
}

/// 3. More arrives than the downstream takes, for seconds: the bound stays
///    full, partitions stay paused, the poll loop keeps the member alive.
pub async fn queue_saturation(b: &BrokerEnv, pace: Pace) -> anyhow::Result<Row> {
    let mut s = Situation::start(b, 3, "queue saturation").await?;
    s.join();
    let (stop, load) = s.load(3_000);
    tokio::time::sleep(pace.secs(5.0)).await;
    stop.store(true, Ordering::SeqCst);
    let produced = load.await?;
    s.finish(produced, vec![1]).await
}

/// 4. The instance restarts mid-processing (a graceful stop, then a kill):
///    nothing lost; duplicates only from the killed one's uncommitted work.
pub async fn restart_mid_processing(b: &BrokerEnv, pace: Pace) -> anyhow::Result<Row> {
    let mut s = Situation::start(b, 4, "restart mid-processing").await?;
    s.join();
    let (stop, load) = s.load(1_500);
    tokio::time::sleep(pace.secs(2.5)).await;
    println!("  -- instance 1 stops (drain, commit, leave); instance 2 starts");
    s.stop(0).await;
    s.join();
    tokio::time::sleep(pace.secs(2.5)).await;
    println!(
        "  -- instance 2 is killed; instance 3 starts (its partitions move after the 6 s session)"
    );
    s.kill(1).await;
    s.join();
    tokio::time::sleep(pace.secs(3.0)).await;
    stop.store(true, Ordering::SeqCst);
    let produced = load.await?;
    let killed = s.members[1].log.clone();
    let (topic, sink) = (s.cfg.topic.clone(), s.sink.clone());
    let mut row = s.finish(produced, vec![1, 1, 1]).await?;
    row.unexplained_duplicates = Some(outside_uncommitted_window(&killed, &topic, &sink));
    Ok(row)
}

/// 5. A second instance joins under load, then the first leaves: each
///    membership change is one rebalance, no more.
pub async fn rebalance_under_load(b: &BrokerEnv, pace: Pace) -> anyhow::Result<Row> {
    let mut s = Situation::start(b, 5, "rebalance under load").await?;
    s.join();
    let (stop, load) = s.load(1_500);
    tokio::time::sleep(pace.secs(3.0)).await;
    println!("  -- instance 2 joins");
    s.join();
    tokio::time::sleep(pace.secs(3.0)).await;
    println!("  -- instance 1 leaves");
    s.stop(0).await;
    tokio::time::sleep(pace.secs(2.0)).await;
    stop.store(true, Ordering::SeqCst);
    let produced = load.await?;
    // Eager (range): 1 joins; 2 joins (both reassigned); 1 leaves (2 reassigned).
    s.finish(produced, vec![2, 2]).await
}

/// All five, in order.
///
/// # Errors
/// When the broker stops answering.
pub async fn run(b: &BrokerEnv, pace: Pace) -> anyhow::Result<Vec<Row>> {
    Ok(vec![
        slow_processing(b, pace).await.context("slow processing")?,
        burst(b, pace).await.context("burst")?,
        queue_saturation(b, pace)
            .await
            .context("queue saturation")?,
        restart_mid_processing(b, pace).await.context("restart")?,
        rebalance_under_load(b, pace).await.context("rebalance")?,
    ])
}
