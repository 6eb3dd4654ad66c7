//! Log compaction (`cleanup.policy=compact`): keeps the latest record per key in the
//! closed segments, with offsets unchanged.
//!
//! One clean: build a map key -> latest offset over every segment (the active one
//! included, so a key rewritten there makes its older values obsolete), then rewrite
//! each cleanable segment (closed, older than `min.compaction.lag.ms`) keeping only the
//! records the map points at. Batches keep their base offset, `lastOffsetDelta`,
//! producer id, epoch and base sequence, so offsets and producer sequences survive; a
//! batch left with no record is dropped (Kafka keeps the last batch of each producer
//! even when empty; we do not). Unchanged batches are copied byte for byte; changed
//! ones are re-encoded with the codec they had.
//!
//! Tombstones (null values) are kept by the first clean, which stamps the batch with a
//! KIP-534 delete horizon (now + `delete.retention.ms`, in `baseTimestamp` with the
//! delete-horizon attribute); a later clean at or after the horizon removes them.
//!
//! Crash safety: a segment is rewritten into `<base>.log.cleaned`, synced, renamed to
//! `<base>.log.swap` (the commit point), its old indexes unlinked, and the swap renamed
//! over `<base>.log`; the indexes are then rebuilt from the new file. On open,
//! `.cleaned` files are deleted (the old segment is intact) and a `.log.swap` is
//! completed, like Kafka does.
//!
//! Not done (yet): transactional cleaning (aborted records and markers are kept as
//! they are), merging small cleaned segments, a bounded (hashed) offset map, cleaning
//! below a high watermark passed in by the caller.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::batch::{self, BatchHeader, RebuiltFields, Record, RecordBatch};
use super::codec::{compress, decompressed_limit, records_section};
use super::index_file::remove_if_exists;
use super::segment::{self, Segment};
use super::{Log, LogConfig, LogError};

/// Holds the cleaner's progress: `<first dirty offset> <next delete horizon ms>`.
const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
const CLEANED_SUFFIX: &str = ".cleaned";
const SWAP_SUFFIX: &str = ".swap";

/// What one clean did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Cleanable segments examined (each rewritten only if something changed).
    pub segments_cleaned: usize,
    pub records_removed: u64,
    /// Size of the cleanable segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The cleaner's persisted progress. Losing it only costs an early full clean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanerState {
    /// Where the last clean stopped: segments from here on hold uncleaned ("dirty")
    /// data and count towards `min.cleanable.dirty.ratio`.
    first_dirty_offset: i64,
    /// Earliest delete horizon of a batch that still holds tombstones: a clean is due
    /// then even without new dirty data. `i64::MAX` when there is none.
    next_delete_horizon_ms: i64,
}

impl Default for CleanerState {
    fn default() -> Self {
        CleanerState {
            first_dirty_offset: i64::MIN,
            next_delete_horizon_ms: i64::MAX,
        }
    }
}

impl CleanerState {
    /// Reads the checkpoint; a missing or unreadable one means "everything is dirty".
    pub(crate) fn load(dir: &Path) -> CleanerState {
        let path = dir.join(CHECKPOINT_FILE);
        let Ok(text) = fs::read_to_string(&path) else {
            return CleanerState::default();
        };
        let mut fields = text.split_whitespace().map(str::parse::<i64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(first_dirty_offset)), Some(Ok(next_delete_horizon_ms))) => CleanerState {
                first_dirty_offset,
                next_delete_horizon_ms,
            },
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable cleaner checkpoint");
                CleanerState::default()
            }
        }
    }

    /// Replaces the checkpoint atomically (write, sync, rename).
    fn save(&self, dir: &Path) -> Result<(), LogError> {
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut file = File::create(&tmp)?;
        writeln!(
            file,
            "{} {}",
            self.first_dirty_offset, self.next_delete_horizon_ms
        )?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
        sync_dir(dir)
    }
}

/// Borrowed parts of a [`Log`] the cleaner works on (see `Log::cleaner_parts`).
pub(crate) struct CleanerParts<'a> {
    pub dir: &'a Path,
    pub config: &'a LogConfig,
    pub closed: &'a mut BTreeMap<i64, Segment>,
    pub active: &'a Segment,
    pub log_start_offset: i64,
    pub state: &'a mut CleanerState,
}

impl Log {
    /// Compacts the log if its policy includes `compact` and a clean is due: the dirty
    /// share of the cleanable bytes reached `min.cleanable.dirty.ratio`, or a kept
    /// tombstone's delete horizon passed. Cheap (no I/O) when nothing is due, so it
    /// can run on every background tick.
    pub fn compact(&mut self, now_ms: i64) -> Result<CleanStats, LogError> {
        self.clean(now_ms, false)
    }

    /// Compacts now whatever the dirty ratio (tests, operators).
    pub fn compact_now(&mut self, now_ms: i64) -> Result<CleanStats, LogError> {
        self.clean(now_ms, true)
    }

