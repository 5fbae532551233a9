//! The thin task that runs the [`ShareFetcher`]'s actions: leader
//! lookups, connections, ShareFetch and ShareAcknowledge. It owns no
//! protocol state; everything is in the fetcher, behind one lock, which
//! is never held across an await.
//!
//! The task runs independently of `poll`, so acknowledgements (RENEW
//! above all) and `commit_async` reach the broker while the application
//! works; `poll` only takes records out.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kafka_wire::messages::{ApiKey, ShareAcknowledgeResponse, ShareFetchResponse};
use kafka_wire::{Client, Error, Lane};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::error::ShareError;
use super::fetcher::{Action, ShareFetcher};
use super::TopicIdPartition;

/// The state the fetch task, the member task and the application share.
#[derive(Debug)]
pub(crate) struct Shared {
    fetcher: Mutex<ShareFetcher>,
    /// Something changed for the driver (an assignment, acknowledgements).
    pub(crate) wake_driver: Notify,
    /// Something changed for `poll`/`commit_sync` (records, answers).
    pub(crate) wake_app: Notify,
    /// An answer was applied, or the fetch task ended: every waiter of the
    /// member task's hand-over looks again (`notify_waiters`).
    pub(crate) answered: Notify,
}

impl Shared {
    pub(crate) fn new(fetcher: ShareFetcher) -> Self {
        Self {
            fetcher: Mutex::new(fetcher),
            wake_driver: Notify::new(),
            wake_app: Notify::new(),
            answered: Notify::new(),
        }
    }

    /// The fetcher, locked. Never hold it across an await.
    pub(crate) fn fetcher(&self) -> MutexGuard<'_, ShareFetcher> {
        self.fetcher.lock().expect("share fetcher lock poisoned")
    }

    /// The whole assignment (`ShareConsumer::assign`).
    pub(crate) fn assign(&self, parts: BTreeSet<TopicIdPartition>) {
        self.fetcher().assign(parts);
        self.wake_driver.notify_one();
    }

    /// The group assigned `parts` too.
    pub(crate) fn add(&self, parts: impl IntoIterator<Item = TopicIdPartition>) {
        let mut f = self.fetcher();
        let mut all = f.assignment().clone();
        all.extend(parts);
        f.assign(all);
        drop(f);
        self.wake_driver.notify_one();
    }

    /// The group revoked `parts` ([`ShareFetcher::revoke`]), or this
    /// member lost them (`lost`: [`ShareFetcher::lose`]).
    pub(crate) fn take_back(&self, parts: &BTreeSet<TopicIdPartition>, lost: bool) {
        let mut f = self.fetcher();
        if lost {
            f.lose(parts);
        } else {
            f.revoke(parts);
        }
        drop(f);
        self.wake_driver.notify_one();
    }

    /// The coordinator removed this member: forget what is held of
    /// `parts` ([`ShareFetcher::forget`]), acknowledging none of it.
    pub(crate) fn forget(&self, parts: &BTreeSet<TopicIdPartition>, cause: &Error) {
        self.fetcher().forget(parts, cause);
        self.wake_driver.notify_one();
        self.wake_app.notify_one();
    }

    /// Membership failed for good: `poll` reports it.
    pub(crate) fn fail_membership(&self, why: String) {
        self.fetcher().fail(ShareError::Membership(why));
        self.wake_app.notify_one();
    }
}

/// What a finished action brought back.
enum Done {
    Leaders(Result<HashMap<TopicIdPartition, i32>, Error>),
    Connected(i32, Result<i16, Error>),
    Fetch(i32, u64, Result<ShareFetchResponse, Error>),
    Acknowledge(i32, u64, Result<ShareAcknowledgeResponse, Error>),
}

/// Run until the fetcher is closed (or failed and closing).
pub(crate) async fn run(client: Client, shared: Arc<Shared>) {
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let max_wait = shared.fetcher().max_wait();
    loop {
        let (actions, timeout, closed) = {
            let mut f = shared.fetcher();
            let now = Instant::now();
            f.handle_timeout(now);
            let mut actions = Vec::new();
            while let Some(a) = f.poll_action(now) {
                actions.push(a);
            }
            (actions, f.poll_timeout(), f.is_closed())
        };
        if closed && in_flight.is_empty() {
            shared.wake_app.notify_one();
            shared.answered.notify_waiters();
            return;
        }
        for action in actions {
            let client = client.clone();
            in_flight.spawn(async move {
                match action {
                    Action::RefreshLeaders { partitions } => {
                        Done::Leaders(leaders(&client, &partitions).await)
                    }
                    Action::Connect { broker } => {
                        let v = async {
                            client
                                .connection(broker, Lane::Fetch)
                                .await?
                                .version(ApiKey::ShareFetch)
                        };
                        Done::Connected(broker, v.await)
                    }
                    Action::Fetch {
                        broker,
                        id,
                        request,
                    } => Done::Fetch(
                        broker,
                        id,
                        client
                            .send_to(broker, Lane::Fetch, &request, max_wait)
                            .await,
                    ),
                    Action::Acknowledge {
                        broker,
                        id,
                        request,
                    } => Done::Acknowledge(
                        broker,
                        id,
                        client
                            .send_to(broker, Lane::Fetch, &request, std::time::Duration::ZERO)
                            .await,
                    ),
                }
            });
        }
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok(done) = done else { continue };
                apply(&client, &shared, done).await;
                shared.wake_app.notify_one();
                shared.answered.notify_waiters();
            }
            _ = shared.wake_driver.notified() => {}
            _ = sleep => {}
        }
    }
}

async fn apply(client: &Client, shared: &Shared, done: Done) {
    let now = Instant::now();
    match done {
        Done::Leaders(Ok(l)) => shared.fetcher().set_leaders(l, now),
        Done::Leaders(Err(e)) => {
            tracing::debug!(error = %e, "share partitions' leaders unknown yet");
            shared.fetcher().leaders_failed(now);
        }
        Done::Connected(broker, Ok(v)) => shared.fetcher().broker_version(broker, v),
        Done::Connected(broker, Err(e @ Error::UnsupportedVersion { .. })) => {
            // Name the broker version and the setting, if we can tell.
            let why = match super::probe::share_groups_available(client).await {
                Err(probe) => probe,
                Ok(()) => ShareError::Wire(e),
            };
            tracing::debug!(broker, "ShareFetch not spoken");
            shared.fetcher().fail(why);
        }
        Done::Connected(broker, Err(e)) => {
            tracing::debug!(broker, error = %e, "share fetch connection failed");
            shared.fetcher().connect_failed(broker, now);
        }
        Done::Fetch(broker, id, answer) => shared.fetcher().handle_fetch(broker, id, answer, now),
        Done::Acknowledge(broker, id, answer) => {
            shared.fetcher().handle_acknowledge(broker, id, answer, now)
        }
    }
}

/// The current leader of each partition whose topic still has the same
/// id (a recreated topic's partitions are another topic's: left out).
async fn leaders(
    client: &Client,
    partitions: &[TopicIdPartition],
) -> Result<HashMap<TopicIdPartition, i32>, Error> {
    let topics: Vec<String> = partitions
        .iter()
        .map(|t| t.tp.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let md = client.refresh_metadata(Some(&topics)).await?;
    Ok(partitions
        .iter()
        .filter_map(|tip| {
            let topic = md.topics.get(&tip.tp.topic)?;
            if topic.id != *tip.topic_id.as_bytes() {
                return None;
            }
            let p = md.partition(&tip.tp.topic, tip.tp.partition)?;
            (p.leader >= 0).then_some((tip.clone(), p.leader))
        })
        .collect())
}
