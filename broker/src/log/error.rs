use std::io;

/// One refused record of a batch, as the Produce response reports it
/// (`BatchIndexAndErrorMessage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// What can go wrong in the log. Each client-visible variant maps to one Kafka error code
/// in the wire layer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A batch failed validation: bad magic, bad length, CRC-32C mismatch, truncated.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// A batch that is intact (CRC) but says something false about its records, or
    /// breaks a rule for client batches (Kafka's `InvalidRecordException`, INVALID_RECORD).
    /// `record_errors` name the offending records by index within the batch, where
    /// the fault is in a record.
    #[error("invalid record batch: {message}")]
    InvalidRecord {
        message: String,
        record_errors: Vec<RecordError>,
    },
    /// Records whose timestamps are outside `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms` of the broker's clock, or a producer that set
    /// LogAppendTime (Kafka's INVALID_TIMESTAMP).
    #[error("{message}")]
    InvalidTimestamp {
        message: String,
        record_errors: Vec<RecordError>,
    },
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
    /// A follower append whose first batch starts below the log end offset: the data
    /// is already there or the follower fetched from the wrong place (Kafka's
    /// `UnexpectedAppendOffsetException`). `last_offset` is the last offset of the whole
    /// append: when the log is empty and its end falls inside the append, Kafka's
    /// partition restarts the log at `first_offset` and appends again.
    #[error(
        "follower append starts at offset {first_offset} (last {last_offset}), below the log end offset {log_end_offset}"
    )]
    UnexpectedAppendOffset {
        first_offset: i64,
        last_offset: i64,
        log_end_offset: i64,
    },
    /// The batches of a follower append do not have increasing, non-overlapping
    /// offsets (Kafka's `OffsetsOutOfOrderException`).
    #[error("out of order offsets in follower append: batch at offset {got}, expected at least {expected}")]
    OffsetOutOfOrder { expected: i64, got: i64 },
}
