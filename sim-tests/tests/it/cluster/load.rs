//! The load every fault of the suite runs under, and the checks after it.
//!
//! ```text
//!   producer ──(idempotent, acks=all, numbered, keyed k<n>)──▶ input (3 partitions, RF 3)
//!                                                               │          │
//!                        Processor group: members A, B (+ C) ◀──┘          └──▶ exactly-once processor
//!                        a Sink records every handled number                    │ (its own group)
//!                        and when (the gaps)                                    ▼
//!                                                                    output (read_committed)
//! ```
//!
//! [`Load::finish`] stops the producer and checks what every fault
//! promises: every acked number handled by the group (none lost), the
//! input holding each number once (idempotence across the fault), each
//! number once in the exactly-once output, both groups committed to the
//! log end; and it measures the longest gap: on one partition, the time
//! between two records the group handled one after the other (asserted
//! below the fault's bound; the exactly-once processor's is printed). The producer awaits
//! its acks in order, so a stalled partition stalls the whole feed and
//! the gap measures the fault end to end (produce, replicate, fetch,
//! handle).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::{Client, Connector, Producer, ProducerConfig, ProducerRecord};
use resilience::eos::{TransactionalProcessor, Transformer};
use resilience::observe::{Event, EventLog, Observer};
use resilience::{CommitPolicy, Handler, HandlerError, Processor, ProcessorConfig};
use sim_tests::support::{self, instant, GroupLag, PartitionLag, Running, Sink, SinkHandler};

/// Records per second the producer writes (a few thousand in a test).
pub const RATE: u32 = 300;
/// Input (and output) partitions: one led by each node.
pub const PARTITIONS: i32 = 3;

/// The group members' session (testkit's classic setting; the cluster's
/// `group.consumer.session.timeout.ms` under KIP-848): a fault of the
/// group (its coordinator killed, a rolling restart) stalls no partition
/// longer than this + 2 s.
pub const GROUP_SESSION: Duration = Duration::from_secs(6);

/// Generous deadlines for what normally takes a second or two; a test
/// fails at them, it never waits them out.
const DRAIN: Duration = Duration::from_secs(40);

/// A member of the Processor group.
pub struct Member {
    pub name: &'static str,
    running: Running,
    pub events: Arc<Watched>,
}

/// The group's running load. See the module docs.
pub struct Load {
    pub name: &'static str,
    pub cluster: testkit::ClusterEnv,
    pub env: testkit::BrokerEnv,
    pub admin: Client,
    pub topic: String,
    pub group: String,
    pub handled: Arc<Handled>,
    pub members: Vec<Member>,
    eos: Eos,
    stop_producing: Arc<AtomicBool>,
    /// Numbers `0..acked` are acknowledged (so far).
    acked: Arc<AtomicU32>,
    producer: tokio::task::JoinHandle<Produced>,
    /// When the fault began ([`Load::fault_begins`]), for the report.
    fault_at: Option<Instant>,
    started: Instant,
    /// How the load's clients dial (none: straight TCP).
    connector: Option<Arc<dyn Connector>>,
}

/// How a [`Load`] starts.
pub struct Setup {
    /// The members started first (A, B, ...), each with a gate in front
    /// of its handler or none. Default: A and B, no gates.
    pub gates: Vec<Option<Gate>>,
    /// The group's name. Default: a unique one.
    pub group: Option<String>,
    /// How the producer, the members and the exactly-once processor dial
    /// the nodes. Default: straight TCP.
    pub connector: Option<Arc<dyn Connector>>,
    /// The exactly-once processor's group and `transactional.id`.
    /// Default: `{group}-eos` and a unique id.
    pub eos: Option<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            gates: vec![None, None],
            group: None,
            connector: None,
            eos: None,
        }
    }
}

/// The exactly-once processor and where it writes.
struct Eos {
    out: String,
    group: String,
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), consumer_core::ConsumerError>>,
    transformed: Arc<Handled>,
    stats: Arc<resilience::eos::EosStats>,
}

