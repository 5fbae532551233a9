//! [`TopicPartition`]: the one name for a partition of a topic, shared by
//! the producer, the consumer, the runtime and admin calls.

use std::fmt;

/// A topic and a partition index (0-based, as Kafka numbers them).
///
/// Displays as `topic-partition` (`orders-3`), the form Kafka's own tools
/// and logs use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Which records a reader may see (`isolation.level`).
///
/// With [`IsolationLevel::ReadCommitted`] the readable end of a partition
/// is its **last stable offset** (LSO: the first offset of the oldest open
/// transaction, or the high watermark when none is open), records of
/// aborted transactions are never returned, and ListOffsets for `latest`
/// answers the LSO (KIP-98).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Everything up to the high watermark, aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Only committed data, up to the last stable offset.
    ReadCommitted,
}

impl IsolationLevel {
    /// The wire value of Fetch and ListOffsets (0 or 1).
    pub fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}
