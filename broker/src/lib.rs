//! Rill broker: a Kafka-compatible streaming log.

pub mod cluster;
pub mod config;
pub mod group;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod partition;
pub mod producer_state;
pub mod replica_manager;
pub mod replication;
pub mod rpc;
pub mod run;
pub mod wire;
