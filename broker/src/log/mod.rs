//! The partition log: an ordered sequence of segments holding Kafka v2 record batches
//! byte for byte, with sparse memory-mapped offset and time indexes.
//!
//! The log knows nothing of the network or of partition roles; `crate::partition` puts a
//! role and a high watermark around it.

pub mod batch;
mod cleaner;
mod codec;
mod config;
mod epoch_cache;
mod error;
mod index_file;
// `log::log` reads fine here: the module is the `Log` type, the parent the subsystem.
#[allow(clippy::module_inception)]
mod log;
mod offset_index;
mod scan;
mod segment;
mod time_index;
mod validate;

pub use cleaner::CleanStats;
pub use codec::{decompressed_limit, DECOMPRESSION_RATIO};
pub use config::CleanupPolicy;
pub use config::{LogConfig, TimestampType};
pub use epoch_cache::{EpochEntry, LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use error::{LogError, RecordError};
pub use log::{AppendInfo, FollowerAppendInfo, Log, PendingSync, ReadSlice};
pub use scan::scan_batch_headers;
pub use validate::{validate_client_batch, Validated, ValidationConfig};