    fn clean(&mut self, now_ms: i64, force: bool) -> Result<CleanStats, LogError> {
        let mut parts = self.cleaner_parts();
        if !parts.config.cleanup_policy.compacts() {
            return Ok(CleanStats::default());
        }
        let end = cleanable_end(&parts, now_ms)?;
        let cleanable: Vec<i64> = parts.closed.range(..end).map(|(b, _)| *b).collect();
        if cleanable.is_empty() || !(force || clean_due(&parts, end, now_ms)) {
            return Ok(CleanStats::default());
        }
        let limit = decompressed_limit(parts.config.max_message_bytes);
        let map = latest_offsets(parts.closed, parts.active, limit)?;
        let mut stats = CleanStats::default();
        let mut next_horizon = i64::MAX;
        let first_base = cleanable[0];
        let last_closed = parts.closed.keys().next_back().copied();
        for base in cleanable {
            let keeps_tail = Some(base) == last_closed;
            let outcome = clean_segment(&parts, base, &map, now_ms, keeps_tail)?;
            stats.segments_cleaned += 1;
            stats.records_removed += outcome.records_removed;
            stats.bytes_before += outcome.bytes_before;
            stats.bytes_after += outcome.bytes_after;
            next_horizon = next_horizon.min(outcome.delete_horizon);
            install(&mut parts, base, outcome.file, base == first_base, now_ms)?;
        }
        *parts.state = CleanerState {
            first_dirty_offset: end,
            next_delete_horizon_ms: next_horizon,
        };
        parts.state.save(parts.dir)?;
        tracing::info!(
            dir = %parts.dir.display(),
            segments = stats.segments_cleaned,
            records_removed = stats.records_removed,
            bytes_before = stats.bytes_before,
            bytes_after = stats.bytes_after,
            "compacted log"
        );
        Ok(stats)
    }
}

/// Base offset bounding the cleanable segments: closed ones, from the oldest, up to the
/// first that holds a record younger than `min.compaction.lag.ms`.
fn cleanable_end(parts: &CleanerParts<'_>, now_ms: i64) -> Result<i64, LogError> {
    let lag = parts.config.min_compaction_lag_ms;
    if lag > 0 {
        let cutoff = now_ms.saturating_sub(lag);
        for (base, seg) in parts.closed.iter() {
            if seg.largest_timestamp()? > cutoff {
                return Ok(*base);
            }
        }
    }
    Ok(parts.active.base_offset())
}

/// Whether the dirty ratio or a passed delete horizon calls for a clean.
fn clean_due(parts: &CleanerParts<'_>, end: i64, now_ms: i64) -> bool {
    if now_ms >= parts.state.next_delete_horizon_ms {
        return true;
    }
    // After a truncation the checkpoint may point past the log: all is dirty then.
    let mut first_dirty = parts.state.first_dirty_offset.max(parts.log_start_offset);
    if first_dirty > parts.active.base_offset() {
        first_dirty = i64::MIN;
    }
    let (mut clean, mut dirty) = (0u64, 0u64);
    for (base, seg) in parts.closed.range(..end) {
        if *base >= first_dirty {
            dirty += seg.size();
        } else {
            clean += seg.size();
        }
    }
    dirty > 0 && dirty as f64 / (clean + dirty) as f64 >= parts.config.min_cleanable_dirty_ratio
}

/// key -> offset of its latest record, over every segment the active one included.
/// Control batches (transaction markers) carry no user keys and are skipped.
fn latest_offsets(
    closed: &BTreeMap<i64, Segment>,
    active: &Segment,
    limit: u64,
) -> Result<HashMap<Vec<u8>, i64>, LogError> {
    let mut map = HashMap::new();
    for seg in closed.values().chain(std::iter::once(active)) {
        seg.for_each_batch(|bytes| {
            let batch = RecordBatch::parse(bytes)?;
            if batch.header().is_control() {
                return Ok(());
            }
            let section = records_section(&batch, limit)?;
            for record in batch::decode_records(*batch.header(), &section) {
                let record = record?;
                if let Some(key) = record.key {
                    map.insert(key.to_vec(), record.offset);
                }
            }
            Ok(())
        })?;
    }
    Ok(map)
}

/// The result of rewriting one segment.
struct SegmentOutcome {
    /// The `.cleaned` file, or `None` when nothing changed (the segment stays).
    file: Option<CleanedFile>,
    records_removed: u64,
    bytes_before: u64,
    bytes_after: u64,
    /// Earliest delete horizon of a kept batch that still holds tombstones.
    delete_horizon: i64,
}

struct CleanedFile {
    len: u64,
}

/// Writes the cleaned copy of segment `base` to `<base>.log.cleaned` (synced) if any
/// batch changes; removes the partial file if anything fails. `keeps_tail`: this is
/// the last closed segment, whose last batch stays (emptied if need be).
fn clean_segment(
    parts: &CleanerParts<'_>,
    base: i64,
    map: &HashMap<Vec<u8>, i64>,
    now_ms: i64,
    keeps_tail: bool,
) -> Result<SegmentOutcome, LogError> {
    let Some(seg) = parts.closed.get(&base) else {
        return Err(io::Error::other(format!("segment {base} vanished during a clean")).into());
    };
    let cleaned_path = parts.dir.join(cleaned_name(base));
    let result = write_cleaned(seg, &cleaned_path, map, now_ms, parts.config, keeps_tail);
    if result.as_ref().map_or(true, |o| o.file.is_none()) {
        remove_if_exists(&cleaned_path)?;
    }
    result
}

