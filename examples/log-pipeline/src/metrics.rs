//! The pipeline's own metrics, beside the runtime's (`resilience_*`, see
//! `resilience::observe`). Both reach Prometheus through the one global
//! recorder that `resilience::observe::prometheus::install` sets up.
//!
//! | seed's panel | metric |
//! |---|---|
//! | processed total | `resilience_records_handled_total`, `log_pipeline_events_stored_total` |
//! | failed total | `log_pipeline_batch_failures_total{stage}`, `resilience_records_retried_total` |
//! | lag per partition | `resilience_consumer_lag_records`, `resilience_commit_lag_records` `{topic,partition}` |
//! | processing latency p50/p95/p99 | `resilience_handler_seconds` (one batch), `log_pipeline_end_to_end_seconds` (accept → row) |
//! | DLQ rate | `rate(resilience_records_dead_lettered_total[1m])` |
//! | rebalances | `resilience_rebalances_total{kind}` |
//! | gateway | `log_pipeline_gateway_events_total{outcome}`, `log_pipeline_gateway_seconds` |

use metrics::{describe_counter, describe_histogram, Unit};

/// Events whose row was new (a redelivered event is not counted again).
pub const EVENTS_STORED: &str = "log_pipeline_events_stored_total";
/// Batch attempts that failed, by `stage`: decode, postgres, redis.
pub const BATCH_FAILURES: &str = "log_pipeline_batch_failures_total";
/// Gateway accept → row inserted, per stored event, in seconds.
pub const END_TO_END_SECONDS: &str = "log_pipeline_end_to_end_seconds";
/// Events the gateway answered, by `outcome`: stored, rejected, failed.
pub const GATEWAY_EVENTS: &str = "log_pipeline_gateway_events_total";
/// One gateway request (until every record's acknowledgement), in seconds.
pub const GATEWAY_SECONDS: &str = "log_pipeline_gateway_seconds";

/// Help text and units for the metrics above.
pub fn describe() {
    describe_counter!(
        EVENTS_STORED,
        Unit::Count,
        "Log events whose PostgreSQL row was new."
    );
    describe_counter!(
        BATCH_FAILURES,
        Unit::Count,
        "Batch attempts that failed, by stage (decode, postgres, redis)."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "Gateway accept to PostgreSQL insert, per stored event."
    );
    describe_counter!(
        GATEWAY_EVENTS,
        Unit::Count,
        "Events the gateway answered, by outcome (stored, rejected, failed)."
    );
    describe_histogram!(
        GATEWAY_SECONDS,
        Unit::Seconds,
        "One gateway request, until the broker acknowledged every record."
    );
}
