//! The producer state of one partition (Kafka's ProducerStateManager): validates the
//! batches of an append before they are written, records them after, and persists
//! itself in snapshots next to the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::log::batch::{batch_size_from_prefix, BatchHeader};
use crate::log::{scan_batch_headers, Log, LogError};

use super::entry::{check_sequence, BatchMetadata, IncomingBatch, ProducerEntry};
use super::snapshot::{self, Snapshot, SnapshotError, SnapshotProducer};
use super::{ProducerStateError, SequenceError};

/// Snapshots kept per partition: the newest may be above the log end after a crash
/// lost the unsynced tail, then the one before saves a full rescan.
const SNAPSHOTS_TO_KEEP: usize = 2;

/// What a set of batches means for the log, decided before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendCheck {
    /// Write them.
    Append,
    /// Every batch is a retry of one already in the log: write nothing and answer
    /// with where the original landed (Kafka answers success, not an error).
    Duplicate { first_offset: i64, last_offset: i64 },
}

pub struct ProducerStateManager {
    dir: PathBuf,
    producers: HashMap<i64, ProducerEntry>,
    /// Offset of the last snapshot written or loaded, and when (wall clock ms).
    last_snapshot: Option<(i64, i64)>,
}

/// The headers of the batches in a producer's buffer, without CRC checks (the log
/// append does those). Any framing problem is a corrupt message.
pub fn batch_headers(records: &[u8]) -> Result<Vec<BatchHeader>, LogError> {
    let mut headers = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let rest = &records[pos..];
        let size = batch_size_from_prefix(rest)?;
        if size > rest.len() as u64 {
            return Err(LogError::CorruptMessage(format!(
                "truncated batch at byte {pos}: {size} bytes announced, {} present",
                rest.len()
            )));
        }
        headers.push(BatchHeader::parse(rest)?);
        pos += size as usize;
    }
    Ok(headers)
}

fn incoming(h: &BatchHeader) -> IncomingBatch {
    IncomingBatch {
        producer_id: h.producer_id,
        epoch: h.producer_epoch,
        first_seq: h.base_sequence,
        last_offset_delta: h.last_offset_delta,
    }
}

impl ProducerStateManager {
    /// Empty state for the partition in `dir` (a new log).
    pub fn new(dir: &Path) -> Self {
        ProducerStateManager {
            dir: dir.to_path_buf(),
            producers: HashMap::new(),
            last_snapshot: None,
        }
    }

