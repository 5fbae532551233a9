//! Property tests against the real broker: proptest generates sequences of
//! operations (produce records, some poison and some transient; start a
//! member; stop one gracefully; kill one; slow the handler; reset every
//! connection; let time pass), runs them on a live group, and checks the
//! runtime's promises after every step and at the end:
//!
//! - committed ≤ handled, per partition (every offset below a committed
//!   offset was handled or dead-lettered);
//! - committed offsets never decrease;
//! - every produced record is handled or dead-lettered (at the end);
//! - no side effect is applied twice (members share a DedupStore);
//! - no commit lands for a partition its member does not own.
//!
//! `SIM_CASES` sets the number of cases (default 8, for CI); `SIM_SEED`
//! fixes the generator's seed. A failing case, shrunk, is saved to
//! `sim-tests/regressions/live_props.txt` and replayed first on every run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consumer_core::{Consumer, TopicPartition};
use kafka_wire::{NewTopic, OffsetSpec, ProducerRecord};
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner,
};
use resilience::dedup::InMemoryDedup;
use resilience::observe::{Event, EventLog};
use resilience::retry::BackoffPolicy;
use resilience::{CommitPolicy, HandlerError, KeySource, Processor, ProcessorConfig};
use sim_tests::proxy::FaultProxy;
use sim_tests::support::{self, Behaviour, Running, Sink, SinkHandler};

const PARTITIONS: i32 = 3;
const MAX_MEMBERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Produce `count` records; `poison`/`transient` in 100 fail for good / once.
    Produce {
        count: u32,
        poison: u32,
        transient: u32,
    },
    Start,
    /// Stop the oldest member gracefully.
    Stop,
    /// Kill the oldest member (no drain, no commit, no leave).
    Kill,
    /// Every handler call now takes this many milliseconds.
    Slow(u64),
    /// Reset every open connection.
    Fault,
    /// Let this many milliseconds pass.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..300, 0u32..8, 0u32..8).prop_map(|(count, poison, transient)| Op::Produce {
            count,
            poison,
            transient
        }),
        2 => Just(Op::Start),
        1 => Just(Op::Stop),
        1 => Just(Op::Kill),
        1 => (0u64..10).prop_map(Op::Slow),
        1 => Just(Op::Fault),
        2 => (100u64..1_500).prop_map(Op::Advance),
    ]
}

/// A case: the proxy's seed and the operations.
fn case() -> impl Strategy<Value = (u64, Vec<Op>)> {
    (any::<u64>(), prop::collection::vec(op(), 3..9))
}

/// What one case runs against.
struct World {
    b: testkit::BrokerEnv,
    topic: String,
    group: String,
    proxy: FaultProxy,
    sink: Arc<Sink>,
    store: Arc<InMemoryDedup>,
    /// Record numbers that fail for good / fail once.
    poison: Arc<Mutex<HashSet<u32>>>,
    transient: Arc<Mutex<HashSet<u32>>>,
    slow_ms: Arc<AtomicU64>,
    produced: u32,
    members: Vec<Running>,
    logs: Vec<Arc<EventLog>>,
    /// Highest committed offset seen so far, per partition.
    committed: BTreeMap<i32, i64>,
    checker: Consumer,
}

impl World {
    async fn new(b: &testkit::BrokerEnv, seed: u64) -> World {
        let admin = support::admin(b).await;
        let topic = support::create_topic(&admin, "live", PARTITIONS).await;
        admin
            .create_topic(NewTopic::new(
                resilience::dlt::dlt_topic(&topic),
                PARTITIONS,
            ))
            .await
            .expect("create DLT");
        let group = testkit::unique_name("live");
        let checker = Consumer::connect(support::group_consumer(b, &group))
            .await
            .expect("connect checker");
        World {
            b: b.clone(),
            topic,
            group,
            proxy: FaultProxy::new(seed),
            sink: Arc::default(),
            store: Arc::new(InMemoryDedup::new(1_000_000)),
            poison: Arc::default(),
            transient: Arc::default(),
            slow_ms: Arc::default(),
            produced: 0,
            members: Vec::new(),
            logs: Vec::new(),
            committed: BTreeMap::new(),
            checker,
        }
    }

    fn behaviour(&self) -> Behaviour {
        let (poison, transient, slow) = (
            self.poison.clone(),
            self.transient.clone(),
            self.slow_ms.clone(),
        );
        Arc::new(move |n, attempt| {
            if poison.lock().expect("lock").contains(&n) {
                return Err(HandlerError::NonRetryable(format!("poison {n}")));
            }
            if attempt == 1 && transient.lock().expect("lock").contains(&n) {
                return Err(HandlerError::Retryable(format!("transient {n}")));
            }
            Ok(Duration::from_millis(slow.load(AtomicOrdering::Relaxed)))
        })
    }

