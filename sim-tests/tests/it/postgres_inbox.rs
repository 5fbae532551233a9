//! Idempotency with PostgreSQL against the real broker and a real server:
//! every event is delivered twice (a producer that retried, and a consumer
//! that crashed before committing), and each side effect lands once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use resilience::dedup::postgres::{Outcome, PgDedup};
use resilience::processor::HandlerFuture;
use resilience::{CommitPolicy, Handler, HandlerError, KeySource, Processor, ProcessorConfig};
use sim_tests::support;

/// Moves `amount` into a ledger inside the inbox transaction.
struct Ledger {
    pg: Arc<PgDedup>,
    table: String,
    applied: AtomicU64,
    skipped: AtomicU64,
}

fn event_id(r: &Record) -> String {
    r.headers
        .iter()
        .find(|h| h.key.as_ref() == b"event-id")
        .and_then(|h| h.value.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("every record has an event-id")
}

impl Handler for Ledger {
    fn handle<'a>(&'a self, _tp: &'a TopicPartition, r: &'a Record) -> HandlerFuture<'a> {
        Box::pin(async move {
            let id = event_id(r);
            let sql = format!(
                "INSERT INTO {} (event_id, amount) VALUES ($1, 10)",
                self.table
            );
            let outcome = self
                .pg
                .process_once(&id, |tx| {
                    let (sql, id) = (sql.clone(), id.clone());
                    Box::pin(async move {
                        tx.execute(sql.as_str(), &[&id])
                            .await
                            .map_err(HandlerError::from_display)?;
                        Ok(())
                    })
                })
                .await?;
            match outcome {
                Outcome::Applied(()) => self.applied.fetch_add(1, Ordering::Relaxed),
                Outcome::AlreadyProcessed => self.skipped.fetch_add(1, Ordering::Relaxed),
            };
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_inbox_applies_each_event_once_across_duplicates_and_a_crash() {
    const EVENTS: u32 = 300;
    let b = testkit::require_broker!();
    let pg_url = testkit::require_postgres!();
    let pg = Arc::new(PgDedup::connect(&pg_url, 4).await.unwrap());
    let table = testkit::unique_name("ledger").replace('-', "_");
    pg.batch_execute(&format!(
        "CREATE TABLE {table} (event_id text NOT NULL, amount bigint NOT NULL)"
    ))
    .await
    .unwrap();

    // Each event twice, as a retrying producer would write it.
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "inbox", 3).await;
    let prefix = testkit::unique_name("evt");
    let records = (0..EVENTS).flat_map(|i| {
        let rec = ProducerRecord::new(&topic)
            .key(format!("acct{}", i % 7))
            .value(i.to_string())
            .header("event-id", format!("{prefix}-{i}"));
        [rec.clone(), rec]
    });
    testkit::produce(&admin, &b, records).await;
    let total = u64::from(EVENTS) * 2;

    let group = testkit::unique_name("inbox");
    let ledger = Arc::new(Ledger {
        pg: pg.clone(),
        table: table.clone(),
        applied: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
    });
    // Commit only on shutdown: the crash below redelivers everything.
    let cfg = || {
        ProcessorConfig::new(support::group_consumer(&b, &group), &[&topic])
            .commit_policy(CommitPolicy::OnRevokeAndShutdown)
            .concurrency(8)
    };
    let first = support::start(Processor::new(cfg(), ledger.clone()));
    first
        .wait_finished(total / 2, Duration::from_secs(60))
        .await;
    first.crash().await;

    let second = support::start(Processor::new(cfg(), ledger.clone()));
    let end = Instant::now() + Duration::from_secs(90);
    while pg
        .query_i64(&format!("SELECT count(DISTINCT event_id) FROM {table}"))
        .await
        .unwrap()
        < i64::from(EVENTS)
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.wait_finished(total, Duration::from_secs(30)).await;
    second.stop().await;

    let rows = pg
        .query_i64(&format!("SELECT count(*) FROM {table}"))
        .await
        .unwrap();
    let distinct = pg
        .query_i64(&format!("SELECT count(DISTINCT event_id) FROM {table}"))
        .await
        .unwrap();
    assert_eq!(distinct, i64::from(EVENTS), "lost events");
    assert_eq!(
        rows,
        distinct,
        "{} side effects applied twice",
        rows - distinct
    );
    let skipped = ledger.skipped.load(Ordering::Relaxed);
    assert!(
        skipped >= u64::from(EVENTS),
        "every duplicate delivery was skipped by the inbox ({skipped})"
    );
}

#[tokio::test]
async fn the_postgres_dedup_store_skips_marked_events_in_the_generic_path() {
    const EVENTS: u32 = 200;
    let b = testkit::require_broker!();
    let pg_url = testkit::require_postgres!();
    let store = Arc::new(PgDedup::connect(&pg_url, 2).await.unwrap());
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "pg-dedup", 2).await;
    let prefix = testkit::unique_name("e");
    let records = (0..EVENTS).flat_map(|i| {
        let rec = ProducerRecord::new(&topic)
            .value(i.to_string())
            .header("event-id", format!("{prefix}-{i}"));
        [rec.clone(), rec]
    });
    testkit::produce(&admin, &b, records).await;

    let sink = Arc::new(support::Sink::default());
    let group = testkit::unique_name("pg-dedup");
    let cfg = ProcessorConfig::new(support::group_consumer(&b, &group), &[&topic])
        .idempotency(KeySource::Header("event-id".into()), store.clone());
    let run = support::start(Processor::new(
        cfg,
        support::SinkHandler::new(&sink, support::instant()),
    ));
    let finished = run
        .wait_finished(u64::from(EVENTS) * 2, Duration::from_secs(60))
        .await;
    let deduplicated = run.stats.deduplicated.load(Ordering::Relaxed);
    run.stop().await;
    assert_eq!(finished, u64::from(EVENTS) * 2);
    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!((distinct.len(), dups), (EVENTS as usize, 0));
    assert_eq!(deduplicated, u64::from(EVENTS), "each second copy skipped");
}