impl Load {
    /// Topics, the producer, members A and B, and the exactly-once
    /// processor; returns once both members have their partitions and
    /// records flow through them.
    pub async fn start(name: &'static str, cluster: testkit::ClusterEnv) -> Load {
        Load::start_with(name, cluster, Setup::default()).await
    }

    /// [`Load::start`] as `setup` says.
    pub async fn start_with(
        name: &'static str,
        cluster: testkit::ClusterEnv,
        setup: Setup,
    ) -> Load {
        let started = Instant::now();
        // `RUST_LOG=resilience=debug,kafka_wire=debug` to see what the
        // clients did (stderr; `--nocapture`).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .try_init();
        }
        let env = cluster.broker_env();
        let admin = testkit::client(&env).await;
        let topic = testkit::create_topic(&admin, &format!("fault-{name}"), PARTITIONS).await;
        let group = setup
            .group
            .unwrap_or_else(|| testkit::unique_name(&format!("fault-{name}")));
        let handled = Arc::new(Handled::default());
        let connector = setup.connector;
        let out = testkit::create_topic(&admin, &format!("fault-{name}-out"), PARTITIONS).await;
        let (eos_group, transactional_id) = setup
            .eos
            .unwrap_or_else(|| (format!("{group}-eos"), testkit::unique_name("fault-eos")));
        let eos = Eos::start(
            &env,
            &topic,
            out,
            (&eos_group, &transactional_id),
            connector.as_ref(),
        );
        let mut producer_cfg = testkit::producer_config(&env);
        if let Some(c) = &connector {
            producer_cfg.client.connector = c.clone();
        }
        let stop_producing = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU32::new(0));
        let producer = tokio::spawn(produce(
            producer_cfg,
            topic.clone(),
            stop_producing.clone(),
            acked.clone(),
        ));
        let mut load = Load {
            name,
            cluster,
            env,
            admin,
            topic,
            group,
            handled,
            members: Vec::new(),
            eos,
            stop_producing,
            acked,
            producer,
            fault_at: None,
            started,
            connector,
        };
        for gate in setup.gates {
            load.add_member(gate);
        }
        load.wait_flowing("at the start").await;
        load
    }

    /// Start another member (named A, B, C, ... in order).
    pub fn add_member(&mut self, gate: Option<Gate>) -> &Member {
        let name = ["A", "B", "C", "D"][self.members.len()];
        let events = Arc::new(Watched::default());
        let mut consumer = support::group_consumer(&self.env, &self.group);
        if let Some(c) = &self.connector {
            consumer.client.connector = c.clone();
        }
        let cfg = ProcessorConfig::new(consumer, &[&self.topic])
            .commit_policy(CommitPolicy::Interval(Duration::from_millis(200)))
            .observer(events.clone());
        let handler = MemberHandler {
            inner: SinkHandler::new(&self.handled.sink, instant()),
            handled: self.handled.clone(),
            gate,
        };
        let running = support::start(Processor::new(cfg, handler));
        self.members.push(Member {
            name,
            running,
            events,
        });
        self.members.last().expect("just pushed")
    }

    /// Wait until the members own every partition between them (their
    /// latest assignments, none pending), each partition has handled
    /// records since now, and half a second's worth of records acked
    /// from now on has been handled: the load runs, not just what was
    /// held up before.
    pub async fn wait_flowing(&mut self, when: &str) {
        let since = Instant::now();
        let want = self.acked.load(Ordering::SeqCst) + RATE / 2;
        let flowing = testkit::eventually(DRAIN, || {
            let owned: usize = self.members.iter().map(|m| m.events.owned().len()).sum();
            self.stopped()
                || owned == PARTITIONS as usize
                    && self.members.iter().all(|m| !m.events.owned().is_empty())
                    && self.handled.partitions_since(since) == PARTITIONS as usize
                    && self.acked.load(Ordering::SeqCst) >= want
                    && self.handled.sink.distinct() >= want as usize
        })
        .await;
        self.fail_if_stopped(when).await;
        assert!(
            flowing,
            "{}: records did not flow through every partition {when} within {DRAIN:?}: members own {:?}, \
             {} partitions handled records since, {} of the first {want} numbers acked and handled",
            self.name,
            self.members
                .iter()
                .map(|m| (m.name, m.events.owned()))
                .collect::<Vec<_>>(),
            self.handled.partitions_since(since),
            self.handled.sink.distinct()
        );
    }

    /// Every member's assignments, revocations and losses, in time order.
    fn moves(&self) -> Vec<(Instant, String)> {
        let mut all: Vec<(Instant, String)> = self
            .members
            .iter()
            .flat_map(|m| {
                m.events
                    .moves()
                    .into_iter()
                    .map(move |(t, what)| (t, format!("{} {what}", m.name)))
            })
            .collect();
        all.sort_by_key(|(t, _)| *t);
        all
    }

    /// Whether a member or the exactly-once processor stopped (`run`
    /// returned): none may, whatever the fault.
    fn stopped(&self) -> bool {
        self.eos.join.is_finished() || self.members.iter().any(|m| !m.running.is_running())
    }

    /// Fail, with its error, if a member or the exactly-once processor
    /// stopped.
    async fn fail_if_stopped(&mut self, when: &str) {
        if self.eos.join.is_finished() {
            let ended = (&mut self.eos.join).await;
            panic!(
                "{}: the exactly-once processor stopped {when}: {ended:?}",
                self.name
            );
        }
        if let Some(i) = self.members.iter().position(|m| !m.running.is_running()) {
            let m = self.members.remove(i);
            eprintln!("{}: member {} stopped {when}", self.name, m.name);
            m.running.stop().await; // panics with its error
            panic!("{}: member {} stopped {when}", self.name, m.name);
        }
    }

    /// The exactly-once processor's output topic.
    pub fn out_topic(&self) -> &str {
        &self.eos.out
    }

    /// Note that the fault begins now (gaps are reported from here).
    pub fn fault_begins(&mut self) -> Instant {
        let now = Instant::now();
        self.fault_at = Some(now);
        now
    }

    /// Seconds from the fault's beginning to `t` (negative before it).
    pub fn since_fault(&self, t: Instant) -> f64 {
        secs_from(self.fault_at.unwrap_or(self.started), t)
    }

    /// Stop producing, wait for everything acked to be handled and
    /// committed, and check every invariant (see the module docs): panics
    /// naming the first that does not hold. `bound`: the longest gap
    /// allowed on a partition, and why. Prints one `FAULT` line first.
    pub async fn finish(mut self, bound: (Duration, &str)) {
        self.stop_producing.store(true, Ordering::SeqCst);
        let produced = (&mut self.producer).await.expect("producer task");
        let acked = produced.acked;

        // Handled by the group, and committed to the end.
        let drained = testkit::eventually(DRAIN, || {
            self.stopped() || self.handled.sink.distinct() >= acked as usize
        })
        .await;
        self.fail_if_stopped("before the end").await;
        let lag = GroupLag::connect(&self.env, &self.group, &self.topic).await;
        let committed = drained && lag.wait_committed_to_end(DRAIN).await;
        // The exactly-once output, read_committed, and its group.
        let e = &self.eos;
        let out =
            support::read_all(&self.env, &e.out, PARTITIONS, acked as usize, true, DRAIN).await;
        let eos_lag = GroupLag::connect(&self.env, &e.group, &self.topic).await;
        // The input, read back: the idempotent producer wrote each number once.
        let input = support::read_all(
            &self.env,
            &self.topic,
            PARTITIONS,
            acked as usize,
            false,
            DRAIN,
        )
        .await;
        let outcome = Outcome {
            acked,
            resent: produced.resent,
            longest_ack_wait: produced.longest_ack_wait,
            handled: self.handled.sink.distinct_and_duplicates().0,
            side_effects: self.handled.sink.applied().len(),
            uncommitted: if committed {
                Vec::new()
            } else {
                uncommitted(&lag).await
            },
            input: counts(input.iter().map(support::number)),
            eos: counts(out.iter().map(support::number)),
            eos_committed: eos_lag.wait_committed_to_end(DRAIN).await,
            eos_gap: e.transformed.longest_gap(),
            eos_last: e.transformed.last(),
            eos_txns: (
                e.stats.transactions.load(Ordering::Relaxed),
                e.stats.aborted.load(Ordering::Relaxed),
            ),
            gap: self.handled.longest_gap(),
            moves: self.moves(),
        };

        let stopping: Vec<_> = self
            .members
            .into_iter()
            .map(|m| tokio::spawn(m.running.stop()))
            .collect();
        let _ = self.eos.stop.send(());
        self.eos
            .join
            .await
            .expect("exactly-once task")
            .expect("exactly-once run");
        for s in stopping {
            s.await.expect("member stop");
        }
        let fault_at = self.fault_at.unwrap_or(self.started);
        outcome.print(self.name, fault_at, bound, self.started.elapsed());
        outcome.check(self.name, fault_at, bound);
    }
}

