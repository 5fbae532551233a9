//! The application's code may panic: a handler, a batch handler, a
//! transformer, an observer. A panic is caught where we call that code,
//! so it fails that one call and never the worker, lane or poll loop that
//! made it (which would leave the lane busy and its records in flight
//! forever: nothing past them committed, and `run` never returning).
//!
//! A panicking handler or transformer call is a [`HandlerError::NonRetryable`]
//! whose text carries the panic's message: its records go to the DLT (or a
//! retry topic) like any poison record, with the message in the
//! `kafka_dlt-error` header, and the lane goes on. A panicking observer is
//! logged and ignored. The process's panic hook still runs (the default
//! one prints the panic to stderr), so nothing is hidden.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;

use crate::retry::HandlerError;

/// Call the application's async code: `make` builds its future (which may
/// panic before it is polled), then it is polled to the end, in place
/// (pinned inside this future: a handler's future is not boxed). A panic
/// in either is returned as a non-retryable error naming `what` and the
/// panic's message. Costs a `catch_unwind` per poll (a landing pad, no
/// allocation).
pub(crate) async fn call<T, F>(what: &str, make: impl FnOnce() -> F) -> Result<T, HandlerError>
where
    F: Future<Output = Result<T, HandlerError>>,
{
    call_with(make, |m| {
        HandlerError::NonRetryable(format!("{what} panicked: {m}"))
    })
    .await
}

/// [`call`] for code whose error is another type: a panic becomes
/// `on_panic(its message)`. A `DedupStore` that panics is an error of the
/// store (retried with backoff, the partition waiting and saying so),
/// never a dead worker.
pub(crate) async fn call_with<T, E, F>(
    make: impl FnOnce() -> F,
    on_panic: impl FnOnce(&str) -> E,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let fut = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => fut,
        Err(payload) => return Err(on_panic(message(payload.as_ref()))),
    };
    let mut fut = std::pin::pin!(fut);
    let mut on_panic = Some(on_panic);
    std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            // Never polled again after this: a panicked future may be in
            // any state.
            Err(payload) => {
                let on_panic = on_panic.take().expect("polled once after a panic");
                Poll::Ready(Err(on_panic(message(payload.as_ref()))))
            }
        }
    })
    .await
}

/// Call the application's synchronous hook (an observer); a panic is
/// logged with `what` and dropped.
pub(crate) fn call_hook(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        tracing::error!(
            panic = message(payload.as_ref()),
            "{what} panicked; ignored (the runtime goes on)"
        );
    }
}

/// A panic's message: `panic!("...")` carries a `&str` or a `String`.
pub(crate) fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a text message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The futures are `async` blocks as a handler's are: not `Unpin`,
    /// polled in place (never boxed).
    #[tokio::test]
    async fn a_panic_while_polling_or_building_is_a_non_retryable_error_with_its_message() {
        let ok = call("handler", || async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);

        let polled: Result<u32, _> = call("handler", || async {
            tokio::task::yield_now().await;
            panic!("bad record {}", 10)
        })
        .await;
        match polled {
            Err(HandlerError::NonRetryable(m)) => assert_eq!(m, "handler panicked: bad record 10"),
            other => panic!("{other:?}"),
        }

        let built = call(
            "transformer",
            || -> std::future::Ready<Result<u32, HandlerError>> { panic!("before any future") },
        )
        .await;
        match built {
            Err(HandlerError::NonRetryable(m)) => {
                assert_eq!(m, "transformer panicked: before any future")
            }
            other => panic!("{other:?}"),
        }
        let err: Result<u32, _> =
            call("handler", || async { Err(HandlerError::fatal("no")) }).await;
        assert!(matches!(err, Err(HandlerError::NonRetryable(m)) if m == "no"));
    }

    #[test]
    fn a_panicking_hook_is_contained() {
        let mut after = false;
        call_hook("observer", || panic!("observer bug"));
        call_hook("observer", || after = true);
        assert!(after);
    }
}
