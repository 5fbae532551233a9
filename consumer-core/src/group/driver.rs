//! One driver for every group protocol: the loop that executes a pure
//! [`GroupMachine`]'s actions, with the arms every protocol shares, and a
//! [`Protocol`] for what differs ("send this request, feed back the
//! answer").
//!
//! ```text
//!                      ┌───────────── Driver::run (one task per member) ──────────────┐
//!  poll() stamps ─────▶│ polled(at) ─▶ machine.poll_action(now) ─▶ GroupMachine::step │
//!  close() ───────────▶│ close()           │                                          │
//!                      │   FindCoordinator · RefreshMetadata      ─▶ GroupIo           │
//!                      │   Revoke · Lose (listener_started, wait for the ack)         │
//!  GroupEvent ◀────────│   Assign                                                     │
//!  GroupSnapshot ◀─────│   Fatal · FallBack ─▶ return                                 │
//!                      │   Protocol(action) ─▶ Protocol::execute ─▶ Coordinator ─▶ GroupIo
//!                      │ sleep until poll_timeout, a poll, a close, or the ack        │
//!                      └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every clock is the machine's: the driver sleeps until
//! [`GroupMachine::poll_timeout`], a poll, a close, or a listener's ack,
//! whichever comes first, then sends whatever
//! [`GroupMachine::poll_action`] says. While a rebalance listener runs the
//! machine says heartbeats only ([`Liveness`]). The clock is tokio's
//! (the same as `std`'s unless a test pauses it).
//!
//! As hyper's `Dispatcher<D: Dispatch>` serves client and server, one
//! [`Driver`] serves the classic protocol ([`Membership`]), KIP-848
//! ([`Member`]) and KIP-932 share groups ([`ShareMember`], whose revokes
//! hand partitions back to the share fetch path, not to commits).
//!
//! A consumer that drops its side of the [`Seam`] (the `polled` or `close`
//! sender) without closing is gone: the member leaves, as on close.
//!
//! [`Membership`]: super::classic::membership::Membership
//! [`Member`]: super::consumer_protocol::member::Member
//! [`ShareMember`]: super::share_protocol::member::ShareMember

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_wire::messages::ApiKey;
use kafka_wire::Metadata;
use tokio::sync::{mpsc, oneshot, watch};

use super::io::{CoordinatorRequest, GroupIo};
use super::liveness::Liveness;
use super::{GroupEvent, GroupSnapshot};
use crate::tp::TopicPartition;

#[cfg(test)]
mod tests;

/// The driver's clock: tokio's, so a test that pauses time moves it too.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// `f`'s output, unless `deadline` passes first (`None` then). A
/// heartbeat's answer is awaited at most until the member's session
/// deadline: past it the coordinator has expired the member, answer or not.
pub(super) async fn until<T>(deadline: Option<Instant>, f: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::select! {
            r = f => Some(r),
            _ = tokio::time::sleep_until(deadline.into()) => None,
        },
        None => Some(f.await),
    }
}

/// What the driver does with one of a machine's actions: the arms every
/// protocol shares, or the protocol's own request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<A> {
    /// FindCoordinator for the group; answer with
    /// [`GroupMachine::coordinator_found`] or
    /// [`GroupMachine::handle_request_failed`].
    FindCoordinator,
    /// Refresh metadata of these topics (`None`: every topic), bounded by
    /// [`GroupMachine::heartbeat_interval`]; answer with
    /// [`GroupMachine::metadata_refreshed`] or
    /// [`GroupMachine::metadata_failed`].
    RefreshMetadata(Option<Vec<String>>),
    /// The listener's `on_revoked`: commits for these stay valid until it
    /// is acknowledged.
    Revoke(Vec<TopicPartition>),
    /// The listener's `on_lost`: never commit these.
    Lose(Vec<TopicPartition>),
    /// `on_assigned`: start fetching these.
    Assign(Vec<TopicPartition>),
    /// The broker does not speak this protocol (`group.protocol=auto`):
    /// the caller runs another.
    FallBack(String),
    /// Give up; the string tells the user what to fix.
    Fatal(String),
    /// The protocol's own (JoinGroup, a heartbeat, a leave, …):
    /// [`Protocol::execute`] sends it and feeds back the answer.
    Protocol(A),
}

