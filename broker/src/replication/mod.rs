//! Kafka-style replication of data partitions: followers fetch from the leader, the
//! leader tracks them, moves the ISR through the quorum and the high watermark by it.

pub mod fetcher;
pub mod isr;
pub mod isr_updater;
pub mod service;

#[cfg(test)]
mod tests;
