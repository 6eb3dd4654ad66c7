//! The sparse time index (`.timeindex`): Kafka's format, 12-byte entries of
//! (timestamp: i64 BE, offset relative to the segment base: u32 BE).
//!
//! An entry (T, o) says: T is the largest timestamp up to the batch at offset o, and
//! that batch is the first to reach it. Timestamps strictly increase between entries.
//! So every batch before offset o has a max timestamp below T, and a search for the
//! first record with timestamp >= t can start at the last entry with T <= t.

use std::path::Path;

use super::index_file::IndexFile;
use super::LogError;

const ENTRY_SIZE: usize = 12;

pub(crate) struct TimeIndex {
    base_offset: i64,
    file: IndexFile,
}

fn decode(entry: &[u8]) -> (i64, u32) {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&entry[..8]);
    let rel = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
    (i64::from_be_bytes(ts), rel)
}

impl TimeIndex {
    /// A new, empty, writable index (an existing file is discarded).
    pub fn create(path: &Path, base_offset: i64, max_bytes: u64) -> Result<TimeIndex, LogError> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::create(path, ENTRY_SIZE, max_bytes)?,
        })
    }

    /// Opens an existing index; writable (grown to `preallocate`) for the active
    /// segment, read-only otherwise. Call [`TimeIndex::is_sane`] before trusting it.
    pub fn open(
        path: &Path,
        base_offset: i64,
        preallocate: Option<u64>,
    ) -> Result<TimeIndex, LogError> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::open(path, ENTRY_SIZE, preallocate)?,
        })
    }

    fn entry(&self, i: usize) -> (i64, i64) {
        let (ts, rel) = decode(self.file.entry(i));
        (ts, self.base_offset + rel as i64)
    }

    pub fn entries(&self) -> usize {
        self.file.entries()
    }

    /// The last entry: (timestamp, offset).
    pub fn last_entry(&self) -> Option<(i64, i64)> {
        let n = self.entries();
        (n > 0).then(|| self.entry(n - 1))
    }

    /// Cheap plausibility check of an index found on disk: timestamps increase and
    /// offsets do not decrease (a crash's zero-filled tail breaks that).
    pub fn is_sane(&self) -> bool {
        let n = self.entries();
        if n <= 1 {
            return true;
        }
        let (first_ts, first_off) = self.entry(0);
        let (last_ts, last_off) = self.entry(n - 1);
        last_ts > first_ts && last_off >= first_off
    }

    /// The last entry with timestamp <= `timestamp`: (timestamp, offset).
    pub fn lookup(&self, timestamp: i64) -> Option<(i64, i64)> {
        let i = self.file.last_matching(|e| decode(e).0 <= timestamp)?;
        Some(self.entry(i))
    }

    /// Adds (timestamp, offset) if the timestamp is a new maximum. Only the final entry
    /// of a closing segment may use the slot kept free by [`TimeIndex::is_full`].
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64, closing: bool) -> bool {
        if let Some((last_ts, last_off)) = self.last_entry() {
            if timestamp <= last_ts || offset < last_off {
                return false;
            }
        }
        if self.is_full() && !closing {
            return false;
        }
        let Ok(rel) = u32::try_from(offset - self.base_offset) else {
            return false;
        };
        let mut entry = [0u8; ENTRY_SIZE];
        entry[..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&rel.to_be_bytes());
        self.file.push(&entry)
    }

    /// Full while one slot is left: that one is kept for the segment's final entry.
    pub fn is_full(&self) -> bool {
        self.file.entries() + 1 >= self.file.capacity()
    }

    /// Drops the entries for offsets >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        // Offsets are non-decreasing, so the kept entries are a prefix.
        let base = self.base_offset;
        let keep = self
            .file
            .partition_point(|e| base + (decode(e).1 as i64) < offset);
        self.file.truncate_entries(keep);
    }

    pub fn reset(&mut self) {
        self.file.truncate_entries(0);
    }

    pub fn make_writable(&mut self, max_bytes: u64) -> Result<(), LogError> {
        self.file.make_writable(max_bytes)
    }

    pub fn trim(&mut self) -> Result<(), LogError> {
        self.file.trim()
    }

    pub fn delete(self) -> Result<(), LogError> {
        self.file.delete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_last_entry_at_or_below_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000050.timeindex");
        let mut index = TimeIndex::create(&path, 50, 120).unwrap();
        assert!(index.maybe_append(1000, 50, false));
        assert!(!index.maybe_append(1000, 55, false), "not a new maximum");
        assert!(index.maybe_append(2000, 60, false));
        assert!(index.maybe_append(3000, 70, false));
        assert_eq!(index.lookup(999), None);
        assert_eq!(index.lookup(1000), Some((1000, 50)));
        assert_eq!(index.lookup(2999), Some((2000, 60)));
        assert_eq!(index.lookup(i64::MAX), Some((3000, 70)));
        assert_eq!(index.last_entry(), Some((3000, 70)));
        index.truncate_to(60);
        assert_eq!(index.last_entry(), Some((1000, 50)));
    }

    #[test]
    fn keeps_last_slot_for_the_closing_entry_and_reopens_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.timeindex");
        let mut index = TimeIndex::create(&path, 0, 36).unwrap(); // 3 entries
        assert!(index.maybe_append(10, 0, false));
        assert!(index.maybe_append(20, 1, false));
        assert!(index.is_full());
        assert!(!index.maybe_append(30, 2, false));
        assert!(index.maybe_append(30, 2, true));
        index.trim().unwrap();
        drop(index);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 36);
        let reopened = TimeIndex::open(&path, 0, None).unwrap();
        assert!(reopened.is_sane());
        assert_eq!(reopened.last_entry(), Some((30, 2)));
        assert_eq!(reopened.lookup(25), Some((20, 1)));
    }

    #[test]
    fn untrimmed_file_with_zero_tail_is_not_sane() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.timeindex");
        let mut index = TimeIndex::create(&path, 0, 120).unwrap();
        index.maybe_append(500, 3, false);
        drop(index); // a crash: the file keeps its preallocated size
        let reopened = TimeIndex::open(&path, 0, None).unwrap();
        assert_eq!(reopened.entries(), 10);
        assert!(!reopened.is_sane());
    }
}
