//! Rill broker: a Kafka-compatible streaming log.

pub mod log;
