//! The leader epoch cache (Kafka's `LeaderEpochFileCache`): for every leader epoch
//! that wrote to this log, the offset of its first batch.
//!
//! Replication needs it twice: a leader answers a follower's "where does my epoch
//! end?" with [`LeaderEpochCache::end_offset_for`], and a follower truncates its log
//! to that answer before fetching, so that logs that diverged under different leaders
//! converge on the leader's.
//!
//! The entries are strictly increasing in both epoch and start offset; `assign`
//! restores that by dropping conflicting entries from the end, as Kafka does. The
//! cache is persisted beside the segments as `leader-epoch-checkpoint` in Kafka's text
//! format, rewritten atomically whenever it changes, and always ahead of the data: an
//! entry is written before the batches it describes, so a crash can only leave
//! entries past the log end, which `Log::open` truncates away.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::LogError;

/// Kafka's `UNDEFINED_EPOCH`: no epoch is known (OffsetsForLeaderEpoch).
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset is known.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// The checkpoint's file name in the partition directory, as Kafka names it.
pub(crate) const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Kafka's `LeaderEpochCheckpointFile.CURRENT_VERSION`.
const CHECKPOINT_VERSION: i32 = 0;

/// One epoch and the offset of the first batch it wrote (Kafka's `EpochEntry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The in-memory cache, without any file: every mutation reports whether it changed
/// something so the file-backed wrapper rewrites the checkpoint only then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// Sorted by epoch; start offsets strictly increase too.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// A cache holding `entries` after assigning them in order, so that a checkpoint
    /// written by anyone is brought back to the monotonic shape (Kafka loads the
    /// same way).
    pub fn from_entries(entries: impl IntoIterator<Item = EpochEntry>) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for e in entries {
            cache.assign(e.epoch, e.start_offset);
        }
        cache
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn earliest_entry(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// The epoch of the newest entry: the epoch of the last batch written, or the one
    /// about to be, on a leader.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed.
    ///
    /// Kafka's rules: the same epoch again is ignored unless it now starts earlier; an
    /// entry for an epoch or offset not above the latest removes every entry, from the
    /// end, whose epoch or start offset is not below the new one (the log has already
    /// diverged there, and monotonic entries keep the lookups simple). Negative epochs
    /// or offsets (batches written before epochs were stamped, where Kafka would
    /// throw) are ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let needed = self
            .latest_entry()
            .is_none_or(|l| l.epoch != epoch || start_offset < l.start_offset);
        if !needed {
            return false;
        }
        while let Some(last) = self.entries.last() {
            if last.epoch >= epoch || last.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `requested_epoch` and the offset
    /// where it ends, i.e. the start of the next higher epoch, or `log_end_offset` when
    /// the latest epoch is requested.
    ///
    /// - `UNDEFINED_EPOCH`, an empty cache, or an epoch above the latest: undefined
    ///   (`(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`).
    /// - An epoch below the first entry: `(requested_epoch, first start offset)`. The
    ///   epochs before it were removed with the log's head; the follower must not keep
    ///   anything past where the leader's known history starts.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end_offset);
        }
        // First entry with an epoch above the requested one.
        let higher = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested_epoch, next.start_offset),
        }
    }

    /// Kafka's `epochForOffset`: the epoch that wrote `offset`, if any entry covers it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Removes the entries starting at or after `end_offset` (the log was cut there).
    /// A negative offset does nothing. Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 {
            return false;
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: the entries starting at or before it
    /// collapse into one, the epoch of the last of them starting at `start_offset`
    /// (Kafka's `truncateFromStart`, so `end_offset_for` never points below the log
    /// start). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let removed = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if removed == 0 {
            return false;
        }
        let epoch = self.entries[removed - 1].epoch;
        let unchanged = removed == 1 && self.entries[0].start_offset == start_offset;
        self.entries.splice(
            ..removed,
            [EpochEntry {
                epoch,
                start_offset,
            }],
        );
        !unchanged
    }

    /// Drops every entry. Returns whether the cache changed.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }
}

/// A checkpoint that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// The cache of one log together with its checkpoint file, rewritten on every change.
#[derive(Debug)]
pub(crate) struct LeaderEpochFileCache {
    path: PathBuf,
    cache: LeaderEpochCache,
}