    /// The state of an opened log: the newest usable snapshot at or below the log end
    /// plus a replay of the batch headers after it. Snapshots above the log end (its
    /// tail was truncated or lost) and damaged ones are deleted.
    pub fn load(log: &Log, now_ms: i64) -> Result<Self, ProducerStateError> {
        let mut state = ProducerStateManager::new(log.dir());
        let end = log.log_end_offset();
        let mut from = log.log_start_offset();
        for (offset, path) in snapshot::list(log.dir())?.into_iter().rev() {
            if offset > end {
                tracing::info!(path = %path.display(), log_end_offset = end, "deleting producer snapshot above the log end");
                snapshot::remove(&path)?;
                continue;
            }
            match snapshot::read(&path) {
                Ok(snap) => {
                    state.producers = snap
                        .producers
                        .into_iter()
                        .map(|p| (p.producer_id, p.entry))
                        .collect();
                    state.last_snapshot = Some((offset, now_ms));
                    from = offset;
                    break;
                }
                Err(e @ SnapshotError::Corrupt { .. }) => {
                    tracing::warn!(error = %e, "ignoring a damaged producer snapshot");
                    snapshot::remove(&path)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        state.replay(log, from)?;
        Ok(state)
    }

    /// Applies every producer batch of `log` whose last offset is at or above `from`.
    fn replay(&mut self, log: &Log, from: i64) -> Result<(), LogError> {
        scan_batch_headers(log, from, |h| {
            if h.last_offset() >= from {
                self.apply(h);
            }
        })
    }

    /// After the log was truncated (replication): drop what is above its end and
    /// rebuild from the newest snapshot still valid, as at open.
    pub fn truncate_and_reload(
        &mut self,
        log: &Log,
        now_ms: i64,
    ) -> Result<(), ProducerStateError> {
        *self = ProducerStateManager::load(log, now_ms)?;
        Ok(())
    }

    /// After `Log::truncate_fully_and_start_at`: the old log's producers are gone
    /// with it, and so are all snapshots. A snapshot at or below the new start would
    /// otherwise pass for the state there at the next load (Kafka's
    /// `truncateFullyAndStartAt` deletes them all too).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), SnapshotError> {
        for (_, path) in snapshot::list(&self.dir)? {
            snapshot::remove(&path)?;
        }
        tracing::debug!(dir = %self.dir.display(), offset, "producer state emptied with the log");
        self.producers.clear();
        self.last_snapshot = None;
        Ok(())
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Validates the batches of one client append against the state, in order: a
    /// batch sees the effect of the earlier ones of the same request. Nothing changes.
    pub fn check(&self, headers: &[BatchHeader]) -> Result<AppendCheck, SequenceError> {
        let mut pending: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut duplicate: Option<(i64, i64)> = None;
        let mut fresh = 0usize;
        for h in headers {
            if h.producer_id < 0 {
                fresh += 1;
                continue;
            }
            if h.is_transactional() || h.is_control() {
                return Err(SequenceError::TransactionsUnsupported {
                    producer_id: h.producer_id,
                });
            }
            if h.producer_epoch < 0 || h.base_sequence < 0 {
                return Err(SequenceError::InvalidProducerFields {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    sequence: h.base_sequence,
                });
            }
            let batch = incoming(h);
            // Retries are matched against what is in the log, like Kafka does.
            if let Some(d) = self
                .producers
                .get(&h.producer_id)
                .and_then(|e| e.find_duplicate(&batch))
            {
                let (first, _) = duplicate.unwrap_or((d.first_offset, d.last_offset));
                duplicate = Some((first, d.last_offset));
                continue;
            }
            let current = pending
                .get(&h.producer_id)
                .or_else(|| self.producers.get(&h.producer_id));
            check_sequence(current, &batch)?;
            let mut next = current.cloned().unwrap_or_default();
            // Offsets are not known yet; only the sequences matter for later batches.
            next.add_batch(
                batch.epoch,
                BatchMetadata {
                    first_seq: batch.first_seq,
                    last_seq: batch.last_seq(),
                    first_offset: -1,
                    last_offset: -1,
                    timestamp: -1,
                },
            );
            pending.insert(h.producer_id, next);
            fresh += 1;
        }
        match duplicate {
            None => Ok(AppendCheck::Append),
            Some((first_offset, last_offset)) if fresh == 0 => Ok(AppendCheck::Duplicate {
                first_offset,
                last_offset,
            }),
            // One response offset cannot describe "some written, some not"; clients
            // send one batch per partition, so this is a broken client.
            Some(_) => Err(SequenceError::MixedDuplicates),
        }
    }

    /// Records a batch now in the log (with its assigned offsets): after a leader
    /// append, while replaying the log, and for batches a follower copies.
    pub fn apply(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let batch = incoming(h);
        self.producers.entry(h.producer_id).or_default().add_batch(
            h.producer_epoch,
            BatchMetadata {
                first_seq: batch.first_seq,
                last_seq: batch.last_seq(),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
                timestamp: h.max_timestamp,
            },
        );
    }

    /// Records every batch of an appended buffer (base offsets already assigned).
    pub fn apply_appended(&mut self, records: &[u8]) -> Result<(), LogError> {
        for h in batch_headers(records)? {
            self.apply(&h);
        }
        Ok(())
    }

    /// Kafka's `producer.id.expiration.ms`: forgets producers whose last batch is
    /// older than that. Returns how many were removed.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.last_timestamp()
                .is_none_or(|ts| now_ms.saturating_sub(ts) < expiration_ms)
        });
        before - self.producers.len()
    }

