//! STUB: interface only; the implementation is being written.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;

use super::{LogConfig, LogError};

/// The outcome of one append: the offsets the batches were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The broker's append time when `message.timestamp.type=LogAppendTime`, else -1.
    pub log_append_time: i64,
    /// Records appended (sum of the batches' record counts).
    pub record_count: u64,
    /// Bytes appended.
    pub bytes: u64,
}

/// A byte range of one segment file holding whole batches, ready for sendfile(2).
/// Holding the `Arc<File>` keeps the bytes readable even if retention unlinks the segment.
#[derive(Clone, Debug)]
pub struct ReadSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
}

pub struct Log {
    _dir: PathBuf,
}

impl Log {
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        let _ = (dir, config, now_ms);
        todo!()
    }
    pub fn dir(&self) -> &Path {
        todo!()
    }
    pub fn config(&self) -> &LogConfig {
        todo!()
    }
    pub fn set_config(&mut self, config: LogConfig) {
        let _ = config;
        todo!()
    }
    pub fn append(&mut self, records: &mut BytesMut, now_ms: i64) -> Result<AppendInfo, LogError> {
        let _ = (records, now_ms);
        todo!()
    }
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, LogError> {
        let _ = (fetch_offset, max_bytes, max_offset, min_one_batch);
        todo!()
    }
    pub fn log_start_offset(&self) -> i64 {
        todo!()
    }
    pub fn log_end_offset(&self) -> i64 {
        todo!()
    }
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let _ = timestamp;
        todo!()
    }
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        todo!()
    }
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let _ = offset;
        todo!()
    }
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let _ = offset;
        todo!()
    }
    pub fn flush(&mut self) -> Result<(), LogError> {
        todo!()
    }
    pub fn tick(&mut self, now_ms: i64) -> Result<(), LogError> {
        let _ = now_ms;
        todo!()
    }
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let _ = now_ms;
        todo!()
    }
    pub fn close(self) -> Result<(), LogError> {
        todo!()
    }
    pub fn delete(self) -> Result<(), LogError> {
        todo!()
    }
}
