//! Seed 004 end to end, against the real broker, PostgreSQL and Redis:
//! 1,000 events through the gateway into 3 consumer instances while
//! PostgreSQL refuses connections. Afterwards every accepted event is in
//! PostgreSQL exactly once, or in `logs-dlq`, and the Redis counts equal a
//! `GROUP BY` over the rows.
//!
//! - a short outage (3.5 s) is outlasted by the retries (1, 2, 4 s): the
//!   partitions wait, nothing reaches the DLQ; a second group re-reading
//!   the whole topic changes no row and no count;
//! - a long one (11 s) exhausts them: the waiting batches go to the DLQ,
//!   their partitions are quarantined, and everything after is stored.
//!
//! Each test has a database of its own (the outage is `ALLOW_CONNECTIONS
//! false` plus ending its backends), so they run side by side.
//!
//! With `CI=true` (or `KAFKA_REQUIRE_BROKER=1`) a missing broker,
//! PostgreSQL or Redis fails the test; otherwise it skips.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use log_pipeline::load;
use log_pipeline::pipeline::{self, RunningConsumers, RunningGateway, Settings};
use log_pipeline::store::{connect, Store};

struct Fixture {
    s: Settings,
    admin_url: String,
    db: String,
    gw: RunningGateway,
    consumers: RunningConsumers,
    started: Instant,
}

