//! The partition log: a directory of segments, the newest one active.
//!
//! Appends validate every batch before writing any, assign offsets and the leader
//! epoch by rewriting the batch headers in place and write the producer's bytes as
//! they are. A follower's appends carry the leader's offsets and epochs and are
//! written untouched. Reads hand out a file range for sendfile(2). A `.clean_shutdown`
//! marker lets a restart trust the indexes; without it the last segment is rescanned
//! and its torn tail cut. The leader epoch cache (epoch_cache.rs) follows every change
//! of the log's ends.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::iter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;

use super::batch::{self, BatchHeader};
use super::cleaner::{self, CleanerParts, CleanerState};
use super::codec::decompressed_limit;
use super::config::TimestampType;
use super::epoch_cache::{CheckpointError, LeaderEpochCache, LeaderEpochFileCache};
use super::index_file::remove_if_exists;
use super::scan::scan_batch_headers;
use super::segment::{self, Segment, SegmentRead, MAX_RELATIVE_OFFSET, MAX_SEGMENT_BYTES};
use super::validate::{validate_client_batch, ValidationConfig};
use super::{LogConfig, LogError};

/// Written by `close()`, removed by `open()`: its presence means the indexes and the
/// log files were complete when the log was last closed.
const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Holds the log start offset when DeleteRecords moved it inside the first segment.
const LOG_START_OFFSET_FILE: &str = "log-start-offset";

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

/// The outcome of a follower append: the offsets, as for a leader append, and the
/// headers of the batches written, for the producer state (a follower must track
/// the leader's producers to take over as leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerAppendInfo {
    pub info: AppendInfo,
    pub batches: Vec<BatchHeader>,
}

/// A byte range of one segment file holding whole batches, ready for sendfile(2).
/// Holding the `Arc<File>` keeps the bytes readable even if retention unlinks the segment.
#[derive(Clone, Debug)]
pub struct ReadSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u64,
    /// Records in the batches of the range (for metrics: no need to re-read them).
    pub record_count: u64,
}

impl ReadSlice {
    /// Copies the range into memory (tests and non-sendfile paths).
    pub fn to_vec(&self) -> Result<Vec<u8>, LogError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Closed segments by base offset, all below the active one.
    closed: BTreeMap<i64, Segment>,
    active: Segment,
    log_start_offset: i64,
    unflushed_records: u64,
    /// Wall-clock ms of the oldest append not yet synced, for `flush.ms`.
    first_unflushed_ms: Option<i64>,
    recovered_unclean: bool,
    /// Compaction progress (cleaner.rs), persisted beside the segments.
    cleaner: CleanerState,
    /// Which leader epoch wrote from which offset, persisted beside the segments.
    epochs: LeaderEpochFileCache,
    /// When set, an append that reaches `flush.messages` does not sync itself: the
    /// caller takes the sync (`take_due_sync`) and runs it after releasing its lock
    /// on the log, so readers never wait for an fsync.
    sync_outside_lock: bool,
    /// A sync is due that the caller has not taken yet.
    sync_due: bool,
    #[cfg(test)]
    before_sync: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// An fsync of appended data, to run with no lock on the log held. Syncing the file
/// syncs every write made to it before, whatever was appended meanwhile.
#[must_use = "the appended data is not on disk until the sync runs"]
pub struct PendingSync {
    file: Arc<File>,
    #[cfg(test)]
    before_sync: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl PendingSync {
    pub fn sync(self) -> Result<(), LogError> {
        #[cfg(test)]
        if let Some(hook) = &self.before_sync {
            hook();
        }
        self.file.sync_data()?;
        Ok(())
    }
}

impl Log {
    /// Opens the log in `dir` (created if missing), recovering after an unclean stop.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        fs::create_dir_all(dir)?;
        // A clean interrupted by a crash leaves `.cleaned`/`.swap` files: settle them
        // before the segments are listed.
        cleaner::finish_interrupted_cleans(dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let bases = list_segments(dir)?;
        let persisted_start = read_log_start_offset(dir)?;

        let mut closed = BTreeMap::new();
        let mut active = None;
        let mut recovered_unclean = !clean && !bases.is_empty();
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let (mut seg, mut needs_recovery) = Segment::open(dir, base, &config, is_last, now_ms)?;
            needs_recovery |= is_last && !clean;
            let mut cut = 0;
            if needs_recovery {
                cut = seg.recover(&config)?;
                recovered_unclean |= cut > 0;
            }
            if is_last || cut > 0 {
                // Offsets after a cut in a middle segment would leave a hole: like Kafka,
                // drop the later segments and continue from the cut.
                for &later in &bases[i + 1..] {
                    tracing::warn!(dir = %dir.display(), base = later, "deleting segment after a corrupt one");
                    segment::delete_files(dir, later)?;
                }
                seg.make_active(&config, Some(now_ms))?;
                active = Some(seg);
                break;
            }
            if needs_recovery {
                seg.seal()?;
            }
            closed.insert(base, seg);
        }
        let active = match active {
            Some(seg) => seg,
            None => Segment::create(dir, persisted_start.unwrap_or(0), &config)?,
        };
        let first_base = closed
            .keys()
            .next()
            .copied()
            .unwrap_or(active.base_offset());
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            closed,
            active,
            log_start_offset: persisted_start.unwrap_or(first_base).max(first_base),
            unflushed_records: 0,
            first_unflushed_ms: None,
            recovered_unclean,
            cleaner: CleanerState::load(dir),
            epochs: LeaderEpochFileCache::new(dir),
            sync_outside_lock: false,
            sync_due: false,
            #[cfg(test)]
            before_sync: None,
        };
        log.load_leader_epochs()?;
        if log.log_start_offset > log.log_end_offset() {
            // The tail past a DeleteRecords point was lost: restart empty at that point
            // so no offset below the start is ever handed out again.
            log.reset_at(log.log_start_offset, Some(now_ms))?;
        }
        // The marker must be gone for good before anything is appended.
        remove_if_exists(&marker)?;
        sync_dir(dir)?;
        Ok(log)
    }

