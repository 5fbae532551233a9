//! Reading `logs-dlq` back: which events were dead-lettered (the test's
//! "in PostgreSQL exactly once, or in the DLQ").

use std::time::{Duration, Instant};

use resilience::consumer_core::Consumer;

use crate::event::EVENT_ID_HEADER;

/// The event ids in `dlq`, read from the start by a fresh group until
/// `expect` were seen or `deadline` passed.
///
/// # Errors
/// Kafka unreachable.
pub async fn event_ids(
    bootstrap: &str,
    dlq: &str,
    expect: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<String>> {
    let group = format!("{dlq}-reader-{}", crate::now_micros());
    let cfg = crate::consumer_config(bootstrap, &group, &[("auto.offset.reset", "earliest")])?;
    let mut consumer = Consumer::connect(cfg).await?;
    consumer.subscribe(&[dlq])?;
    let until = Instant::now() + deadline;
    let mut ids = Vec::new();
    while ids.len() < expect && Instant::now() < until {
        for batch in consumer.poll(Duration::from_millis(200)).await? {
            for r in &batch.records {
                let id = r
                    .headers
                    .iter()
                    .rev()
                    .find(|h| h.key.as_ref() == EVENT_ID_HEADER.as_bytes())
                    .and_then(|h| h.value.as_deref());
                ids.extend(id.map(|v| String::from_utf8_lossy(v).into_owned()));
            }
        }
    }
    consumer.close(Duration::from_secs(5)).await;
    Ok(ids)
}
