//! A [`Handler`] from a closure, for handlers too small for a struct.

use std::future::Future;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;

use crate::{Handler, HandlerError};

/// A [`Handler`] that calls `f` with the record's partition and the record,
/// both owned, so the closure's future can keep them (`async move`). Each
/// call clones them: the partition's topic name (a small allocation) and
/// the record's header list; its key and value are shared `Bytes`. A
/// [`Handler`] impl borrows both instead, for the hottest paths. Build it
/// with [`handler_fn`].
pub struct HandlerFn<F>(F);

impl<F> std::fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// A [`Handler`] from an async closure: `Ok(())` marks the record handled;
/// an `Err` is retried or dead-lettered as [`HandlerError`] says, and a
/// panic dead-letters the record (see [`Handler`]). The closure's future
/// must be `Send + 'static` (it owns what it uses; the runtime polls it in
/// place, without boxing it).
///
/// ```no_run
/// use resilience::{handler_fn, HandlerError, Processor, ProcessorConfig};
/// # fn demo(cfg: ProcessorConfig) {
/// let save = handler_fn(|tp, record| async move {
///     let value = record.value.ok_or(HandlerError::fatal("empty value"))?;
///     let text = std::str::from_utf8(&value)?; // not UTF-8: dead-lettered at once
///     println!("{tp}@{}: {text}", record.offset);
///     Ok(())
/// });
/// let processor = Processor::new(cfg, save);
/// # }
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(TopicPartition, Record) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(TopicPartition, Record) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle<'a>(
        &'a self,
        tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        (self.0)(tp.clone(), record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closure_handles_records_and_its_errors_come_back() {
        let h = handler_fn(|tp, r: Record| async move {
            if r.offset == 1 {
                return Err(HandlerError::fatal(format!("bad record at {tp}")));
            }
            Ok(())
        });
        let tp = TopicPartition::new("t", 0);
        let mut r = Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        assert_eq!(h.handle(&tp, &r).await, Ok(()));
        r.offset = 1;
        assert_eq!(
            h.handle(&tp, &r).await,
            Err(HandlerError::NonRetryable("bad record at t-0".into()))
        );
    }
}
