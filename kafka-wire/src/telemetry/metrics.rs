//! The metrics a client pushes, and their OTLP encoding (KIP-714).
//!
//! Names follow KIP-714's mapping of Java's metrics: `org.apache.kafka.`,
//! then the group without `-metrics`, then the metric, dashes as dots
//! (`consumer-fetch-manager-metrics` / `records-lag-max` becomes
//! `org.apache.kafka.consumer.fetch.manager.records.lag.max`). Each data
//! point carries the `client_id` attribute (Java's `client-id` tag).
//!
//! `*.total` metrics are OTLP monotonic sums (cumulative from the client's
//! start, or deltas since the last push when the subscription asks for
//! delta temporality); the others are gauges: `*.avg` and `*.max` over the
//! fetches since the last push (left out when there were none), and
//! `records.lag.max` as of the last poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, MetricsData, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::machine::Subscription;

/// `org.apache.kafka.consumer.fetch.manager.fetch.latency.avg` (ms).
pub const FETCH_LATENCY_AVG: &str = "org.apache.kafka.consumer.fetch.manager.fetch.latency.avg";
/// `org.apache.kafka.consumer.fetch.manager.fetch.latency.max` (ms).
pub const FETCH_LATENCY_MAX: &str = "org.apache.kafka.consumer.fetch.manager.fetch.latency.max";
/// `org.apache.kafka.consumer.fetch.manager.fetch.total` (fetch requests).
pub const FETCH_TOTAL: &str = "org.apache.kafka.consumer.fetch.manager.fetch.total";
/// `org.apache.kafka.consumer.fetch.manager.records.consumed.total`.
pub const RECORDS_CONSUMED_TOTAL: &str =
    "org.apache.kafka.consumer.fetch.manager.records.consumed.total";
/// `org.apache.kafka.consumer.fetch.manager.bytes.consumed.total` (bytes).
pub const BYTES_CONSUMED_TOTAL: &str =
    "org.apache.kafka.consumer.fetch.manager.bytes.consumed.total";
/// `org.apache.kafka.consumer.fetch.manager.records.lag.max` (records).
pub const RECORDS_LAG_MAX: &str = "org.apache.kafka.consumer.fetch.manager.records.lag.max";
/// `org.apache.kafka.producer.record.send.total`.
pub const RECORD_SEND_TOTAL: &str = "org.apache.kafka.producer.record.send.total";

/// Which client the metrics describe: it picks the metric set pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryRole {
    /// `org.apache.kafka.consumer.*`.
    Consumer,
    /// `org.apache.kafka.producer.*`.
    Producer,
}

#[derive(Debug, Default)]
struct Values {
    fetch_total: u64,
    /// Fetches since the last push: count, sum and max of latencies (ms).
    window_fetches: u64,
    window_latency_sum_ms: f64,
    window_latency_max_ms: f64,
    records_consumed_total: u64,
    bytes_consumed_total: u64,
    records_lag_max: Option<i64>,
    record_send_total: u64,
    /// The sums as of the last push, and when (for delta temporality).
    last_pushed: Vec<(&'static str, u64)>,
    last_push_unix_nanos: Option<u64>,
}

/// Where a client records the numbers telemetry pushes. Cheap to share
/// (`Arc`); every method takes one short lock.
#[derive(Debug)]
pub struct TelemetryMetrics {
    role: TelemetryRole,
    client_id: String,
    start_unix_nanos: u64,
    values: Mutex<Values>,
    /// False once nothing will ever be pushed (telemetry disabled, or its
    /// task ended): the client then skips recording altogether.
    recording: AtomicBool,
}

impl TelemetryMetrics {
    /// Metrics for a client of `role` named `client_id`, started at
    /// `start_unix_nanos` (ns since the Unix epoch).
    pub(crate) fn new(role: TelemetryRole, client_id: &str, start_unix_nanos: u64) -> Self {
        TelemetryMetrics {
            role,
            client_id: client_id.to_string(),
            start_unix_nanos,
            values: Mutex::new(Values::default()),
            recording: AtomicBool::new(true),
        }
    }