impl LeaderEpochFileCache {
    /// An empty cache for the log in `dir`; nothing is read or written yet.
    pub fn new(dir: &Path) -> LeaderEpochFileCache {
        LeaderEpochFileCache {
            path: dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
            cache: LeaderEpochCache::default(),
        }
    }

    pub fn cache(&self) -> &LeaderEpochCache {
        &self.cache
    }

    /// Reads the checkpoint into the cache. `Ok(false)` if there is no file.
    pub fn load(&mut self) -> Result<bool, CheckpointError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.cache = LeaderEpochCache::from_entries(parse_checkpoint(&self.path, &text)?);
        Ok(true)
    }

    /// Replaces the whole cache (a rebuild from the log) and persists it.
    pub fn replace(&mut self, cache: LeaderEpochCache) -> Result<(), LogError> {
        self.cache = cache;
        self.write()
    }

    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if self.cache.assign(epoch, start_offset) {
            self.write()?;
        }
        Ok(())
    }

    /// Assigns several entries and writes the checkpoint once.
    pub fn assign_all(
        &mut self,
        entries: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<(), LogError> {
        let mut changed = false;
        for (epoch, start_offset) in entries {
            changed |= self.cache.assign(epoch, start_offset);
        }
        if changed {
            self.write()?;
        }
        Ok(())
    }

    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        if self.cache.truncate_from_end(end_offset) {
            self.write()?;
        }
        Ok(())
    }

    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        if self.cache.truncate_from_start(start_offset) {
            self.write()?;
        }
        Ok(())
    }

    pub fn clear(&mut self) -> Result<(), LogError> {
        if self.cache.clear() {
            self.write()?;
        }
        Ok(())
    }

    /// Replaces the checkpoint atomically: a temporary file, synced, renamed over the
    /// old one, then the directory synced so the rename survives a crash.
    fn write(&self) -> Result<(), LogError> {
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(format_checkpoint(self.cache.entries()).as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Kafka's checkpoint text: the version, the entry count, then `epoch offset` lines.
pub(crate) fn format_checkpoint(entries: &[EpochEntry]) -> String {
    let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for e in entries {
        out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    out
}

/// Parses Kafka's checkpoint text. Like Kafka, an empty file (or one with only the
/// version) holds no entries, and a count that disagrees with the lines is an error.
pub(crate) fn parse_checkpoint(
    path: &Path,
    text: &str,
) -> Result<Vec<EpochEntry>, CheckpointError> {
    let malformed = |reason: String| CheckpointError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let mut lines = text.lines();
    let Some(version) = lines.next() else {
        return Ok(Vec::new());
    };
    match version.trim().parse::<i32>() {
        Ok(CHECKPOINT_VERSION) => {}
        Ok(v) => return Err(malformed(format!("unsupported version {v}"))),
        Err(_) => return Err(malformed(format!("malformed version line {version:?}"))),
    }
    let Some(count) = lines.next() else {
        return Ok(Vec::new());
    };
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| malformed(format!("malformed count line {count:?}")))?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for line in lines {
        let mut fields = line.split_whitespace();
        let entry =
            match (fields.next(), fields.next(), fields.next()) {
                (Some(epoch), Some(offset), None) => epoch
                    .parse()
                    .ok()
                    .zip(offset.parse().ok())
                    .map(|(epoch, start_offset)| EpochEntry {
                        epoch,
                        start_offset,
                    }),
                _ => None,
            };
        entries.push(entry.ok_or_else(|| malformed(format!("malformed line {line:?}")))?);
    }
    if entries.len() != count {
        return Err(malformed(format!(
            "expected {count} entries, found {}",
            entries.len()
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    fn cache_of(assigns: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for &(epoch, offset) in assigns {
            cache.assign(epoch, offset);
        }
        cache
    }

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    // The scenarios below are those of Kafka's LeaderEpochFileCacheTest, as values.

    #[test]
    fn latest_epoch_is_answered_with_the_log_end_offset() {
        let cache = cache_of(&[(2, 10)]);
        assert_eq!(cache.latest_epoch(), Some(2));
        assert_eq!(cache.entries(), &[e(2, 10)]);
        assert_eq!(cache.end_offset_for(2, 11), (2, 11));
        let cache = cache_of(&[(2, 11), (2, 12)]);
        assert_eq!(cache.end_offset_for(2, 14), (2, 14));
        let cache = cache_of(&[(2, 6)]);
        assert_eq!(cache.end_offset_for(2, 7), (2, 7));
    }

    #[test]
    fn undefined_answers() {
        // Undefined epoch requested, with entries and without.
        assert_eq!(
            cache_of(&[(2, 11), (3, 12)]).end_offset_for(UNDEFINED_EPOCH, 0),
            UNDEFINED
        );
        let empty = LeaderEpochCache::default();
        assert_eq!(empty.end_offset_for(UNDEFINED_EPOCH, 73), UNDEFINED);
        assert_eq!(empty.end_offset_for(0, 0), UNDEFINED);
        assert_eq!(empty.end_offset_for(7, 0), UNDEFINED);
        assert_eq!(empty.latest_epoch(), None);
        // An epoch above every known one.
        assert_eq!(cache_of(&[(2, 100)]).end_offset_for(3, 100), UNDEFINED);
    }

    #[test]
    fn an_epoch_below_the_first_ends_where_the_first_starts() {
        let cache = cache_of(&[(5, 11), (6, 12), (7, 13)]);
        assert_eq!(cache.end_offset_for(4, 0), (4, 11));
    }

    #[test]
    fn same_epoch_again_never_moves_its_start_later() {
        let mut cache = cache_of(&[(2, 9)]);
        assert!(!cache.assign(2, 10));
        assert_eq!(cache.entries(), &[e(2, 9)]);
        let cache = cache_of(&[(2, 6), (2, 10)]);
        assert_eq!(cache.entries(), &[e(2, 6)]);
        let cache = cache_of(&[(2, 6), (2, 7)]);
        assert_eq!(cache.entries(), &[e(2, 6)]);
    }

    #[test]
    fn a_new_epoch_at_the_same_offset_replaces_the_old_one() {
        assert_eq!(cache_of(&[(2, 9), (3, 9)]).entries(), &[e(3, 9)]);
    }

    #[test]
    fn the_same_epoch_starting_earlier_truncates_the_later_entries() {
        let cache = cache_of(&[(5, 11), (6, 12), (7, 13), (7, 12)]);
        assert_eq!(cache.entries(), &[e(5, 11), e(7, 12)]);
        assert_eq!(cache.end_offset_for(5, 0), (5, 12));
        assert_eq!(cache.end_offset_for(6, 0), (5, 12));
    }

    #[test]
    fn an_older_epoch_truncates_the_later_ones() {
        let cache = cache_of(&[(1, 5), (2, 6), (1, 7)]);
        assert_eq!(cache.latest_epoch(), Some(1));
        assert_eq!(cache.end_offset_for(1, 8), (1, 8));
        assert_eq!(cache.end_offset_for(2, 8), UNDEFINED);
        assert_eq!(cache.entries(), &[e(1, 7)]);
        // Epoch forward, offset backward: the last assignment wins.
        assert_eq!(cache_of(&[(2, 6), (3, 5)]).entries(), &[e(3, 5)]);
    }

    #[test]
    fn end_offsets_are_the_starts_of_the_next_epoch() {
        let cache = cache_of(&[(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)]);
        assert_eq!(cache.end_offset_for(2, 17), (2, 15));

        let cache = cache_of(&[(0, 10), (2, 13), (4, 17)]);
        assert_eq!(cache.end_offset_for(1, 0), (0, 13));
        assert_eq!(cache.end_offset_for(2, 0), (2, 17));
        assert_eq!(cache.end_offset_for(3, 0), (2, 17));
    }

    #[test]
    fn leaders_changing_many_times() {
        let mut cache = cache_of(&[(0, 0), (1, 0)]);
        assert_eq!(cache.latest_epoch(), Some(1));
        assert_eq!(cache.end_offset_for(1, 0), (1, 0));
        assert_eq!(cache.end_offset_for(0, 0), (0, 0));
        assert_eq!(cache.end_offset_for(1, 5), (1, 5));
        assert_eq!(cache.end_offset_for(0, 5), (0, 0));
        cache.assign(2, 5);
        assert_eq!(cache.end_offset_for(2, 10), (2, 10));
        assert_eq!(cache.end_offset_for(1, 10), (1, 5));
        assert_eq!(cache.end_offset_for(0, 10), (0, 0));
    }

    #[test]
    fn a_follower_receiving_many_batches() {
        let mut cache = cache_of(&[(0, 0), (0, 1), (0, 2)]);
        assert_eq!(cache.latest_epoch(), Some(0));
        assert_eq!(cache.end_offset_for(0, 3), (0, 3));
        for o in 3..6 {
            cache.assign(1, o);
        }
        assert_eq!(cache.end_offset_for(1, 6), (1, 6));
        for o in 6..9 {
            cache.assign(2, o);
        }
        assert_eq!(cache.latest_epoch(), Some(2));
        assert_eq!(cache.end_offset_for(2, 9), (2, 9));
        assert_eq!(cache.end_offset_for(0, 9), (0, 3));
        assert_eq!(cache.end_offset_for(1, 9), (1, 6));
    }

    fn three() -> LeaderEpochCache {
        cache_of(&[(2, 6), (3, 8), (4, 11)])
    }

    #[test]
    fn truncate_from_end_cases() {
        let mut c = three();
        assert!(c.truncate_from_end(8));
        assert_eq!(c.entries(), &[e(2, 6)]);
        let mut c = three();
        assert!(c.truncate_from_end(9));
        assert_eq!(c.latest_epoch(), Some(3));
        assert_eq!(c.entries(), &[e(2, 6), e(3, 8)]);
        let mut c = three();
        assert!(!c.truncate_from_end(UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c, three());
        let mut c = cache_of(&[(2, 10), (4, 15), (10, 20)]);
        c.truncate_from_end(18);
        assert_eq!(c.entries(), &[e(2, 10), e(4, 15)]);
        assert!(!LeaderEpochCache::default().truncate_from_end(7));
    }

    #[test]
    fn truncate_from_start_cases() {
        let run = |start: i64| {
            let mut c = three();
            let changed = c.truncate_from_start(start);
            (changed, c.entries().to_vec())
        };
        // On an epoch boundary: that entry is kept.
        assert_eq!(run(8), (true, vec![e(3, 8), e(4, 11)]));
        // Between boundaries: the epoch in force moves up to the new start.
        assert_eq!(run(9), (true, vec![e(3, 9), e(4, 11)]));
        // Before or on the first entry: nothing changes.
        assert_eq!(run(1), (false, three().entries().to_vec()));
        assert_eq!(run(6), (false, three().entries().to_vec()));
        assert_eq!(
            run(UNDEFINED_EPOCH_OFFSET),
            (false, three().entries().to_vec())
        );
        // At or past the last entry: only the last is left.
        assert_eq!(run(11), (true, vec![e(4, 11)]));
        assert_eq!(run(15), (true, vec![e(4, 15)]));

        let mut c = cache_of(&[(0, 0), (1, 7), (2, 10)]);
        c.truncate_from_start(5);
        assert_eq!(c.entries(), &[e(0, 5), e(1, 7), e(2, 10)]);
        assert!(!LeaderEpochCache::default().truncate_from_start(7));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = three();
        c.truncate_from_end(11);
        c.truncate_from_start(8);
        assert_eq!(c.entries(), &[e(3, 8)]);
        assert!(c.clear());
        assert!(c.is_empty());
        assert!(!c.clear());
    }

    #[test]
    fn epoch_for_offset() {
        let c = cache_of(&[(0, 10), (1, 20), (5, 30)]);
        assert_eq!(c.epoch_for_offset(25), Some(1));
        assert_eq!(c.epoch_for_offset(20), Some(1));
        assert_eq!(c.epoch_for_offset(30), Some(5));
        assert_eq!(c.epoch_for_offset(50), Some(5));
        assert_eq!(c.epoch_for_offset(5), None);
    }

    #[test]
    fn negative_epochs_and_offsets_are_ignored() {
        let mut c = LeaderEpochCache::default();
        assert!(!c.assign(-1, 0));
        assert!(!c.assign(0, -1));
        assert!(c.is_empty());
    }

    #[test]
    fn checkpoint_text_is_kafkas_format() {
        let entries = [e(0, 1), e(1, 2)];
        let text = format_checkpoint(&entries);
        assert_eq!(text, "0\n2\n0 1\n1 2\n");
        let path = Path::new("leader-epoch-checkpoint");
        assert_eq!(parse_checkpoint(path, &text).unwrap(), entries);
        assert_eq!(parse_checkpoint(path, "").unwrap(), vec![]);
        assert_eq!(parse_checkpoint(path, "0\n").unwrap(), vec![]);
        assert_eq!(parse_checkpoint(path, "0\n0\n").unwrap(), vec![]);
        for bad in [
            "1\n0\n",
            "x\n",
            "0\nx\n",
            "0\n2\n0 1\n",
            "0\n1\n0 1 2\n",
            "0\n1\n0\n",
        ] {
            assert!(
                matches!(
                    parse_checkpoint(path, bad),
                    Err(CheckpointError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_cache_round_trip_and_atomic_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
        let mut cache = LeaderEpochFileCache::new(dir.path());
        assert!(!cache.load().unwrap());
        assert!(!path.exists(), "nothing written until something changes");
        cache.assign(2, 6).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n1\n2 6\n");
        cache.assign_all([(3, 8), (4, 11)]).unwrap();
        cache.truncate_from_end(11).unwrap();
        cache.truncate_from_start(8).unwrap();

        let mut reloaded = LeaderEpochFileCache::new(dir.path());
        assert!(reloaded.load().unwrap());
        assert_eq!(reloaded.cache().entries(), &[e(3, 8)]);
        // The temporary file never outlives a write.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![LEADER_EPOCH_CHECKPOINT_FILE.to_string()]);

        // A write that changes nothing does not touch the file.
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        reloaded.assign(3, 9).unwrap();
        reloaded.truncate_from_start(8).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);

        reloaded.clear().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "0\n0\n");
        // A stale temporary file from a crashed write is simply replaced.
        fs::write(path.with_extension("tmp"), "garbage").unwrap();
        reloaded.assign(7, 70).unwrap();
        let mut again = LeaderEpochFileCache::new(dir.path());
        again.load().unwrap();
        assert_eq!(again.cache().entries(), &[e(7, 70)]);
    }

    /// A plain model of the cache: a list rebuilt from scratch by each operation's
    /// definition, against the incremental implementation.
    #[derive(Clone, Debug)]
    enum Op {
        Assign(i32, i64),
        End(i64),
        Start(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i32..12, 0i64..60).prop_map(|(e, o)| Op::Assign(e, o)),
            1 => (-1i64..60).prop_map(Op::End),
            1 => (-1i64..60).prop_map(Op::Start),
        ]
    }

    proptest! {
        #[test]
        fn cache_matches_a_model(ops in prop::collection::vec(op(), 1..40), queries in prop::collection::vec((-1i32..14, 0i64..80), 5)) {
            let mut cache = LeaderEpochCache::default();
            let mut model: Vec<(i32, i64)> = Vec::new();
            for op in ops {
                let before = model.clone();
                let changed = match op {
                    Op::Assign(epoch, offset) => {
                        let needed = model.last().is_none_or(|&(le, lo)| le != epoch || offset < lo);
                        if needed {
                            model.retain(|&(e, o)| e < epoch && o < offset);
                            model.push((epoch, offset));
                        }
                        cache.assign(epoch, offset)
                    }
                    Op::End(end) => {
                        if end >= 0 {
                            model.retain(|&(_, o)| o < end);
                        }
                        cache.truncate_from_end(end)
                    }
                    Op::Start(start) => {
                        if let Some(&(epoch, _)) = model.iter().rev().find(|&&(_, o)| o <= start) {
                            model.retain(|&(_, o)| o > start);
                            model.insert(0, (epoch, start));
                        }
                        cache.truncate_from_start(start)
                    }
                };
                let got: Vec<(i32, i64)> = cache.entries().iter().map(|e| (e.epoch, e.start_offset)).collect();
                prop_assert_eq!(&got, &model);
                prop_assert_eq!(changed, before != model);
                // Strictly increasing in both fields.
                prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
            }
            for (requested, leo) in queries {
                let expected = if requested == UNDEFINED_EPOCH || model.is_empty() {
                    UNDEFINED
                } else if model.last().unwrap().0 == requested {
                    (requested, leo)
                } else {
                    let floor = model.iter().rev().find(|&&(e, _)| e <= requested);
                    match (floor, model.iter().find(|&&(e, _)| e > requested)) {
                        (_, None) => UNDEFINED,
                        (None, Some(&(_, o))) => (requested, o),
                        (Some(&(e, _)), Some(&(_, o))) => (e, o),
                    }
                };
                prop_assert_eq!(cache.end_offset_for(requested, leo), expected);
            }
        }
    }
}
