//! Graceful shutdown on the signals a service gets: Ctrl-C in a terminal,
//! SIGTERM from Kubernetes, systemd or `docker stop`.
//!
//! ```no_run
//! # async fn demo(processor: resilience::Processor) -> Result<(), resilience::consumer_core::ConsumerError> {
//! // Drains in-flight records, commits and leaves the group on SIGINT or SIGTERM.
//! processor.run(resilience::shutdown::signal()).await
//! # }
//! ```

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (on Unix; elsewhere
/// on Ctrl-C). Pass it to [`Processor::run`](crate::Processor::run) so a
/// `kill` or a pod's termination drains, commits and leaves the group
/// instead of dying mid-record. If a handler cannot be installed, it
/// logs why and waits on the other signal (or never resolves).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only"),
        }
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => tracing::info!("SIGINT: shutting down"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C; no signal will stop this");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    #[tokio::test]
    async fn sigterm_resolves_it() {
        let waiting = tokio::spawn(super::signal());
        // Let it install its handlers, then send ourselves SIGTERM.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("SIGTERM ends the wait")
            .expect("task");
    }
}
