use std::io;

/// What can go wrong in the log. Each client-visible variant maps to one Kafka error code
/// in the wire layer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A batch failed validation: bad magic, bad length, CRC-32C mismatch, truncated.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: u64, max: u64 },
    /// A fetch or delete-records offset outside [log start, log end].
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
}
