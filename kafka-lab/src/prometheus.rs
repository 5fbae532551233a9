//! A small Prometheus exporter for the `metrics` facade: counters, gauges
//! and histograms (fixed latency buckets) rendered in the text format and
//! served on `GET /metrics`. Enough for the lab; in a service, install
//! any `metrics` recorder you already use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Hist {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl metrics::HistogramFn for Hist {
    fn record(&self, value: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if value <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<(String, String), Arc<AtomicU64>>,
    gauges: BTreeMap<(String, String), Arc<AtomicU64>>,
    histograms: BTreeMap<(String, String), Arc<Hist>>,
}

/// The recorder; clone it to render.
#[derive(Debug, Clone, Default)]
pub struct Prometheus(Arc<Mutex<Registry>>);

/// (metric name, rendered labels `{a="b",…}` or empty).
fn split(key: &Key) -> (String, String) {
    let labels: Vec<String> = key
        .labels()
        .map(|l| {
            format!(
                "{}=\"{}\"",
                l.key(),
                l.value().replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    let rendered = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", labels.join(","))
    };
    (key.name().to_string(), rendered)
}

impl Recorder for Prometheus {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut r = self.0.lock().expect("registry lock");
        Counter::from_arc(r.counters.entry(split(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut r = self.0.lock().expect("registry lock");
        Gauge::from_arc(r.gauges.entry(split(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut r = self.0.lock().expect("registry lock");
        Histogram::from_arc(r.histograms.entry(split(key)).or_default().clone())
    }
}

impl Prometheus {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let r = self.0.lock().expect("registry lock");
        let mut out = String::new();
        for ((name, labels), v) in &r.counters {
            let _ = writeln!(out, "{name}{labels} {}", v.load(Ordering::Relaxed));
        }
        for ((name, labels), v) in &r.gauges {
            let _ = writeln!(
                out,
                "{name}{labels} {}",
                f64::from_bits(v.load(Ordering::Relaxed))
            );
        }
        for ((name, labels), h) in &r.histograms {
            let with = |extra: &str| {
                let inner = labels.trim_start_matches('{').trim_end_matches('}');
                match (inner.is_empty(), extra.is_empty()) {
                    (true, true) => String::new(),
                    (true, false) => format!("{{{extra}}}"),
                    (false, true) => format!("{{{inner}}}"),
                    (false, false) => format!("{{{inner},{extra}}}"),
                }
            };
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    with(&format!("le=\"{le}\"")),
                    h.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{} {count}", with("le=\"+Inf\""));
            let _ = writeln!(
                out,
                "{name}_sum{} {}",
                with(""),
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{} {count}", with(""));
        }
        out
    }

    /// Install as the global recorder and serve `/metrics` on `addr`.
    ///
    /// # Errors
    /// Another recorder is installed, or `addr` cannot be bound.
    pub async fn install_and_serve(addr: &str) -> anyhow::Result<Prometheus> {
        let prom = Prometheus::default();
        metrics::set_global_recorder(prom.clone())
            .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
        eprintln!("metrics: http://{}/metrics", listener.local_addr()?);
        let served = prom.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = served.render();
                tokio::spawn(async move {
                    // One request, read once; its path is ignored.
                    let mut buf = Vec::with_capacity(1024);
                    let _ = sock.read_buf(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                });
            }
        });
        Ok(prom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let p = Prometheus::default();
        metrics::with_local_recorder(&p, || {
            metrics::counter!("handled_total").increment(3);
            metrics::gauge!("lag", "topic" => "t", "partition" => "0").set(7.0);
            metrics::histogram!("seconds").record(0.003);
        });
        let text = p.render();
        assert!(text.contains("handled_total 3"), "{text}");
        assert!(
            text.contains("lag{topic=\"t\",partition=\"0\"} 7"),
            "{text}"
        );
        assert!(text.contains("seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("seconds_count 1"), "{text}");
    }
}