/// The partitions the group has not committed to the end of.
async fn uncommitted(lag: &GroupLag) -> Vec<PartitionLag> {
    lag.read()
        .await
        .map(|ps| ps.into_iter().filter(|p| p.lag() > 0).collect())
        .unwrap_or_default()
}

/// What a run of the load did, as [`Load::finish`] found it.
struct Outcome {
    acked: u32,
    resent: Vec<(u32, String)>,
    longest_ack_wait: Duration,
    /// Distinct numbers the group handled.
    handled: BTreeSet<u32>,
    /// Handler calls that applied (redeliveries included).
    side_effects: usize,
    /// Partitions not committed to the log end (none: all are).
    uncommitted: Vec<PartitionLag>,
    input: Counts,
    eos: Counts,
    eos_committed: bool,
    eos_gap: Gap,
    /// When the transformer was last called.
    eos_last: Option<Instant>,
    /// Transactions committed and aborted.
    eos_txns: (u64, u64),
    gap: Gap,
    /// Each member's assignments, revocations and losses, in time order.
    moves: Vec<(Instant, String)>,
}

/// Seconds from `at` to `t` (negative before it).
fn secs_from(at: Instant, t: Instant) -> f64 {
    if t >= at {
        (t - at).as_secs_f64()
    } else {
        -(at - t).as_secs_f64()
    }
}