fn write_cleaned(
    seg: &Segment,
    path: &Path,
    map: &HashMap<Vec<u8>, i64>,
    now_ms: i64,
    config: &LogConfig,
    keeps_tail: bool,
) -> Result<SegmentOutcome, LogError> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut outcome = SegmentOutcome {
        file: None,
        records_removed: 0,
        bytes_before: seg.size(),
        bytes_after: 0,
        delete_horizon: i64::MAX,
    };
    let mut changed = false;
    let new_horizon = now_ms.saturating_add(config.delete_retention_ms);
    let limit = decompressed_limit(config.max_message_bytes);
    seg.for_each_batch(|bytes| {
        let batch = RecordBatch::parse(bytes)?;
        let keep_empty = keeps_tail && batch.last_offset() + 1 == seg.next_offset();
        let filtered = filter_batch(&batch, map, now_ms, new_horizon, keep_empty, limit)?;
        outcome.records_removed += filtered.removed;
        if let Some(h) = filtered.delete_horizon {
            outcome.delete_horizon = outcome.delete_horizon.min(h);
        }
        let kept: &[u8] = match &filtered.bytes {
            Some(Cow::Borrowed(b)) => b,
            Some(Cow::Owned(b)) => {
                changed = true;
                b
            }
            None => {
                changed = true;
                &[]
            }
        };
        out.write_all(kept)?;
        outcome.bytes_after += kept.len() as u64;
        Ok(())
    })?;
    if !changed {
        outcome.bytes_after = outcome.bytes_before;
        return Ok(outcome);
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    outcome.file = Some(CleanedFile {
        len: outcome.bytes_after,
    });
    Ok(outcome)
}

/// One batch after filtering.
struct FilteredBatch<'a> {
    /// The original bytes, a rebuilt batch, or `None` when no record is left.
    bytes: Option<Cow<'a, [u8]>>,
    removed: u64,
    /// The batch's delete horizon if it still holds tombstones.
    delete_horizon: Option<i64>,
}

/// Keeps the records `map` points at; tombstones only until the batch's delete
/// horizon (set to `new_horizon` by the first clean that keeps them); no keyless record
/// (Kafka's cleaner drops those too). Control batches are kept whole.
///
/// `keep_empty` (the last batch before the active segment): a batch left without
/// records becomes a header-only batch instead of going away, as Kafka's cleaner
/// writes for a producer's last batch. Otherwise, when the active segment is empty,
/// nothing would answer a fetch between the last survivor and the log end, and a
/// consumer could never reach the end (librdkafka's partition EOF); the empty batch's
/// `lastOffsetDelta` moves it there.
fn filter_batch<'a>(
    batch: &RecordBatch<'a>,
    map: &HashMap<Vec<u8>, i64>,
    now_ms: i64,
    new_horizon: i64,
    keep_empty: bool,
    limit: u64,
) -> Result<FilteredBatch<'a>, LogError> {
    let h = *batch.header();
    if h.is_control() {
        return Ok(FilteredBatch {
            bytes: Some(Cow::Borrowed(batch.bytes())),
            removed: 0,
            delete_horizon: None,
        });
    }
    let horizon = h.delete_horizon().unwrap_or(new_horizon);
    let section = records_section(batch, limit)?;
    let mut kept = Vec::new();
    let mut total = 0u64;
    for record in batch::decode_records(h, &section) {
        let record = record?;
        total += 1;
        let latest = record
            .key
            .is_some_and(|k| map.get(k).is_some_and(|&o| o == record.offset));
        let tombstone_expired = record.value.is_none() && now_ms >= horizon;
        if latest && !tombstone_expired {
            kept.push(record);
        }
    }
    let removed = total - kept.len() as u64;
    let has_tombstones = kept.iter().any(|r| r.value.is_none());
    let delete_horizon = has_tombstones.then_some(horizon);
    let needs_horizon = has_tombstones && h.delete_horizon().is_none();
    let bytes = if kept.is_empty() && !keep_empty {
        None
    } else if kept.is_empty() && h.record_count != 0 {
        Some(Cow::Owned(empty_batch(&h)))
    } else if removed == 0 && !needs_horizon {
        Some(Cow::Borrowed(batch.bytes()))
    } else {
        Some(Cow::Owned(rebuild(&h, &kept, delete_horizon)?))
    };
    Ok(FilteredBatch {
        bytes,
        removed,
        delete_horizon,
    })
}

/// A header-only batch spanning `h`'s offsets, uncompressed (an empty compressed
/// section would not decompress), with `h`'s producer fields.
fn empty_batch(h: &BatchHeader) -> Vec<u8> {
    let mut uncompressed = *h;
    uncompressed.attributes &= !0x07; // the codec bits
    let fields = RebuiltFields {
        last_offset_delta: h.last_offset_delta,
        base_timestamp: h.max_timestamp,
        max_timestamp: h.max_timestamp,
        record_count: 0,
        delete_horizon: false,
    };
    batch::rebuild_batch(&uncompressed, fields, &[])
}

