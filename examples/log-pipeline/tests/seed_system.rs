//! Seed 004 end to end, against the real broker, PostgreSQL and Redis:
//! 1,000 events through the gateway into 3 consumer instances while
//! PostgreSQL refuses connections for a few seconds. Afterwards every
//! accepted event is in PostgreSQL exactly once (none needed the DLQ: the
//! retries outlast the outage), and the Redis counts equal a `GROUP BY`
//! over the rows, also after a second group re-reads the whole topic.
//!
//! With `CI=true` (or `KAFKA_REQUIRE_BROKER=1`) a missing broker,
//! PostgreSQL or Redis fails the test; otherwise it skips.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use log_pipeline::load;
use log_pipeline::pipeline::{self, Settings};
use log_pipeline::store::{connect, Store};

/// How long PostgreSQL refuses connections: shorter than the retries
/// (1 + 2 + 4 s, ±20 % jitter), so no batch should reach the DLQ.
const OUTAGE: Duration = Duration::from_millis(3_500);

/// Make `db` refuse connections and end the ones it has, for `down`.
async fn outage(admin_url: &str, db: &str, down: Duration) {
    let admin = connect(admin_url).await.expect("admin connection");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_system_every_accepted_event_is_stored_once_and_redis_matches_postgres() {
    let Some(broker) = testkit::broker() else {
        return;
    };
    let Some(pg_url) = testkit::postgres() else {
        return;
    };
    let Some(redis_url) = testkit::redis() else {
        return;
    };
    let started = Instant::now();

    // A database of our own, so that the outage touches nothing else.
    let run = testkit::unique_name("logpipe");
    let db = run.replace('-', "_");
    let admin = connect(&pg_url).await.expect("PostgreSQL");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create the test database");
    let db_url = format!("{pg_url} dbname={db}");
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

    // 1,000 events at 250/s; PostgreSQL goes away after about a second.
    let http = load::http();
    let addr = gw.addr;
    let sending = tokio::spawn(async move { load::sustained(&http, addr, 0, 250, 4).await });
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let outage_at = started.elapsed();
    outage(&pg_url, &db, OUTAGE).await;
    let accepted: Vec<String> = sending.await.unwrap().expect("every POST stored (2xx)");
    assert_eq!(accepted.len(), 1_000);

    let n = accepted.len() as i64;
    let stored = load::wait_rows(&db_url, &s.table, n, Duration::from_secs(30))
        .await
        .unwrap();
    let store = Store::open(&db_url, &s.table, 1).await.unwrap();
    let ids = store.stored_ids().await.unwrap();
    let unique: HashSet<&String> = ids.iter().collect();
    let accepted_set: HashSet<&String> = accepted.iter().collect();
    let missing: Vec<_> = accepted_set.difference(&unique).take(5).collect();
    let failures: u64 = consumers
        .stats
        .iter()
        .map(|st| st.retried.load(Relaxed))
        .sum();
    println!(
        "outage at {outage_at:?} for {OUTAGE:?}; stored {stored}/{n}; retried batches {failures}; \
         dead-lettered {}; quarantines {}",
        consumers.dead_lettered(),
        consumers.quarantines()
    );
    assert_eq!(
        consumers.dead_lettered(),
        0,
        "the retries outlast the outage: nothing to the DLQ"
    );
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
    assert_eq!(ids.len(), unique.len(), "an event id stored twice");
    assert_eq!(unique, accepted_set, "rows that were never accepted");
    assert!(failures > 0, "the outage should have failed some batches");

    let redis = s.aggregates().await.unwrap();
    assert_eq!(
        redis.counts().await.unwrap(),
        store.group_by().await.unwrap()
    );

    // Redelivery: a second group reads the whole topic again. No row, no
    // count changes.
    consumers.stop().await.unwrap();
    let mut again = s.clone();
    again.group = format!("{}-again", s.group);
    let second = pipeline::start_consumers(&again, 1).await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while second.stats[0].handled.load(Relaxed) < n as u64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        second.stats[0].handled.load(Relaxed) >= n as u64,
        "the second group re-read everything"
    );
    second.stop().await.unwrap();
    assert_eq!(
        load::count(&db_url, &s.table).await.unwrap(),
        n,
        "redelivery added rows"
    );
    assert_eq!(
        redis.counts().await.unwrap(),
        store.group_by().await.unwrap(),
        "redelivery changed counts"
    );

    gw.stop().await.unwrap();
    drop(store);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
    println!("seed_system wall time: {:?}", started.elapsed());
}