/// A group protocol's pure state machine, as the driver runs it: actions
/// out ([`poll_action`](Self::poll_action), at the latest at
/// [`poll_timeout`](Self::poll_timeout)), events and `now` in. It never
/// awaits and never reads a clock.
pub(crate) trait GroupMachine {
    /// What [`poll_action`](Self::poll_action) hands out.
    type Action;

    /// The next action at `now`, if any is due.
    fn poll_action(&mut self, now: Instant) -> Option<Self::Action>;

    /// Which arm runs `action`: a shared one, or [`Step::Protocol`].
    fn step(&self, action: Self::Action) -> Step<Self::Action>;

    /// When the driver must call [`poll_action`](Self::poll_action) again
    /// at the latest (`None`: only on an event).
    fn poll_timeout(&self) -> Option<Instant>;

    /// The poll liveness and running listener this machine embeds.
    fn liveness(&self) -> &Liveness;
    fn liveness_mut(&mut self) -> &mut Liveness;

    /// The application polled at `now` (a member that left for a poll
    /// timeout rejoins).
    fn polled(&mut self, now: Instant);

    /// Leave the group: revoke what is owned, then the protocol's leave.
    fn close(&mut self);

    /// Has the member left the group on [`close`](Self::close)?
    fn left(&self) -> bool;

    /// The driver handed a [`Step::Revoke`] (`revoking` its partitions) or
    /// [`Step::Lose`] (`revoking` empty) to the listener at `now` and waits
    /// for its ack: until [`listener_done`](Self::listener_done) or the
    /// rebalance timeout, only heartbeats go out.
    fn listener_started(&mut self, revoking: &[TopicPartition], now: Instant) {
        self.liveness_mut().listener_started(revoking, now);
    }

    /// The listener acknowledged (or will never be heard of).
    fn listener_done(&mut self);

    /// Is the driver waiting for a listener's ack?
    fn listener_running(&self) -> bool {
        self.liveness().listener_running()
    }

    /// When the application last polled, as told by [`polled`](Self::polled).
    fn last_poll(&self) -> Instant {
        self.liveness().last_poll()
    }

    /// FindCoordinator succeeded.
    fn coordinator_found(&mut self, now: Instant);

    /// A request could not be completed (no coordinator, connection lost,
    /// timeout): find the coordinator again.
    fn handle_request_failed(&mut self, now: Instant);

    /// How long a metadata refresh may take: it runs on the Control lane,
    /// which may be slow (behind held commits), and no heartbeat goes out
    /// while the driver waits for it.
    fn heartbeat_interval(&self) -> Duration;

    /// The answer to [`Step::RefreshMetadata`] (`asked` its topics).
    fn metadata_refreshed(&mut self, md: &Metadata, asked: Option<&[String]>, now: Instant);

    /// [`Step::RefreshMetadata`] failed or took too long: retry later.
    fn metadata_failed(&mut self, now: Instant);

    /// Did `tp` appear after the member first saw its subscription's
    /// metadata? (The consumer starts it at the earliest offset.)
    fn appeared_after_subscribe(&self, tp: &TopicPartition) -> bool;

    /// Write what commits are fenced by into `snap` (all but its
    /// coordinator): generation or member epoch, member id, stable,
    /// owned, revoking, and the protocol once it answered.
    fn snapshot(&self, snap: &mut GroupSnapshot);
}

/// `m`'s generation (the classic protocol's generation id, KIP-848's and
/// share groups' member epoch), for the log lines of a rebalance.
fn generation_of(m: &impl GroupMachine) -> i32 {
    let mut snap = GroupSnapshot::default();
    m.snapshot(&mut snap);
    snap.generation
}