/// Re-encodes the kept records with their original offsets and the batch's codec.
fn rebuild(
    h: &BatchHeader,
    kept: &[Record<'_>],
    horizon: Option<i64>,
) -> Result<Vec<u8>, LogError> {
    let min_ts = kept
        .iter()
        .map(|r| r.timestamp)
        .min()
        .unwrap_or(h.base_timestamp);
    let max_ts = if h.is_log_append_time() {
        h.max_timestamp
    } else {
        kept.iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(h.max_timestamp)
    };
    // With a delete horizon, `baseTimestamp` holds it and the deltas count from it.
    let base_ts = horizon.unwrap_or(min_ts);
    let mut section = Vec::new();
    for r in kept {
        let offset_delta = (r.offset - h.base_offset) as i32;
        let ts_delta = r.timestamp.wrapping_sub(base_ts);
        batch::put_record(
            &mut section,
            ts_delta,
            offset_delta,
            r.key,
            r.value,
            &r.headers,
        );
    }
    let section = if h.is_compressed() {
        compress(h.compression(), &section)?
    } else {
        section
    };
    let fields = RebuiltFields {
        // Kept as it was: the batch still spans the same offsets (and sequences).
        last_offset_delta: h.last_offset_delta,
        base_timestamp: base_ts,
        max_timestamp: max_ts,
        record_count: kept.len() as i32,
        delete_horizon: horizon.is_some(),
    };
    Ok(batch::rebuild_batch(h, fields, &section))
}

/// Puts the cleaned file in place of segment `base` (or drops a segment left empty,
/// except the first, which holds the log start offset across restarts).
fn install(
    parts: &mut CleanerParts<'_>,
    base: i64,
    file: Option<CleanedFile>,
    is_first: bool,
    now_ms: i64,
) -> Result<(), LogError> {
    let Some(file) = file else {
        return Ok(());
    };
    let dir = parts.dir;
    if file.len == 0 && !is_first {
        remove_if_exists(&dir.join(cleaned_name(base)))?;
        if let Some(old) = parts.closed.remove(&base) {
            old.delete()?;
        }
        return sync_dir(dir);
    }
    swap_in(dir, base)?;
    // The old segment's mapped indexes and open file stay valid for readers holding
    // them; the new indexes are rebuilt from the new file.
    let (mut seg, _) = Segment::open(dir, base, parts.config, false, now_ms)?;
    seg.recover(parts.config)?;
    seg.seal()?;
    parts.closed.insert(base, seg);
    Ok(())
}

/// `.cleaned` -> `.swap` (commit point) -> replaces `<base>.log`, old indexes unlinked.
fn swap_in(dir: &Path, base: i64) -> Result<(), LogError> {
    let swap = dir.join(swap_name(base));
    fs::rename(dir.join(cleaned_name(base)), &swap)?;
    sync_dir(dir)?;
    complete_swap(dir, base, &swap)
}

/// Finishes a committed swap: the old indexes describe the old file, so they go
/// first (a crash then leaves the old log without indexes, rebuilt at open).
fn complete_swap(dir: &Path, base: i64, swap: &Path) -> Result<(), LogError> {
    for ext in ["index", "timeindex"] {
        remove_if_exists(&dir.join(segment::file_name(base, ext)))?;
    }
    fs::rename(swap, dir.join(segment::file_name(base, "log")))?;
    sync_dir(dir)
}

/// At open: deletes `.cleaned` files (their segment is intact) and completes
/// `.log.swap` files (their clean was committed).
pub(crate) fn finish_interrupted_cleans(dir: &Path) -> Result<(), LogError> {
    let mut settled = false;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::warn!(dir = %dir.display(), file = name, "deleting an unfinished clean");
            remove_if_exists(&dir.join(name))?;
            settled = true;
        } else if let Some(base) = name
            .strip_suffix(SWAP_SUFFIX)
            .and_then(segment::base_offset_of)
        {
            tracing::warn!(dir = %dir.display(), file = name, "completing an interrupted clean");
            complete_swap(dir, base, &dir.join(name))?;
            settled = true;
        }
    }
    if settled {
        sync_dir(dir)?;
    }
    Ok(())
}

fn cleaned_name(base: i64) -> String {
    segment::file_name(base, "log") + CLEANED_SUFFIX
}

fn swap_name(base: i64) -> String {
    segment::file_name(base, "log") + SWAP_SUFFIX
}

