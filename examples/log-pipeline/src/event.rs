//! The log event, three ways: what a client posts ([`LogEventIn`]), what
//! travels on Kafka ([`LogEvent`]: an id and the gateway's accept time
//! added), and what is stored ([`Enriched`]).

use serde::{Deserialize, Serialize};

/// The levels the gateway accepts (case-insensitive; stored upper-case).
pub const LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// Header carrying the event id (also in the value).
pub const EVENT_ID_HEADER: &str = "event-id";

/// What a client posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEventIn {
    pub service: String,
    pub level: String,
    pub message: String,
    /// When it happened, ms since the epoch; default: when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    /// The client's id for the event (a client retrying a POST sends the
    /// same id, and the row is still stored once); default: a new UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What the gateway produces: the posted event, validated, with an id and
/// the accept time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    pub id: String,
    pub service: String,
    pub level: String,
    pub message: String,
    pub timestamp_ms: i64,
    /// When the gateway accepted it, µs since the epoch (end-to-end latency
    /// is measured from here to the row's insert time).
    pub accepted_us: i64,
}

impl LogEvent {
    /// Validate `input` and stamp it.
    ///
    /// # Errors
    /// An empty service or id, or an unknown level: what is wrong.
    pub fn accept(input: LogEventIn, accepted_us: i64) -> Result<Self, String> {
        let service = input.service.trim().to_string();
        if service.is_empty() || service.len() > 128 {
            return Err("service must be 1 to 128 characters".into());
        }
        let level = input.level.trim().to_ascii_uppercase();
        if !LEVELS.contains(&level.as_str()) {
            return Err(format!("level {:?} is not one of {LEVELS:?}", input.level));
        }
        let id = match input.id {
            Some(id) if id.trim().is_empty() => return Err("id must not be empty".into()),
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        Ok(Self {
            id,
            service,
            level,
            message: input.message,
            timestamp_ms: input.timestamp_ms.unwrap_or(accepted_us / 1000),
            accepted_us,
        })
    }
}

/// An event after enrichment: what the row and the Redis bucket hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enriched {
    pub event: LogEvent,
    /// The event's minute, ms since the epoch (the aggregation bucket).
    pub minute_ms: i64,
    /// 0 (TRACE) to 5 (FATAL).
    pub severity: i16,
    pub message_len: i32,
    pub partition: i32,
    pub offset: i64,
    /// The consumer instance that stored it.
    pub processed_by: String,
}

impl Enriched {
    pub fn new(event: LogEvent, partition: i32, offset: i64, processed_by: &str) -> Self {
        let severity = LEVELS.iter().position(|l| *l == event.level).unwrap_or(0) as i16;
        Self {
            minute_ms: event.timestamp_ms - event.timestamp_ms.rem_euclid(60_000),
            severity,
            message_len: event.message.chars().count() as i32,
            partition,
            offset,
            processed_by: processed_by.to_string(),
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(level: &str) -> LogEventIn {
        LogEventIn {
            service: "checkout".into(),
            level: level.into(),
            message: "hello".into(),
            timestamp_ms: Some(120_500),
            id: None,
        }
    }

    #[test]
    fn accepting_normalises_the_level_and_stamps_an_id() {
        let e = LogEvent::accept(input("warn"), 7).unwrap();
        assert_eq!(e.level, "WARN");
        assert_eq!(e.accepted_us, 7);
        assert!(!e.id.is_empty());
        assert!(LogEvent::accept(input("loud"), 7).is_err());
    }

    #[test]
    fn enrichment_buckets_by_minute_and_ranks_the_level() {
        let e = Enriched::new(LogEvent::accept(input("ERROR"), 7).unwrap(), 3, 9, "i1");
        assert_eq!(e.minute_ms, 120_000);
        assert_eq!(e.severity, 4);
        assert_eq!(e.message_len, 5);
    }
}
