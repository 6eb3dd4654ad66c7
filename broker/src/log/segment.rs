//! One segment: a `.log` file of whole batches plus its `.index` and `.timeindex`,
//! all named by the segment's base offset (20 digits, zero-padded).
//!
//! Batches are appended at the end with positional writes; reads locate a batch with
//! the offset index and then walk batch headers with `pread`, relying on the page cache
//! rather than any in-process copy of the records.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, BatchHeader, RecordBatch, HEADER_LEN, LOG_OVERHEAD, NO_TIMESTAMP};
use super::index_file::remove_if_exists;
use super::log::ReadSlice;
use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use super::{LogConfig, LogError};

/// Relative offsets are stored as u32 but Kafka reads them as a signed int, so a segment
/// spans at most this many offsets past its base.
pub(crate) const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;
/// Positions in the offset index are u32; Kafka keeps segments below 2 GiB likewise.
pub(crate) const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

pub(crate) fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses a `.log` file name back to its base offset.
pub(crate) fn base_offset_of(file_name: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Unlinks a segment's three files, e.g. one discarded before it was opened.
pub(crate) fn delete_files(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    for ext in ["log", "index", "timeindex"] {
        remove_if_exists(&dir.join(file_name(base_offset, ext)))?;
    }
    Ok(())
}

/// What a segment answers to a fetch.
pub(crate) enum SegmentRead {
    Slice(ReadSlice),
    /// The fetch is served by this segment but yields nothing (max offset or max bytes).
    Nothing,
    /// No batch at or after the offset here: try the next segment.
    NotInSegment,
}

pub(crate) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    log: Arc<File>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Bytes of valid batches; the file is never longer once the segment is loaded.
    size: u64,
    /// Offset after the last batch.
    next_offset: i64,
    max_timestamp: i64,
    /// Base offset of the first batch carrying `max_timestamp`.
    offset_of_max_timestamp: i64,
    bytes_since_index_entry: u64,
    /// Wall-clock ms of the first append, for `segment.ms`.
    rolling_base_ms: Option<i64>,
}

