//! The worker permits and every task the runtime spawns. Who takes a
//! permit, and when, is the runtime's business (`Runtime::pump`, under the
//! state lock); the worker itself is in unit.rs.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

/// One permit per worker that may run at once, and the tasks spawned.
pub(super) struct Workers {
    /// One per worker that may run at once (`concurrency`).
    permits: Arc<Semaphore>,
    /// Every task the runtime spawned (workers, the commit loop): all are
    /// aborted when `run` ends or its future is dropped, so a dropped
    /// processor stops handling and committing at once, as a crashed
    /// process would.
    tasks: Mutex<JoinSet<()>>,
}

impl Workers {
    pub(super) fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// A permit if one is free now.
    pub(super) fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A permit, once one is free.
    ///
    /// # Cancel safety
    /// Cancel safe: a permit not yet handed out stays in the semaphore.
    pub(super) async fn permit(&self) -> OwnedSemaphorePermit {
        let p = self.permits.clone().acquire_owned().await;
        p.expect("the permits are never closed")
    }

    /// Spawn `task`, owned by the runtime (see [`Workers::abort_all`]).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let mut tasks = self.tasks.lock().expect("runtime tasks lock");
        while tasks.try_join_next().is_some() {} // reap finished ones
        tasks.spawn(task)
    }

    /// Abort every task spawned.
    pub(super) fn abort_all(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}
