//! More members than partitions: a share group spreads one partition's
//! records over every member (KIP-932), so members working a slow handler
//! drain it together. A correctness check of that parallelism with a
//! conservative bound, not a benchmark (BENCHMARKS.md has the figures).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{share_consumer, share_group, subscribe};

const N: u32 = 300;
/// What the handler takes per record.
const WORK: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_secs(60);

/// What one drain saw: every delivery (member, offset), and the time from
/// the first delivered record to the last new one.
#[derive(Debug, Default)]
struct Drain {
    deliveries: Vec<(usize, i64)>,
    distinct: BTreeSet<i64>,
    first: Option<Instant>,
    done: Option<Instant>,
}

/// `members` share consumers of a new group drain `topic` (`N` records),
/// handling one record at a time for [`WORK`] each; `None` when the
/// broker has no share groups.
async fn drain(b: &testkit::BrokerEnv, topic: &str, members: usize) -> Option<Drain> {
    let admin = testkit::client(b).await;
    let group = share_group(&admin, "share-parallel").await;
    // record_limit (KIP-1206): a ShareFetch acquires at most 5 records, so
    // no member takes the whole partition in one go.
    let props = [
        ("max.poll.records", "5"),
        ("share.acquire.mode", "record_limit"),
    ];
    let mut consumers = Vec::new();
    for _ in 0..members {
        let mut c = share_consumer(b, &group, &props).await;
        subscribe(&mut c, &[topic]).await?;
        consumers.push(c);
    }
    let seen: Arc<Mutex<Drain>> = Arc::default();
    let tasks: Vec<_> = consumers
        .into_iter()
        .enumerate()
        .map(|(who, mut c)| {
            let seen = seen.clone();
            tokio::spawn(async move {
                let end = Instant::now() + LIMIT;
                while Instant::now() < end && seen.lock().unwrap().done.is_none() {
                    // Implicit mode: this poll ACCEPTs the last one's records.
                    let records = c.poll(Duration::from_millis(200)).await.unwrap();
                    for r in &records {
                        tokio::time::sleep(WORK).await;
                        let mut s = seen.lock().unwrap();
                        let now = Instant::now();
                        s.first.get_or_insert(now);
                        s.deliveries.push((who, r.offset()));
                        s.distinct.insert(r.offset());
                        if s.distinct.len() == N as usize {
                            s.done = Some(now);
                        }
                    }
                }
                c.close().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut out = seen.lock().unwrap();
    Some(std::mem::take(&mut *out))
}

impl Drain {
    fn took(&self) -> Duration {
        match (self.first, self.done) {
            (Some(f), Some(d)) => d - f,
            _ => panic!(
                "not drained within {LIMIT:?}: {} of {N} records",
                self.distinct.len()
            ),
        }
    }

    fn per_member(&self, members: usize) -> Vec<usize> {
        (0..members)
            .map(|m| self.deliveries.iter().filter(|(w, _)| *w == m).count())
            .collect()
    }
}

#[tokio::test]
async fn three_share_consumers_drain_one_partition_faster_than_one() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "share-parallel", 1, N, |i| format!("k{i}")).await;
    // Two share groups on one topic: each reads it whole.
    let Some(one) = drain(&b, &topic, 1).await else {
        return;
    };
    let three = drain(&b, &topic, 3).await.expect("share groups are on");
    let (t1, t3) = (one.took(), three.took());
    let ratio = t1.as_secs_f64() / t3.as_secs_f64();
    let per = three.per_member(3);
    eprintln!(
        "{N} records, {WORK:?} each, one partition: 1 member {t1:?}, 3 members {t3:?} \
         ({ratio:.2}x); records per member {per:?}"
    );
    for d in [&one, &three] {
        assert_eq!(d.distinct.len(), N as usize, "every record delivered");
        assert_eq!(
            d.deliveries.len(),
            N as usize,
            "none delivered twice (each ACCEPTed at the next poll)"
        );
    }
    assert!(
        per.iter().all(|n| *n > 0),
        "every member got records: {per:?}"
    );
    assert!(
        ratio > 1.8,
        "3 members should drain one partition about 3x faster than 1: 1 member {t1:?}, \
         3 members {t3:?} ({ratio:.2}x), records per member {per:?}"
    );
}