impl Segment {
    /// A new, empty, active segment (any old files with its name are discarded).
    pub fn create(dir: &Path, base_offset: i64, config: &LogConfig) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)?;
        let index_bytes = config.segment_index_bytes;
        Ok(Segment {
            base_offset,
            offset_index: OffsetIndex::create(
                &dir.join(file_name(base_offset, "index")),
                base_offset,
                index_bytes,
            )?,
            time_index: TimeIndex::create(
                &dir.join(file_name(base_offset, "timeindex")),
                base_offset,
                index_bytes,
            )?,
            log_path,
            log: Arc::new(log),
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            bytes_since_index_entry: 0,
            rolling_base_ms: None,
        })
    }

    /// Opens an existing segment trusting its indexes, and finds its end by scanning
    /// only the batches after the last offset-index entry. Returns true as the second
    /// value when that is not possible (index files missing or implausible, a bad batch
    /// in the tail): the caller must then run [`Segment::recover`].
    pub fn open(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        active: bool,
        now_ms: i64,
    ) -> Result<(Segment, bool), LogError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let size = log.metadata()?.len();
        let index_path = dir.join(file_name(base_offset, "index"));
        let time_path = dir.join(file_name(base_offset, "timeindex"));
        let indexes_exist = index_path.exists() && time_path.exists();
        let preallocate = active.then_some(config.segment_index_bytes);
        let mut segment = Segment {
            base_offset,
            offset_index: OffsetIndex::open(&index_path, base_offset, preallocate)?,
            time_index: TimeIndex::open(&time_path, base_offset, preallocate)?,
            log_path,
            log: Arc::new(log),
            size,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            bytes_since_index_entry: 0,
            rolling_base_ms: None,
        };
        let trusted = indexes_exist
            && segment.offset_index.is_sane(size)
            && segment.time_index.is_sane()
            && segment.load_tail()?;
        if active {
            segment.rolling_base_ms = segment.first_batch_time(Some(now_ms))?;
        }
        Ok((segment, !trusted))
    }

    /// Walks the batches after the last offset-index entry to find the segment's end
    /// and latest timestamps. False if anything there does not add up.
    fn load_tail(&mut self) -> Result<bool, LogError> {
        let (mut next_offset, mut pos) = self
            .offset_index
            .last_entry()
            .unwrap_or((self.base_offset, 0));
        if let Some((ts, offset)) = self.time_index.last_entry() {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = offset;
        }
        let tail_start = pos;
        while pos < self.size {
            let Some(h) = self.read_header(pos)? else {
                return Ok(false);
            };
            if pos + h.size() > self.size || h.base_offset < next_offset {
                return Ok(false);
            }
            self.note_timestamp(&h);
            next_offset = h.last_offset() + 1;
            pos += h.size();
        }
        self.next_offset = next_offset;
        self.bytes_since_index_entry = self.size - tail_start;
        // The time index must not point past the batches actually there.
        Ok(self.offset_of_max_timestamp < next_offset || self.size == 0)
    }

    /// Scans the whole segment from byte 0, validating each batch (length, magic,
    /// CRC-32C, increasing offsets), rebuilds both indexes and cuts the file at the
    /// first batch that fails. Returns the number of bytes cut.
    pub fn recover(&mut self, config: &LogConfig) -> Result<u64, LogError> {
        self.offset_index
            .make_writable(config.segment_index_bytes)?;
        self.offset_index.reset();
        self.time_index.make_writable(config.segment_index_bytes)?;
        self.time_index.reset();
        self.next_offset = self.base_offset;
        self.max_timestamp = NO_TIMESTAMP;
        self.offset_of_max_timestamp = self.base_offset;
        self.bytes_since_index_entry = 0;

        let file_len = self.log.metadata()?.len();
        let mut pos = 0;
        let mut buf = Vec::new();
        while pos < file_len {
            let Some(h) = self.read_valid_batch(pos, file_len, &mut buf)? else {
                break;
            };
            self.index_batch(pos, &h, config.index_interval_bytes);
            pos += h.size();
        }
        self.size = pos;
        if pos < file_len {
            tracing::warn!(
                segment = %self.log_path.display(),
                valid_bytes = pos,
                cut_bytes = file_len - pos,
                "truncating a torn or corrupt tail found by recovery"
            );
            self.log.set_len(pos)?;
        }
        // What survived may so far live only in the page cache of the crashed process.
        self.log.sync_data()?;
        Ok(file_len - pos)
    }

    /// Reads and fully validates the batch at `pos`; `None` if it is torn or corrupt.
    fn read_valid_batch(
        &self,
        pos: u64,
        file_len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<BatchHeader>, LogError> {
        let mut prefix = [0u8; LOG_OVERHEAD];
        if file_len - pos < LOG_OVERHEAD as u64 {
            return Ok(None);
        }
        self.log.read_exact_at(&mut prefix, pos)?;
        let Ok(size) = batch::batch_size_from_prefix(&prefix) else {
            return Ok(None);
        };
        if size > file_len - pos {
            return Ok(None);
        }
        buf.resize(size as usize, 0);
        self.log.read_exact_at(buf, pos)?;
        let Ok(parsed) = RecordBatch::parse(buf) else {
            return Ok(None);
        };
        let h = *parsed.header();
        let fits = h.base_offset >= self.next_offset
            && h.last_offset_delta >= 0
            && h.last_offset() - self.base_offset <= MAX_RELATIVE_OFFSET;
        Ok(fits.then_some(h))
    }

    /// Accounts one batch written at `pos`: a sparse offset-index entry once
    /// `index.interval.bytes` have passed (with a time-index entry if the max
    /// timestamp rose), the max timestamp, the next offset.
    fn index_batch(&mut self, pos: u64, h: &BatchHeader, index_interval_bytes: u64) {
        let indexed = self.bytes_since_index_entry >= index_interval_bytes;
        if indexed {
            self.offset_index.append(h.base_offset, pos);
            self.bytes_since_index_entry = 0;
        }
        self.note_timestamp(h);
        if indexed {
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp, false);
        }
        self.bytes_since_index_entry += h.size();
        self.next_offset = h.last_offset() + 1;
    }

    fn note_timestamp(&mut self, h: &BatchHeader) {
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.base_offset;
        }
    }

    /// Appends already validated batches with their offsets assigned. `headers` gives
    /// each batch's position in `batches` and its header.
    pub fn append(
        &mut self,
        batches: &[u8],
        headers: &[(usize, BatchHeader)],
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let start = self.size;
        if let Err(e) = self.log.write_all_at(batches, start) {
            // Drop a partial write so the next append lands at the same place.
            let _ = self.log.set_len(start);
            return Err(e.into());
        }
        for (pos, h) in headers {
            self.index_batch(start + *pos as u64, h, index_interval_bytes);
        }
        self.size += batches.len() as u64;
        self.rolling_base_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// The header of the batch at `pos`, or `None` past the end.
    fn read_header(&self, pos: u64) -> Result<Option<BatchHeader>, LogError> {
        if pos + HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.log.read_exact_at(&mut buf, pos)?;
        match BatchHeader::parse(&buf) {
            Ok(h) => Ok(Some(h)),
            // Loaded segments hold only valid batches, so this is damage after the fact.
            Err(e) => Err(LogError::CorruptMessage(format!(
                "{} at byte {pos}: {e}",
                self.log_path.display()
            ))),
        }
    }

    /// Calls `f(batch bytes)` for every batch in order, reading one batch at a time
    /// (the cleaner walks whole segments this way).
    pub fn for_each_batch(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let mut pos = 0;
        let mut buf = Vec::new();
        while let Some(h) = self.read_header(pos)? {
            buf.resize(h.size() as usize, 0);
            self.log.read_exact_at(&mut buf, pos)?;
            f(&buf)?;
            pos += h.size();
        }
        Ok(())
    }

    fn read_batch(&self, pos: u64, h: &BatchHeader) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; h.size() as usize];
        self.log.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// The first batch whose last offset is >= `offset`: (position, header).
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut pos = self.offset_index.lookup(offset).map_or(0, |(_, p)| p);
        while let Some(h) = self.read_header(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.size();
        }
        Ok(None)
    }

    /// Whole batches from the one holding `fetch_offset`, up to `max_bytes` and below
    /// `max_offset`. The first batch is returned even when larger than `max_bytes` if
    /// `min_one_batch`.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<SegmentRead, LogError> {
        let Some((position, first)) = self.find_batch(fetch_offset)? else {
            return Ok(SegmentRead::NotInSegment);
        };
        if first.base_offset >= max_offset || (first.size() > max_bytes && !min_one_batch) {
            return Ok(SegmentRead::Nothing);
        }
        let mut len = first.size();
        let mut record_count = first.record_count.max(0) as u64;
        while let Some(h) = self.read_header(position + len)? {
            if h.base_offset >= max_offset || len + h.size() > max_bytes {
                break;
            }
            len += h.size();
            record_count += h.record_count.max(0) as u64;
        }
        Ok(SegmentRead::Slice(ReadSlice {
            file: Arc::clone(&self.log),
            position,
            len,
            record_count,
        }))
    }

    /// Kafka's ListOffsets by timestamp within this segment: the first record at or
    /// after `min_offset` with timestamp >= `timestamp`, as (offset, timestamp).
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
        limit: u64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self.max_timestamp < timestamp || self.next_offset <= min_offset {
            return Ok(None);
        }
        // Batches before the entry's offset all have smaller max timestamps.
        let start = self
            .time_index
            .lookup(timestamp)
            .map_or(self.base_offset, |(_, offset)| offset)
            .max(min_offset);
        let Some((mut pos, _)) = self.find_batch(start)? else {
            return Ok(None);
        };
        while let Some(h) = self.read_header(pos)? {
            if h.max_timestamp >= timestamp && h.last_offset() >= min_offset {
                if h.is_log_append_time() {
                    // Every record of the batch carries its max timestamp.
                    return Ok(Some((h.base_offset.max(min_offset), h.max_timestamp)));
                }
                let bytes = self.read_batch(pos, &h)?;
                let found =
                    RecordBatch::parse(&bytes)?.find_timestamp(timestamp, min_offset, limit)?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            pos += h.size();
        }
        Ok(None)
    }

    /// The record with this segment's largest timestamp (for LogAppendTime batches, the
    /// batch's base offset). `None` if the segment is empty.
    pub fn max_timestamp_record(&self, limit: u64) -> Result<Option<(i64, i64)>, LogError> {
        let Some((pos, h)) = self.find_batch(self.offset_of_max_timestamp)? else {
            return Ok(None);
        };
        if !h.is_log_append_time() {
            let bytes = self.read_batch(pos, &h)?;
            if let Some(found) =
                RecordBatch::parse(&bytes)?.find_timestamp(h.max_timestamp, 0, limit)?
            {
                return Ok(Some(found));
            }
        }
        Ok(Some((h.base_offset, h.max_timestamp)))
    }

    /// Drops every batch at or after the one holding `offset` (a cut always falls on a
    /// batch boundary, so an offset inside a batch drops that whole batch). Returns
    /// the new next offset.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let Some((pos, h)) = self.find_batch(offset)? else {
            return Ok(self.next_offset);
        };
        self.log.set_len(pos)?;
        self.log.sync_data()?;
        self.size = pos;
        self.next_offset = h.base_offset.min(offset);
        self.offset_index.truncate_to(self.next_offset);
        self.time_index.truncate_to(self.next_offset);
        self.bytes_since_index_entry =
            self.size - self.offset_index.last_entry().map_or(0, |e| e.1);
        self.recompute_max_timestamp()?;
        Ok(self.next_offset)
    }

    /// After a truncation: the last time-index entry bounds everything before its
    /// batch, so only the batches from there on need their headers read.
    fn recompute_max_timestamp(&mut self) -> Result<(), LogError> {
        let (ts, offset) = self
            .time_index
            .last_entry()
            .unwrap_or((NO_TIMESTAMP, self.base_offset));
        self.max_timestamp = ts;
        self.offset_of_max_timestamp = offset;
        let Some((mut pos, _)) = self.find_batch(offset)? else {
            return Ok(());
        };
        while let Some(h) = self.read_header(pos)? {
            self.note_timestamp(&h);
            pos += h.size();
        }
        Ok(())
    }

    /// Makes a closed segment the active one again (after a truncation).
    pub fn make_active(&mut self, config: &LogConfig, now_ms: Option<i64>) -> Result<(), LogError> {
        self.offset_index
            .make_writable(config.segment_index_bytes)?;
        self.time_index.make_writable(config.segment_index_bytes)?;
        self.rolling_base_ms = self.first_batch_time(now_ms)?;
        Ok(())
    }

    /// When a reopened segment started, for `segment.ms`: like Kafka, the first batch's
    /// max timestamp, or else `now_ms`. `None` (the next append sets it) for an empty
    /// segment or when neither is known.
    fn first_batch_time(&self, now_ms: Option<i64>) -> Result<Option<i64>, LogError> {
        let first = self.read_header(0)?;
        Ok(first.and_then(|h| Some(h.max_timestamp).filter(|&ts| ts >= 0).or(now_ms)))
    }

    /// Ends the segment's active life: the final time-index entry, indexes trimmed to
    /// their entries and mapped read-only, everything synced.
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp, true);
        self.offset_index.trim()?;
        self.time_index.trim()?;
        self.log.sync_data()?;
        Ok(())
    }

    /// The log file, for a sync run without the log's lock.
    pub fn file(&self) -> Arc<File> {
        self.log.clone()
    }

    /// Writes the log file's data to disk.
    pub fn sync(&self) -> Result<(), LogError> {
        self.log.sync_data()?;
        Ok(())
    }

    /// Unmaps and unlinks the files. Readers holding the `Arc<File>` keep reading.
    pub fn delete(self) -> Result<(), LogError> {
        let Segment {
            log_path,
            log,
            offset_index,
            time_index,
            ..
        } = self;
        drop(log);
        offset_index.delete()?;
        time_index.delete()?;
        remove_if_exists(&log_path)
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The timestamp retention compares: the newest record's, or the file's mtime when
    /// the records carry none (as Kafka does).
    pub fn largest_timestamp(&self) -> Result<i64, LogError> {
        if self.max_timestamp >= 0 {
            return Ok(self.max_timestamp);
        }
        let modified = self.log.metadata()?.modified()?;
        let ms = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(ms)
    }

    pub fn indexes_full(&self) -> bool {
        self.offset_index.is_full() || self.time_index.is_full()
    }

    /// Whether the first append is more than `segment_ms` old.
    pub fn is_older_than(&self, segment_ms: i64, now_ms: i64) -> bool {
        !self.is_empty()
            && self
                .rolling_base_ms
                .is_some_and(|t| now_ms.saturating_sub(t) > segment_ms)
    }

    #[cfg(test)]
    pub fn index_entries(&self) -> (usize, usize) {
        (self.offset_index.entries(), self.time_index.entries())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_values_batch, set_base_offset};

    fn config() -> LogConfig {
        LogConfig {
            index_interval_bytes: 100,
            segment_index_bytes: 1024,
            ..LogConfig::default()
        }
    }

    /// Appends `n` single-record batches of 20-byte values at offsets base.. with
    /// timestamps 1000, 1010, ...; returns each batch's position.
    fn fill(seg: &mut Segment, n: usize) -> Vec<u64> {
        let mut positions = Vec::new();
        for i in 0..n {
            let mut b = build_values_batch(&[&[i as u8; 20]], 1000 + 10 * i as i64);
            set_base_offset(&mut b, seg.next_offset());
            let h = *RecordBatch::parse(&b).unwrap().header();
            positions.push(seg.size());
            seg.append(&b, &[(0, h)], 100, 0).unwrap();
        }
        positions
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(base_offset_of("00000000000000000042.log"), Some(42));
        assert_eq!(base_offset_of("00000000000000000042.index"), None);
        assert_eq!(base_offset_of("42.log"), None);
    }

    #[test]
    fn append_builds_sparse_indexes_and_find_batch_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 100, &config()).unwrap();
        let positions = fill(&mut seg, 10);
        assert_eq!(seg.next_offset(), 110);
        // Each batch is > 100 / 2 bytes, so an entry every second batch after the first.
        let batch_size = positions[1];
        assert!(batch_size > 50 && batch_size < 100, "{batch_size}");
        let (offset_entries, time_entries) = seg.index_entries();
        assert_eq!(offset_entries, 4);
        assert_eq!(time_entries, 4);
        assert_eq!(seg.offset_index.lookup(105), Some((104, positions[4])));
        for (i, pos) in positions.iter().enumerate() {
            let (found, h) = seg.find_batch(100 + i as i64).unwrap().unwrap();
            assert_eq!((found, h.base_offset), (*pos, 100 + i as i64));
        }
        assert!(seg.find_batch(110).unwrap().is_none());
        assert_eq!(seg.max_timestamp(), 1090);
    }

    #[test]
    fn reopen_after_seal_trusts_indexes_and_finds_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, &config()).unwrap();
        fill(&mut seg, 7);
        seg.seal().unwrap();
        let size = seg.size();
        drop(seg);
        let index_len = std::fs::metadata(dir.path().join(file_name(0, "index")))
            .unwrap()
            .len();
        assert_eq!(index_len, 3 * 8, "trimmed to its entries");
        let (seg, needs_recovery) = Segment::open(dir.path(), 0, &config(), false, 0).unwrap();
        assert!(!needs_recovery);
        assert_eq!(seg.size(), size);
        assert_eq!(seg.next_offset(), 7);
        assert_eq!(seg.max_timestamp(), 1060);
        assert_eq!(seg.offset_of_max_timestamp, 6);
    }

    #[test]
    fn missing_index_requires_recovery_which_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, &config()).unwrap();
        fill(&mut seg, 7);
        seg.seal().unwrap();
        drop(seg);
        std::fs::remove_file(dir.path().join(file_name(0, "index"))).unwrap();
        let (mut seg, needs_recovery) = Segment::open(dir.path(), 0, &config(), true, 0).unwrap();
        assert!(needs_recovery);
        assert_eq!(seg.recover(&config()).unwrap(), 0);
        assert_eq!(seg.next_offset(), 7);
        assert_eq!(seg.index_entries().0, 3);
    }

    #[test]
    fn truncate_cuts_at_batch_start_and_drops_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, &config()).unwrap();
        let positions = fill(&mut seg, 10);
        assert_eq!(seg.truncate_to(5).unwrap(), 5);
        assert_eq!(seg.size(), positions[5]);
        assert_eq!(seg.max_timestamp(), 1040);
        assert_eq!(seg.offset_index.last_entry(), Some((4, positions[4])));
        assert!(seg.find_batch(5).unwrap().is_none());
        assert_eq!(seg.log.metadata().unwrap().len(), positions[5]);
    }
}