impl Outcome {
    fn lost(&self) -> Vec<u32> {
        (0..self.acked)
            .filter(|n| !self.handled.contains(n))
            .collect()
    }

    /// The `FAULT` line: what the issue's note reports per fault.
    fn print(&self, name: &str, fault_at: Instant, bound: (Duration, &str), wall: Duration) {
        let acked = self.acked;
        eprintln!(
            "FAULT {name}: longest gap {:.2} s on partition {} (from {:+.2} s to {:+.2} s after the fault \
             began; bound {:.1} s: {}); {acked} acked ({} re-sent after an error, longest wait for an ack \
             {:.2} s), {} handled ({} lost, {} redelivered), the input holds {} once and {} more than \
             once; exactly-once output: {} once, {} more than once, {} never acked, its group committed \
             to the end: {}, its longest gap {:.2} s, its last transform {} ({} transactions \
             committed, {} aborted); {:.1} s in all",
            self.gap.gap.as_secs_f64(),
            self.gap.partition,
            secs_from(fault_at, self.gap.from),
            secs_from(fault_at, self.gap.to),
            bound.0.as_secs_f64(),
            bound.1,
            self.resent.len(),
            self.longest_ack_wait.as_secs_f64(),
            self.handled.len(),
            self.lost().len(),
            self.side_effects - self.handled.len(),
            self.input.once.len(),
            self.input.more.len(),
            self.eos.once.len(),
            self.eos.more.len(),
            self.eos.unexpected(acked),
            self.eos_committed,
            self.eos_gap.gap.as_secs_f64(),
            self.eos_last
                .map_or("never".to_string(), |t| format!("{:+.2} s", secs_from(fault_at, t))),
            self.eos_txns.0,
            self.eos_txns.1,
            wall.as_secs_f64()
        );
        for (n, e) in self.resent.iter().take(5) {
            eprintln!("  re-sent {n} after: {e}");
        }
        if self.gap.gap >= bound.0 || std::env::var_os("FAULT_TIMELINE").is_some() {
            let moves: Vec<String> = self
                .moves
                .iter()
                .map(|(t, what)| format!("{:+.2} s {what}", secs_from(fault_at, *t)))
                .collect();
            eprintln!("  the group's moves: {}", moves.join("; "));
        }
    }

