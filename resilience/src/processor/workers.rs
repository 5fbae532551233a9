//! The workers: a worker holds one of `concurrency` permits and runs units
//! of work (unit.rs) until no lane is ready. Also every task the runtime
//! spawns, so that all of them end with it.
//!
//! The handler's type is known to the worker task and everything it
//! calls (typed by [`CallHandler`]), so a handler call's future lives in
//! the worker's and is never boxed; the rest of the runtime does not know
//! that type. The one place it is erased is [`StartWorker`]: one dynamic
//! call and one boxed future per worker task, which runs units until no
//! lane is ready (hundreds of records or more under load).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use super::runtime::{Runtime, State};
use super::unit::{CallHandler, Unit};

/// A worker task's future, boxed (see [`Runtime::pump`]).
type WorkerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The application's handler with its type erased: what the runtime
/// holds, and calls once per worker task it starts.
pub(super) trait StartWorker: Send + Sync + 'static {
    /// Whether one call takes all the records of a unit (a batch handler).
    fn batched(&self) -> bool;

    /// A worker that runs `unit` and then the next ready ones (see
    /// [`Runtime::pump`]), calling this handler.
    fn worker(
        self: Arc<Self>,
        rt: Arc<Runtime>,
        unit: Unit,
        permit: OwnedSemaphorePermit,
    ) -> WorkerFuture;
}

impl<C: CallHandler> StartWorker for C {
    fn batched(&self) -> bool {
        C::BATCH
    }

    fn worker(
        self: Arc<Self>,
        rt: Arc<Runtime>,
        unit: Unit,
        permit: OwnedSemaphorePermit,
    ) -> WorkerFuture {
        // Boxed: a worker's future is several KB (retries, DLT writes,
        // the handler's own future) and spawning moves a future several
        // times; a box moves a pointer.
        Box::pin(rt.worker(self, unit, permit))
    }
}

/// The handler, the permits workers hold and the tasks the runtime
/// spawned (only this file touches them).
pub(super) struct Workers {
    /// The application's handler (see [`StartWorker`]).
    handler: Arc<dyn StartWorker>,
    /// One per worker that may run at once (`concurrency`).
    permits: Arc<Semaphore>,
    /// Every task the runtime spawned (units of work, the commit loop):
    /// all are aborted when `run` ends or its future is dropped, so a
    /// dropped processor stops handling and committing at once, as a
    /// crashed process would.
    tasks: Mutex<JoinSet<()>>,
}

impl Workers {
    pub(super) fn new(concurrency: usize, handler: Arc<dyn StartWorker>) -> Self {
        Self {
            handler,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: Mutex::new(JoinSet::new()),
        }
    }
}

impl Runtime {
    /// Spawn a task owned by this runtime (see [`Workers`]).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let mut tasks = self.workers.tasks.lock().expect("runtime tasks lock");
        while tasks.try_join_next().is_some() {} // reap finished ones
        tasks.spawn(task)
    }

    /// Abort every task this runtime spawned.
    pub(super) fn abort_tasks(&self) {
        if let Ok(mut tasks) = self.workers.tasks.lock() {
            tasks.abort_all();
        }
    }

    /// Start workers while permits and ready lanes last.
    ///
    /// A worker holds a permit and runs units until no lane is ready; then
    /// it releases the permit and ends. Permits are taken and released
    /// under the state lock, so a record pushed after a worker found
    /// nothing always finds a permit here.
    pub(super) fn pump(self: &Arc<Self>) {
        let mut st = self.lock();
        loop {
            let Ok(permit) = self.workers.permits.clone().try_acquire_owned() else {
                return;
            };
            let Some(unit) = st.take_unit() else {
                return; // the permit is released under the lock
            };
            let worker = self.workers.handler.clone();
            self.spawn(worker.worker(self.clone(), unit, permit));
        }
    }

    /// Run units until no lane is ready (see [`Runtime::pump`]), calling
    /// `handler`.
    async fn worker<C: CallHandler>(
        self: Arc<Self>,
        handler: Arc<C>,
        unit: Unit,
        permit: OwnedSemaphorePermit,
    ) {
        let mut permit = Some(permit);
        let mut next = Some(unit);
        while let Some(unit) = next {
            let (lane, epoch) = (unit.lane.clone(), unit.epoch);
            let not_started = self.run_unit(&*handler, unit, &mut permit).await;
            let mut st = self.lock();
            st.sched.give_back(&lane, epoch, not_started);
            st.sched.done(&lane);
            if permit.is_none() {
                // It waited without one (retry, quarantine): let pump decide.
                drop(st);
                return self.pump();
            }
            next = st.take_unit();
            if next.is_none() {
                permit = None; // released under the lock: see pump
            }
        }
    }

    /// Give up this worker's permit while it waits (a retry's backoff, a
    /// quarantine), so other lanes go on meanwhile.
    pub(super) fn release(self: &Arc<Self>, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.take().is_some() {
            self.pump();
        }
    }

    /// Take a permit back after [`Runtime::release`].
    pub(super) async fn reacquire(&self, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.is_none() {
            let p = self.workers.permits.clone().acquire_owned().await;
            *permit = Some(p.expect("the permits are never closed"));
        }
    }
}

impl State {
    /// The next ready lane's unit, with its partition's stop flag.
    fn take_unit(&mut self) -> Option<Unit> {
        let taken = self.sched.next_unit()?;
        let stop = match self.part(&taken.lane.0) {
            Some(p) => p.stop.clone(),
            None => Arc::new(AtomicBool::new(true)), // forgotten: nothing starts
        };
        Some(Unit {
            lane: taken.lane,
            epoch: taken.tag,
            records: taken.items,
            stop,
        })
    }
}
