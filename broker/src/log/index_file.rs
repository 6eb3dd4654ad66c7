//! A memory-mapped file of fixed-size index entries, shared by the offset and time
//! indexes.
//!
//! The active segment's index is preallocated to `segment.index.bytes` and mapped
//! writable, so appending an entry is a memcpy; a closed segment's index is trimmed to
//! its entries and mapped read-only at that size. The number of live entries is kept
//! in memory: the bytes past it are zeros (or stale after a crash, which the owner
//! detects and rebuilds).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};

use super::LogError;

/// Every index keeps room for at least this many entries, so the time index can
/// always take its final entry when its segment closes.
const MIN_ENTRIES: usize = 2;

enum Mapping {
    /// A zero-length file: nothing to map.
    Empty,
    ReadOnly(Mmap),
    Writable(MmapMut),
}

pub(crate) struct IndexFile {
    path: PathBuf,
    file: File,
    map: Mapping,
    entry_size: usize,
    entries: usize,
}

impl IndexFile {
    /// Opens (creating if missing) an index file. With `preallocate` the file is grown
    /// to that size (rounded down to whole entries) and mapped writable; without it is
    /// mapped read-only at its size. Live entries are taken to be the whole entries in
    /// the file as found; the owner validates them.
    pub fn open(
        path: &Path,
        entry_size: usize,
        preallocate: Option<u64>,
    ) -> Result<IndexFile, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            map: Mapping::Empty,
            entry_size,
            entries: (len / entry_size as u64) as usize,
        };
        match preallocate {
            Some(max_bytes) => index.make_writable(max_bytes)?,
            None => index.map_read_only()?,
        }
        Ok(index)
    }

    /// Creates an empty, preallocated, writable index, discarding any old file.
    pub fn create(path: &Path, entry_size: usize, max_bytes: u64) -> Result<IndexFile, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            map: Mapping::Empty,
            entry_size,
            entries: 0,
        };
        index.make_writable(max_bytes)?;
        Ok(index)
    }

    fn map_read_only(&mut self) -> Result<(), LogError> {
        let len = self.file.metadata()?.len() as usize;
        self.entries = self.entries.min(len / self.entry_size);
        self.map = Mapping::Empty;
        if len > 0 {
            // SAFETY: only this process writes index files, and never through this
            // read-only mapping's file while it is mapped (it is remapped first).
            let map = unsafe { MmapOptions::new().len(len).map(&self.file)? };
            self.map = Mapping::ReadOnly(map);
        }
        Ok(())
    }

    /// Grows the file to `max_bytes` (whole entries, never below the live entries) and
    /// maps it writable, e.g. when a closed segment becomes active again.
    pub fn make_writable(&mut self, max_bytes: u64) -> Result<(), LogError> {
        let wanted = (max_bytes as usize / self.entry_size)
            .max(self.entries)
            .max(MIN_ENTRIES);
        let len = wanted * self.entry_size;
        self.map = Mapping::Empty;
        self.file.set_len(len as u64)?;
        // SAFETY: the file is private to this index, which is its only writer.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&self.file)? };
        self.map = Mapping::Writable(map);
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        match &self.map {
            Mapping::Empty => &[],
            Mapping::ReadOnly(m) => m,
            Mapping::Writable(m) => m,
        }
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Entries the current mapping can hold.
    pub fn capacity(&self) -> usize {
        match &self.map {
            Mapping::Writable(m) => m.len() / self.entry_size,
            _ => self.entries,
        }
    }

    pub fn entry(&self, i: usize) -> &[u8] {
        let at = i * self.entry_size;
        &self.bytes()[at..at + self.entry_size]
    }

    /// Index of the last entry for which `is_at_or_below` holds, by binary search;
    /// the predicate must be true for a prefix of the entries and false after.
    pub fn last_matching(&self, is_at_or_below: impl Fn(&[u8]) -> bool) -> Option<usize> {
        self.partition_point(is_at_or_below).checked_sub(1)
    }

    /// How many leading entries satisfy `pred` (true for a prefix, false after).
    pub fn partition_point(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Appends an entry; false if the index is read-only or has no room.
    pub fn push(&mut self, entry: &[u8]) -> bool {
        let at = self.entries * self.entry_size;
        match &mut self.map {
            Mapping::Writable(m) if at + self.entry_size <= m.len() => {
                m[at..at + self.entry_size].copy_from_slice(entry);
                self.entries += 1;
                true
            }
            _ => false,
        }
    }

    /// Keeps the first `n` entries. The dropped ones are zeroed so a crash cannot
    /// bring them back as plausible entries.
    pub fn truncate_entries(&mut self, n: usize) {
        if n >= self.entries {
            return;
        }
        let (from, to) = (n * self.entry_size, self.entries * self.entry_size);
        if let Mapping::Writable(m) = &mut self.map {
            m[from..to].fill(0);
        }
        self.entries = n;
    }

    /// Writes dirty mapped pages back to the file.
    pub fn flush(&self) -> Result<(), LogError> {
        if let Mapping::Writable(m) = &self.map {
            m.flush()?;
        }
        Ok(())
    }

    /// Flushes, cuts the file to its live entries and maps it read-only: done when the
    /// segment stops being active.
    pub fn trim(&mut self) -> Result<(), LogError> {
        self.flush()?;
        self.map = Mapping::Empty;
        self.file.set_len((self.entries * self.entry_size) as u64)?;
        self.map_read_only()
    }

    /// Unmaps and unlinks the file.
    pub fn delete(self) -> Result<(), LogError> {
        let path = self.path.clone();
        drop(self);
        remove_if_exists(&path)
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
