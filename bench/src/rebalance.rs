//! Workload 6: the processing gap a rebalance causes on partitions that
//! did not move. Three processors share a group and consume a steady
//! stream (`rate=` records/s, round-robin over the partitions); a fourth
//! joins. For every partition owned by the same member before the join and
//! at the end, the longest pause between two handled records from the
//! last one before the join to the end is its gap. The assignor comes from
//! `partition.assignment.strategy=` (`cooperative-sticky` against eager
//! `range`). Prints `REBALANCE unmoved= moved= unmoved_max_gap_ms=
//! moved_max_gap_ms= quiet_max_gap_ms= steady_gap_ms=` and the usual
//! `RESULT` line. `quiet_max_gap_ms` is the same measure over the 2 s of
//! steady consumption just before the join: the noise floor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use resilience::{CommitPolicy, Handler, HandlerError, Processor, ProcessorConfig};

use crate::{group, ours_consumer_config_with, ours_producer, report, Args};

const PARTITIONS: i32 = 12;

/// When each partition's records were handled, by one member.
#[derive(Default)]
struct Seen(Mutex<Vec<(i32, Instant)>>);

struct Track(Arc<Seen>);

impl Handler for Track {
    async fn handle(&self, tp: &TopicPartition, _: &Record) -> Result<(), HandlerError> {
        let mut seen = self.0 .0.lock().expect("seen");
        seen.push((tp.partition, Instant::now()));
        Ok(())
    }
}

struct Member {
    seen: Arc<Seen>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), consumer_core::ConsumerError>>,
}

fn start_member(a: &Args, group_id: &str) -> Member {
    let consumer = ours_consumer_config_with(
        a,
        &[("group.id", group_id), ("auto.offset.reset", "latest")],
    );
    let cfg = ProcessorConfig::new(consumer, &[&a.topic])
        .concurrency(8)
        .commit_policy(CommitPolicy::Interval(Duration::from_secs(1)));
    let seen = Arc::new(Seen::default());
    let processor = Processor::new(cfg, Track(seen.clone()));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        let _ = stop_rx.await;
    }));
    Member { seen, stop, run }
}

/// The last time each partition was handled, by anyone.
fn last_handled(members: &[Member]) -> BTreeMap<i32, Instant> {
    let mut last = BTreeMap::new();
    for m in members {
        for &(p, t) in m.seen.0.lock().expect("seen").iter() {
            let e = last.entry(p).or_insert(t);
            *e = (*e).max(t);
        }
    }
    last
}

pub async fn ours(a: &Args) {
    let group_id = group();
    let producer = Arc::new(ours_producer(&a.bootstrap, &a.producer_props).await);
    let producing = Arc::new(AtomicBool::new(true));
    let failed = Arc::new(AtomicU64::new(0));
    let sender = {
        let (p, producing, failed) = (producer.clone(), producing.clone(), failed.clone());
        let (topic, rate) = (a.topic.clone(), a.rate.max(1));
        tokio::spawn(async move {
            let start = Instant::now();
            let mut i = 0u64;
            while producing.load(AtomicOrdering::Relaxed) {
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                tokio::time::sleep_until(due.into()).await;
                let rec = ProducerRecord::new(&topic)
                    .partition((i % PARTITIONS as u64) as i32)
                    .value(vec![b'x'; 100]);
                let failed = failed.clone();
                match p.send(rec).await {
                    Ok(delivery) => {
                        tokio::spawn(async move {
                            if delivery.await.is_err() {
                                failed.fetch_add(1, AtomicOrdering::Relaxed);
                            }
                        });
                    }
                    Err(_) => {
                        failed.fetch_add(1, AtomicOrdering::Relaxed);
                    }
                }
                i += 1;
            }
        })
    };

    // Started 1.37 s apart, so their heartbeats (every 3 s) and commits
    // (every 1 s), which tell a member a rebalance began, are out of phase
    // as in a real deployment. Members started together all hear of it at
    // once, which flatters eager assignment.
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(start_member(a, &group_id));
        tokio::time::sleep(Duration::from_millis(1370)).await;
    }
    // Steady: every partition handled in the last 200 ms, for 2 s running.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut steady_since: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "three members never consumed every partition steadily"
        );
        let last = last_handled(&members);
        let steady = last.len() == PARTITIONS as usize
            && last
                .values()
                .all(|t| t.elapsed() < Duration::from_millis(200));
        steady_since = if steady {
            steady_since.or(Some(Instant::now()))
        } else {
            None
        };
        if steady_since.is_some_and(|s| s.elapsed() >= Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let quiet_from = steady_since.expect("steady");
    let joined = Instant::now();
    members.push(start_member(a, &group_id));
    // Settled: the newcomer has handled records for 2 s and every
    // partition is flowing again.
    let deadline = joined + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "the group never settled after the fourth member joined"
        );
        let newcomer_first = members[3].seen.0.lock().expect("seen").first().map(|s| s.1);
        let flowing = last_handled(&members)
            .values()
            .all(|t| t.elapsed() < Duration::from_millis(200));
        if flowing && newcomer_first.is_some_and(|t| t.elapsed() >= Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = Instant::now();

    producing.store(false, AtomicOrdering::Relaxed);
    let _ = sender.await;
    let mut handled = 0u64;
    let mut events: BTreeMap<i32, Vec<(Instant, usize)>> = BTreeMap::new();
    for (id, m) in members.into_iter().enumerate() {
        let _ = m.stop.send(());
        let _ = m.run.await;
        for &(p, t) in m.seen.0.lock().expect("seen").iter() {
            handled += 1;
            if t <= ended {
                events.entry(p).or_default().push((t, id));
            }
        }
    }
    producer.close().await;

    // The noise floor: the longest gap in the quiet, steady window just
    // before the join (broker and machine hiccups, no rebalance).
    let quiet_gap = events
        .values()
        .flat_map(|evs| {
            let mut quiet: Vec<Instant> = evs
                .iter()
                .map(|e| e.0)
                .filter(|t| *t >= quiet_from && *t < joined)
                .collect();
            quiet.sort();
            quiet.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        })
        .max()
        .unwrap_or_default();
    let (mut unmoved, mut moved) = (0, 0);
    let (mut unmoved_gap, mut moved_gap) = (Duration::ZERO, Duration::ZERO);
    for evs in events.values_mut() {
        evs.sort();
        let Some(before) = evs.iter().rposition(|(t, _)| *t < joined) else {
            continue;
        };
        let owner_before = evs[before].1;
        let owner_after = evs.last().map(|e| e.1);
        let gap = evs[before..]
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default();
        if owner_after == Some(owner_before) {
            unmoved += 1;
            unmoved_gap = unmoved_gap.max(gap);
        } else {
            moved += 1;
            moved_gap = moved_gap.max(gap);
        }
    }
    let failed = failed.load(AtomicOrdering::Relaxed);
    assert_eq!(failed, 0, "{failed} records were not acknowledged");
    assert!(
        unmoved + moved == PARTITIONS,
        "only {} partitions were seen before and after the join",
        unmoved + moved
    );
    println!(
        "REBALANCE unmoved={unmoved} moved={moved} unmoved_max_gap_ms={:.1} moved_max_gap_ms={:.1} quiet_max_gap_ms={:.1} steady_gap_ms={:.1}",
        unmoved_gap.as_secs_f64() * 1e3,
        moved_gap.as_secs_f64() * 1e3,
        quiet_gap.as_secs_f64() * 1e3,
        PARTITIONS as f64 * 1e3 / a.rate.max(1) as f64,
    );
    report(handled, 0, ended - joined);
}
