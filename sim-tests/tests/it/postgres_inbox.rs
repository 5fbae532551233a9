//! Idempotency with PostgreSQL against the real broker and a real server:
//! every event is delivered twice (a producer that retried, and a consumer
//! that crashed before committing), and each side effect lands once. Then
//! the inbox's failures: an event id the table cannot hold is dead-lettered
//! alone, and a PostgreSQL restart (under `alone::`) is waited out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use resilience::dedup::postgres::{classify, Outcome, PgDedup};
use resilience::dedup::DedupStore;
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
    async fn handle(&self, _tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
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

/// One inbox call that inserts `id` into `table` (a single `event_id`
/// column) inside the inbox's transaction.
async fn insert_once(pg: &PgDedup, table: &str, id: &str) -> Result<Outcome<()>, HandlerError> {
    let sql = format!("INSERT INTO {table} (event_id) VALUES ($1)");
    let owned = id.to_string();
    pg.process_once(id, move |tx| {
        Box::pin(async move {
            tx.execute(sql.as_str(), &[&owned])
                .await
                .map_err(|e| classify(&e))?;
            Ok(())
        })
    })
    .await
}

/// `len` letters and digits that do not compress (PostgreSQL compresses a
/// long index entry before it checks the btree limit: a repeated character
/// would fit).
fn incompressible_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(std::process::id());
    (0..len)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ALPHABET[(z % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

async fn ledger_table(pg: &PgDedup, prefix: &str) -> String {
    let table = testkit::unique_name(prefix).replace('-', "_");
    pg.batch_execute(&format!("CREATE TABLE {table} (event_id text NOT NULL)"))
        .await
        .unwrap();
    table
}

#[tokio::test]
async fn an_event_id_too_long_for_the_index_is_non_retryable_at_once_and_the_next_id_works() {
    let pg_url = testkit::require_postgres!();
    // One connection: the call after the failure uses the same one.
    let pg = PgDedup::connect(&pg_url, 1).await.unwrap();
    let table = ledger_table(&pg, "longid").await;

    // About 3 KB: over the btree's 2704-byte limit for an index entry.
    let long = incompressible_id(3_000);
    let started = Instant::now();
    let err = insert_once(&pg, &table, &long).await.unwrap_err();
    assert!(
        matches!(err, HandlerError::NonRetryable(_)),
        "an id the index cannot hold can never succeed: dead-letter it now, got {err}"
    );
    assert!(
        err.message().contains("54000"),
        "program_limit_exceeded: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed at once ({:?})",
        started.elapsed()
    );

    // Only that record: a normal id right after works, on the same connection.
    let id = testkit::unique_name("evt");
    assert_eq!(
        insert_once(&pg, &table, &id).await,
        Ok(Outcome::Applied(()))
    );
    assert_eq!(
        insert_once(&pg, &table, &id).await,
        Ok(Outcome::AlreadyProcessed)
    );
    let rows = pg
        .query_i64(&format!("SELECT count(*) FROM {table}"))
        .await
        .unwrap();
    assert_eq!(
        rows, 1,
        "the long id's closure never ran, the normal one once"
    );
}

/// Tests that stop the shared PostgreSQL server: ignored in the shared run
/// (every other PostgreSQL test uses it), run by `cargo xtask test` alone
/// with the broker restarts (`alone::` in the path).
mod alone {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "stops and starts the shared PostgreSQL: cargo xtask test runs it alone"]
    async fn a_postgres_restart_is_unavailable_while_down_and_the_same_inbox_works_after() {
        let pg_url = testkit::require_postgres!();
        let Some(server) = testkit::PostgresServer::of(&pg_url) else {
            assert!(
                !testkit::broker_required(),
                "PG_URL ({pg_url}) is not the server of `cargo xtask postgres up`: cannot restart it"
            );
            eprintln!("SKIPPED: PG_URL is not the server of `cargo xtask postgres up`");
            return;
        };
        let server = Arc::new(server);
        let pg = Arc::new(PgDedup::connect(&pg_url, 2).await.unwrap());
        let table = ledger_table(&pg, "restart").await;
        let prefix = testkit::unique_name("r");

        // Both connections of the pool in use before the restart.
        let ids = [format!("{prefix}-before-0"), format!("{prefix}-before-1")];
        let (a, b) = tokio::join!(
            insert_once(&pg, &table, &ids[0]),
            insert_once(&pg, &table, &ids[1]),
        );
        assert_eq!((a, b), (Ok(Outcome::Applied(())), Ok(Outcome::Applied(()))));

        // A call inside its transaction when the server stops: its commit
        // finds the connection gone.
        let held_id = format!("{prefix}-held");
        let (inside, inside_rx) = tokio::sync::oneshot::channel::<()>();
        let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
        let held = tokio::spawn({
            let (pg, table, id) = (pg.clone(), table.clone(), held_id.clone());
            async move {
                let sql = format!("INSERT INTO {table} (event_id) VALUES ($1)");
                let owned = id.clone();
                pg.process_once(&id, move |tx| {
                    Box::pin(async move {
                        tx.execute(sql.as_str(), &[&owned])
                            .await
                            .map_err(|e| classify(&e))?;
                        let _ = inside.send(());
                        let _ = go_rx.await;
                        Ok(())
                    })
                })
                .await
            }
        });
        inside_rx
            .await
            .expect("the held call reached its transaction");
        let s = server.clone();
        tokio::task::spawn_blocking(move || s.stop())
            .await
            .unwrap()
            .expect("stop PostgreSQL");
        go.send(()).unwrap();
        let held = held.await.unwrap();
        assert!(
            matches!(held, Err(HandlerError::Unavailable(_))),
            "a connection lost mid-transaction is Unavailable (the runtime waits), got {held:?}"
        );

        // While it is down: refused at once, Unavailable, never Retryable
        // (which the runtime would dead-letter after its attempts).
        for i in 0..3 {
            let started = Instant::now();
            let r = insert_once(&pg, &table, &format!("{prefix}-down-{i}")).await;
            assert!(
                matches!(r, Err(HandlerError::Unavailable(_))),
                "while PostgreSQL is down: {r:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a refused connection fails promptly ({:?})",
                started.elapsed()
            );
        }
        assert!(pg.seen("anything").await.is_err(), "the store fails too");

        let s = server.clone();
        tokio::task::spawn_blocking(move || s.start())
            .await
            .unwrap()
            .expect("start PostgreSQL again");

        // The same PgDedup, not rebuilt: its dead connections are replaced.
        let back = Instant::now();
        let first = loop {
            match insert_once(&pg, &table, &format!("{prefix}-after-0")).await {
                Err(HandlerError::Unavailable(e)) if back.elapsed() < Duration::from_secs(20) => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        assert_eq!(first, Ok(Outcome::Applied(())), "after the restart");
        // Every connection of the pool works (two at once), and so does
        // the generic store's path.
        for round in 0..3 {
            let ids = [
                format!("{prefix}-after-{round}-a"),
                format!("{prefix}-after-{round}-b"),
            ];
            let (a, b) = tokio::join!(
                insert_once(&pg, &table, &ids[0]),
                insert_once(&pg, &table, &ids[1]),
            );
            assert_eq!(
                (a, b),
                (Ok(Outcome::Applied(())), Ok(Outcome::Applied(()))),
                "round {round}"
            );
        }
        pg.mark(&format!("{prefix}-marked")).await.unwrap();
        assert!(pg.seen(&format!("{prefix}-marked")).await.unwrap());

        // The held call's transaction rolled back: its event is not marked,
        // so its redelivery applies it now, once.
        assert_eq!(
            insert_once(&pg, &table, &held_id).await,
            Ok(Outcome::Applied(()))
        );
        let rows = pg
            .query_i64(&format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        let distinct = pg
            .query_i64(&format!("SELECT count(DISTINCT event_id) FROM {table}"))
            .await
            .unwrap();
        assert_eq!((rows, distinct), (2 + 1 + 6 + 1, 10), "each applied once");
    }
}
