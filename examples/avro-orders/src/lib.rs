//! # avro-orders
//!
//! Seed 002 rebuilt on the framework: orders serialized with Avro through
//! a Confluent schema registry, consumed by a [`resilience::Processor`]
//! with a running average; transient errors retried with exponential
//! backoff (1, 2, 4 s) and then dead-lettered, poison records
//! dead-lettered at once, into `orders_dlq` with `kafka_dlt-*` provenance
//! headers; the DLQ replayed exactly once (`resilience::dlt::replay`).
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`order`] | the `Order`, its Avro schema, the random generator, each order's simulated [`order::Fate`] |
//! | [`settings`] | [`settings::Settings`]: topics, group, retry schedule, Kafka properties by name |
//! | [`producer`] | the seed's producer: live (1/s, every delivery printed) and a fixed count |
//! | [`service`] | the consumer: [`service::OrderService`] handler, running average in cents |
//! | [`summary`] | the seed's final statistics |
//! | [`demo`] | `avro-orders demo`: fixed count, table, DLQ replay twice |

pub mod demo;
pub mod order;
pub mod producer;
pub mod service;
pub mod settings;
pub mod summary;
