//! The partition log: an ordered sequence of segments holding Kafka v2 record batches
//! byte for byte, with sparse memory-mapped offset and time indexes.
//!
//! The log knows nothing of the network or of partition roles; `crate::partition` puts a
//! role and a high watermark around it.

pub mod batch;
mod config;
mod error;
mod log;
mod offset_index;
mod segment;
mod time_index;

pub use config::{LogConfig, TimestampType};
pub use error::LogError;
pub use log::{AppendInfo, Log, ReadSlice};
