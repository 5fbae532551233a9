//! A dead-letter record read back: where it came from, why it died, and
//! a filter over those fields (`kafka-lab dlt replay --where …`).

use kafka_wire::records::Record;

use super::{
    header, int_header, Provenance, ATTEMPTS, EXCEPTION_FQCN, EXCEPTION_MESSAGE,
    ORIGINAL_CONSUMER_GROUP, ORIGINAL_PARTITION, ORIGINAL_TOPIC,
};

/// One record of a dead-letter topic with its `kafka_dlt-*` provenance
/// decoded. Fields are `None` when the header is missing or malformed
/// (a DLT written by another tool, say): reading never fails.
#[derive(Debug, Clone)]
pub struct DeadRecord {
    /// The DLT partition this record sits in.
    pub partition: i32,
    /// Where it first came from (`kafka_dlt-original-topic`, `-partition`,
    /// `-offset`, `-timestamp`), when the headers say.
    pub origin: Option<Provenance>,
    /// The consumer group that dead-lettered it (`kafka_dlt-original-consumer-group`).
    pub group: Option<String>,
    /// The failure's class (`kafka_dlt-exception-fqcn`): `Retryable`,
    /// `NonRetryable`, or a Java class name from Spring.
    pub error_class: Option<String>,
    /// The failure's message (`kafka_dlt-exception-message`).
    pub error_message: Option<String>,
    /// Attempts made before it was dead-lettered (`retry_topic-attempts`).
    pub attempts: Option<u32>,
    /// The record as read from the DLT (its offset is the DLT offset).
    pub record: Record,
}

