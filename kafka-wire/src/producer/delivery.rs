//! Delivery reports: one shared outcome per batch, not a channel per record.
//!
//! ```text
//!  send ──▶ Deliveries::push ──▶ DeliveryFuture { batch outcome, index }
//!                                        ▲ poll: is my index in a done range?
//!  sender: Deliveries::succeed / fail ───┘ one range per batch, wakes waiters
//! ```
//!
//! Every record of a batch gets a [`DeliveryFuture`] that points into the
//! batch's [`Outcome`] by index, so queuing a record allocates nothing for
//! its report (a oneshot channel per record cost an allocation, a free and
//! several atomic operations). A batch split in two (too large for the
//! broker) splits its [`Deliveries`] too: each half completes its own index
//! range. A batch dropped without an outcome (the producer went away)
//! fails its records with [`Error::Closed`].

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

use super::RecordMetadata;

/// The outcome of one batch (and of its split halves), shared by the
/// delivery futures of its records.
struct Outcome {
    topic: Arc<str>,
    partition: i32,
    state: Mutex<OutcomeState>,
}

/// Completed record indices `start..end`: the offset of `start` and the
/// log append time (-1: the record's own timestamp), or the error.
type DoneRange = (u32, u32, Result<(i64, i64)>);

#[derive(Default)]
struct OutcomeState {
    done: Vec<DoneRange>,
    /// Futures waiting for an index not yet completed.
    wakers: Vec<Waker>,
    /// Bumped each time `wakers` is drained, so a future knows whether its
    /// slot is still there.
    round: u32,
}

/// The records of one batch (or of one half of a split batch): indices
/// `first..first + len` of their outcome.
pub(crate) struct Deliveries {
    outcome: Arc<Outcome>,
    first: u32,
    len: u32,
}

impl Deliveries {
    pub(crate) fn new(topic: Arc<str>, partition: i32) -> Self {
        Self {
            outcome: Arc::new(Outcome {
                topic,
                partition,
                state: Mutex::new(OutcomeState::default()),
            }),
            first: 0,
            len: 0,
        }
    }

    /// The future of the next record appended to this batch, whose own
    /// timestamp is `timestamp` (ms since the epoch).
    pub(crate) fn push(&mut self, timestamp: i64) -> DeliveryFuture {
        let index = self.first + self.len;
        self.len += 1;
        DeliveryFuture {
            outcome: self.outcome.clone(),
            index,
            timestamp,
            slot: None,
        }
    }

    /// Keep the first `k` records; the rest become their own deliveries
    /// (the tail half of a split batch).
    pub(crate) fn split_off(&mut self, k: usize) -> Deliveries {
        let k = (k as u32).min(self.len);
        let tail = Deliveries {
            outcome: self.outcome.clone(),
            first: self.first + k,
            len: self.len - k,
        };
        self.len = k;
        tail
    }

    /// Every record delivered: the first at `base_offset` (-1 when unknown,
    /// acks=0), stamped `log_append_time` (ms; -1 under CreateTime).
    pub(crate) fn succeed(mut self, base_offset: i64, log_append_time: i64) {
        self.complete(Ok((base_offset, log_append_time)));
    }

    /// Every record failed with `err`.
    pub(crate) fn fail(mut self, err: &Error) {
        self.complete(Err(err.clone()));
    }

    fn complete(&mut self, outcome: Result<(i64, i64)>) {
        if self.len == 0 {
            return;
        }
        let wakers = {
            let mut st = self.outcome.state.lock().expect("delivery lock");
            st.done.push((self.first, self.first + self.len, outcome));
            st.round = st.round.wrapping_add(1);
            std::mem::take(&mut st.wakers)
        };
        self.len = 0;
        for w in wakers {
            w.wake();
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.complete(Err(Error::Closed));
    }
}

/// Resolves when the record is acknowledged, or fails: with
/// [`Error::DeliveryTimeout`] after `delivery.timeout.ms`, with
/// [`Error::RecordTooLargeForBroker`] when the record alone exceeds the
/// topic's `max.message.bytes`, with the broker's error for its batch, or
/// with [`Error::Closed`] when the producer stopped before an answer.
///
/// Cheap: the records of one batch share one outcome, so a future is an
/// index into it, not a channel of its own. Dropping it does not cancel
/// the delivery.
pub struct DeliveryFuture {
    outcome: Arc<Outcome>,
    index: u32,
    timestamp: i64,
    /// `(round, index)` of this future's waker in the outcome's list.
    slot: Option<(u32, usize)>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.outcome.topic)
            .field("partition", &self.outcome.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut st = this.outcome.state.lock().expect("delivery lock");
        let index = this.index;
        if let Some((start, _, outcome)) =
            st.done.iter().find(|(s, e, _)| (*s..*e).contains(&index))
        {
            return Poll::Ready(match outcome {
                Ok((base_offset, log_append_time)) => Ok(RecordMetadata {
                    topic: this.outcome.topic.clone(),
                    partition: this.outcome.partition,
                    offset: if *base_offset >= 0 {
                        base_offset + i64::from(index - start)
                    } else {
                        -1
                    },
                    timestamp: if *log_append_time >= 0 {
                        *log_append_time
                    } else {
                        this.timestamp
                    },
                }),
                Err(e) => Err(e.clone()),
            });
        }
        let round = st.round;
        match this.slot {
            Some((r, i)) if r == round => {
                if !st.wakers[i].will_wake(cx.waker()) {
                    st.wakers[i] = cx.waker().clone();
                }
            }
            _ => {
                this.slot = Some((round, st.wakers.len()));
                st.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;

    fn now(f: &mut DeliveryFuture) -> Poll<Result<RecordMetadata>> {
        let waker = Waker::noop();
        pin!(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn each_record_gets_its_offset_and_timestamp() {
        let mut d = Deliveries::new(Arc::from("t"), 3);
        let mut fs: Vec<_> = (0..3).map(|i| d.push(1000 + i)).collect();
        assert!(now(&mut fs[0]).is_pending());
        d.succeed(40, -1);
        let got: Vec<(i64, i64)> = fs
            .iter_mut()
            .map(|f| match now(f) {
                Poll::Ready(Ok(m)) => {
                    assert_eq!((&*m.topic, m.partition), ("t", 3));
                    (m.offset, m.timestamp)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, vec![(40, 1000), (41, 1001), (42, 1002)]);
    }

    #[test]
    fn split_halves_complete_separately_and_a_dropped_batch_reports_closed() {
        let mut head = Deliveries::new(Arc::from("t"), 0);
        let mut fs: Vec<_> = (0..4).map(|_| head.push(7)).collect();
        let tail = head.split_off(1);
        head.succeed(10, 99);
        match now(&mut fs[0]) {
            Poll::Ready(Ok(m)) => assert_eq!((m.offset, m.timestamp), (10, 99)),
            other => panic!("{other:?}"),
        }
        assert!(now(&mut fs[1]).is_pending(), "the tail is not done yet");
        drop(tail);
        for f in &mut fs[1..] {
            assert!(matches!(now(f), Poll::Ready(Err(Error::Closed))));
        }
    }

    #[test]
    fn a_waiting_future_is_woken_once_its_range_completes() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut d = Deliveries::new(Arc::from("t"), 0);
        let mut f = d.push(0);
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(pin!(&mut f).poll(&mut cx).is_pending());
        }
        d.fail(&Error::Closed);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(pin!(&mut f).poll(&mut cx).is_ready());
    }
}