    /// Reads the leader epoch checkpoint, or rebuilds it from the batches'
    /// `partitionLeaderEpoch` when it is missing (a log written before epochs were
    /// kept) or unreadable, then fits it to the log: entries past the log end were
    /// written ahead of data a crash lost (or a recovery cut), entries below the log
    /// start collapse onto it.
    fn load_leader_epochs(&mut self) -> Result<(), LogError> {
        let rebuild = match self.epochs.load() {
            Ok(found) => !found && self.log_end_offset() > self.log_start_offset,
            Err(CheckpointError::Io(e)) => return Err(e.into()),
            Err(e @ CheckpointError::Malformed { .. }) => {
                tracing::warn!(error = %e, "rebuilding an unreadable leader epoch checkpoint from the log");
                true
            }
        };
        if rebuild {
            let mut cache = LeaderEpochCache::default();
            scan_batch_headers(self, self.log_start_offset, |h| {
                // As Kafka's segment recovery: only epochs newer than the latest count,
                // so a stray older epoch cannot wipe later entries.
                let epoch = h.partition_leader_epoch;
                if cache.latest_epoch().is_none_or(|latest| epoch > latest) {
                    cache.assign(epoch, h.base_offset);
                }
            })?;
            // Written even when empty, so the next open does not scan again.
            self.epochs.replace(cache)?;
        }
        self.epochs.truncate_from_end(self.log_end_offset())?;
        self.epochs.truncate_from_start(self.log_start_offset)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// New settings apply from the next append; index sizes from the next segment.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// True if `open` found no clean-shutdown marker and had to rescan (or repair) the log.
    pub fn recovered_unclean(&self) -> bool {
        self.recovered_unclean
    }

    /// Appends a producer's batches for this partition as leader in `leader_epoch`.
    /// All are validated first (CRC, format, size); if any fails nothing is written.
    /// Each batch gets its offsets and `partitionLeaderEpoch` (and the append time
    /// under `LogAppendTime`); the first batch of a new epoch starts an epoch cache
    /// entry. A negative epoch is stamped but never recorded, as no epoch is.
    pub fn append(
        &mut self,
        records: &mut BytesMut,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let validated = self.validate(records, now_ms)?;
        let stamp = self.config.message_timestamp_type == TimestampType::LogAppendTime;
        let mut next = self.log_end_offset();
        let mut record_count = 0;
        let mut headers = Vec::with_capacity(validated.len());
        for (pos, header, max_timestamp) in validated {
            let bytes = &mut records[pos..pos + header.size() as usize];
            batch::set_base_offset(bytes, next);
            batch::set_partition_leader_epoch(bytes, leader_epoch);
            if stamp {
                batch::set_log_append_time(bytes, now_ms);
            } else if header.max_timestamp != max_timestamp || header.is_log_append_time() {
                // Kafka keeps the largest record timestamp, not the producer's claim.
                batch::set_max_timestamp(bytes, max_timestamp);
            }
            let header = BatchHeader::parse(bytes)?;
            next = header.last_offset() + 1;
            record_count += header.record_count as u64;
            headers.push((pos, header));
        }
        let base_offset = self.log_end_offset();
        self.epochs.assign(leader_epoch, base_offset)?;
        self.write_batches(records, &headers, record_count, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: if stamp { now_ms } else { -1 },
            record_count,
            bytes: records.len() as u64,
        })
    }

