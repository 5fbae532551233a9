//! The rebalance listener: load what is already done on assignment; drain
//! and commit on revoke; drop without committing on loss.

use std::sync::Arc;

use consumer_core::consumer::ListenerFuture;
use consumer_core::{Committer, RebalanceListener, TopicPartition};

use super::completion::offsets::{Loaded, Offsets};
use super::runtime::Runtime;
use crate::commit_metadata;
use crate::observe::Event;

pub(super) struct RuntimeListener(pub(super) Arc<Runtime<Offsets>>);

impl RebalanceListener for RuntimeListener {
    fn on_assigned<'a>(
        &'a self,
        c: &'a Committer,
        parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            let rt = &self.0;
            rt.metrics().assigned.increment(1);
            // The committed metadata names offsets beyond the committed one
            // that are already done: they are not handled again.
            match c.committed(parts).await {
                Ok(committed) => rt.load(committed.into_iter().map(|(tp, co)| {
                    let done = commit_metadata::decode(co.offset, &co.metadata);
                    let incarnation = c.incarnation(&tp);
                    let loaded = Loaded {
                        committed: co.offset,
                        metadata: co.metadata,
                        done,
                    };
                    (tp, incarnation, loaded)
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read committed metadata; finished work beyond the committed offsets may be redone")
                }
            }
            rt.observe(Event::Assigned(parts.to_vec()));
        })
    }

    fn on_revoked<'a>(
        &'a self,
        c: &'a Committer,
        parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            let rt = &self.0;
            rt.metrics().revoked.increment(1);
            rt.stop_partitions(parts);
            rt.wait_idle(Some(parts), rt.cfg().drain_timeout).await;
            let _one_at_a_time = rt.one_commit_at_a_time().await;
            rt.commit_locked(c, Some(parts)).await;
            rt.forget(parts);
            rt.observe(Event::Revoked(parts.to_vec()));
        })
    }

    fn on_lost<'a>(&'a self, _c: &'a Committer, parts: &'a [TopicPartition]) -> ListenerFuture<'a> {
        Box::pin(async move {
            let rt = &self.0;
            rt.metrics().lost.increment(1);
            rt.stop_partitions(parts);
            let _one_at_a_time = rt.one_commit_at_a_time().await;
            rt.forget(parts); // never commit lost partitions
            rt.observe(Event::Lost(parts.to_vec()));
        })
    }
}