/// A database, topics and table of its own; the gateway and 3 instances.
async fn start() -> Option<Fixture> {
    let broker = testkit::broker()?;
    let admin_url = testkit::postgres()?;
    let redis_url = testkit::redis()?;
    let started = Instant::now();
    let run = testkit::unique_name("logpipe");
    let db = run.replace('-', "_");
    let admin = connect(&admin_url).await.expect("PostgreSQL");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create the test database");
    let db_url = format!("{admin_url} dbname={db}");
    let s = Settings::for_run(&broker.bootstrap, &db_url, &redis_url, &run);
    s.prepare().await.expect("topics and table");
    let gw = pipeline::start_gateway(&s, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("gateway");
    let consumers = pipeline::start_consumers(&s, 3).await.expect("consumers");
    assert!(
        consumers.wait_assigned(12, Duration::from_secs(30)).await,
        "the 3 instances did not share the 12 partitions within 30 s (assigned: {})",
        consumers.assigned()
    );
    Some(Fixture {
        s,
        admin_url,
        db,
        gw,
        consumers,
        started,
    })
}

impl Fixture {
    /// 1,000 events at 250/s; PostgreSQL refuses connections for `down`
    /// from about a second in. The ids the gateway stored (all: 2xx only).
    async fn send_through_outage(&self, down: Duration) -> Vec<String> {
        let (http, addr) = (load::http(), self.gw.addr);
        let sending = tokio::spawn(async move { load::sustained(&http, addr, 0, 250, 4).await });
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let admin = connect(&self.admin_url).await.expect("admin connection");
        let db = &self.db;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {db} ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
            ))
            .await
            .expect("take the database down");
        tokio::time::sleep(down).await;
        admin
            .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
            .await
            .expect("bring the database back");
        let accepted = sending.await.unwrap().expect("every POST stored (2xx)");
        assert_eq!(accepted.len(), 1_000);
        accepted
    }

    fn retried(&self) -> u64 {
        self.consumers
            .stats
            .iter()
            .map(|st| st.retried.load(Relaxed))
            .sum()
    }

    /// Every accepted id in PostgreSQL once or in the DLQ; Redis = GROUP BY.
    /// The DLQ's ids.
    async fn assert_nothing_lost(&self, accepted: &[String], deadline: Duration) -> Vec<String> {
        let s = &self.s;
        let store = Store::open(&s.pg_url, &s.table, 1).await.unwrap();
        // Until every accepted event is stored or dead-lettered.
        let ids = std::cell::RefCell::new(Vec::new());
        testkit::eventually_async(deadline, || async {
            let stored = store.stored_ids().await.unwrap();
            let all_in = stored.len() + self.consumers.dead_lettered() as usize >= accepted.len();
            *ids.borrow_mut() = stored;
            all_in
        })
        .await;
        let ids = ids.into_inner();
        let dead = log_pipeline::dlq::event_ids(
            &s.bootstrap,
            &s.dlq,
            self.consumers.dead_lettered() as usize,
            Duration::from_secs(15),
        )
        .await
        .unwrap();
        let stored: HashSet<&String> = ids.iter().collect();
        let dlq: HashSet<&String> = dead.iter().collect();
        let accepted: HashSet<&String> = accepted.iter().collect();
        assert_eq!(ids.len(), stored.len(), "an event id stored twice");
        let missing: Vec<_> = accepted
            .iter()
            .filter(|i| !stored.contains(*i) && !dlq.contains(*i))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "accepted, neither stored nor dead-lettered: {missing:?}"
        );
        let unknown: Vec<_> = stored
            .union(&dlq)
            .filter(|i| !accepted.contains(*i))
            .take(5)
            .collect();
        assert!(
            unknown.is_empty(),
            "stored or dead-lettered, never accepted: {unknown:?}"
        );
        let redis = s.aggregates().await.unwrap();
        assert_eq!(
            redis.counts().await.unwrap(),
            store.group_by().await.unwrap(),
            "Redis counts vs GROUP BY"
        );
        dead
    }

    async fn stop(self) {
        self.consumers.stop().await.unwrap();
        self.gw.stop().await.unwrap();
        let admin = connect(&self.admin_url).await.unwrap();
        let _ = admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.db))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_system_a_short_postgres_outage_waits_and_every_event_is_stored_once() {
    let Some(f) = start().await else { return };
    let accepted = f.send_through_outage(Duration::from_millis(3_500)).await;
    let dead = f
        .assert_nothing_lost(&accepted, Duration::from_secs(30))
        .await;
    println!(
        "short outage: stored {}, retried {}, dead-lettered {}, quarantines {}",
        accepted.len() - dead.len(),
        f.retried(),
        f.consumers.dead_lettered(),
        f.consumers.quarantines()
    );
    assert!(
        dead.is_empty(),
        "the retries outlast a 3.5 s outage: nothing to the DLQ"
    );
    assert!(
        f.retried() > 0,
        "the outage should have failed some batches"
    );

    // Redelivery: a second group reads the whole topic again.
    let mut again = f.s.clone();
    again.group = format!("{}-again", f.s.group);
    let second = pipeline::start_consumers(&again, 1).await.unwrap();
    let n = accepted.len() as u64;
    assert!(
        testkit::eventually(Duration::from_secs(30), || second.stats[0]
            .handled
            .load(Relaxed)
            >= n)
        .await,
        "the second group re-read everything"
    );
    second.stop().await.unwrap();
    f.assert_nothing_lost(&accepted, Duration::from_secs(5))
        .await;
    assert_eq!(
        load::count(&f.s.pg_url, &f.s.table).await.unwrap(),
        n as i64,
        "redelivery added rows"
    );
    println!("short outage test wall time: {:?}", f.started.elapsed());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_system_a_long_postgres_outage_is_waited_for_and_loses_nothing() {
    let Some(f) = start().await else { return };
    let accepted = f.send_through_outage(Duration::from_secs(11)).await;
    let dead = f
        .assert_nothing_lost(&accepted, Duration::from_secs(40))
        .await;
    println!(
        "long outage: stored {}, retried {}, dead-lettered {}, quarantines {}",
        accepted.len() - dead.len(),
        f.retried(),
        f.consumers.dead_lettered(),
        f.consumers.quarantines()
    );
    // An outage longer than the 1 + 2 + 4 s of retries: PostgreSQL's
    // connection errors are `HandlerError::Unavailable`, waited for, never
    // dead-lettered (before, 21 good events went to the DLQ here).
    assert!(f.retried() > 0, "the outage was felt");
    assert!(
        dead.is_empty(),
        "an unavailable database dead-letters nothing: {} dead",
        dead.len()
    );
    assert_eq!(f.consumers.quarantines(), 0);
    println!("long outage test wall time: {:?}", f.started.elapsed());
    f.stop().await;
}