    /// Whether anything recorded may still be pushed. The client checks it
    /// before gathering numbers on its hot paths (each poll, each fetch):
    /// with telemetry off, or a broker without KIP-714, that costs nothing.
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// Nothing will be pushed any more.
    pub(crate) fn stop_recording(&self) {
        self.recording.store(false, Ordering::Relaxed);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Values) -> R) -> R {
        // A panic elsewhere while holding the lock leaves plain numbers
        // behind: still fine to read.
        let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut v)
    }

    /// A fetch answered after `latency` (`fetch.latency.avg/max`, `fetch.total`).
    pub fn fetch_completed(&self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.with(|v| {
            v.fetch_total += 1;
            v.window_fetches += 1;
            v.window_latency_sum_ms += ms;
            v.window_latency_max_ms = v.window_latency_max_ms.max(ms);
        });
    }

    /// `records` records of `bytes` bytes (values, keys and headers) handed
    /// to the application (`records.consumed.total`, `bytes.consumed.total`).
    pub fn records_consumed(&self, records: u64, bytes: u64) {
        self.with(|v| {
            v.records_consumed_total += records;
            v.bytes_consumed_total += bytes;
        });
    }

    /// The largest lag (records) over the partitions the consumer serves,
    /// as of now (`records.lag.max`); `None` when none is known yet.
    pub fn set_records_lag_max(&self, lag: Option<i64>) {
        self.with(|v| v.records_lag_max = lag);
    }

    /// `records` records sent by a producer (`record.send.total`).
    pub fn records_sent(&self, records: u64) {
        self.with(|v| v.record_send_total += records);
    }

    /// The OTLP `MetricsData` for one push under `sub` at `now_unix_nanos`:
    /// the metrics it asks for, within its max bytes (metrics are left out,
    /// last first, until the payload fits). Starts a new window for the
    /// averages and, under delta temporality, for the sums.
    pub(crate) fn encode_push(&self, sub: &Subscription, now_unix_nanos: u64) -> Vec<u8> {
        let mut metrics = self.with(|v| {
            let out = self.collect(v, sub, now_unix_nanos);
            v.window_fetches = 0;
            v.window_latency_sum_ms = 0.0;
            v.window_latency_max_ms = 0.0;
            v.last_pushed = sums(self.role, v);
            v.last_push_unix_nanos = Some(now_unix_nanos);
            out
        });
        loop {
            let bytes = self.wrap(metrics.clone()).encode_to_vec();
            if bytes.len() <= sub.max_bytes || metrics.is_empty() {
                if bytes.len() > sub.max_bytes {
                    // Even an empty MetricsData is too large: send nothing.
                    return Vec::new();
                }
                return bytes;
            }
            metrics.pop();
        }
    }

    fn wrap(&self, metrics: Vec<Metric>) -> MetricsData {
        MetricsData {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource::default()),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn collect(&self, v: &Values, sub: &Subscription, now: u64) -> Vec<Metric> {
        let attributes = vec![KeyValue {
            key: "client_id".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(self.client_id.clone())),
            }),
            ..Default::default()
        }];
        let point = |start: u64, value: number_data_point::Value| NumberDataPoint {
            attributes: attributes.clone(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(value),
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut gauge = |name: &str, unit: &str, value: f64| {
            out.push(Metric {
                name: name.into(),
                unit: unit.into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![point(0, number_data_point::Value::AsDouble(value))],
                })),
                ..Default::default()
            })
        };
        if self.role == TelemetryRole::Consumer {
            if v.window_fetches > 0 {
                gauge(
                    FETCH_LATENCY_AVG,
                    "ms",
                    v.window_latency_sum_ms / v.window_fetches as f64,
                );
                gauge(FETCH_LATENCY_MAX, "ms", v.window_latency_max_ms);
            }
            if let Some(lag) = v.records_lag_max {
                gauge(RECORDS_LAG_MAX, "{record}", lag as f64);
            }
        }
        for (name, total) in sums(self.role, v) {
            let (value, start, temporality) = if sub.delta_temporality {
                let before = v
                    .last_pushed
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |&(_, t)| t);
                let start = v.last_push_unix_nanos.unwrap_or(self.start_unix_nanos);
                (
                    total.saturating_sub(before),
                    start,
                    AggregationTemporality::Delta,
                )
            } else {
                (
                    total,
                    self.start_unix_nanos,
                    AggregationTemporality::Cumulative,
                )
            };
            out.push(Metric {
                name: name.into(),
                unit: "1".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![point(
                        start,
                        number_data_point::Value::AsDouble(value as f64),
                    )],
                    aggregation_temporality: temporality as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            });
        }
        out.retain(|m| sub.wants(&m.name));
        out
    }
}