    fn check(&self, name: &str, fault_at: Instant, bound: (Duration, &str)) {
        let acked = self.acked;
        let lost = self.lost();
        assert!(
            lost.is_empty(),
            "{name}: {} acked records never handled, the first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        assert!(
            self.uncommitted.is_empty(),
            "{name}: the group is not committed to the log end: {:?}",
            self.uncommitted
        );
        assert!(
            self.input.exactly(acked),
            "{name}: the idempotent producer's topic holds {} of {acked} numbers once, {:?} more than \
             once ({} re-sent by the test after an error), {} it never acked",
            self.input.once.len(),
            self.input.more.iter().take(10).collect::<Vec<_>>(),
            self.resent.len(),
            self.input.unexpected(acked)
        );
        assert!(
            self.eos.exactly(acked),
            "{name}: the exactly-once output holds {} of {acked} numbers once, {:?} more than once, \
             {} never acked",
            self.eos.once.len(),
            self.eos.more.iter().take(10).collect::<Vec<_>>(),
            self.eos.unexpected(acked)
        );
        assert!(
            self.eos_committed,
            "{name}: the exactly-once group is not committed to the log end"
        );
        assert!(
            self.gap.gap < bound.0,
            "{name}: partition {} handled nothing for {:.2} s (from {:+.2} s to {:+.2} s after the \
             fault began); the bound is {:.1} s ({})",
            self.gap.partition,
            self.gap.gap.as_secs_f64(),
            secs_from(fault_at, self.gap.from),
            secs_from(fault_at, self.gap.to),
            bound.0.as_secs_f64(),
            bound.1
        );
    }
}

/// How often each number occurs.
struct Counts {
    once: BTreeSet<u32>,
    more: BTreeSet<u32>,
}

impl Counts {
    /// Each of `0..acked` once, nothing else.
    fn exactly(&self, acked: u32) -> bool {
        self.more.is_empty() && self.once.len() == acked as usize && self.unexpected(acked) == 0
    }

    /// Numbers seen that were never acked (or not numbers).
    fn unexpected(&self, acked: u32) -> usize {
        self.once
            .iter()
            .chain(&self.more)
            .filter(|&&n| n >= acked)
            .count()
    }
}

fn counts(numbers: impl Iterator<Item = u32>) -> Counts {
    let mut seen: HashMap<u32, u32> = HashMap::new();
    for n in numbers {
        *seen.entry(n).or_default() += 1;
    }
    let (mut once, mut more) = (BTreeSet::new(), BTreeSet::new());
    for (n, c) in seen {
        if c == 1 {
            once.insert(n);
        } else {
            more.insert(n);
        }
    }
    Counts { once, more }
}

