//! Prometheus for the runtime's metrics (feature `prometheus`): install
//! [`metrics-exporter-prometheus`](https://docs.rs/metrics-exporter-prometheus)
//! as the global `metrics` recorder and serve the text format on
//! `GET /metrics` (any path but `/health`, which answers `OK`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), resilience::observe::prometheus::InstallError> {
//! // Inside the tokio runtime, before `Processor::run`. Loopback: `/metrics`
//! // has no authentication, so bind a wider address (a pod IP, `0.0.0.0`)
//! // only where the network in front of it decides who may scrape.
//! let handle = resilience::observe::prometheus::install("127.0.0.1:9464".parse().unwrap())?;
//! // … run the processor; `curl localhost:9464/metrics` meanwhile.
//! let text = handle.render(); // the same text, e.g. for your own endpoint
//! # let _ = text; Ok(()) }
//! ```
//!
//! What a scrape shows (see [`crate::observe`] for every metric):
//!
//! ```text
//! # HELP resilience_commit_lag_records Records not committed yet: log end (…) minus the committed offset.
//! # TYPE resilience_commit_lag_records gauge
//! resilience_commit_lag_records{topic="orders",partition="3",group="billing"} 812
//! # TYPE resilience_handler_seconds histogram
//! resilience_handler_seconds_bucket{group="billing",le="0.005"} 9731
//! ```
//!
//! Histograms are Prometheus histograms with [`DEFAULT_BUCKETS`] (seconds:
//! 0.5 ms to 10 s), not summaries, so they aggregate across members.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};
use metrics_util::MetricKindMask;

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Upper bounds (seconds) of the histogram buckets: handler calls (from
/// sub-millisecond in-memory work to multi-second downstream calls) and
/// commit round trips.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long a gauge may go unset before the exporter drops it: the lag
/// gauges of a partition that left this member disappear after this long
/// instead of showing a stale lag forever. The runtime sets its gauges at
/// least once a second.
pub const DEFAULT_GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Called outside a tokio runtime: the listener and the exporter's
    /// upkeep run as tasks on the current one.
    #[error("the Prometheus exporter must be installed from inside a tokio runtime")]
    NoRuntime,
    /// The address cannot be bound (in use, not local, no permission).
    #[error("cannot serve metrics on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    /// A global `metrics` recorder is already installed (there is one per
    /// process; install once, at start-up).
    #[error("a metrics recorder is already installed")]
    AlreadyInstalled,
    /// Bucket bounds must be finite, strictly increasing and not empty.
    #[error("histogram buckets must be finite, strictly increasing and not empty: {0:?}")]
    Buckets(Vec<f64>),
    /// Anything else the exporter reports.
    #[error("prometheus exporter: {0}")]
    Exporter(String),
}

/// [`Exporter::new(addr)`](Exporter::new)`.install()`: install the global
/// recorder with the defaults and serve `GET /metrics` on `addr`.
///
/// # Errors
/// See [`Exporter::install`].
pub fn install(addr: SocketAddr) -> Result<PrometheusHandle, InstallError> {
    Exporter::new(addr).install()
}

/// The exporter's settings, defaults in [`Exporter::new`].
#[derive(Debug, Clone)]
pub struct Exporter {
    addr: SocketAddr,
    buckets: Vec<f64>,
    gauge_idle_timeout: Option<Duration>,
}