/// The role's monotonic sums, by name.
fn sums(role: TelemetryRole, v: &Values) -> Vec<(&'static str, u64)> {
    match role {
        TelemetryRole::Consumer => vec![
            (FETCH_TOTAL, v.fetch_total),
            (RECORDS_CONSUMED_TOTAL, v.records_consumed_total),
            (BYTES_CONSUMED_TOTAL, v.bytes_consumed_total),
        ],
        TelemetryRole::Producer => vec![(RECORD_SEND_TOTAL, v.record_send_total)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(requested: &[&str], delta: bool, max_bytes: usize) -> Subscription {
        Subscription {
            client_instance_id: [1; 16],
            subscription_id: 1,
            accepted_compression_types: vec![],
            push_interval: Duration::from_secs(1),
            max_bytes,
            delta_temporality: delta,
            requested_metrics: requested.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn decode(bytes: &[u8]) -> Vec<(String, f64)> {
        let data = MetricsData::decode(bytes).expect("valid OTLP");
        data.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| {
                let points = match m.data.as_ref().expect("data") {
                    metric::Data::Gauge(g) => &g.data_points,
                    metric::Data::Sum(s) => &s.data_points,
                    other => panic!("unexpected {other:?}"),
                };
                assert_eq!(points[0].attributes[0].key, "client_id");
                let Some(number_data_point::Value::AsDouble(x)) = points[0].value else {
                    panic!("a double")
                };
                (m.name.clone(), x)
            })
            .collect()
    }

    fn consumer() -> TelemetryMetrics {
        let m = TelemetryMetrics::new(TelemetryRole::Consumer, "c1", 1);
        m.fetch_completed(Duration::from_millis(10));
        m.fetch_completed(Duration::from_millis(30));
        m.records_consumed(5, 500);
        m.set_records_lag_max(Some(17));
        m
    }

    #[test]
    fn every_consumer_metric_under_the_empty_prefix() {
        let got = decode(&consumer().encode_push(&sub(&[""], false, 1 << 20), 2));
        let value = |n: &str| got.iter().find(|(m, _)| m == n).map(|&(_, x)| x);
        assert_eq!(value(FETCH_LATENCY_AVG), Some(20.0));
        assert_eq!(value(FETCH_LATENCY_MAX), Some(30.0));
        assert_eq!(value(FETCH_TOTAL), Some(2.0));
        assert_eq!(value(RECORDS_CONSUMED_TOTAL), Some(5.0));
        assert_eq!(value(BYTES_CONSUMED_TOTAL), Some(500.0));
        assert_eq!(value(RECORDS_LAG_MAX), Some(17.0));
        assert_eq!(
            value(RECORD_SEND_TOTAL),
            None,
            "a consumer sends no producer metric"
        );
    }

    #[test]
    fn prefixes_filter_and_max_bytes_trims() {
        let m = consumer();
        let got = decode(&m.encode_push(
            &sub(
                &["org.apache.kafka.consumer.fetch.manager.records."],
                false,
                1 << 20,
            ),
            2,
        ));
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [RECORDS_LAG_MAX, RECORDS_CONSUMED_TOTAL]);
        let all = m.encode_push(&sub(&[""], false, 1 << 20), 3);
        let cap = all.len() - 1;
        let trimmed = m.encode_push(&sub(&[""], false, cap), 4);
        assert!(trimmed.len() <= cap);
        assert!(decode(&trimmed).len() < decode(&all).len());
        assert!(m.encode_push(&sub(&[""], false, 0), 5).is_empty());
    }

    #[test]
    fn delta_temporality_reports_what_changed_since_the_last_push() {
        let m = consumer();
        let s = sub(
            &["org.apache.kafka.consumer.fetch.manager.records.consumed"],
            true,
            1 << 20,
        );
        assert_eq!(
            decode(&m.encode_push(&s, 2)),
            [(RECORDS_CONSUMED_TOTAL.into(), 5.0)]
        );
        m.records_consumed(3, 0);
        assert_eq!(
            decode(&m.encode_push(&s, 3)),
            [(RECORDS_CONSUMED_TOTAL.into(), 3.0)]
        );
        let cumulative = sub(&[""], false, 1 << 20);
        let got = decode(&m.encode_push(&cumulative, 4));
        assert!(got.contains(&(RECORDS_CONSUMED_TOTAL.into(), 8.0)));
        // No fetch since the last push: no latency average to report.
        assert!(!got.iter().any(|(n, _)| n == FETCH_LATENCY_AVG));
    }
}
