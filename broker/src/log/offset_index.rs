//! The sparse offset index (`.index`): Kafka's format, 8-byte entries of
//! (offset relative to the segment base: u32 BE, byte position in the .log: u32 BE),
//! strictly increasing in both. A lookup gives where to start scanning batch headers.

use std::path::Path;

use super::index_file::IndexFile;
use super::LogError;

const ENTRY_SIZE: usize = 8;

pub(crate) struct OffsetIndex {
    base_offset: i64,
    file: IndexFile,
}

fn decode(entry: &[u8]) -> (u32, u32) {
    let rel = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let pos = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
    (rel, pos)
}

impl OffsetIndex {
    /// A new, empty, writable index (an existing file is discarded).
    pub fn create(path: &Path, base_offset: i64, max_bytes: u64) -> Result<OffsetIndex, LogError> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::create(path, ENTRY_SIZE, max_bytes)?,
        })
    }

    /// Opens an existing index; writable (grown to `preallocate`) for the active
    /// segment, read-only otherwise. Call [`OffsetIndex::is_sane`] before trusting it.
    pub fn open(
        path: &Path,
        base_offset: i64,
        preallocate: Option<u64>,
    ) -> Result<OffsetIndex, LogError> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::open(path, ENTRY_SIZE, preallocate)?,
        })
    }

    fn entry(&self, i: usize) -> (i64, u64) {
        let (rel, pos) = decode(self.file.entry(i));
        (self.base_offset + rel as i64, pos as u64)
    }

    pub fn entries(&self) -> usize {
        self.file.entries()
    }

    pub fn last_entry(&self) -> Option<(i64, u64)> {
        let n = self.entries();
        (n > 0).then(|| self.entry(n - 1))
    }

    /// Cheap plausibility check of an index found on disk: entries increase (a
    /// preallocated file left by a crash ends in zero entries, which do not) and point
    /// inside the log.
    pub fn is_sane(&self, log_size: u64) -> bool {
        let n = self.entries();
        if n == 0 {
            return true;
        }
        let (first_off, first_pos) = self.entry(0);
        let (last_off, last_pos) = self.entry(n - 1);
        let increasing = n == 1 || (last_off > first_off && last_pos > first_pos);
        increasing && last_pos < log_size
    }

    /// The entry with the largest offset <= `offset`: (offset, position).
    pub fn lookup(&self, offset: i64) -> Option<(i64, u64)> {
        let rel = offset - self.base_offset;
        let i = self.file.last_matching(|e| (decode(e).0 as i64) <= rel)?;
        Some(self.entry(i))
    }

    /// Adds (offset -> position) if it extends the index and fits the format; false
    /// when skipped (the index is sparse, so a skipped entry only costs scan time).
    pub fn append(&mut self, offset: i64, position: u64) -> bool {
        if let Some((last_off, last_pos)) = self.last_entry() {
            if offset <= last_off || position <= last_pos {
                return false;
            }
        }
        let (Ok(rel), Ok(pos)) = (
            u32::try_from(offset - self.base_offset),
            u32::try_from(position),
        ) else {
            return false;
        };
        let mut entry = [0u8; ENTRY_SIZE];
        entry[..4].copy_from_slice(&rel.to_be_bytes());
        entry[4..].copy_from_slice(&pos.to_be_bytes());
        self.file.push(&entry)
    }

    pub fn is_full(&self) -> bool {
        self.file.entries() >= self.file.capacity()
    }

    /// Drops the entries for offsets >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        let keep = self
            .file
            .last_matching(|e| self.base_offset + (decode(e).0 as i64) < offset)
            .map_or(0, |i| i + 1);
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
    fn lookup_finds_largest_entry_at_or_below() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut index = OffsetIndex::create(&path, 100, 1024).unwrap();
        assert_eq!(index.lookup(150), None);
        assert!(index.append(110, 1000));
        assert!(index.append(120, 2000));
        assert!(index.append(130, 3000));
        assert!(!index.append(125, 4000), "offsets must increase");
        assert_eq!(index.lookup(105), None);
        assert_eq!(index.lookup(110), Some((110, 1000)));
        assert_eq!(index.lookup(129), Some((120, 2000)));
        assert_eq!(index.lookup(1_000_000), Some((130, 3000)));
        index.truncate_to(120);
        assert_eq!(index.entries(), 1);
        assert_eq!(index.lookup(1_000_000), Some((110, 1000)));
    }

    #[test]
    fn fills_up_then_trims_and_reopens_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.index");
        // 20 bytes round down to 2 entries.
        let mut index = OffsetIndex::create(&path, 0, 20).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        assert!(index.append(1, 10));
        assert!(!index.is_full());
        assert!(index.append(2, 20));
        assert!(index.is_full());
        assert!(!index.append(3, 30));

        let mut index = OffsetIndex::create(&path, 0, 80).unwrap();
        index.append(5, 50);
        index.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
        drop(index);

        let reopened = OffsetIndex::open(&path, 0, None).unwrap();
        assert_eq!(reopened.entries(), 1);
        assert_eq!(reopened.lookup(9), Some((5, 50)));
        assert!(reopened.is_sane(51));
        assert!(
            !reopened.is_sane(50),
            "an entry past the log end is not sane"
        );
        drop(reopened);

        let mut regrown = OffsetIndex::open(&path, 0, Some(80)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 80);
        assert_eq!(regrown.entries(), 1);
        assert!(regrown.append(6, 60));
        assert_eq!(regrown.lookup(100), Some((6, 60)));
    }

    #[test]
    fn untrimmed_file_with_zero_tail_is_not_sane() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.index");
        let mut index = OffsetIndex::create(&path, 0, 80).unwrap();
        index.append(5, 50);
        drop(index); // a crash: the file keeps its preallocated size
        let reopened = OffsetIndex::open(&path, 0, None).unwrap();
        assert_eq!(reopened.entries(), 10);
        assert!(!reopened.is_sane(1000));
    }
}