impl Eos {
    fn start(
        env: &testkit::BrokerEnv,
        topic: &str,
        out: String,
        (group, transactional_id): (&str, &str),
        connector: Option<&Arc<dyn Connector>>,
    ) -> Eos {
        let mut consumer = support::group_consumer(env, group);
        let mut producer = testkit::producer_builder(env)
            .transactional_id(transactional_id)
            .set("transaction.timeout.ms", "10000")
            .expect("transaction.timeout.ms")
            .build()
            .expect("producer config");
        if let Some(c) = connector {
            consumer.client.connector = c.clone();
            producer.client.connector = c.clone();
        }
        let transformed = Arc::new(Handled::default());
        let p = TransactionalProcessor::new(consumer, producer, &[topic]);
        let stats = p.stats();
        let t = Copy {
            out: out.clone(),
            transformed: transformed.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let join = tokio::spawn(p.run(t, async move {
            let _ = stopped.await;
        }));
        Eos {
            out,
            group: group.to_string(),
            stop,
            join,
            transformed,
            stats,
        }
    }
}

/// The exactly-once processor's transform: the number to the output topic,
/// same key; notes when (its gaps are printed, not asserted: a
/// transaction's records are transformed before it commits).
struct Copy {
    out: String,
    transformed: Arc<Handled>,
}

impl Transformer for Copy {
    async fn transform(
        &self,
        tp: &TopicPartition,
        r: &Record,
    ) -> Result<Vec<ProducerRecord>, HandlerError> {
        let n = support::number(r);
        self.transformed.note(tp.partition);
        Ok(vec![ProducerRecord::new(&self.out)
            .key(format!("k{n}"))
            .value(n.to_string())])
    }
}

/// Records handled, with when: the group's [`Sink`] and a clock.
#[derive(Debug, Default)]
pub struct Handled {
    pub sink: Arc<Sink>,
    /// (when, partition), in the order handled.
    times: Mutex<Vec<(Instant, i32)>>,
}

/// The longest stretch one partition went without a handled record.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub gap: Duration,
    pub partition: i32,
    pub from: Instant,
    pub to: Instant,
}

impl Handled {
    fn note(&self, partition: i32) {
        self.times
            .lock()
            .expect("times lock")
            .push((Instant::now(), partition));
    }

    /// Records handled so far (side effects, redeliveries included).
    pub fn count(&self) -> usize {
        self.times.lock().expect("times lock").len()
    }

    /// When the last record was handled.
    pub fn last(&self) -> Option<Instant> {
        self.times
            .lock()
            .expect("times lock")
            .last()
            .map(|(t, _)| *t)
    }

    /// How many partitions handled a record after `since`.
    pub fn partitions_since(&self, since: Instant) -> usize {
        let times = self.times.lock().expect("times lock");
        times
            .iter()
            .rev()
            .take_while(|(t, _)| *t >= since)
            .map(|(_, p)| *p)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The longest time between two records handled one after the other
    /// on one partition.
    pub fn longest_gap(&self) -> Gap {
        let times = self.times.lock().expect("times lock");
        let mut last: BTreeMap<i32, Instant> = BTreeMap::new();
        let now = Instant::now();
        let mut worst = Gap {
            gap: Duration::ZERO,
            partition: -1,
            from: now,
            to: now,
        };
        for &(t, p) in times.iter() {
            if let Some(prev) = last.insert(p, t) {
                let gap = t.saturating_duration_since(prev);
                if gap > worst.gap {
                    worst = Gap {
                        gap,
                        partition: p,
                        from: prev,
                        to: t,
                    };
                }
            }
        }
        worst
    }
}

/// Holds a member's handler calls while closed: [`Gate::close`], and every
/// call waits (it is in flight: the member cannot finish revoking its
/// partitions) until [`Gate::open`].
#[derive(Debug, Clone)]
pub struct Gate {
    closed: Arc<tokio::sync::watch::Sender<bool>>,
    waiting: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            closed: Arc::new(tokio::sync::watch::channel(false).0),
            waiting: Arc::default(),
        }
    }
}

impl Gate {
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn open(&self) {
        self.closed.send_replace(false);
    }

