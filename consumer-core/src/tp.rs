//! `TopicPartition`: the key everything in the consumer is indexed by. One
//! type for the whole stack, defined in `kafka-wire`.

pub use kafka_wire::TopicPartition;
