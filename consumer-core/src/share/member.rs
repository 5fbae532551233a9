//! The share consumer's member task: the one group driver running the
//! share protocol's machine (`group/share_protocol`, the same loop as
//! classic and KIP-848), beside the hand-over of its events to the fetch
//! path. No protocol logic lives here.
//!
//! ```text
//!  ShareConsumer::poll ──stamp──▶ polled ─┐         ┌──────────── member task ────────────────┐
//!  ShareConsumer::close ──────▶ close ────┼────────▶│ group::share_protocol::run (Driver)     │
//!                                         │         │   └─ GroupEvent ─▶ hand_over:            │
//!                                         │         │   Assigned ─▶ Shared::add               │
//!                                         │         │   Revoked  ─▶ Shared::take_back, wait   │
//!                                         │         │     until handed over, then ack         │
//!                                         │         │   Lost     ─▶ the same, records given   │
//!                                         │         │     back (RELEASE); removed by the      │
//!                                         │         │     coordinator: Shared::forget (none   │
//!                                         │         │     acknowledged on the stale session)  │
//!                                         │         │   Fatal    ─▶ Shared::fail_membership   │
//!                                         │         └─────────────────────────────────────────┘
//! ```
//!
//! The driver waits for a Revoked or Lost ack (heartbeating meanwhile) up
//! to the hand-over timeout; then the heartbeat that ends the
//! reconciliation goes. So the acknowledgements owed to revoked
//! partitions are answered before it, and a member that stopped polling
//! has given its records back before its leave heartbeat.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_wire::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::driver::Shared;
use super::TopicIdPartition;
use crate::group::driver::{now, Seam};
use crate::group::share_protocol::member::ShareMemberConfig;
use crate::group::{share_protocol, GroupEvent, GroupSnapshot};
use crate::tp::TopicPartition;

/// Events the driver may queue before the hand-over takes them (it waits
/// for the ack of each Revoked or Lost anyway).
const EVENTS: usize = 16;

/// A running member: its task and the consumer's side of the seam.
#[derive(Debug)]
pub(crate) struct MemberTask {
    task: JoinHandle<()>,
    polled: watch::Sender<Instant>,
    close: watch::Sender<bool>,
}

impl MemberTask {
    /// Join `cfg.group_id` and hand assignments to `shared`.
    pub(crate) fn start(client: Client, cfg: ShareMemberConfig, shared: Arc<Shared>) -> Self {
        let (polled, polled_rx) = watch::channel(now());
        let (close, close_rx) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(EVENTS);
        let snapshot = Arc::new(Mutex::new(GroupSnapshot::default()));
        let seam = Seam {
            snapshot: snapshot.clone(),
            events: events_tx,
            polled: polled_rx,
            close: close_rx,
        };
        let timeout = cfg.handover_timeout;
        let task = tokio::spawn(async move {
            let group = share_protocol::run(client.clone(), cfg, seam);
            tokio::join!(
                group,
                hand_over(&client, &shared, &snapshot, events, timeout)
            );
        });
        Self {
            task,
            polled,
            close,
        }
    }

    /// The application polled (`max.poll.interval.ms` starts again).
    pub(crate) fn polled(&self) {
        let _ = self.polled.send(now());
    }

    /// Leave the group (the driver hands over what is owned first) and
    /// wait for the task, at most `wait`.
    pub(crate) async fn stop(self, wait: Duration) {
        let _ = self.close.send(true);
        if tokio::time::timeout(wait, self.task).await.is_err() {
            tracing::debug!("share member did not leave in time");
        }
    }

    /// Stop at once, without leaving (the session timeout expires it).
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// Apply the driver's events to the fetch path until the driver ends.
async fn hand_over(
    client: &Client,
    shared: &Shared,
    snapshot: &Mutex<GroupSnapshot>,
    mut events: mpsc::Receiver<GroupEvent>,
    timeout: Duration,
) {
    while let Some(event) = events.recv().await {
        match event {
            GroupEvent::Assigned(parts, _) => match with_ids(client, &parts).await {
                Ok(tips) => {
                    tracing::info!(partitions = ?parts, "share group assigned");
                    shared.add(tips);
                }
                Err(e) => shared.fail_membership(format!(
                    "the assigned partitions {parts:?} have no topic id in metadata: {e}"
                )),
            },
            GroupEvent::Revoked(parts, done) => {
                take_back(shared, &parts, false, timeout).await;
                let _ = done.send(());
            }
            GroupEvent::Lost(parts, done) => {
                // Published before the event, and not cleared before an
                // Assign, which waits for this ack.
                let removed = snapshot.lock().map(|s| s.removed).unwrap_or(false);
                if removed {
                    forget(shared, &parts);
                } else {
                    take_back(shared, &parts, true, timeout).await;
                }
                let _ = done.send(());
            }
            GroupEvent::Fatal(why) => shared.fail_membership(why),
        }
    }
}

/// Take `parts` from the fetch path and wait until what it owed them is
/// answered, at most `timeout`.
async fn take_back(shared: &Shared, parts: &[TopicPartition], lost: bool, timeout: Duration) {
    let tips: BTreeSet<TopicIdPartition> = shared
        .fetcher()
        .assignment()
        .iter()
        .filter(|tip| parts.contains(&tip.tp))
        .cloned()
        .collect();
    tracing::info!(partitions = ?parts, lost, "share group took partitions back; handing over");
    shared.take_back(&tips, lost);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answered = shared.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        if shared.fetcher().handed_over(&tips) {
            return;
        }
        if tokio::time::timeout_at(deadline, answered).await.is_err() {
            tracing::warn!(partitions = ?parts, "acknowledgements of revoked partitions not answered within {timeout:?}; going on");
            return;
        }
    }
}

/// The coordinator removed this member: forget what the fetch path holds
/// of `parts`, acknowledging none of it (the broker released it).
fn forget(shared: &Shared, parts: &[TopicPartition]) {
    let tips: BTreeSet<TopicIdPartition> = shared
        .fetcher()
        .assignment()
        .iter()
        .filter(|tip| parts.contains(&tip.tp))
        .cloned()
        .collect();
    tracing::info!(partitions = ?parts, "the share group removed this member: the records it held of these partitions are the group's again (not acknowledged)");
    let cause = kafka_wire::Error::Metadata(
        "the share group removed this member (fenced, or no heartbeat answered within \
         share.session.timeout.ms): the broker released its records, which are delivered again"
            .into(),
    );
    shared.forget(&tips, &cause);
}

/// `parts` with their topic ids, from metadata (refreshed when it does
/// not know one).
async fn with_ids(
    client: &Client,
    parts: &[TopicPartition],
) -> kafka_wire::Result<Vec<TopicIdPartition>> {
    let lookup = |md: &kafka_wire::Metadata| -> Option<Vec<TopicIdPartition>> {
        parts
            .iter()
            .map(|tp| {
                let id = md.topics.get(&tp.topic)?.id;
                (id != [0; 16]).then(|| TopicIdPartition::new(Uuid::from_bytes(id), tp.clone()))
            })
            .collect()
    };
    if let Some(tips) = lookup(&client.metadata()) {
        return Ok(tips);
    }
    let topics: Vec<String> = parts
        .iter()
        .map(|tp| tp.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let md = client.refresh_metadata(Some(&topics)).await?;
    lookup(&md).ok_or_else(|| kafka_wire::Error::Metadata(format!("no topic id for {topics:?}")))
}