    /// Handler calls held at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    async fn pass(&self) {
        let mut rx = self.closed.subscribe();
        if *rx.borrow_and_update() {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = rx.wait_for(|closed| !*closed).await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A member's handler: through its gate (if any), into the shared sink,
/// and the time noted.
struct MemberHandler {
    inner: SinkHandler,
    handled: Arc<Handled>,
    gate: Option<Gate>,
}

impl Handler for MemberHandler {
    async fn handle(&self, tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        if let Some(g) = &self.gate {
            g.pass().await;
        }
        self.inner.handle(tp, r).await?;
        self.handled.note(tp.partition);
        Ok(())
    }
}

/// A member's events ([`EventLog`]), when its partitions moved, and a
/// count of its revocations a test can wait on.
#[derive(Debug)]
pub struct Watched {
    pub log: EventLog,
    revoked: tokio::sync::watch::Sender<usize>,
    /// (when, what) of every assignment, revocation and loss.
    moves: Mutex<Vec<(Instant, String)>>,
}

impl Default for Watched {
    fn default() -> Self {
        Watched {
            log: EventLog::default(),
            revoked: tokio::sync::watch::channel(0).0,
            moves: Mutex::default(),
        }
    }
}

impl Observer for Watched {
    fn on_event(&self, event: &Event) {
        self.log.on_event(event);
        let moved = match event {
            Event::Assigned(tps) => Some(("assigned", tps)),
            Event::Revoked(tps) => Some(("revoked", tps)),
            Event::Lost(tps) => Some(("lost", tps)),
            _ => None,
        };
        if let Some((what, tps)) = moved {
            let parts: Vec<i32> = tps.iter().map(|tp| tp.partition).collect();
            let mut moves = self.moves.lock().expect("moves lock");
            moves.push((Instant::now(), format!("{what} {parts:?}")));
        }
        if matches!(event, Event::Revoked(_) | Event::Lost(_)) {
            self.revoked.send_modify(|n| *n += 1);
        }
    }
}

impl Watched {
    /// Revocations (and losses) so far.
    pub fn revocations(&self) -> usize {
        *self.revoked.borrow()
    }

    /// Wait until more than `than` revocations happened.
    pub async fn revoked_more_than(&self, than: usize) {
        let mut rx = self.revoked.subscribe();
        let _ = rx.wait_for(|n| *n > than).await;
    }

    /// (when, what) of the member's assignments, revocations and losses.
    pub fn moves(&self) -> Vec<(Instant, String)> {
        self.moves.lock().expect("moves lock").clone()
    }

    /// The partitions the member owns now, by its events.
    pub fn owned(&self) -> BTreeSet<i32> {
        let mut owned = BTreeSet::new();
        for e in self.log.events() {
            match e {
                Event::Assigned(tps) => owned.extend(tps.iter().map(|tp| tp.partition)),
                Event::Revoked(tps) | Event::Lost(tps) => {
                    for tp in tps {
                        owned.remove(&tp.partition);
                    }
                }
                _ => {}
            }
        }
        owned
    }

    /// Assignments received so far.
    pub fn assignments(&self) -> usize {
        self.log.assignments()
    }
}

/// What the producer did.
#[derive(Debug, Default)]
pub struct Produced {
    /// Numbers `0..acked` were acknowledged.
    pub acked: u32,
    /// Numbers sent again after their send failed (the producer gave up
    /// on them), and the error: each may be in the topic twice.
    pub resent: Vec<(u32, String)>,
    /// The longest wait for one acknowledgement.
    pub longest_ack_wait: Duration,
}

/// [`support::produce_steadily`] at [`RATE`], noting every number the
/// producer failed (and this loop sent again) and the longest wait for an
/// acknowledgement.
async fn produce(
    cfg: ProducerConfig,
    topic: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU32>,
) -> Produced {
    let p = Producer::connect(cfg).await.expect("connect producer");
    let record = |n: u32| {
        ProducerRecord::new(&topic)
            .key(format!("k{n}"))
            .value(n.to_string())
    };
    let deliver = |n: u32| {
        let send = p.send(record(n));
        async move { send.await?.await.map(|_| ()) }
    };
    let mut out = Produced::default();
    let started = Instant::now();
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let due = (started.elapsed().as_secs_f64() * f64::from(RATE)) as u32;
        let upto = due.max(n + 1);
        let mut pending = Vec::new();
        for i in n..upto {
            pending.push((i, Instant::now(), p.send(record(i)).await));
        }
        for (i, sent_at, sent) in pending {
            let mut outcome = match sent {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            out.longest_ack_wait = out.longest_ack_wait.max(sent_at.elapsed());
            while let Err(e) = outcome {
                out.resent.push((i, e.to_string()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                outcome = deliver(i).await;
            }
        }
        n = upto;
        acked.store(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.close().await;
    out.acked = n;
    out
}