    fn start_member(&mut self) {
        let log = Arc::new(EventLog::default());
        let mut cfg = ProcessorConfig::new(
            support::group_consumer(&self.b, &self.group),
            &[&self.topic],
        )
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
        .dead_letter(support::producer_config(&self.b))
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(10),
            ..BackoffPolicy::default()
        })
        .idempotency(KeySource::RecordKey, self.store.clone())
        .observer(log.clone());
        cfg.create_topics = false;
        cfg.consumer.client.connector = self.proxy.connector();
        self.members.push(support::start(Processor::new(
            cfg,
            SinkHandler::new(&self.sink, self.behaviour()),
        )));
        self.logs.push(log);
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Produce {
                count,
                poison,
                transient,
            } => {
                let first = self.produced;
                for n in first..first + count {
                    // Spread failures deterministically over the numbers.
                    let bucket = n.wrapping_mul(2_654_435_761) % 100;
                    if bucket < poison {
                        self.poison.lock().expect("lock").insert(n);
                    } else if bucket < poison + transient {
                        self.transient.lock().expect("lock").insert(n);
                    }
                }
                let admin = support::admin(&self.b).await;
                let topic = self.topic.clone();
                support::produce(
                    &admin,
                    &self.b,
                    (first..first + count).map(|n| {
                        ProducerRecord::new(&topic)
                            .key(format!("k{n}"))
                            .value(n.to_string())
                    }),
                )
                .await;
                self.produced += count;
            }
            Op::Start if self.members.len() < MAX_MEMBERS => self.start_member(),
            Op::Start => {}
            Op::Stop if !self.members.is_empty() => self.members.remove(0).stop().await,
            Op::Kill if !self.members.is_empty() => self.members.remove(0).crash().await,
            Op::Stop | Op::Kill => {}
            Op::Slow(ms) => self.slow_ms.store(ms, AtomicOrdering::Relaxed),
            Op::Fault => self.proxy.reset_all(),
            Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }

    /// (partition, offset) of every record that reached an end: applied,
    /// or acknowledged by the DLT.
    fn finished(&self) -> HashSet<(i32, i64)> {
        let positions = self.sink.positions();
        let by_number: HashMap<u32, (i32, i64)> =
            positions.iter().map(|(pos, n)| (*n, *pos)).collect();
        let mut done: HashSet<(i32, i64)> = self
            .sink
            .applied_numbers()
            .into_iter()
            .filter_map(|n| by_number.get(&n).copied())
            .collect();
        for log in &self.logs {
            for e in log.events() {
                if let Event::DeadLettered { tp, offset } = e {
                    done.insert((tp.partition, offset));
                }
            }
        }
        done
    }

    /// The invariants that hold at every moment.
    async fn check(&mut self, step: &str) -> Result<(), String> {
        let tps: Vec<TopicPartition> = (0..PARTITIONS)
            .map(|p| TopicPartition::new(&self.topic, p))
            .collect();
        let committed = self
            .checker
            .committed(&tps)
            .await
            .map_err(|e| format!("{step}: reading committed offsets: {e}"))?;
        let finished = self.finished();
        for (tp, c) in committed {
            let before = self.committed.insert(tp.partition, c).unwrap_or(0);
            if c < before {
                return Err(format!(
                    "{step}: committed offset of {tp} went back from {before} to {c}"
                ));
            }
            if let Some(missing) = (0..c).find(|o| !finished.contains(&(tp.partition, *o))) {
                return Err(format!(
                    "{step}: {tp} committed up to {c} but offset {missing} was neither handled nor dead-lettered"
                ));
            }
        }
        let dups = self.sink.duplicated();
        if !dups.is_empty() {
            return Err(format!(
                "{step}: side effects applied twice despite the DedupStore: {dups:?}"
            ));
        }
        for log in &self.logs {
            let late = log.commits_after_revoke();
            if !late.is_empty() {
                return Err(format!(
                    "{step}: commits for partitions not owned: {late:?}"
                ));
            }
        }
        Ok(())
    }

    /// End of a case: heal the network, make sure someone consumes, wait
    /// for every record to reach an end and be committed.
    async fn finish(&mut self) -> Result<(), String> {
        self.proxy.set(Default::default());
        self.slow_ms.store(0, AtomicOrdering::Relaxed);
        if self.members.is_empty() {
            self.start_member();
        }
        let want = self.produced as usize;
        let done =
            support::eventually(Duration::from_secs(60), || self.finished().len() >= want).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // a last commit
        for m in self.members.drain(..) {
            m.stop().await;
        }
        self.check("end").await?;
        if !done {
            return Err(format!(
                "end: only {} of {want} records were handled or dead-lettered",
                self.finished().len()
            ));
        }
        let admin = support::admin(&self.b).await;
        let ends = admin
            .list_offsets(&self.topic, OffsetSpec::Latest)
            .await
            .map_err(|e| e.to_string())?;
        for (p, end) in ends {
            let c = self.committed.get(&p).copied().unwrap_or(0);
            if c != end {
                return Err(format!("end: partition {p} committed {c}, log end {end}"));
            }
        }
        Ok(())
    }
}

async fn run_case(b: &testkit::BrokerEnv, seed: u64, ops: &[Op]) -> Result<(), String> {
    let mut world = World::new(b, seed).await;
    for (i, op) in ops.iter().enumerate() {
        world.apply(op).await;
        world.check(&format!("after step {i} {op:?}")).await?;
    }
    let result = world.finish().await;
    for m in world.members.drain(..) {
        m.crash().await;
    }
    result
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok()?.parse().ok()
}

#[test]
fn live_operation_sequences_keep_every_promise() {
    let b = testkit::require_broker!();
    let cases = env_u64("SIM_CASES").unwrap_or(8) as u32;
    let seed = env_u64("SIM_SEED");
    let config = Config {
        cases,
        max_shrink_iters: 12,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/regressions/live_props.txt"
        )))),
        rng_seed: seed.map_or(RngSeed::Random, RngSeed::Fixed),
        ..Config::default()
    };
    println!("live property test: {cases} cases, seed {seed:?} (SIM_CASES, SIM_SEED)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let result = runner.run(&case(), |(seed, ops)| {
        println!("case: proxy seed {seed}, {} ops: {ops:?}", ops.len());
        rt.block_on(run_case(&b, seed, &ops))
            .map_err(TestCaseError::fail)
    });
    println!(
        "live property test: {cases} cases in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (seed, ops))) => {
            panic!("{why}\nminimal failing case: proxy seed {seed}, ops {ops:?}")
        }
        Err(e) => panic!("{e}"),
    }
}