    /// Appends batches a follower fetched from the leader, exactly as they are:
    /// offsets, leader epochs and timestamps were set by the leader and are never
    /// rewritten. Every batch is checked first (format, CRC, offsets); if any fails
    /// nothing is written. The first batch must not start below the log end offset
    /// ([`LogError::UnexpectedAppendOffset`]); it may start above it, after a gap a
    /// compaction left on the leader. Later batches must start after the previous
    /// one ends ([`LogError::OffsetOutOfOrder`]). `max.message.bytes` and the
    /// compacted-topic key check are the leader's business and are not applied, as
    /// in Kafka. The epochs the batches carry extend the epoch cache.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<FollowerAppendInfo, LogError> {
        let headers = self.validate_replicated(records)?;
        // An empty buffer was refused: there is a first and a last batch.
        let (first, last) = (headers[0].1, headers[headers.len() - 1].1);
        let record_count = headers
            .iter()
            .map(|(_, h)| h.record_count.max(0) as u64)
            .sum();
        self.epochs.assign_all(
            headers
                .iter()
                .map(|(_, h)| (h.partition_leader_epoch, h.base_offset)),
        )?;
        self.write_batches(records, &headers, record_count, now_ms)?;
        Ok(FollowerAppendInfo {
            info: AppendInfo {
                base_offset: first.base_offset,
                last_offset: last.last_offset(),
                log_append_time: -1,
                record_count,
                bytes: records.len() as u64,
            },
            batches: headers.into_iter().map(|(_, h)| h).collect(),
        })
    }

    /// Records that `leader_epoch` starts at `start_offset` (Kafka's
    /// `maybeAssignEpochStartOffset`). A partition becoming leader calls it with the
    /// log end offset before it writes anything, so a follower asking about an older
    /// epoch learns where it ended even while the new leader has written nothing. An
    /// epoch not newer than the latest entry only replaces entries by Kafka's rules
    /// (see [`LeaderEpochCache::assign`]); negative values are ignored.
    pub fn maybe_assign_epoch_start_offset(
        &mut self,
        leader_epoch: i32,
        start_offset: i64,
    ) -> Result<(), LogError> {
        self.epochs.assign(leader_epoch, start_offset)
    }

    /// Writes validated batches with their offsets final: rolls first if due (the new
    /// segment starts at the first batch's offset, past any gap), then counts them
    /// towards `flush.messages`. On failure the epoch entries assigned for them are
    /// taken back, so the cache does not claim offsets the log never got.
    fn write_batches(
        &mut self,
        records: &[u8],
        headers: &[(usize, BatchHeader)],
        record_count: u64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let (Some((_, first)), Some((_, last))) = (headers.first(), headers.last()) else {
            return Ok(());
        };
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        let written = (|| {
            if self.should_roll(records.len() as u64, first_offset, last_offset, now_ms) {
                self.roll_at(first_offset)?;
            }
            let interval = self.config.index_interval_bytes;
            self.active.append(records, headers, interval, now_ms)
        })();
        if let Err(e) = written {
            if let Err(undo) = self.epochs.truncate_from_end(self.log_end_offset()) {
                tracing::warn!(dir = %self.dir.display(), error = %undo, "cannot drop epoch entries of a failed append");
            }
            return Err(e);
        }
        self.unflushed_records += record_count;
        self.first_unflushed_ms.get_or_insert(now_ms);
        if self.unflushed_records >= self.config.flush_messages {
            if self.sync_outside_lock {
                self.sync_due = true;
            } else {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Appends that reach `flush.messages` leave their sync to the caller
    /// (`take_due_sync`), to run outside its lock on the log.
    pub fn set_sync_outside_lock(&mut self) {
        self.sync_outside_lock = true;
    }

    /// The sync `flush.messages` made due, if any; counted as done now (a failed sync
    /// fails the append that runs it, and the next flush syncs the file again).
    pub fn take_due_sync(&mut self) -> Option<PendingSync> {
        if !std::mem::take(&mut self.sync_due) {
            return None;
        }
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
        Some(PendingSync {
            file: self.active.file(),
            #[cfg(test)]
            before_sync: self.before_sync.clone(),
        })
    }

    /// Runs `hook` at the start of every sync taken with `take_due_sync`.
    #[cfg(test)]
    pub fn set_before_sync(&mut self, hook: Arc<dyn Fn() + Send + Sync>) {
        self.before_sync = Some(hook);
    }

    /// Checks batches copied from the leader: framing, magic and CRC of each, and
    /// offsets that start at or after the log end and increase without overlap.
    fn validate_replicated(&self, records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, LogError> {
        if records.is_empty() {
            return Err(LogError::CorruptMessage("no record batches".to_string()));
        }
        let mut headers = Vec::new();
        for item in batch::batches(records) {
            let (pos, b) = item?;
            let h = *b.header();
            // Compaction may leave fewer records than offsets, never a negative span.
            if h.last_offset_delta < 0 {
                return Err(LogError::CorruptMessage(format!(
                    "batch at offset {} has lastOffsetDelta {}",
                    h.base_offset, h.last_offset_delta
                )));
            }
            headers.push((pos, h));
        }
        let log_end_offset = self.log_end_offset();
        // Not empty: the loop above read at least one batch or returned its error.
        let (first, last) = (headers[0].1, headers[headers.len() - 1].1);
        if first.base_offset < log_end_offset {
            return Err(LogError::UnexpectedAppendOffset {
                first_offset: first.base_offset,
                last_offset: last.last_offset(),
                log_end_offset,
            });
        }
        for pair in headers.windows(2) {
            let (prev, next) = (pair[0].1, pair[1].1);
            if next.base_offset <= prev.last_offset() {
                return Err(LogError::OffsetOutOfOrder {
                    expected: prev.last_offset() + 1,
                    got: next.base_offset,
                });
            }
        }
        Ok(headers)
    }

    /// Checks every batch a producer sent: format and CRC, `max.message.bytes`, and
    /// everything Kafka's LogValidator checks in its records (validate.rs). Returns
    /// each batch's position, header and largest record timestamp.
    fn validate(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<Vec<(usize, BatchHeader, i64)>, LogError> {
        if records.is_empty() {
            return Err(LogError::CorruptMessage("no record batches".to_string()));
        }
        let partition = self.dir.file_name().unwrap_or_default().to_string_lossy();
        let cfg = ValidationConfig {
            partition: &partition,
            now_ms,
            timestamp_type: self.config.message_timestamp_type,
            timestamp_before_max_ms: self.config.message_timestamp_before_max_ms,
            timestamp_after_max_ms: self.config.message_timestamp_after_max_ms,
            compacted: self.config.cleanup_policy.compacts(),
            max_decompressed_bytes: self.decompressed_limit(),
        };
        let mut headers = Vec::new();
        for item in batch::batches(records) {
            let (pos, b) = item?;
            let h = *b.header();
            if h.size() > self.config.max_message_bytes {
                return Err(LogError::MessageTooLarge {
                    size: h.size(),
                    max: self.config.max_message_bytes,
                });
            }
            let validated = validate_client_batch(&b, &cfg)?;
            headers.push((pos, h, validated.max_timestamp));
        }
        Ok(headers)
    }

    /// The most bytes any compressed batch of this log may decompress to.
    fn decompressed_limit(&self) -> u64 {
        decompressed_limit(self.config.max_message_bytes)
    }

    /// Whether batches spanning `first_offset..=last_offset` need a new segment.
    fn should_roll(
        &self,
        incoming_bytes: u64,
        first_offset: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> bool {
        let seg = &self.active;
        let too_far = last_offset - seg.base_offset() > MAX_RELATIVE_OFFSET;
        if seg.is_empty() {
            // Only a follower's batches past a huge compaction gap can be too far for
            // an empty segment; one starting at them fits.
            return too_far && first_offset > seg.base_offset();
        }
        let new_size = seg.size() + incoming_bytes;
        new_size > self.config.segment_bytes
            || new_size > MAX_SEGMENT_BYTES
            || seg.indexes_full()
            || seg.is_older_than(self.config.segment_ms, now_ms)
            || too_far
    }

    /// Closes the active segment (synced, indexes trimmed) and starts a new one at the
    /// log end offset.
    fn roll(&mut self) -> Result<(), LogError> {
        self.roll_at(self.log_end_offset())
    }

    /// Rolls to a new segment based at `base_offset` (>= the log end offset: a
    /// follower's next batch may start past a gap).
    fn roll_at(&mut self, base_offset: i64) -> Result<(), LogError> {
        let next = Segment::create(&self.dir, base_offset, &self.config)?;
        // Later fsyncs of the new file are only durable once its name is.
        sync_dir(&self.dir)?;
        let mut old = std::mem::replace(&mut self.active, next);
        old.seal()?;
        self.closed.insert(old.base_offset(), old);
        // Sealing synced the only segment with unflushed data.
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
        Ok(())
    }

    /// Whole batches from the one containing `fetch_offset` (a fetch inside a batch
    /// returns that batch), up to `max_bytes` and below `max_offset` (the high
    /// watermark), within one segment.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, LogError> {
        let log_end_offset = self.log_end_offset();
        if fetch_offset < self.log_start_offset || fetch_offset > log_end_offset {
            return Err(self.out_of_range(fetch_offset));
        }
        if fetch_offset >= max_offset || fetch_offset == log_end_offset {
            return Ok(None);
        }
        for seg in self.segments_from(fetch_offset) {
            match seg.read(fetch_offset, max_bytes, max_offset, min_one_batch)? {
                SegmentRead::Slice(slice) => return Ok(Some(slice)),
                SegmentRead::Nothing => return Ok(None),
                // A gap at the end of this segment: the next one continues.
                SegmentRead::NotInSegment => {}
            }
        }
        Ok(None)
    }

    /// The segment that may hold `offset` and every later one.
    fn segments_from(&self, offset: i64) -> impl Iterator<Item = &Segment> {
        let start = if offset >= self.active.base_offset() {
            i64::MAX
        } else {
            self.closed
                .range(..=offset)
                .next_back()
                .map_or(i64::MIN, |(base, _)| *base)
        };
        self.closed
            .range(start..)
            .map(|(_, seg)| seg)
            .chain(iter::once(&self.active))
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.closed.values().chain(iter::once(&self.active))
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active.next_offset()
    }

    /// The epoch of the newest epoch cache entry: on a follower, the epoch of its last
    /// batch (Kafka's `lastFetchedEpoch`); on a leader, its current epoch once it has
    /// written in it.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.cache().latest_epoch()
    }

    /// Kafka's OffsetsForLeaderEpoch answer for `epoch` on this log: the largest
    /// epoch <= `epoch` known here and where it ends (the log end offset for the
    /// latest epoch). `(-1, -1)` (`UNDEFINED_EPOCH`, `UNDEFINED_EPOCH_OFFSET`) when
    /// `epoch` is undefined, above every known epoch or the cache is empty; for an
    /// epoch below the first entry, `(epoch, start of the first entry)`. See
    /// [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs
            .cache()
            .end_offset_for(epoch, self.log_end_offset())
    }

    /// The epoch that wrote `offset` according to the cache (Kafka's
    /// `epochForOffset`); `None` below the first entry.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.epochs.cache().epoch_for_offset(offset)
    }

    /// The epoch cache as (epoch, start offset) pairs, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs
            .cache()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments().map(Segment::size).sum()
    }

    /// ListOffsets by timestamp: the earliest offset at or after the log start whose
    /// record timestamp is >= `timestamp`, with that timestamp. Compressed batches are
    /// decompressed for this, as Kafka does, so the answer is always the exact record.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments_from(self.log_start_offset) {
            if let Some(found) = seg.offset_for_timestamp(
                timestamp,
                self.log_start_offset,
                self.decompressed_limit(),
            )? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: (offset, timestamp) of the record with the largest
    /// timestamp, the earliest such on ties (a LogAppendTime batch answers with its
    /// base offset).
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut best: Option<&Segment> = None;
        for seg in self.segments_from(self.log_start_offset) {
            if !seg.is_empty() && best.is_none_or(|b| seg.max_timestamp() > b.max_timestamp()) {
                best = Some(seg);
            }
        }
        match best {
            Some(seg) => seg.max_timestamp_record(self.decompressed_limit()),
            None => Ok(None),
        }
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the log end offset)
    /// and deletes the closed segments wholly below it. Returns the new log start.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let target = if offset == -1 {
            self.log_end_offset()
        } else {
            offset
        };
        if target < self.log_start_offset || target > self.log_end_offset() {
            return Err(self.out_of_range(offset));
        }
        if target > self.log_start_offset {
            self.log_start_offset = target;
            write_log_start_offset(&self.dir, target)?;
        }
        let start = self.log_start_offset;
        self.delete_oldest_segments_while(|_, next_base, _| Ok(next_base <= start))?;
        self.epochs.truncate_from_start(self.log_start_offset)?;
        Ok(self.log_start_offset)
    }

    /// Deletes closed segments from the oldest while `should_delete(segment, base of
    /// the next segment, log size before deleting it)` holds; never the active one.
    fn delete_oldest_segments_while(
        &mut self,
        mut should_delete: impl FnMut(&Segment, i64, u64) -> Result<bool, LogError>,
    ) -> Result<usize, LogError> {
        let mut deleted = 0;
        let mut size = self.size_bytes();
        while let Some((&base, seg)) = self.closed.first_key_value() {
            let next_base = self
                .closed
                .range(base + 1..)
                .next()
                .map_or(self.active.base_offset(), |(b, _)| *b);
            if !should_delete(seg, next_base, size)? {
                break;
            }
            size -= seg.size();
            if let Some(seg) = self.closed.remove(&base) {
                seg.delete()?;
            }
            deleted += 1;
            self.log_start_offset = self.log_start_offset.max(next_base);
        }
        Ok(deleted)
    }

    /// Drops everything at or above `offset` (for replication). The cut falls on a
    /// batch boundary: an offset inside a batch drops that whole batch, so the log end
    /// offset becomes that batch's base offset. Below the log start (or the first
    /// segment) the log is emptied and restarts at `offset`. The epoch cache loses the
    /// entries from the new log end on, even when no data is cut: like Kafka, this
    /// drops an entry a leader assigned for an epoch it never wrote in.
    ///
    /// The producer state lives in the partition: it must follow with
    /// `ProducerStateManager::truncate_and_reload`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset >= self.log_end_offset() {
            return self.epochs.truncate_from_end(self.log_end_offset());
        }
        let first_base = self
            .closed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.active.base_offset());
        if offset < self.log_start_offset || offset < first_base {
            return self.reset_at(offset, None);
        }
        while self.active.base_offset() > offset {
            let Some((_, prev)) = self.closed.pop_last() else {
                break;
            };
            let later = std::mem::replace(&mut self.active, prev);
            later.delete()?;
            self.active.make_active(&self.config, None)?;
        }
        let end = self.active.truncate_to(offset)?;
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
        if end < self.log_start_offset {
            self.log_start_offset = end;
            write_log_start_offset(&self.dir, end)?;
        }
        self.epochs.truncate_from_end(end)
    }

    /// Deletes every segment and restarts the log, empty, at `offset`, which becomes
    /// the log start offset; the epoch cache is emptied. For a follower whose fetch
    /// offset fell below the leader's log start (and Kafka's partition, when the
    /// first batch fetched into an empty log starts below its end).
    ///
    /// The producer state lives in the partition: it must follow with
    /// `ProducerStateManager::truncate_fully_and_start_at`.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        self.reset_at(offset, None)
    }

    /// Deletes every segment and restarts the log, empty, at `offset`.
    fn reset_at(&mut self, offset: i64, now_ms: Option<i64>) -> Result<(), LogError> {
        for (_, seg) in std::mem::take(&mut self.closed) {
            seg.delete()?;
        }
        // Empty the active segment first: it may already carry the new base's file name.
        self.active.truncate_to(self.active.base_offset())?;
        if self.active.base_offset() != offset {
            let fresh = Segment::create(&self.dir, offset, &self.config)?;
            std::mem::replace(&mut self.active, fresh).delete()?;
            sync_dir(&self.dir)?;
        }
        self.active.make_active(&self.config, now_ms)?;
        self.unflushed_records = 0;
        self.first_unflushed_ms = None;
        self.log_start_offset = offset;
        write_log_start_offset(&self.dir, offset)?;
        // After the segments, as Kafka: a crash in between leaves entries the next
        // open fits to the empty log, where clearing first and crashing would leave a
        // log whose data no entry describes.
        self.epochs.clear()
    }

    /// Syncs the appended data not yet on disk.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.first_unflushed_ms.is_some() || self.sync_due {
            self.active.sync()?;
            self.unflushed_records = 0;
            self.first_unflushed_ms = None;
            self.sync_due = false;
        }
        Ok(())
    }

    /// Time-based policies: `flush.ms` and `segment.ms`.
    pub fn tick(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self
            .first_unflushed_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.flush_ms)
        {
            self.flush()?;
        }
        if self.active.is_older_than(self.config.segment_ms, now_ms) {
            self.roll()?;
        }
        Ok(())
    }

    /// `retention.ms` and `retention.bytes`: deletes closed segments from the oldest,
    /// never the active one; also those wholly below the log start offset (left by a
    /// DeleteRecords before they were closed). Returns how many were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let start = self.log_start_offset;
        let mut deleted =
            self.delete_oldest_segments_while(|_, next_base, _| Ok(next_base <= start))?;
        if !self.config.cleanup_policy.deletes() {
            // cleanup.policy=compact: only the cleaner removes data.
            return Ok(deleted);
        }
        let retention_ms = self.config.retention_ms;
        if retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(retention_ms);
            deleted += self
                .delete_oldest_segments_while(|seg, _, _| Ok(seg.largest_timestamp()? < cutoff))?;
        }
        let retention_bytes = self.config.retention_bytes;
        if retention_bytes >= 0 {
            deleted += self.delete_oldest_segments_while(|seg, _, size| {
                Ok(size - seg.size() >= retention_bytes as u64)
            })?;
        }
        self.epochs.truncate_from_start(self.log_start_offset)?;
        Ok(deleted)
    }

    /// What the cleaner (cleaner.rs) works on; it never touches the active segment.
    pub(super) fn cleaner_parts(&mut self) -> CleanerParts<'_> {
        CleanerParts {
            dir: &self.dir,
            config: &self.config,
            closed: &mut self.closed,
            active: &self.active,
            log_start_offset: self.log_start_offset,
            state: &mut self.cleaner,
        }
    }

    /// Flushes, trims the active segment's indexes and leaves the clean-shutdown
    /// marker so the next `open` trusts the files as they are.
    pub fn close(mut self) -> Result<(), LogError> {
        self.active.seal()?;
        let mut marker = File::create(self.dir.join(CLEAN_SHUTDOWN_FILE))?;
        marker.flush()?;
        marker.sync_all()?;
        sync_dir(&self.dir)
    }

    /// Removes the log and its directory.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)?;
        Ok(())
    }
}