fn text(record: &Record, name: &str) -> Option<String> {
    header(record, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

impl DeadRecord {
    /// Decode the provenance headers of `record`, read from `partition`
    /// of a dead-letter topic.
    pub fn parse(partition: i32, record: Record) -> DeadRecord {
        let origin = (header(&record, ORIGINAL_TOPIC).is_some()
            && int_header(&record, ORIGINAL_PARTITION).is_some())
        .then(|| Provenance::of("", partition, &record));
        DeadRecord {
            partition,
            origin,
            group: text(&record, ORIGINAL_CONSUMER_GROUP),
            error_class: text(&record, EXCEPTION_FQCN),
            error_message: text(&record, EXCEPTION_MESSAGE),
            attempts: int_header(&record, ATTEMPTS).and_then(|a| u32::try_from(a).ok()),
            record,
        }
    }

    /// The record's key as text (lossy), if it has one.
    pub fn key_text(&self) -> Option<String> {
        self.record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

/// One condition of a [`Filter`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// `field=value`: the field equals `value` exactly.
    Equals(Field, String),
    /// `field~text`: the field contains `text`.
    Contains(Field, String),
    /// `offset>=N` / `offset<N` on the original offset.
    OffsetAtLeast(i64),
    OffsetBelow(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Topic,
    Partition,
    Offset,
    Group,
    Class,
    Error,
    Key,
    Attempts,
    Header(String),
}

/// Which dead records a replay takes: every condition must hold (AND).
/// An empty filter takes all.
///
/// Conditions, as `--where` takes them:
/// - `topic=orders`, `partition=3`, `offset=42` (the *original* record's),
///   `offset>=100`, `offset<200`;
/// - `group=billing`, `class=NonRetryable`, `attempts=4`, `key=order-7`;
/// - `error~timeout` (the exception message contains `timeout`), and
///   `~` works on every field;
/// - `header.trace-id=abc` (any other header, as text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

impl Filter {
    /// Parse conditions (each `field=value`, `field~text`, `offset>=N` or
    /// `offset<N`).
    ///
    /// # Errors
    /// A message naming the condition and the fields it may use.
    pub fn parse<S: AsRef<str>>(conditions: &[S]) -> Result<Filter, String> {
        let mut out = Vec::new();
        for c in conditions {
            out.push(parse_condition(c.as_ref())?);
        }
        Ok(Filter { conditions: out })
    }

    /// Whether `dead` passes every condition.
    pub fn matches(&self, dead: &DeadRecord) -> bool {
        self.conditions.iter().all(|c| holds(c, dead))
    }

    /// Whether there are no conditions.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

const FIELDS: &str = "topic, partition, offset, group, class, error, key, attempts, header.<name>";

fn parse_condition(c: &str) -> Result<Condition, String> {
    let bad = || {
        format!(
            "--where {c:?}: expected field=value, field~text, offset>=N or offset<N \
             (fields: {FIELDS})"
        )
    };
    let number = |v: &str| v.trim().parse::<i64>().map_err(|_| bad());
    if let Some(v) = c.strip_prefix("offset>=") {
        return Ok(Condition::OffsetAtLeast(number(v)?));
    }
    if let Some(v) = c.strip_prefix("offset<") {
        return Ok(Condition::OffsetBelow(number(v)?));
    }
    let (at, contains) = match (c.find('='), c.find('~')) {
        (Some(e), Some(t)) if t < e => (t, true),
        (Some(e), _) => (e, false),
        (None, Some(t)) => (t, true),
        (None, None) => return Err(bad()),
    };
    let (name, value) = (c[..at].trim(), c[at + 1..].to_string());
    let field = match name {
        "topic" => Field::Topic,
        "partition" => Field::Partition,
        "offset" => Field::Offset,
        "group" => Field::Group,
        "class" => Field::Class,
        "error" => Field::Error,
        "key" => Field::Key,
        "attempts" => Field::Attempts,
        h if h.starts_with("header.") && h.len() > "header.".len() => {
            Field::Header(h["header.".len()..].to_string())
        }
        _ => return Err(bad()),
    };
    Ok(if contains {
        Condition::Contains(field, value)
    } else {
        Condition::Equals(field, value)
    })
}

fn field_text(field: &Field, d: &DeadRecord) -> Option<String> {
    match field {
        Field::Topic => d.origin.as_ref().map(|o| o.topic.clone()),
        Field::Partition => d.origin.as_ref().map(|o| o.partition.to_string()),
        Field::Offset => d.origin.as_ref().map(|o| o.offset.to_string()),
        Field::Group => d.group.clone(),
        Field::Class => d.error_class.clone(),
        Field::Error => d.error_message.clone(),
        Field::Key => d.key_text(),
        Field::Attempts => d.attempts.map(|a| a.to_string()),
        Field::Header(name) => text(&d.record, name),
    }
}

fn holds(c: &Condition, d: &DeadRecord) -> bool {
    let offset = || d.origin.as_ref().map(|o| o.offset);
    match c {
        Condition::Equals(f, v) => field_text(f, d).is_some_and(|t| t == *v),
        Condition::Contains(f, v) => field_text(f, d).is_some_and(|t| t.contains(v.as_str())),
        Condition::OffsetAtLeast(n) => offset().is_some_and(|o| o >= *n),
        Condition::OffsetBelow(n) => offset().is_some_and(|o| o < *n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt::{consumed, dead_letter};
    use crate::retry::HandlerError;
    use bytes::Bytes;

    fn dead(offset: i64, err: HandlerError) -> DeadRecord {
        let rec = Record {
            offset,
            timestamp: 1,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
        };
        let d = dead_letter("orders.DLT", "orders", 2, "billing", &rec, &err, 4);
        DeadRecord::parse(0, consumed(&d, 100 + offset))
    }

    #[test]
    fn parses_the_provenance_the_runtime_writes() {
        let d = dead(7, HandlerError::NonRetryable("bad price".into()));
        let o = d.origin.as_ref().expect("origin");
        assert_eq!((o.topic.as_str(), o.partition, o.offset), ("orders", 2, 7));
        assert_eq!(d.group.as_deref(), Some("billing"));
        assert_eq!(d.error_class.as_deref(), Some("NonRetryable"));
        assert_eq!(d.error_message.as_deref(), Some("bad price"));
        assert_eq!(d.attempts, Some(4));
        assert_eq!(d.record.offset, 107);
        assert_eq!(d.key_text().as_deref(), Some("k7"));
    }

    #[test]
    fn a_record_without_headers_has_no_origin() {
        let r = Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![],
        };
        let d = DeadRecord::parse(0, r);
        assert!(d.origin.is_none() && d.error_message.is_none() && d.attempts.is_none());
        assert!(!Filter::parse(&["topic=orders"]).unwrap().matches(&d));
        assert!(Filter::default().matches(&d));
    }

    #[test]
    fn filters_and_their_conditions() {
        let poison = dead(7, HandlerError::NonRetryable("bad price".into()));
        let timeout = dead(300, HandlerError::Retryable("timeout calling bank".into()));
        let f = |c: &[&str]| Filter::parse(c).unwrap();
        assert!(f(&["error~timeout"]).matches(&timeout));
        assert!(!f(&["error~timeout"]).matches(&poison));
        assert!(f(&["class=NonRetryable", "topic=orders"]).matches(&poison));
        assert!(!f(&["class=NonRetryable", "topic=payments"]).matches(&poison));
        assert!(f(&["offset>=100", "offset<301"]).matches(&timeout));
        assert!(!f(&["offset>=100"]).matches(&poison));
        assert!(f(&["key=k7", "partition=2", "attempts=4", "group=billing"]).matches(&poison));
        assert!(f(&["header.kafka_dlt-original-topic=orders"]).matches(&poison));
        for bad in ["price", "colour=red", "offset>=x", "header.=1"] {
            let e = Filter::parse(&[bad]).unwrap_err();
            assert!(e.contains(bad) && e.contains("fields:"), "{e}");
        }
    }
}