/// Partitions as `orders-0, orders-1` in a log line.
struct PartitionList<'a>(&'a [TopicPartition]);

impl std::fmt::Display for PartitionList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, tp) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{tp}")?;
        }
        Ok(())
    }
}

/// What one group protocol adds to the [`Driver`]: how its machine's own
/// requests go to the coordinator, and how their answers come back.
pub(crate) trait Protocol {
    type Machine: GroupMachine;

    /// Send `action` (a [`Step::Protocol`]) through `coordinator`, and feed
    /// the answer (or the failure) back to `m`.
    async fn execute<I: GroupIo>(
        &mut self,
        coordinator: &Coordinator<'_, I>,
        m: &mut Self::Machine,
        action: <Self::Machine as GroupMachine>::Action,
    );

    /// Before each round of decisions (KIP-848 asks the group's session
    /// timeout once in the group). Nothing by default.
    async fn before_round<I: GroupIo>(
        &mut self,
        _coordinator: &Coordinator<'_, I>,
        _m: &mut Self::Machine,
    ) {
    }
}

/// The group's coordinator, as a [`Protocol`] reaches it.
#[derive(Debug)]
pub(crate) struct Coordinator<'a, I> {
    io: &'a I,
    node: Option<i32>,
    group_id: &'a str,
}

impl<I: GroupIo> Coordinator<'_, I> {
    pub(crate) fn group_id(&self) -> &str {
        self.group_id
    }

    /// The network beyond the coordinator (metadata).
    pub(crate) fn io(&self) -> &I {
        self.io
    }

    /// Send `req` to the coordinator; `extra_timeout` beyond the request
    /// timeout.
    ///
    /// # Errors
    /// [`kafka_wire::Error::Config`] before the coordinator is known, else
    /// as [`GroupIo::send`].
    pub(crate) async fn send<R: CoordinatorRequest>(
        &self,
        req: &R,
        extra_timeout: Duration,
    ) -> kafka_wire::Result<R::Response> {
        let node = self.node()?;
        self.io.send(node, req, extra_timeout).await
    }

    /// The version of `api` the coordinator speaks with us (`None`: it
    /// advertises none we speak).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub(crate) async fn version(&self, api: ApiKey) -> kafka_wire::Result<Option<i16>> {
        self.io.version(self.node()?, api).await
    }

    fn node(&self) -> kafka_wire::Result<i32> {
        self.node
            .ok_or_else(|| kafka_wire::Error::Config("no coordinator".into()))
    }
}

/// The consumer's side of a group member: what it reads
/// ([`GroupSnapshot`], [`GroupEvent`]s) and what it says (polls, close).
#[derive(Debug)]
pub(crate) struct Seam {
    pub snapshot: Arc<Mutex<GroupSnapshot>>,
    pub events: mpsc::Sender<GroupEvent>,
    /// Stamped by every `poll()`.
    pub polled: watch::Receiver<Instant>,
    /// Set by `close()`.
    pub close: watch::Receiver<bool>,
}

/// How [`Driver::run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed: the member left the group.
    Left,
    /// A [`GroupEvent::Fatal`] was sent.
    Fatal,
    /// The broker does not speak the protocol (`auto` only): why.
    FallBack(String),
}

/// The one loop that runs a group member, whatever its protocol.
#[derive(Debug)]
pub(crate) struct Driver<I> {
    io: I,
    group_id: String,
    /// `new.partitions.from.earliest`.
    new_partitions_from_earliest: bool,
    seam: Seam,
    /// The coordinator's node, once found (also in the snapshot).
    coordinator: Option<i32>,
}

impl<I: GroupIo> Driver<I> {
    pub(crate) fn new(
        io: I,
        group_id: String,
        new_partitions_from_earliest: bool,
        seam: Seam,
    ) -> Self {
        Self {
            io,
            group_id,
            new_partitions_from_earliest,
            seam,
            coordinator: None,
        }
    }

