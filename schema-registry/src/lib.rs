//! Confluent schema registry client and Avro serdes (stub).