/// Base offsets of the segments in `dir`, sorted.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(base) = name.to_str().and_then(segment::base_offset_of) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn read_log_start_offset(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(LOG_START_OFFSET_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    text.trim().parse().map(Some).map_err(|_| {
        LogError::CorruptMessage(format!("{}: not an offset: {text:?}", path.display()))
    })
}

/// Replaces the log-start-offset file atomically (write, sync, rename).
fn write_log_start_offset(dir: &Path, offset: i64) -> Result<(), LogError> {
    let tmp = dir.join(format!("{LOG_START_OFFSET_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    writeln!(file, "{offset}")?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(LOG_START_OFFSET_FILE))?;
    sync_dir(dir)
}

/// Makes file creations, renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{batches, build_values_batch, RecordBatch};

    fn batch_of(values: &[&[u8]], first_ts: i64) -> BytesMut {
        BytesMut::from(&build_values_batch(values, first_ts)[..])
    }

    fn config() -> LogConfig {
        LogConfig {
            retention_ms: -1,
            flush_messages: u64::MAX,
            ..LogConfig::default()
        }
    }

    /// (offset, value) of every record in a slice.
    fn records_of(slice: &ReadSlice) -> Vec<(i64, Vec<u8>)> {
        let bytes = slice.to_vec().unwrap();
        let mut out = Vec::new();
        for item in batches(&bytes) {
            let (_, b) = item.unwrap();
            for r in b.records().unwrap() {
                let r = r.unwrap();
                out.push((r.offset, r.value.unwrap_or_default().to_vec()));
            }
        }
        out
    }

    /// Base offsets of the batches in a slice.
    fn batch_bases(slice: &ReadSlice) -> Vec<i64> {
        let bytes = slice.to_vec().unwrap();
        batches(&bytes)
            .map(|b| b.unwrap().1.base_offset())
            .collect()
    }

    /// Everything from the log start offset to the end, segment by segment.
    fn read_all(log: &Log) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(slice) = log.read(offset, u64::MAX, i64::MAX, true).unwrap() {
            let recs = records_of(&slice);
            offset = recs.last().unwrap().0 + 1;
            out.extend(recs.into_iter().filter(|r| r.0 >= log.log_start_offset()));
        }
        out
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        names
    }

    /// Appends `n` batches of `per_batch` 100-byte records; batch i has timestamps
    /// from 1000 * (i + 1).
    fn fill(log: &mut Log, n: usize, per_batch: usize) {
        for i in 0..n {
            let values: Vec<Vec<u8>> = (0..per_batch)
                .map(|j| vec![(i * 7 + j) as u8; 100])
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
            log.append(&mut batch_of(&refs, 1000 * (i as i64 + 1)), 0, 0)
                .unwrap();
        }
    }

    #[test]
    fn append_assigns_offsets_and_read_returns_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        let mut first = batch_of(&[b"a", b"b", b"c"], 10);
        let info = log.append(&mut first, 0, 5).unwrap();
        assert_eq!(
            info,
            AppendInfo {
                base_offset: 0,
                last_offset: 2,
                log_append_time: -1,
                record_count: 3,
                bytes: first.len() as u64,
            }
        );
        // Two batches in one produce request.
        let mut two = batch_of(&[b"d"], 20);
        two.extend_from_slice(&batch_of(&[b"e", b"f"], 30));
        let info = log.append(&mut two, 0, 6).unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset, info.record_count),
            (3, 5, 3)
        );
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(log.size_bytes(), (first.len() + two.len()) as u64);

        let slice = log.read(0, u64::MAX, 6, false).unwrap().unwrap();
        assert_eq!(slice.position, 0);
        assert_eq!(batch_bases(&slice), vec![0, 3, 4]);
        let values: Vec<Vec<u8>> = records_of(&slice).into_iter().map(|r| r.1).collect();
        assert_eq!(
            values,
            vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                b"d".to_vec(),
                b"e".to_vec(),
                b"f".to_vec()
            ]
        );
        // The stored bytes are the producer's, with only the base offset rewritten.
        assert_eq!(&slice.to_vec().unwrap()[..first.len()], &first[..]);
        assert_eq!(
            log.read(6, u64::MAX, 6, false).unwrap().map(|s| s.len),
            None
        );
    }

    #[test]
    fn fetch_inside_a_batch_returns_the_containing_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        fill(&mut log, 3, 4); // batches at 0, 4, 8
        let slice = log.read(5, u64::MAX, i64::MAX, false).unwrap().unwrap();
        assert_eq!(batch_bases(&slice), vec![4, 8]);
        let slice = log.read(11, u64::MAX, i64::MAX, false).unwrap().unwrap();
        assert_eq!(batch_bases(&slice), vec![8]);
    }

    #[test]
    fn read_stops_at_max_offset_and_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        fill(&mut log, 4, 2); // batches at 0, 2, 4, 6
        let batch_size = log.size_bytes() / 4;
        let slice = log.read(0, u64::MAX, 4, false).unwrap().unwrap();
        assert_eq!(
            batch_bases(&slice),
            vec![0, 2],
            "high watermark 4 excludes batch 4"
        );
        assert!(log.read(4, u64::MAX, 4, false).unwrap().is_none());
        let slice = log
            .read(0, 2 * batch_size + 10, i64::MAX, false)
            .unwrap()
            .unwrap();
        assert_eq!(slice.len, 2 * batch_size);
        let slice = log.read(3, batch_size, i64::MAX, false).unwrap().unwrap();
        assert_eq!((slice.position, slice.len), (batch_size, batch_size));
    }

    #[test]
    fn first_batch_larger_than_max_bytes_needs_min_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        fill(&mut log, 2, 3);
        let batch_size = log.size_bytes() / 2;
        assert!(log.read(0, 10, i64::MAX, false).unwrap().is_none());
        let slice = log.read(0, 10, i64::MAX, true).unwrap().unwrap();
        assert_eq!(
            (slice.position, slice.len),
            (0, batch_size),
            "exactly one batch"
        );
    }

    #[test]
    fn read_outside_the_log_is_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        fill(&mut log, 1, 2);
        let err = log.read(3, 100, i64::MAX, true).unwrap_err();
        assert!(matches!(
            err,
            LogError::OffsetOutOfRange {
                offset: 3,
                log_start_offset: 0,
                log_end_offset: 2
            }
        ));
        assert!(log.read(2, 100, i64::MAX, true).unwrap().is_none());
        assert!(matches!(
            log.read(-1, 100, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn batch_over_max_message_bytes_is_rejected_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                max_message_bytes: 200,
                ..config()
            },
            0,
        )
        .unwrap();
        let mut ok_then_big = batch_of(&[b"small"], 0);
        let big = batch_of(&[&[7u8; 300]], 0);
        let big_len = big.len() as u64;
        ok_then_big.extend_from_slice(&big);
        let err = log.append(&mut ok_then_big, 0, 0).unwrap_err();
        assert!(matches!(err, LogError::MessageTooLarge { size, max: 200 } if size == big_len));
        assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
    }

    #[test]
    fn corrupt_crc_is_rejected_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        let mut records = batch_of(&[b"good"], 0);
        let mut bad = batch_of(&[b"bad"], 0);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        records.extend_from_slice(&bad);
        let err = log.append(&mut records, 0, 0).unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("CRC")),
            "{err}"
        );
        assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
        let log_file = dir.path().join("00000000000000000000.log");
        assert_eq!(fs::metadata(log_file).unwrap().len(), 0);
        let err = log.append(&mut BytesMut::new(), 0, 0).unwrap_err();
        assert!(matches!(err, LogError::CorruptMessage(_)));
    }

    #[test]
    fn log_append_time_stamps_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        let info = log
            .append(&mut batch_of(&[b"a", b"b"], 5), 0, 77_000)
            .unwrap();
        assert_eq!(info.log_append_time, 77_000);
        let bytes = log
            .read(0, u64::MAX, i64::MAX, true)
            .unwrap()
            .unwrap()
            .to_vec()
            .unwrap();
        let b = RecordBatch::parse(&bytes).unwrap();
        assert!(b.header().is_log_append_time());
        assert_eq!(b.header().max_timestamp, 77_000);
        assert_eq!(log.offset_for_timestamp(70_000).unwrap(), Some((0, 77_000)));
    }

    #[test]
    fn rolls_by_size_and_reads_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 600,
                ..config()
            },
            0,
        )
        .unwrap();
        fill(&mut log, 6, 2); // ~290 bytes each: two per segment
        assert_eq!(
            segment_files(dir.path()),
            vec![
                "00000000000000000000.log",
                "00000000000000000004.log",
                "00000000000000000008.log"
            ]
        );
        let slice = log.read(0, u64::MAX, i64::MAX, true).unwrap().unwrap();
        assert_eq!(batch_bases(&slice), vec![0, 2], "one segment per read");
        assert_eq!(read_all(&log).len(), 12);
        // The closed segment's indexes were trimmed to their entries (none here).
        let index = dir.path().join("00000000000000000000.index");
        assert_eq!(fs::metadata(index).unwrap().len(), 0);
    }

    #[test]
    fn a_batch_bigger_than_segment_bytes_gets_its_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 100,
                ..config()
            },
            0,
        )
        .unwrap();
        fill(&mut log, 3, 1);
        assert_eq!(segment_files(dir.path()).len(), 3);
        assert_eq!(read_all(&log).len(), 3);
    }

    #[test]
    fn rolls_by_time_on_append_and_on_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                segment_ms: 1000,
                ..config()
            },
            0,
        )
        .unwrap();
        log.append(&mut batch_of(&[b"a"], 1), 0, 10_000).unwrap();
        log.append(&mut batch_of(&[b"b"], 1), 0, 11_000).unwrap();
        assert_eq!(
            segment_files(dir.path()).len(),
            1,
            "exactly segment.ms old: no roll yet"
        );
        log.append(&mut batch_of(&[b"c"], 1), 0, 11_001).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        log.tick(12_000).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        log.tick(12_002).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 3);
        log.tick(20_000).unwrap();
        assert_eq!(
            segment_files(dir.path()).len(),
            3,
            "an empty active segment never rolls"
        );
        assert_eq!(log.active.base_offset(), 3);
    }

    #[test]
    fn rolls_when_the_index_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_index_bytes: 16,
            index_interval_bytes: 1,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        fill(&mut log, 6, 1);
        // 2 offset-index entries and 1 usable time-index slot per segment.
        assert!(
            segment_files(dir.path()).len() >= 3,
            "{:?}",
            segment_files(dir.path())
        );
        assert_eq!(read_all(&log).len(), 6);
    }

    #[test]
    fn retention_by_bytes_keeps_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 300,
            retention_bytes: 0,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        fill(&mut log, 4, 2); // one batch (2 offsets) per segment
        assert_eq!(segment_files(dir.path()).len(), 4);
        assert_eq!(log.segment_count(), 4);
        let reader = log.read(0, u64::MAX, i64::MAX, true).unwrap().unwrap();
        assert_eq!(log.apply_retention(0).unwrap(), 3);
        assert_eq!(segment_files(dir.path()), vec!["00000000000000000006.log"]);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 8));
        assert!(matches!(
            log.read(0, 100, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // A reader that got its slice before the deletion still reads the bytes.
        assert_eq!(records_of(&reader).len(), 2);
        assert_eq!(log.apply_retention(0).unwrap(), 0);
    }

    #[test]
    fn retention_by_bytes_keeps_at_least_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 300,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        fill(&mut log, 4, 2);
        let seg = log.size_bytes() / 4;
        log.set_config(LogConfig {
            retention_bytes: (2 * seg) as i64,
            ..cfg
        });
        assert_eq!(log.apply_retention(0).unwrap(), 2);
        assert_eq!(log.size_bytes(), 2 * seg);
        assert_eq!(log.log_start_offset(), 4);
    }

    #[test]
    fn retention_by_time_deletes_old_closed_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 300,
            retention_ms: 5000,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        fill(&mut log, 4, 2); // max timestamps 1001, 2001, 3001, 4001
        assert_eq!(
            log.apply_retention(6000).unwrap(),
            0,
            "1001 is not older than 6000 - 5000"
        );
        assert_eq!(log.apply_retention(7002).unwrap(), 2);
        assert_eq!(log.log_start_offset(), 4);
        assert_eq!(
            log.apply_retention(1_000_000).unwrap(),
            1,
            "never the active segment"
        );
        assert_eq!(segment_files(dir.path()), vec!["00000000000000000006.log"]);
        assert_eq!(read_all(&log).len(), 2);
    }

    #[test]
    fn delete_records_moves_the_start_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 600,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        fill(&mut log, 6, 2); // segments at 0, 4, 8
        assert_eq!(log.delete_records_before(5).unwrap(), 5);
        assert_eq!(
            segment_files(dir.path()),
            vec!["00000000000000000004.log", "00000000000000000008.log"]
        );
        assert!(matches!(
            log.read(4, 100, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let slice = log.read(5, u64::MAX, i64::MAX, true).unwrap().unwrap();
        assert_eq!(
            batch_bases(&slice),
            vec![4, 6],
            "the batch holding the start is returned whole"
        );
        assert!(matches!(
            log.delete_records_before(3),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.delete_records_before(13),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().unwrap();

        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 12));
        assert_eq!(log.delete_records_before(-1).unwrap(), 12);
        assert_eq!(segment_files(dir.path()), vec!["00000000000000000008.log"]);
        assert!(log.read(12, 100, i64::MAX, true).unwrap().is_none());
        log.append(&mut batch_of(&[b"x"], 0), 0, 0).unwrap();
        assert_eq!(read_all(&log), vec![(12, b"x".to_vec())]);
    }

    #[test]
    fn retention_deletes_segments_below_the_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 300,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        fill(&mut log, 1, 2);
        assert_eq!(log.delete_records_before(-1).unwrap(), 2);
        fill(&mut log, 1, 2); // rolls: segment 0 is now closed and wholly deleted
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.apply_retention(0).unwrap(), 1);
        assert_eq!(segment_files(dir.path()), vec!["00000000000000000002.log"]);
        assert_eq!(log.log_start_offset(), 2);
    }

    #[test]
    fn offset_for_timestamp_finds_the_first_record_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 1,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        fill(&mut log, 6, 2); // batch i: offsets 2i, 2i+1 with timestamps 1000(i+1), +1
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
        assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some((1, 1001)));
        assert_eq!(log.offset_for_timestamp(1002).unwrap(), Some((2, 2000)));
        assert_eq!(log.offset_for_timestamp(5001).unwrap(), Some((9, 5001)));
        assert_eq!(log.offset_for_timestamp(6001).unwrap(), Some((11, 6001)));
        assert_eq!(log.offset_for_timestamp(6002).unwrap(), None);
        assert_eq!(log.max_timestamp().unwrap(), Some((11, 6001)));
        // Records below the log start do not count.
        log.delete_records_before(3).unwrap();
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((3, 2001)));
    }

    #[test]
    fn offset_for_timestamp_with_unordered_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                index_interval_bytes: 1,
                ..config()
            },
            0,
        )
        .unwrap();
        for ts in [5000, 1000, 7000, 3000] {
            log.append(&mut batch_of(&[b"v"], ts), 0, 0).unwrap();
        }
        assert_eq!(log.offset_for_timestamp(2000).unwrap(), Some((0, 5000)));
        assert_eq!(log.offset_for_timestamp(6000).unwrap(), Some((2, 7000)));
        assert_eq!(log.max_timestamp().unwrap(), Some((2, 7000)));
        log.close().unwrap();
        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!(log.offset_for_timestamp(6000).unwrap(), Some((2, 7000)));
        assert_eq!(log.max_timestamp().unwrap(), Some((2, 7000)));
    }

    #[test]
    fn truncate_to_cuts_at_the_containing_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 600,
                ..config()
            },
            0,
        )
        .unwrap();
        fill(&mut log, 6, 2); // segments at 0, 4, 8
        log.truncate_to(7).unwrap();
        assert_eq!(log.log_end_offset(), 6, "offset 7 is inside batch 6..7");
        assert_eq!(
            segment_files(dir.path()),
            vec!["00000000000000000000.log", "00000000000000000004.log"]
        );
        let info = log.append(&mut batch_of(&[b"new"], 0), 0, 0).unwrap();
        assert_eq!(info.base_offset, 6);
        assert_eq!(read_all(&log).last().unwrap(), &(6, b"new".to_vec()));
        log.truncate_to(4).unwrap();
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(
            segment_files(dir.path()),
            vec!["00000000000000000000.log", "00000000000000000004.log"]
        );
        log.truncate_to(100).unwrap();
        assert_eq!(log.log_end_offset(), 4, "beyond the end: no-op");
        assert_eq!(read_all(&log).len(), 4);
    }

    #[test]
    fn flush_by_messages_and_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            flush_messages: 3,
            flush_ms: 100,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        log.append(&mut batch_of(&[b"a", b"b"], 0), 0, 1000)
            .unwrap();
        assert_eq!(
            (log.unflushed_records, log.first_unflushed_ms),
            (2, Some(1000))
        );
        log.append(&mut batch_of(&[b"c"], 0), 0, 1010).unwrap();
        assert_eq!((log.unflushed_records, log.first_unflushed_ms), (0, None));
        log.append(&mut batch_of(&[b"d"], 0), 0, 1020).unwrap();
        log.tick(1119).unwrap();
        assert_eq!(log.unflushed_records, 1);
        log.tick(1120).unwrap();
        assert_eq!((log.unflushed_records, log.first_unflushed_ms), (0, None));
    }

    #[test]
    fn clean_close_reopens_without_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 200,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        assert!(!log.recovered_unclean());
        fill(&mut log, 5, 2);
        let before = read_all(&log);
        log.close().unwrap();
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        let active_index = dir.path().join("00000000000000000008.index");
        assert_eq!(
            fs::metadata(&active_index).unwrap().len(),
            0,
            "trimmed at close"
        );

        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        assert!(!log.recovered_unclean());
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert_eq!(
            fs::metadata(&active_index).unwrap().len(),
            cfg.segment_index_bytes
        );
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(read_all(&log), before);
        log.append(&mut batch_of(&[b"more"], 0), 0, 0).unwrap();
        assert_eq!(log.log_end_offset(), 11);
        drop(log); // no close: the next open rescans
        let log = Log::open(dir.path(), cfg, 0).unwrap();
        assert!(log.recovered_unclean());
        assert_eq!(log.log_end_offset(), 11);
    }

    /// Writes 5 batches (offsets 0..10) and drops the log without closing it.
    fn crashed_log(dir: &Path) -> (Vec<(i64, Vec<u8>)>, u64) {
        let mut log = Log::open(
            dir,
            LogConfig {
                index_interval_bytes: 100,
                ..config()
            },
            0,
        )
        .unwrap();
        fill(&mut log, 5, 2);
        let records = read_all(&log);
        let size = log.size_bytes();
        drop(log);
        (records, size)
    }

    fn active_log_file(dir: &Path) -> PathBuf {
        dir.join("00000000000000000000.log")
    }

    fn assert_recovered(dir: &Path, expected: &[(i64, Vec<u8>)], end: i64, size: u64) {
        let mut log = Log::open(dir, config(), 0).unwrap();
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(read_all(&log), expected);
        assert_eq!(fs::metadata(active_log_file(dir)).unwrap().len(), size);
        let info = log.append(&mut batch_of(&[b"after"], 0), 0, 0).unwrap();
        assert_eq!(info.base_offset, end);
        let mut all = expected.to_vec();
        all.push((end, b"after".to_vec()));
        assert_eq!(read_all(&log), all);
    }

    #[test]
    fn recovery_cuts_garbage_after_the_last_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (records, size) = crashed_log(dir.path());
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(active_log_file(dir.path()))
            .unwrap();
        file.write_all(&[0xab; 100]).unwrap();
        drop(file);
        assert_recovered(dir.path(), &records, 10, size);
    }

    #[test]
    fn recovery_cuts_a_torn_half_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (records, size) = crashed_log(dir.path());
        let mut half = build_values_batch(&[&[1u8; 100]], 0);
        batch::set_base_offset(&mut half, 10);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(active_log_file(dir.path()))
            .unwrap();
        file.write_all(&half[..half.len() / 2]).unwrap();
        drop(file);
        assert_recovered(dir.path(), &records, 10, size);
    }

    #[test]
    fn recovery_cuts_a_batch_with_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (records, size) = crashed_log(dir.path());
        let batch_size = size / 5;
        let file = fs::OpenOptions::new()
            .write(true)
            .open(active_log_file(dir.path()))
            .unwrap();
        // Flip a byte in the value of the last batch: only the CRC notices.
        use std::os::unix::fs::FileExt;
        file.write_all_at(&[0xee], size - 10).unwrap();
        drop(file);
        assert_recovered(dir.path(), &records[..8], 8, size - batch_size);
    }

    #[test]
    fn recovery_rebuilds_missing_indexes_of_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 600,
            index_interval_bytes: 100,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        fill(&mut log, 6, 2);
        let records = read_all(&log);
        log.close().unwrap();
        fs::remove_file(dir.path().join("00000000000000000000.index")).unwrap();
        fs::remove_file(dir.path().join("00000000000000000004.timeindex")).unwrap();
        let log = Log::open(dir.path(), cfg, 0).unwrap();
        assert!(!log.recovered_unclean(), "a rebuilt index is not data loss");
        assert!(dir.path().join("00000000000000000000.index").exists());
        assert_eq!(read_all(&log), records);
        assert_eq!(log.offset_for_timestamp(4000).unwrap(), Some((6, 4000)));
        let slice = log.read(3, u64::MAX, i64::MAX, false).unwrap().unwrap();
        assert_eq!(batch_bases(&slice), vec![2]);
    }

    #[test]
    fn start_offset_past_a_lost_tail_restarts_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let (_, size) = crashed_log(dir.path());
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        log.delete_records_before(10).unwrap();
        drop(log);
        // The last two batches never reached the disk.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(active_log_file(dir.path()))
            .unwrap();
        file.set_len(size * 3 / 5).unwrap();
        drop(file);
        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
        assert_eq!(segment_files(dir.path()), vec!["00000000000000000010.log"]);
    }

    #[test]
    fn delete_removes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic-0");
        let mut log = Log::open(&path, config(), 0).unwrap();
        fill(&mut log, 1, 1);
        assert_eq!(log.dir(), path.as_path());
        assert_eq!(log.config().segment_ms, config().segment_ms);
        log.delete().unwrap();
        assert!(!path.exists());
    }
    /// A batch holding one record with a `value_len`-byte value of zeros, compressed
    /// with `codec`, offsets from `base`: small on disk, huge when opened.
    fn bomb(codec: u8, value_len: usize, base: i64) -> Vec<u8> {
        let mut section = Vec::new();
        batch::put_record(
            &mut section,
            0,
            0,
            Some(b"k"),
            Some(&vec![0u8; value_len]),
            &[],
        );
        let packed = super::super::codec::compress(codec, &section).unwrap();
        let mut header = BatchHeader::parse(&build_values_batch(&[b"x"], 1000)).unwrap();
        header.attributes |= codec as i16;
        header.base_offset = base;
        let fields = batch::RebuiltFields {
            last_offset_delta: 0,
            base_timestamp: 1000,
            max_timestamp: 1000,
            record_count: 1,
            delete_horizon: false,
        };
        batch::rebuild_batch(&header, fields, &packed)
    }

    #[test]
    fn lying_batch_writes_nothing_and_acked_records_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        log.append(&mut batch_of(&[b"a", b"b"], 1000), 0, 0)
            .unwrap();
        // One real record claiming a count of 2^31-1 (lastOffsetDelta agrees).
        let mut liar = build_values_batch(&[b"c"], 1000);
        liar[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        liar[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&liar[21..]);
        liar[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = log
            .append(&mut BytesMut::from(&liar[..]), 0, 0)
            .unwrap_err();
        assert!(matches!(err, LogError::InvalidRecord { .. }), "{err}");
        assert_eq!(log.log_end_offset(), 2);
        assert_eq!(read_all(&log), vec![(0, b"a".to_vec()), (1, b"b".to_vec())]);
        let info = log.append(&mut batch_of(&[b"d"], 1000), 0, 0).unwrap();
        assert_eq!(info.base_offset, 2);
    }

    #[test]
    fn stored_max_timestamp_is_the_largest_record_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        // The producer claims a max timestamp far beyond its records'.
        let mut b = build_values_batch(&[b"a", b"b"], 1000);
        b[35..43].copy_from_slice(&9_000_000_000_000i64.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        log.append(&mut BytesMut::from(&b[..]), 0, 0).unwrap();
        let slice = log.read(0, u64::MAX, i64::MAX, true).unwrap().unwrap();
        let bytes = slice.to_vec().unwrap();
        let stored = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(stored.header().max_timestamp, 1001);
        assert_eq!(log.max_timestamp().unwrap(), Some((1, 1001)));
    }

    #[test]
    fn bombs_are_refused_on_produce_and_bounded_where_stored() {
        let cfg = LogConfig {
            max_message_bytes: 100_000, // limit: 16 x 1 MiB
            segment_bytes: 1,
            ..config()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        for codec in [1u8, 4] {
            let b = bomb(codec, 64 << 20, 0);
            assert!(b.len() < 100_000, "codec {codec}: {} bytes", b.len());
            let err = log.append(&mut BytesMut::from(&b[..]), 0, 0).unwrap_err();
            assert!(
                matches!(&err, LogError::InvalidRecord { message, .. } if message.contains("more than 16777216")),
                "codec {codec}: {err}"
            );
            assert_eq!(log.log_end_offset(), 0);
        }
        // Batches a follower copied are not opened on append; the readers that open
        // them later stop at the limit: ListOffsets by timestamp...
        log.append_as_follower(&bomb(4, 64 << 20, 0), 0).unwrap();
        log.append_as_follower(&replicated_plain(1), 0).unwrap();
        let err = log.offset_for_timestamp(0).unwrap_err();
        assert!(matches!(err, LogError::InvalidRecord { .. }), "{err}");
        // ... and the cleaner of a compacted log.
        let mut compacted = cfg;
        compacted.cleanup_policy = super::super::CleanupPolicy::Compact;
        log.set_config(compacted);
        let err = log.compact_now(1_000_000).unwrap_err();
        assert!(matches!(err, LogError::InvalidRecord { .. }), "{err}");
        assert_eq!(log.log_end_offset(), 2);
    }

    fn replicated_plain(base: i64) -> Vec<u8> {
        let mut b = build_values_batch(&[b"after"], 1000);
        batch::set_base_offset(&mut b, base);
        b
    }
}

/// Leader epochs, follower appends and the truncations replication needs.
#[cfg(test)]
#[path = "replication_tests.rs"]
mod replication_tests;

/// Model-based test: random operations against a `Vec` of (offset, payload) batches.
#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::log::batch::{batches, build_values_batch};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Batches, each given as its records' value lengths.
        Append(Vec<Vec<usize>>),
        /// Truncate to `pick % (log end + 2)`: below the start, inside, at and past the end.
        Truncate(u32),
        /// Delete records before `pick % (log end + 3) - 1`: -1, in range, out of range.
        DeleteRecords(u32),
        CloseReopen,
        DropReopen,
        /// `retention.bytes` = 1500; the model follows the log start it reports.
        RetainBytes,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop::collection::vec(prop::collection::vec(0usize..120, 1..6), 1..4).prop_map(Op::Append),
            1 => any::<u32>().prop_map(Op::Truncate),
            1 => any::<u32>().prop_map(Op::DeleteRecords),
            1 => Just(Op::CloseReopen),
            1 => Just(Op::DropReopen),
            1 => Just(Op::RetainBytes),
        ]
    }

    #[derive(Default)]
    struct Model {
        start: i64,
        end: i64,
        /// (base offset, record values)
        batches: Vec<(i64, Vec<Vec<u8>>)>,
    }

    impl Model {
        fn records(&self) -> Vec<(i64, Vec<u8>)> {
            let all = self.batches.iter().flat_map(|(base, values)| {
                values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (base + i as i64, v.clone()))
            });
            all.filter(|(offset, _)| *offset >= self.start).collect()
        }

        fn truncate(&mut self, offset: i64) {
            if offset >= self.end {
                return;
            }
            if offset < self.start {
                *self = Model {
                    start: offset,
                    end: offset,
                    batches: Vec::new(),
                };
                return;
            }
            // Cut at the start of the batch holding `offset`.
            let cut = self
                .batches
                .iter()
                .find(|(base, values)| base + values.len() as i64 > offset)
                .map_or(offset, |(base, _)| *base);
            self.batches.retain(|(base, _)| *base < cut);
            self.end = cut;
            self.start = self.start.min(cut);
        }
    }

    fn read_everything(log: &Log) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(slice) = log.read(offset, 700, log.log_end_offset(), true).unwrap() {
            let bytes = slice.to_vec().unwrap();
            for item in batches(&bytes) {
                let (_, b) = item.unwrap();
                for r in b.records().unwrap() {
                    let r = r.unwrap();
                    offset = r.offset + 1;
                    if r.offset >= log.log_start_offset() {
                        out.push((r.offset, r.value.unwrap_or_default().to_vec()));
                    }
                }
            }
        }
        assert_eq!(offset.max(log.log_start_offset()), log.log_end_offset());
        out
    }

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 700,
            segment_index_bytes: 48,
            index_interval_bytes: 100,
            retention_ms: -1,
            flush_messages: 4,
            ..LogConfig::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn log_matches_a_vec_model(ops in prop::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
            let mut model = Model::default();
            let mut counter = 0u32;
            for op in ops {
                match op {
                    Op::Append(shape) => {
                        let mut records = BytesMut::new();
                        let mut new_batches = Vec::new();
                        let mut base = model.end;
                        for lens in shape {
                            let values: Vec<Vec<u8>> = lens.iter().map(|&len| {
                                counter += 1;
                                let mut v = counter.to_be_bytes().to_vec();
                                v.resize(len.max(4), counter as u8);
                                v
                            }).collect();
                            let refs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
                            records.extend_from_slice(&build_values_batch(&refs, counter as i64));
                            let n = values.len() as i64;
                            new_batches.push((base, values));
                            base += n;
                        }
                        let info = log.append(&mut records, 0, counter as i64).unwrap();
                        prop_assert_eq!(info.base_offset, model.end);
                        prop_assert_eq!(info.last_offset, base - 1);
                        model.batches.extend(new_batches);
                        model.end = base;
                    }
                    Op::Truncate(pick) => {
                        let offset = pick as i64 % (model.end + 2);
                        log.truncate_to(offset).unwrap();
                        model.truncate(offset);
                    }
                    Op::DeleteRecords(pick) => {
                        let offset = pick as i64 % (model.end + 3) - 1;
                        let target = if offset == -1 { model.end } else { offset };
                        let result = log.delete_records_before(offset);
                        if target < model.start || target > model.end {
                            let out_of_range = matches!(result, Err(LogError::OffsetOutOfRange { .. }));
                            prop_assert!(out_of_range);
                        } else {
                            prop_assert_eq!(result.unwrap(), target);
                            model.start = target;
                        }
                    }
                    Op::CloseReopen => {
                        log.close().unwrap();
                        log = Log::open(dir.path(), small_config(), 0).unwrap();
                        prop_assert!(!log.recovered_unclean());
                    }
                    Op::DropReopen => {
                        drop(log);
                        log = Log::open(dir.path(), small_config(), 0).unwrap();
                    }
                    Op::RetainBytes => {
                        log.set_config(LogConfig { retention_bytes: 1500, ..small_config() });
                        let size_before = log.size_bytes();
                        let deleted = log.apply_retention(0).unwrap();
                        log.set_config(small_config());
                        let start = log.log_start_offset();
                        prop_assert!(start >= model.start && start <= model.end);
                        prop_assert_eq!(deleted > 0, log.size_bytes() < size_before);
                        prop_assert!(start == model.start || deleted > 0);
                        prop_assert!(log.size_bytes() <= size_before);
                        model.start = start;
                    }
                }
                prop_assert_eq!(log.log_start_offset(), model.start);
                prop_assert_eq!(log.log_end_offset(), model.end);
                prop_assert_eq!(read_everything(&log), model.records());
            }
        }
    }
}
