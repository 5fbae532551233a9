//! The application's handler traits, and how a worker calls them: once per
//! record ([`OneRecord`]) or once per unit ([`Batched`]), each call's
//! future polled in place (never boxed).

use std::future::Future;
use std::sync::Arc;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;

use crate::retry::HandlerError;

/// The application's code for one record.
///
/// Write it as an `async fn`; its future must be `Send` (the runtime runs
/// handlers on tokio's worker threads), and it may borrow `self`, `tp` and
/// `record` until it completes:
///
/// ```no_run
/// use resilience::{Handler, HandlerError};
/// use resilience::consumer_core::TopicPartition;
/// use kafka_wire::records::Record;
///
/// struct SaveOrder;
/// impl Handler for SaveOrder {
///     async fn handle(&self, _tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
///         let body = r.value.as_deref().ok_or(HandlerError::fatal("empty order"))?;
///         let _order = std::str::from_utf8(body)?;
///         Ok(())
///     }
/// }
/// ```
///
/// The runtime is generic over the handler: each call's future lives
/// inside the worker's own (no allocation per call). A future that is not
/// `Send` is refused where the `impl` is written.
///
/// Return `Ok(())` once the record's work is done: only then can its offset
/// be committed. An `Err` says what to do next (see [`HandlerError`]):
/// `Retryable` is retried with backoff (default 3 attempts, 1 s then 2 s
/// apart) and then dead-lettered; `NonRetryable` and `Deserialization` are
/// dead-lettered at once. Without a DLT (`ProcessorConfig::dead_letter`) a
/// record that cannot be handled stalls its partition instead of being
/// skipped. A handler that panics (building or polling its future) fails
/// that call as `NonRetryable` with the panic's message: the record is
/// dead-lettered and its partition goes on. `?` works on common errors
/// (I/O, Kafka, UTF-8, number parsing: see [`HandlerError`]'s `From`
/// impls). For a small handler, [`handler_fn`](crate::handler_fn()) takes
/// an async closure instead.
pub trait Handler: Send + Sync + 'static {
    /// Handle `record`, read from `tp`.
    fn handle<'a>(
        &'a self,
        tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// The application's code for a batch of one lane's records (in order:
/// consecutive records of a partition, or of a key under
/// [`Ordering::PerKey`](crate::Ordering)), at most `max_batch` of them
/// ([`Processor::batched`](super::Processor::batched)). Written as an `async fn`, like [`Handler`].
/// A failure retries, and then dead-letters, the whole batch; a panic
/// dead-letters it at once.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handle `records` (1 ..= `max_batch`), read from `tp`.
    fn handle_batch<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// A shared handler is a handler (one instance across runs or processors).
impl<H: Handler> Handler for Arc<H> {
    fn handle<'a>(
        &'a self,
        tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        (**self).handle(tp, record)
    }
}

impl<H: BatchHandler> BatchHandler for Arc<H> {
    fn handle_batch<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        (**self).handle_batch(tp, records)
    }
}

/// How a unit calls the application's handler: a [`Handler`] once per
/// record ([`OneRecord`]), a [`BatchHandler`] once for the unit's records
/// ([`Batched`]). Calls are static: each call's future is part of the
/// worker's, with no allocation per call. The handler's type is erased
/// once per worker task instead (see `StartWorker` in runtime.rs).
pub(super) trait CallHandler: Send + Sync + 'static {
    /// Whether one call takes all the records of a unit (a batch handler).
    const BATCH: bool;

    /// Call the handler with `records` (one, unless [`Self::BATCH`]).
    fn call<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// A [`Handler`]: one record per call.
pub(super) struct OneRecord<H>(pub(super) H);

impl<H: Handler> CallHandler for OneRecord<H> {
    const BATCH: bool = false;

    fn call<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.0.handle(tp, &records[0])
    }
}

/// A [`BatchHandler`]: a unit's records (at most `max_batch`) per call.
pub(super) struct Batched<B>(pub(super) B);

impl<B: BatchHandler> CallHandler for Batched<B> {
    const BATCH: bool = true;

    fn call<'a>(
        &'a self,
        tp: &'a TopicPartition,
        records: &'a [Record],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        self.0.handle_batch(tp, records)
    }
}