    /// Run `m` until it leaves (on close, or once the consumer dropped
    /// its `polled` or `close` sender), fails (a [`GroupEvent::Fatal`] was
    /// sent) or falls back.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped mid-rebalance, the member simply stops
    /// (the coordinator expires it after the session timeout).
    pub(crate) async fn run<P: Protocol>(&mut self, protocol: &mut P, m: &mut P::Machine) -> Ended {
        let mut closing = false;
        // The consumer dropped its side of the seam (its `polled` or
        // `close` sender) without closing: it is gone, so the member
        // leaves as on close. The closed channels are not waited on again
        // (a closed channel is always ready: the loop would spin).
        let mut consumer_gone = false;
        // The ack of the rebalance listener the machine waits for.
        let mut listener: Option<oneshot::Receiver<()>> = None;
        loop {
            protocol.before_round(&self.coordinator(), m).await;
            // A close waits for a running listener, as every other decision.
            let close = consumer_gone || *self.seam.close.borrow();
            if close && !closing && !m.listener_running() {
                closing = true;
                m.close();
            }
            loop {
                // The latest poll time, before every decision: an action
                // (a JoinGroup can block for the whole rebalance) may have
                // taken long while the application kept polling.
                self.feed_poll_time(m);
                // Published after each action, and when none is left (a
                // listener's deadline may have passed): never between an
                // action handed out and its execution, where a revoke's
                // partitions would be neither owned nor revoking.
                let Some(action) = m.poll_action(now()) else {
                    self.publish(m);
                    break;
                };
                match m.step(action) {
                    Step::Fatal(msg) => {
                        tracing::error!(group = %self.group_id, "{msg}");
                        let _ = self.seam.events.send(GroupEvent::Fatal(msg)).await;
                        return Ended::Fatal;
                    }
                    Step::FallBack(why) => return Ended::FallBack(why),
                    Step::Protocol(action) => {
                        protocol.execute(&self.coordinator(), m, action).await;
                    }
                    step => self.execute(m, step, &mut listener).await,
                }
                self.publish(m);
            }
            if !m.listener_running() {
                listener = None;
            }
            if closing && m.left() && !m.listener_running() {
                return Ended::Left;
            }
            let wait = m
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                polled = self.seam.polled.changed(), if !consumer_gone => {
                    consumer_gone = polled.is_err();
                }
                close = self.seam.close.changed(), if !consumer_gone => {
                    consumer_gone = close.is_err();
                }
                _ = async {
                    match listener.as_mut() {
                        Some(ack) => { let _ = ack.await; }
                        None => std::future::pending().await,
                    }
                } => {
                    // Acknowledged, or the consumer is gone.
                    listener = None;
                    m.listener_done();
                    self.publish(m);
                }
            }
        }
    }

    fn coordinator(&self) -> Coordinator<'_, I> {
        Coordinator {
            io: &self.io,
            node: self.coordinator,
            group_id: &self.group_id,
        }
    }

    /// Hand the application's last poll time to the machine. Read with
    /// `borrow_and_update`, not `has_changed`: `changed()` in the wait
    /// marks the value seen, and a poll seen that way must still reach `m`.
    fn feed_poll_time(&mut self, m: &mut impl GroupMachine) {
        let at = *self.seam.polled.borrow_and_update();
        if at > m.last_poll() {
            m.polled(at);
        }
    }

    fn publish(&self, m: &impl GroupMachine) {
        let mut snap = self.seam.snapshot.lock().expect("group snapshot lock");
        m.snapshot(&mut snap);
        snap.coordinator = self.coordinator;
    }

    /// The arms every protocol shares. A listener the machine must wait
    /// for leaves its ack in `listener`.
    async fn execute<M: GroupMachine>(
        &mut self,
        m: &mut M,
        step: Step<M::Action>,
        listener: &mut Option<oneshot::Receiver<()>>,
    ) {
        match step {
            Step::FindCoordinator => match self.io.find_coordinator(&self.group_id).await {
                Ok(node) => {
                    self.coordinator = Some(node);
                    m.coordinator_found(now());
                }
                Err(e) => {
                    tracing::warn!(group = %self.group_id, error = %e, "cannot find the group coordinator; retrying");
                    m.handle_request_failed(now());
                }
            },
            Step::RefreshMetadata(topics) => {
                // At most a heartbeat interval: the Control lane it uses
                // may be slow (behind held commits), and heartbeats wait
                // while this task waits.
                let bound = m.heartbeat_interval();
                match tokio::time::timeout(bound, self.io.refresh_metadata(topics.as_deref())).await
                {
                    Ok(Ok(md)) => m.metadata_refreshed(&md, topics.as_deref(), now()),
                    Ok(Err(e)) => {
                        tracing::warn!(group = %self.group_id, error = %e, "metadata refresh failed; retrying");
                        m.metadata_failed(now());
                    }
                    Err(_) => {
                        tracing::warn!(group = %self.group_id, "metadata refresh took longer than the heartbeat interval ({bound:?}); heartbeating first, then retrying");
                        m.metadata_failed(now());
                    }
                }
            }
            Step::Revoke(parts) => {
                tracing::info!(group = %self.group_id, generation = generation_of(m), partitions = %PartitionList(&parts), "revoking partitions");
                // on_revoked runs beside poll(), up to the rebalance
                // timeout; a member still in the group keeps heartbeating
                // (the machine's output while it waits). Commits of
                // `parts` stay valid meanwhile: published before the
                // consumer hears.
                m.listener_started(&parts, now());
                *listener = self
                    .hand_to_listener(m, |done| GroupEvent::Revoked(parts, done))
                    .await;
            }
            Step::Lose(parts) => {
                tracing::info!(group = %self.group_id, generation = generation_of(m), partitions = %PartitionList(&parts), "partitions lost (no longer this member's; not committed)");
                m.listener_started(&[], now());
                *listener = self
                    .hand_to_listener(m, |done| GroupEvent::Lost(parts, done))
                    .await;
            }
            Step::Assign(parts) => {
                tracing::info!(group = %self.group_id, generation = generation_of(m), partitions = %PartitionList(&parts), "assigned partitions");
                self.assigned(m, parts).await
            }
            Step::Fatal(_) | Step::FallBack(_) | Step::Protocol(_) => {
                unreachable!("handled by run()")
            }
        }
    }

    /// Publish, then hand a Revoked/Lost event (`make` wraps the ack
    /// sender) to the consumer: the ack the machine waits for, or `None`
    /// when the consumer is gone (then the listener is done).
    async fn hand_to_listener(
        &self,
        m: &mut impl GroupMachine,
        make: impl FnOnce(oneshot::Sender<()>) -> GroupEvent,
    ) -> Option<oneshot::Receiver<()>> {
        self.publish(m);
        let (done, ack) = oneshot::channel();
        let ack = self.seam.events.send(make(done)).await.ok().map(|()| ack);
        if ack.is_none() {
            m.listener_done();
        }
        ack
    }

    /// Tell the consumer about newly assigned partitions, and which of
    /// them appeared after subscribe (they start at the earliest offset).
    async fn assigned(&self, m: &impl GroupMachine, parts: Vec<TopicPartition>) {
        let fresh: BTreeSet<TopicPartition> = parts
            .iter()
            .filter(|tp| self.new_partitions_from_earliest && m.appeared_after_subscribe(tp))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            tracing::info!(group = %self.group_id, partitions = ?fresh, "assigned partitions that appeared after subscribe: they start at the earliest offset when the group has none committed");
        }
        let _ = self
            .seam
            .events
            .send(GroupEvent::Assigned(parts, fresh))
            .await;
    }
}