    fn to_snapshot(&self, offset: i64) -> Snapshot {
        let mut producers: Vec<SnapshotProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| SnapshotProducer {
                producer_id,
                entry: entry.clone(),
            })
            .collect();
        producers.sort_by_key(|p| p.producer_id);
        Snapshot { offset, producers }
    }

    /// Writes the state as of `log_end_offset` (the caller holds the log so the two
    /// agree) and keeps only the newest snapshots.
    pub fn write_snapshot(
        &mut self,
        log_end_offset: i64,
        now_ms: i64,
    ) -> Result<(), SnapshotError> {
        snapshot::write(&self.dir, &self.to_snapshot(log_end_offset))?;
        self.last_snapshot = Some((log_end_offset, now_ms));
        snapshot::retain_latest(&self.dir, SNAPSHOTS_TO_KEEP)
    }

    /// Whether a periodic snapshot is due: the log moved since the last one and
    /// either `interval_ms` passed or `max_offsets` were appended.
    pub fn snapshot_due(
        &self,
        log_end_offset: i64,
        now_ms: i64,
        interval_ms: i64,
        max_offsets: i64,
    ) -> bool {
        match self.last_snapshot {
            None => log_end_offset > 0,
            Some((offset, at)) => {
                log_end_offset != offset
                    && (now_ms.saturating_sub(at) >= interval_ms
                        || log_end_offset.saturating_sub(offset) >= max_offsets)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::log::batch::{build_batch_with, BatchOptions, NewRecord};
    use crate::log::LogConfig;

    fn config() -> LogConfig {
        LogConfig {
            retention_ms: -1,
            flush_messages: u64::MAX,
            segment_bytes: 2000,
            ..LogConfig::default()
        }
    }

    /// A batch of `n` records from producer `pid`.
    fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> BytesMut {
        let value = [b'v'; 30];
        let records: Vec<NewRecord<'_>> = (0..n)
            .map(|i| NewRecord {
                key: None,
                value: Some(&value),
                timestamp: 1000 + i as i64,
            })
            .collect();
        let options = BatchOptions {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            ..BatchOptions::default()
        };
        BytesMut::from(&build_batch_with(options, &records)[..])
    }

    /// The partition's append path in miniature: check, append, apply.
    fn produce(
        log: &mut Log,
        state: &mut ProducerStateManager,
        mut records: BytesMut,
    ) -> Result<(i64, bool), SequenceError> {
        let headers = batch_headers(&records).unwrap();
        match state.check(&headers)? {
            AppendCheck::Duplicate { first_offset, .. } => Ok((first_offset, true)),
            AppendCheck::Append => {
                let info = log.append(&mut records, 0, 0).unwrap();
                state.apply_appended(&records).unwrap();
                Ok((info.base_offset, false))
            }
        }
    }

    #[test]
    fn duplicates_answer_the_original_offset_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        let mut state = ProducerStateManager::new(dir.path());
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 0, 0, 3)),
            Ok((0, false))
        );
        assert_eq!(
            produce(&mut log, &mut state, batch(2, 0, 0, 1)),
            Ok((3, false))
        );
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 0, 3, 2)),
            Ok((4, false))
        );
        // Retries of either earlier batch of producer 1.
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 0, 0, 3)),
            Ok((0, true))
        );
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 0, 3, 2)),
            Ok((4, true))
        );
        assert_eq!(log.log_end_offset(), 6);
        // A gap.
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 0, 9, 1)),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: 1,
                epoch: 0,
                expected: 5,
                got: 9
            })
        );
        // A new epoch from 0, then the old epoch is fenced.
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 1, 0, 1)),
            Ok((6, false))
        );
        assert_eq!(
            produce(&mut log, &mut state, batch(1, 0, 5, 1)),
            Err(SequenceError::InvalidProducerEpoch {
                producer_id: 1,
                epoch: 0,
                current: 1
            })
        );
        assert_eq!(log.log_end_offset(), 7);
        // Non-idempotent batches are not tracked.
        let mut plain = BytesMut::from(&crate::log::batch::build_values_batch(&[b"p"], 0)[..]);
        assert!(matches!(
            state.check(&batch_headers(&plain).unwrap()),
            Ok(AppendCheck::Append)
        ));
        log.append(&mut plain, 0, 0).unwrap();
        state.apply_appended(&plain).unwrap();
        assert_eq!(state.producer_count(), 2);
    }

    #[test]
    fn batches_of_one_request_are_checked_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        let mut state = ProducerStateManager::new(dir.path());
        let mut two = batch(5, 0, 0, 2);
        two.extend_from_slice(&batch(5, 0, 2, 2));
        assert_eq!(produce(&mut log, &mut state, two.clone()), Ok((0, false)));
        assert_eq!(state.entry(5).unwrap().batches.len(), 2);
        assert_eq!(state.entry(5).unwrap().batches[1].first_offset, 2);
        // The same request again is a duplicate as a whole.
        assert_eq!(produce(&mut log, &mut state, two), Ok((0, true)));
        let mut gap = batch(5, 0, 4, 1);
        gap.extend_from_slice(&batch(5, 0, 6, 1));
        assert!(matches!(
            produce(&mut log, &mut state, gap),
            Err(SequenceError::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        let mut mixed = batch(5, 0, 2, 2);
        mixed.extend_from_slice(&batch(5, 0, 4, 1));
        assert_eq!(
            produce(&mut log, &mut state, mixed),
            Err(SequenceError::MixedDuplicates)
        );
        assert_eq!(log.log_end_offset(), 4);
        let txn = BytesMut::from(
            &build_batch_with(
                BatchOptions {
                    producer_id: 6,
                    producer_epoch: 0,
                    base_sequence: 0,
                    transactional: true,
                    ..BatchOptions::default()
                },
                &[NewRecord {
                    key: None,
                    value: None,
                    timestamp: 0,
                }],
            )[..],
        );
        assert_eq!(
            produce(&mut log, &mut state, txn),
            Err(SequenceError::TransactionsUnsupported { producer_id: 6 })
        );
    }

    /// A log with three producers spread over several segments.
    fn populated(dir: &Path) -> (Log, ProducerStateManager) {
        let mut log = Log::open(dir, config(), 0).unwrap();
        let mut state = ProducerStateManager::new(dir);
        let mut seqs = [0i32; 3];
        for i in 0..30 {
            let p = i % 3;
            let n = 1 + i % 4;
            produce(&mut log, &mut state, batch(100 + p as i64, 0, seqs[p], n)).unwrap();
            seqs[p] += n as i32;
        }
        assert!(log.segment_count() > 2);
        (log, state)
    }

    #[test]
    fn rebuild_by_scan_equals_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let (log, state) = populated(dir.path());
        let rebuilt = ProducerStateManager::load(&log, 0).unwrap();
        assert_eq!(rebuilt.producers, state.producers);
        assert_eq!(rebuilt.producer_count(), 3);
    }

    #[test]
    fn snapshot_round_trip_then_replay_of_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = populated(dir.path());
        state.write_snapshot(log.log_end_offset(), 0).unwrap();
        let loaded = ProducerStateManager::load(&log, 0).unwrap();
        assert_eq!(loaded.producers, state.producers);
        assert_eq!(
            loaded.last_snapshot.map(|s| s.0),
            Some(log.log_end_offset())
        );
        // More appends after the snapshot are replayed on top of it.
        let next = state.entry(100).unwrap().last_seq().unwrap() + 1;
        produce(&mut log, &mut state, batch(100, 0, next, 2)).unwrap();
        produce(&mut log, &mut state, batch(200, 3, 0, 1)).unwrap();
        let loaded = ProducerStateManager::load(&log, 0).unwrap();
        assert_eq!(loaded.producers, state.producers);
        // The snapshot really is used: with the log's early batches unreadable in it,
        // a snapshot-less rebuild would differ. Prove it by a damaged snapshot falling
        // back to the full scan, which must still agree.
        let (_, path) = snapshot::list(dir.path()).unwrap().pop().unwrap();
        std::fs::write(&path, b"rill-producer-snapshot 1 00000000\n{}").unwrap();
        let loaded = ProducerStateManager::load(&log, 0).unwrap();
        assert_eq!(loaded.producers, state.producers);
        assert!(!path.exists());
    }

    #[test]
    fn snapshots_above_the_log_end_are_discarded_after_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = populated(dir.path());
        let middle = log.log_end_offset();
        state.write_snapshot(middle, 0).unwrap();
        let before_tail = state.producers.clone();
        produce(&mut log, &mut state, batch(300, 0, 0, 3)).unwrap();
        let next = state.entry(101).unwrap().last_seq().unwrap() + 1;
        produce(&mut log, &mut state, batch(101, 0, next, 2)).unwrap();
        state.write_snapshot(log.log_end_offset(), 0).unwrap();
        let end = log.log_end_offset();

        log.truncate_to(middle).unwrap();
        state.truncate_and_reload(&log, 0).unwrap();
        let offsets: Vec<i64> = snapshot::list(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(offsets, vec![middle]);
        assert!(!dir.path().join(snapshot::file_name(end)).exists());
        assert_eq!(state.producers, before_tail);
        assert!(state.entry(300).is_none());
        // The truncated producer may start over, and 101 continues where the log is.
        let next = state.entry(101).unwrap().last_seq().unwrap() + 1;
        assert_eq!(
            produce(&mut log, &mut state, batch(101, 0, next, 1)),
            Ok((middle, false))
        );
    }

    #[test]
    fn full_truncation_forgets_producers_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = populated(dir.path());
        let middle = log.log_end_offset();
        state.write_snapshot(middle, 0).unwrap();
        produce(&mut log, &mut state, batch(300, 0, 0, 3)).unwrap();
        state.write_snapshot(log.log_end_offset(), 0).unwrap();

        let restart = log.log_end_offset() + 100;
        log.truncate_fully_and_start_at(restart).unwrap();
        state.truncate_fully_and_start_at(restart).unwrap();
        assert_eq!(state.producer_count(), 0);
        assert!(snapshot::list(dir.path()).unwrap().is_empty());
        // A reload finds nothing stale either.
        let loaded = ProducerStateManager::load(&log, 0).unwrap();
        assert_eq!(loaded.producer_count(), 0);
        // Any producer may start over at the new start.
        assert_eq!(
            produce(&mut log, &mut state, batch(101, 0, 40, 1)),
            Ok((restart, false))
        );
    }

    #[test]
    fn expiry_and_snapshot_scheduling() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ProducerStateManager::new(dir.path());
        let mut log = Log::open(dir.path(), config(), 0).unwrap();
        produce(&mut log, &mut state, batch(1, 0, 0, 1)).unwrap(); // timestamp 1000
        assert!(state.snapshot_due(1, 0, 60_000, 1000));
        state.write_snapshot(1, 5_000).unwrap();
        assert!(!state.snapshot_due(1, 100_000, 60_000, 1000));
        assert!(!state.snapshot_due(2, 6_000, 60_000, 1000));
        assert!(state.snapshot_due(2, 65_000, 60_000, 1000));
        assert!(state.snapshot_due(1001, 6_000, 60_000, 1000));
        assert_eq!(state.remove_expired(1500, 1000), 0);
        assert_eq!(state.remove_expired(2000, 1000), 1);
        assert!(state.entry(1).is_none());
    }
}