impl Exporter {
    /// Serve on `addr` (port 0 is allowed but then unknown: pick a port),
    /// with [`DEFAULT_BUCKETS`] and [`DEFAULT_GAUGE_IDLE_TIMEOUT`].
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            buckets: DEFAULT_BUCKETS.to_vec(),
            gauge_idle_timeout: Some(DEFAULT_GAUGE_IDLE_TIMEOUT),
        }
    }

    /// Histogram bucket upper bounds, in the metric's unit (seconds for
    /// the runtime's). Applies to every histogram, yours too. Default
    /// [`DEFAULT_BUCKETS`].
    pub fn buckets(mut self, upper_bounds: &[f64]) -> Self {
        self.buckets = upper_bounds.to_vec();
        self
    }

    /// Drop a gauge not set for this long (`None`: keep every gauge
    /// forever, also the lag of partitions long gone). Applies to every
    /// gauge, yours too: set a gauge of your own at least this often.
    /// Counters and histograms are never dropped. Default
    /// [`DEFAULT_GAUGE_IDLE_TIMEOUT`].
    pub fn gauge_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.gauge_idle_timeout = timeout;
        self
    }

    /// Install the global `metrics` recorder, give the runtime's metrics
    /// their help text ([`crate::observe::describe`]), and serve `GET
    /// /metrics` on a task of the current tokio runtime. Install before
    /// `Processor::run`: the runtime registers its metrics when it starts.
    ///
    /// The returned handle renders the same text (`handle.render()`).
    ///
    /// # Errors
    /// [`InstallError::NoRuntime`] outside a tokio runtime,
    /// [`InstallError::Bind`] when `addr` cannot be bound,
    /// [`InstallError::AlreadyInstalled`] when a recorder is installed
    /// already, [`InstallError::Buckets`] for invalid bucket bounds.
    pub fn install(self) -> Result<PrometheusHandle, InstallError> {
        let buckets_ok = !self.buckets.is_empty()
            && self.buckets.iter().all(|b| b.is_finite())
            && self.buckets.windows(2).all(|w| w[0] < w[1]);
        if !buckets_ok {
            return Err(InstallError::Buckets(self.buckets));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| InstallError::NoRuntime)?;
        let _entered = runtime.enter(); // build() spawns the upkeep task
        let addr = self.addr;
        let mut builder = PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&self.buckets)
            .map_err(|e| InstallError::Exporter(e.to_string()))?;
        if let Some(timeout) = self.gauge_idle_timeout {
            builder = builder.idle_timeout(MetricKindMask::GAUGE, Some(timeout));
        }
        let (recorder, serve) = builder.build().map_err(|e| match e {
            BuildError::FailedToCreateHTTPListener(reason) => InstallError::Bind { addr, reason },
            other => InstallError::Exporter(other.to_string()),
        })?;
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
        runtime.spawn(async move {
            if let Err(e) = serve.await {
                tracing::warn!(error = ?e, "the Prometheus endpoint stopped serving");
            }
        });
        crate::observe::describe();
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doc_example_binds_loopback_only() {
        // The example is what users copy: it must not expose `/metrics`
        // (unauthenticated) on every interface.
        let doc = include_str!("prometheus.rs");
        let installs: Vec<&str> = doc
            .lines()
            .filter(|l| l.starts_with("//!") && l.contains("prometheus::install("))
            .collect();
        assert!(!installs.is_empty());
        for l in installs {
            assert!(l.contains("\"127.0.0.1:"), "{l}");
        }
    }

    #[test]
    fn invalid_buckets_are_refused_before_anything_is_installed() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for bad in [&[][..], &[0.1, 0.1], &[1.0, 0.5], &[f64::NAN]] {
            let e = Exporter::new(addr).buckets(bad).install().unwrap_err();
            assert!(matches!(e, InstallError::Buckets(_)), "{e}");
        }
    }

    #[test]
    fn installing_outside_a_tokio_runtime_says_so() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(matches!(install(addr), Err(InstallError::NoRuntime)));
    }

    /// The one test of this binary that installs the global recorder.
    #[tokio::test]
    async fn install_serves_metrics_drops_idle_gauges_and_refuses_a_second_recorder() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let handle = Exporter::new(addr)
            .gauge_idle_timeout(Some(Duration::from_millis(300)))
            .install()
            .unwrap();
        metrics::gauge!("lab_gone").set(1.0);
        metrics::counter!(crate::observe::COMMITS).increment(2);

        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains("# HELP resilience_commits_total Offset commits the broker accepted."),
            "described at install: {text}"
        );
        assert!(text.contains("resilience_commits_total 2"), "{text}");
        assert!(text.contains("lab_gone 1"), "{text}");

        tokio::time::sleep(Duration::from_millis(600)).await;
        let text = handle.render();
        assert!(
            !text.contains("lab_gone"),
            "an idle gauge is dropped: {text}"
        );
        assert!(
            text.contains("resilience_commits_total 2"),
            "counters stay: {text}"
        );

        let other: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(matches!(
            install(other),
            Err(InstallError::AlreadyInstalled)
        ));
    }

    /// Every metric renders with `# HELP` and `# TYPE`, the lag gauges with
    /// their partition and group, histograms as buckets (not a summary).
    #[test]
    fn renders_help_type_and_labels_for_the_runtime_metrics() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(DEFAULT_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            crate::observe::describe();
            let m = crate::observe::RuntimeMetrics::new("billing");
            m.handled.increment(3);
            m.handler_seconds.record(0.003);
            m.in_flight(812, 4096);
            let mut lag = m.lag_gauges();
            lag.set(
                &consumer_core::TopicPartition::new("orders", 3),
                Some(0),
                Some(812),
            );
        });
        let text = handle.render();
        for line in [
            "# HELP resilience_commit_lag_records Records not committed yet",
            "# TYPE resilience_commit_lag_records gauge",
            r#"resilience_commit_lag_records{topic="orders",partition="3",group="billing"} 812"#,
            "# TYPE resilience_consumer_lag_records gauge",
            r#"resilience_consumer_lag_records{topic="orders",partition="3",group="billing"} 0"#,
            "# HELP resilience_records_handled_total Records whose handler succeeded.",
            "# TYPE resilience_records_handled_total counter",
            r#"resilience_records_handled_total{group="billing"} 3"#,
            "# TYPE resilience_handler_seconds histogram",
            r#"resilience_handler_seconds_bucket{group="billing",le="0.005"} 1"#,
            r#"resilience_handler_seconds_bucket{group="billing",le="0.0025"} 0"#,
            r#"resilience_in_flight_records{group="billing"} 812"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