/// Makes renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record as ProtoRecord, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType as ProtoTimestampType,
    };

    use super::*;
    use crate::log::batch::{batches, build_batch, NewRecord};
    use crate::log::CleanupPolicy;

    /// (offset, key, value) of one record read back.
    type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn config() -> LogConfig {
        LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: 400,
            retention_ms: -1,
            flush_messages: u64::MAX,
            index_interval_bytes: 100,
            delete_retention_ms: 1000,
            ..LogConfig::default()
        }
    }

    fn keyed(key: Option<&str>, value: Option<&str>, ts: i64) -> BytesMut {
        let record = NewRecord {
            key: key.map(str::as_bytes),
            value: value.map(str::as_bytes),
            timestamp: ts,
        };
        BytesMut::from(&build_batch(&[record])[..])
    }

    /// A batch compressed with `compression` by the kafka-protocol crate's encoder.
    fn compressed(compression: Compression, records: &[(Option<&str>, Option<&str>)]) -> BytesMut {
        let records: Vec<ProtoRecord> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| ProtoRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: ProtoTimestampType::Creation,
                offset: i as i64,
                // One batch: the encoder splits where offset - sequence changes.
                sequence: i as i32,
                timestamp: 1000 + i as i64,
                key: k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf
    }

    fn read_all(log: &Log) -> Vec<Rec> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(slice) = log.read(offset, u64::MAX, i64::MAX, true).unwrap() {
            let bytes = slice.to_vec().unwrap();
            for item in batches(&bytes) {
                let (_, b) = item.unwrap();
                let section = records_section(&b, u64::MAX).unwrap();
                for r in batch::decode_records(*b.header(), &section) {
                    let r = r.unwrap();
                    out.push((
                        r.offset,
                        r.key.map(<[u8]>::to_vec),
                        r.value.map(<[u8]>::to_vec),
                    ));
                }
                offset = b.last_offset() + 1;
            }
        }
        out
    }

    fn active_base(log: &mut Log) -> i64 {
        log.cleaner_parts().active.base_offset()
    }

    fn key_of(r: &Rec) -> String {
        String::from_utf8(r.1.clone().unwrap()).unwrap()
    }

    /// 60 single-record updates to keys k0..k3 (value "v<i>", timestamp 1000 + i).
    fn updates(log: &mut Log, n: usize) {
        for i in 0..n {
            let key = format!("k{}", i % 4);
            let value = format!("v{i}");
            log.append(&mut keyed(Some(&key), Some(&value), 1000 + i as i64), 0, 0)
                .unwrap();
        }
    }

    #[test]
    fn keeps_the_latest_record_per_key_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        updates(&mut log, 60);
        assert!(log.segment_count() >= 4, "{}", log.segment_count());
        let before = read_all(&log);
        let (start, end, active) = (
            log.log_start_offset(),
            log.log_end_offset(),
            active_base(&mut log),
        );
        let closed_before = log.segment_count() - 1;

        let stats = log.compact_now(10_000).unwrap();

        // Expected: per key, the latest record before the active segment, unless the
        // key was rewritten in the active segment; the active segment as it was.
        let mut latest: BTreeMap<String, Rec> = BTreeMap::new();
        for r in &before {
            latest.insert(key_of(r), r.clone());
        }
        let mut expected: Vec<Rec> = latest.values().filter(|r| r.0 < active).cloned().collect();
        expected.sort();
        expected.extend(before.iter().filter(|r| r.0 >= active).cloned());
        let after = read_all(&log);
        assert_eq!(after, expected);
        let outside: Vec<&Rec> = after.iter().filter(|r| r.0 < active).collect();
        let mut keys: Vec<String> = outside.iter().map(|r| key_of(r)).collect();
        keys.dedup();
        assert_eq!(
            keys.len(),
            outside.len(),
            "one record per key outside the active segment"
        );
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
        assert_eq!(stats.records_removed as usize, before.len() - after.len());
        assert!(stats.bytes_after < stats.bytes_before);
        assert_eq!(stats.segments_cleaned, closed_before);

        // Survives a clean close and an unclean drop.
        log.close().unwrap();
        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!(read_all(&log), expected);
        assert_eq!(log.log_end_offset(), end);
        drop(log);
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!(read_all(&log), expected);
        // Appends continue at the same end offset.
        let info = log
            .append(&mut keyed(Some("k9"), Some("x"), 5000), 0, 0)
            .unwrap();
        assert_eq!(info.base_offset, end);
    }

    #[test]
    fn fetch_at_a_removed_offset_returns_the_next_surviving_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        updates(&mut log, 40);
        log.compact_now(10_000).unwrap();
        let survivors: Vec<i64> = read_all(&log).iter().map(|r| r.0).collect();
        for offset in log.log_start_offset()..log.log_end_offset() {
            let next = survivors.iter().copied().find(|&o| o >= offset).unwrap();
            assert_eq!(first_record_from(&log, offset), next, "fetch at {offset}");
        }
        // Offset 0 (k0's first value) is gone; the log still starts there.
        assert_eq!(log.log_start_offset(), 0);
        assert!(!survivors.contains(&0));
    }

    /// Offset of the first record a consumer fetching from `offset` gets, following
    /// header-only batches as consumers do.
    fn first_record_from(log: &Log, mut offset: i64) -> i64 {
        loop {
            let slice = log.read(offset, u64::MAX, i64::MAX, true).unwrap().unwrap();
            let bytes = slice.to_vec().unwrap();
            for item in batches(&bytes) {
                let (_, b) = item.unwrap();
                if let Some(r) = b
                    .records()
                    .unwrap()
                    .find(|r| r.as_ref().unwrap().offset >= offset)
                {
                    return r.unwrap().offset;
                }
                offset = b.last_offset() + 1;
            }
        }
    }

    #[test]
    fn the_last_batch_before_an_empty_active_segment_is_kept_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        log.append(&mut keyed(Some("a"), Some("1"), 1000), 0, 0)
            .unwrap();
        log.append(
            &mut compressed(
                Compression::Gzip,
                &[(Some("b"), Some("2")), (Some("b"), None)],
            ),
            0,
            0,
        )
        .unwrap();
        log.tick(i64::MAX / 2).unwrap(); // rolls by age: the active segment is empty
        assert_eq!(active_base(&mut log), 3);
        log.compact_now(10_000).unwrap();
        log.compact_now(20_000).unwrap(); // past the horizon: the tombstone goes
        assert_eq!(
            read_all(&log),
            vec![(0, Some(b"a".to_vec()), Some(b"1".to_vec()))]
        );
        let bytes = log
            .read(1, u64::MAX, i64::MAX, true)
            .unwrap()
            .unwrap()
            .to_vec()
            .unwrap();
        let (_, b) = batches(&bytes).next().unwrap().unwrap();
        let h = b.header();
        assert_eq!(
            (
                h.base_offset,
                h.last_offset(),
                h.record_count,
                h.compression()
            ),
            (1, 2, 0, 0)
        );
        // Once later batches exist, the empty one is not needed any more.
        log.append(&mut keyed(Some("c"), Some("3"), 1000), 0, 0)
            .unwrap();
        log.tick(i64::MAX).unwrap();
        log.compact_now(30_000).unwrap();
        let all: Vec<i64> = read_all(&log).iter().map(|r| r.0).collect();
        assert_eq!(all, vec![0, 3]);
        assert_eq!(first_record_from(&log, 1), 3);
    }

    /// Every batch header from the log start on.
    fn all_headers(log: &Log) -> Vec<BatchHeader> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while let Some(slice) = log.read(offset, u64::MAX, i64::MAX, true).unwrap() {
            let bytes = slice.to_vec().unwrap();
            for item in batches(&bytes) {
                let (_, b) = item.unwrap();
                out.push(*b.header());
                offset = b.last_offset() + 1;
            }
        }
        out
    }

    #[test]
    fn cleaned_batches_keep_their_partition_leader_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        let epoch_of = |offset: i64| if offset < 30 { 1 } else { 4 };
        for i in 0..60 {
            // Epoch 1 keys are never rewritten, so some of its batches survive.
            let key = if i < 30 {
                format!("a{}", i % 5)
            } else {
                format!("k{}", i % 4)
            };
            let mut b = keyed(Some(&key), Some(&format!("v{i}")), 1000 + i);
            log.append(&mut b, epoch_of(i), 0).unwrap();
        }
        // Offsets 60-61 in one compressed batch; k0 is rewritten later, so the clean
        // re-encodes this batch with only "z" instead of copying it.
        let mut mixed = compressed(
            Compression::Gzip,
            &[(Some("k0"), Some("old")), (Some("z"), Some("kept"))],
        );
        log.append(&mut mixed, 4, 0).unwrap();
        for i in 0..20 {
            let mut b = keyed(Some(&format!("k{}", i % 4)), Some("new"), 2000 + i);
            log.append(&mut b, 4, 0).unwrap();
        }
        let before = all_headers(&log);
        assert!(before
            .iter()
            .all(|h| h.partition_leader_epoch == epoch_of(h.base_offset)));

        let stats = log.compact_now(10_000).unwrap();
        assert!(stats.records_removed > 0);
        let after = all_headers(&log);
        assert!(after.iter().any(|h| h.partition_leader_epoch == 1));
        let rebuilt = after.iter().find(|h| h.base_offset == 60).unwrap();
        assert_eq!((rebuilt.record_count, rebuilt.last_offset()), (1, 61));
        for h in &after {
            assert_eq!(
                h.partition_leader_epoch,
                epoch_of(h.base_offset),
                "batch at {}",
                h.base_offset
            );
        }
        // The epoch cache describes offsets, which compaction never moves.
        assert_eq!(log.epoch_entries(), vec![(1, 0), (4, 30)]);
    }

    #[test]
    fn cleans_only_when_the_dirty_ratio_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        // Keys written once stay in the cleaned part.
        for i in 0..5 {
            log.append(&mut keyed(Some(&format!("u{i}")), Some("once"), 900), 0, 0)
                .unwrap();
        }
        updates(&mut log, 60);
        // Everything is dirty at first: ratio 1 >= 0.5.
        assert!(log.compact(10_000).unwrap().segments_cleaned > 0);
        assert_eq!(
            log.compact(10_000).unwrap(),
            CleanStats::default(),
            "nothing dirty"
        );
        // One more rolled segment: a small dirty share of the cleanable bytes.
        log.set_config(LogConfig {
            // Only a log with no cleaned bytes at all reaches 1.0.
            min_cleanable_dirty_ratio: 1.0,
            ..config()
        });
        updates(&mut log, 6);
        assert_eq!(log.compact(10_000).unwrap(), CleanStats::default());
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.01,
            ..config()
        });
        assert!(log.compact(10_000).unwrap().segments_cleaned > 0);
        // A delete-policy log is never compacted.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..config()
        });
        assert_eq!(log.compact_now(10_000).unwrap(), CleanStats::default());
    }

    #[test]
    fn min_compaction_lag_keeps_young_segments_dirty() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            min_compaction_lag_ms: 5000,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg, 0).unwrap();
        updates(&mut log, 60); // timestamps 1000..1059
        let before = read_all(&log);
        assert_eq!(
            log.compact_now(6000).unwrap(),
            CleanStats::default(),
            "all younger than the lag"
        );
        assert_eq!(read_all(&log), before);
        assert!(log.compact_now(7000).unwrap().records_removed > 0);
    }

    #[test]
    fn tombstones_go_after_delete_retention_ms() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        log.append(&mut keyed(Some("a"), Some("1"), 1000), 0, 0)
            .unwrap();
        log.append(&mut keyed(Some("b"), Some("2"), 1001), 0, 0)
            .unwrap();
        log.append(&mut keyed(Some("a"), None, 1002), 0, 0).unwrap();
        // Fill with another key until a few segments roll.
        for i in 0..12 {
            log.append(
                &mut keyed(Some("c"), Some(&format!("c{i}")), 1003 + i),
                0,
                0,
            )
            .unwrap();
        }
        let end = log.log_end_offset();
        let active = active_base(&mut log);
        assert!(active > 3);

        log.compact(10_000).unwrap();
        let after: Vec<Rec> = read_all(&log).into_iter().filter(|r| r.0 < 3).collect();
        assert_eq!(
            after,
            vec![
                (1, Some(b"b".to_vec()), Some(b"2".to_vec())),
                (2, Some(b"a".to_vec()), None)
            ],
            "the tombstone is kept by the first clean"
        );
        let slice = log.read(2, u64::MAX, i64::MAX, true).unwrap().unwrap();
        let bytes = slice.to_vec().unwrap();
        let (_, b) = batches(&bytes)
            .find(|b| b.as_ref().unwrap().1.base_offset() == 2)
            .unwrap()
            .unwrap();
        assert_eq!(b.header().delete_horizon(), Some(11_000));
        let record = b.records().unwrap().next().unwrap().unwrap();
        assert_eq!(
            record.timestamp, 1002,
            "the record's timestamp survives the horizon"
        );

        assert_eq!(
            log.compact(10_999).unwrap(),
            CleanStats::default(),
            "horizon not reached"
        );
        assert!(read_all(&log).iter().any(|r| r.0 == 2));
        let stats = log.compact(11_000).unwrap();
        assert_eq!(
            stats.records_removed, 1,
            "the horizon passed: a clean is due"
        );
        let after: Vec<Rec> = read_all(&log).into_iter().filter(|r| r.0 < 3).collect();
        assert_eq!(after, vec![(1, Some(b"b".to_vec()), Some(b"2".to_vec()))]);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.compact(20_000).unwrap(), CleanStats::default());
    }

    #[test]
    fn keyless_records_are_rejected_on_compacted_topics_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        let mut records = keyed(Some("k"), Some("ok"), 1);
        records.extend_from_slice(&keyed(None, Some("no key"), 2));
        let err = log.append(&mut records, 0, 0).unwrap_err();
        assert!(
            matches!(&err, LogError::CorruptMessage(m) if m.contains("Compacted topic cannot accept message without key")),
            "{err}"
        );
        assert_eq!(
            (log.log_end_offset(), log.size_bytes()),
            (0, 0),
            "nothing written"
        );
        let mut gz = compressed(
            Compression::Gzip,
            &[(Some("k"), Some("a")), (None, Some("b"))],
        );
        assert!(matches!(
            log.append(&mut gz, 0, 0),
            Err(LogError::CorruptMessage(_))
        ));
        let mut gz = compressed(
            Compression::Gzip,
            &[(Some("k"), Some("a")), (Some("j"), None)],
        );
        assert_eq!(log.append(&mut gz, 0, 0).unwrap().record_count, 2);

        let other = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..config()
        };
        let mut log = Log::open(other.path(), cfg, 0).unwrap();
        assert_eq!(
            log.append(&mut keyed(None, Some("x"), 1), 0, 0)
                .unwrap()
                .base_offset,
            0
        );
    }

    #[test]
    fn compressed_batches_are_compacted_with_their_codec() {
        for (compression, codec) in [
            (Compression::Lz4, 3),
            (Compression::Gzip, 1),
            (Compression::Zstd, 4),
            (Compression::Snappy, 2),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), config(), 0).unwrap();
            let batch = [
                (Some("k0"), Some("a")),
                (Some("k1"), Some("b")),
                (Some("k0"), Some("c")),
                (Some("k2"), Some("d")),
                (Some("k1"), Some("e")),
                (Some("k3"), Some("f")),
            ];
            log.append(&mut compressed(compression, &batch), 0, 0)
                .unwrap();
            // k3 is rewritten later, in a segment of its own.
            log.append(&mut keyed(Some("k3"), Some("g"), 2000), 0, 0)
                .unwrap();
            log.append(&mut BytesMut::from(&vec_big()[..]), 0, 0)
                .unwrap();
            assert!(log.segment_count() >= 2);
            log.compact_now(10_000).unwrap();

            let all = read_all(&log);
            let first: Vec<Rec> = all.into_iter().filter(|r| r.0 < 6).collect();
            let rec = |o: i64, k: &str, v: &str| {
                (o, Some(k.as_bytes().to_vec()), Some(v.as_bytes().to_vec()))
            };
            assert_eq!(
                first,
                vec![rec(2, "k0", "c"), rec(3, "k2", "d"), rec(4, "k1", "e")],
                "{compression:?}"
            );
            let bytes = log
                .read(0, u64::MAX, i64::MAX, true)
                .unwrap()
                .unwrap()
                .to_vec()
                .unwrap();
            let (_, b) = batches(&bytes).next().unwrap().unwrap();
            let h = b.header();
            assert_eq!(
                (h.base_offset, h.compression(), h.record_count),
                (0, codec, 3)
            );
            assert_eq!(h.last_offset_delta, 5, "the batch keeps its offset span");
            assert_eq!(log.log_end_offset(), 8);
        }
    }

    /// A batch of its own that is bigger than `segment.bytes`, to force a roll.
    fn vec_big() -> Vec<u8> {
        let value = "x".repeat(500);
        build_batch(&[NewRecord {
            key: Some(b"big"),
            value: Some(value.as_bytes()),
            timestamp: 3000,
        }])
    }

    #[test]
    fn a_leftover_cleaned_file_is_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        updates(&mut log, 30);
        let before = read_all(&log);
        drop(log); // a crash in the middle of a clean
        let cleaned = dir.path().join(cleaned_name(0));
        fs::write(&cleaned, b"half a cleaned segment").unwrap();
        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert!(!cleaned.exists());
        assert_eq!(read_all(&log), before);
    }

    #[test]
    fn a_committed_swap_is_completed_at_open() {
        // Make the cleaned segment in a copy of the log, then plant it as a `.swap`.
        let dir = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        for key in ["u0", "u1", "u2"] {
            log.append(&mut keyed(Some(key), Some("unique"), 900), 0, 0)
                .unwrap();
        }
        updates(&mut log, 30);
        let first_end = log
            .cleaner_parts()
            .closed
            .range(1..)
            .next()
            .map(|(b, _)| *b)
            .unwrap();
        log.close().unwrap();
        for entry in fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        let mut compacted = Log::open(copy.path(), config(), 0).unwrap();
        compacted.compact_now(10_000).unwrap();
        let expected_first: Vec<Rec> = read_all(&compacted);
        compacted.close().unwrap();
        fs::copy(
            copy.path().join(segment::file_name(0, "log")),
            dir.path().join(swap_name(0)),
        )
        .unwrap();
        // The crash came after the old indexes were unlinked.
        fs::remove_file(dir.path().join(segment::file_name(0, "index"))).unwrap();

        let log = Log::open(dir.path(), config(), 0).unwrap();
        assert!(!dir.path().join(swap_name(0)).exists());
        let got: Vec<Rec> = read_all(&log)
            .into_iter()
            .filter(|r| r.0 < first_end)
            .collect();
        let want: Vec<Rec> = expected_first
            .into_iter()
            .filter(|r| r.0 < first_end)
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(
            dir.path().join(segment::file_name(0, "index")).exists(),
            "index rebuilt"
        );
    }

    #[test]
    fn compact_delete_also_applies_retention() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            retention_ms: 5000,
            ..config()
        };
        let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
        updates(&mut log, 60); // timestamps 1000..1059
        let segments = log.segment_count();
        assert_eq!(
            log.apply_retention(100_000).unwrap(),
            0,
            "compact only: no retention"
        );
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::CompactDelete,
            ..cfg
        });
        assert_eq!(log.apply_retention(100_000).unwrap(), segments - 1);
        assert!(log.compact_now(100_000).unwrap().segments_cleaned == 0);
    }

    mod model {
        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// One batch of (key index, tombstone?) records; gzip when the flag is set.
            Append(Vec<(u8, bool)>, bool),
            /// Compact at a time this many ms after the previous op.
            Compact(u16),
            Roll,
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (prop::collection::vec((0u8..6, prop::bool::weighted(0.2)), 1..5), any::<bool>())
                    .prop_map(|(r, gz)| Op::Append(r, gz)),
                2 => (0u16..3000).prop_map(Op::Compact),
                1 => Just(Op::Roll),
                1 => Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(32))]
            /// Whatever the interleaving: offsets never change, every record read is one
            /// that was written there, each key's latest value survives (tombstones may
            /// go), the active segment is untouched and a clean leaves at most one record
            /// per key outside it.
            #[test]
            fn compaction_matches_a_model(ops in prop::collection::vec(op(), 1..40)) {
                let dir = tempfile::tempdir().unwrap();
                let cfg = LogConfig { segment_bytes: 300, delete_retention_ms: 1000, ..config() };
                let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
                let mut written: BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)> = BTreeMap::new();
                let mut now = 10_000i64;
                let mut counter = 0;
                for op in ops {
                    let mut cleaned = false;
                    match op {
                        Op::Append(records, gz) => {
                            let owned: Vec<(String, Option<String>)> = records.iter().map(|(k, tomb)| {
                                counter += 1;
                                (format!("k{k}"), (!tomb).then(|| format!("v{counter}")))
                            }).collect();
                            let refs: Vec<(Option<&str>, Option<&str>)> =
                                owned.iter().map(|(k, v)| (Some(k.as_str()), v.as_deref())).collect();
                            let mut bytes = if gz {
                                compressed(Compression::Gzip, &refs)
                            } else {
                                let recs: Vec<NewRecord> = refs.iter().map(|(k, v)| NewRecord {
                                    key: k.map(str::as_bytes), value: v.map(str::as_bytes), timestamp: now,
                                }).collect();
                                BytesMut::from(&build_batch(&recs)[..])
                            };
                            let info = log.append(&mut bytes, 0, now).unwrap();
                            for (i, (k, v)) in owned.into_iter().enumerate() {
                                written.insert(info.base_offset + i as i64, (k.into_bytes(), v.map(String::into_bytes)));
                            }
                        }
                        Op::Compact(dt) => {
                            now += dt as i64;
                            log.compact_now(now).unwrap();
                            cleaned = true;
                        }
                        Op::Roll => log.tick(i64::MAX / 2).unwrap(),
                        Op::Reopen => {
                            drop(log);
                            log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
                        }
                    }
                    let end = written.keys().next_back().map_or(0, |o| o + 1);
                    prop_assert_eq!(log.log_end_offset(), end);
                    prop_assert_eq!(log.log_start_offset(), 0);
                    let active = active_base(&mut log);
                    let read = read_all(&log);
                    let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
                    for (o, (k, _)) in &written {
                        latest.insert(k, *o);
                    }
                    for (o, k, v) in &read {
                        let (wk, wv) = &written[o];
                        prop_assert_eq!(Some(wk), k.as_ref());
                        prop_assert_eq!(wv, v);
                    }
                    let offsets: Vec<i64> = read.iter().map(|r| r.0).collect();
                    for (k, o) in &latest {
                        let tombstone = written[o].1.is_none();
                        prop_assert!(tombstone || offsets.contains(o), "latest of {:?} at {} lost", k, o);
                    }
                    for o in written.keys().filter(|o| **o >= active) {
                        prop_assert!(offsets.contains(o), "active record {} lost", o);
                    }
                    if cleaned {
                        // Only each key's latest record is left outside the active
                        // segment: no older value comes back once a tombstone goes.
                        for (o, k, _) in read.iter().filter(|r| r.0 < active) {
                            prop_assert_eq!(latest[k.as_deref().unwrap()], *o);
                        }
                    }
                }
            }
        }
    }
}
