//! [`RecordStream`]: the consumer as a `futures_core::Stream` of partition batches.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use crate::consumer::{Consumer, PartitionRecords};
use crate::error::Result;

type PollFuture = Pin<Box<dyn Future<Output = (Consumer, Result<Vec<PartitionRecords>>)> + Send>>;

fn next_poll(mut c: Consumer, timeout: Duration) -> PollFuture {
    Box::pin(async move {
        let r = c.poll(timeout).await;
        (c, r)
    })
}

/// Yields each partition's records as they arrive, forever (an empty poll
/// simply polls again). Errors are yielded and polling continues, so the
/// caller decides whether an error ends its loop.
pub struct RecordStream {
    polling: PollFuture,
    ready: VecDeque<PartitionRecords>,
    timeout: Duration,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Turn the consumer into a [`Stream`]; each `poll` waits up to `poll_timeout`.
    pub fn into_stream(self, poll_timeout: Duration) -> RecordStream {
        RecordStream {
            polling: next_poll(self, poll_timeout),
            ready: VecDeque::new(),
            timeout: poll_timeout,
        }
    }
}

impl Stream for RecordStream {
    type Item = Result<PartitionRecords>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(batch)));
            }
            let (consumer, result) = match self.polling.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(out) => out,
            };
            let timeout = self.timeout;
            self.polling = next_poll(consumer, timeout);
            match result {
                Ok(batches) => self.ready.extend(batches),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}
