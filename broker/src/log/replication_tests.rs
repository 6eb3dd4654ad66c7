//! Leader epochs, follower appends and the truncations replication needs, on real
//! logs in temporary directories.

use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use super::*;
use crate::log::batch::{batches, build_batch_with, build_values_batch, BatchOptions, NewRecord};
use crate::log::epoch_cache::LEADER_EPOCH_CHECKPOINT_FILE;
use crate::log::{CleanupPolicy, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 500,
        index_interval_bytes: 100,
        retention_ms: -1,
        flush_messages: u64::MAX,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config(), 0).unwrap()
}

/// Appends `n` leader batches of two records in `epoch`; `tag` makes the values of
/// different writers differ.
fn lead(log: &mut Log, epoch: i32, n: usize, tag: u8) {
    for i in 0..n {
        let a = [tag, i as u8, 1];
        let b = [tag, i as u8, 2];
        let mut records = BytesMut::from(&build_values_batch(&[&a, &b], 1000 + i as i64)[..]);
        log.append(&mut records, epoch, 0).unwrap();
    }
}

/// A batch as a leader wrote it: offsets from `base`, stamped with `epoch`.
fn replicated(base: i64, epoch: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut b = build_values_batch(values, 1000);
    batch::set_base_offset(&mut b, base);
    batch::set_partition_leader_epoch(&mut b, epoch);
    b
}

/// Every batch from the log start on, as bytes.
fn all_batches(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while let Some(slice) = log.read(offset, u64::MAX, i64::MAX, true).unwrap() {
        let bytes = slice.to_vec().unwrap();
        for item in batches(&bytes) {
            let (_, b) = item.unwrap();
            out.push(b.bytes().to_vec());
            offset = b.last_offset() + 1;
        }
    }
    out
}

fn headers_of(log: &Log) -> Vec<BatchHeader> {
    all_batches(log)
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap())
        .collect()
}

/// (name, contents) of every segment file.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn checkpoint_text(dir: &Path) -> String {
    fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap()
}

/// Fetches from the leader at the follower's log end until caught up, at most
/// `max_bytes` per fetch (at least one batch), returning each append's outcome.
fn catch_up(follower: &mut Log, leader: &Log, max_bytes: u64) -> Vec<FollowerAppendInfo> {
    let mut out = Vec::new();
    while let Some(slice) = leader
        .read(follower.log_end_offset(), max_bytes, i64::MAX, true)
        .unwrap()
    {
        // A clock far from the leader's: under LogAppendTime a restamp would show.
        let now_ms = 999_999;
        out.push(
            follower
                .append_as_follower(&slice.to_vec().unwrap(), now_ms)
                .unwrap(),
        );
    }
    out
}

/// Kafka's follower truncation (AbstractFetcherThread with OffsetsForLeaderEpoch):
/// ask the leader where the follower's latest epoch ends; if the leader answers
/// with an epoch the follower does not have, cut back to the end of the follower's
/// own epoch below it and ask again; otherwise cut to the smaller of both ends.
fn reconcile(follower: &mut Log, leader: &Log) {
    while let Some(epoch) = follower.latest_epoch() {
        let (leader_epoch, leader_end) = leader.end_offset_for_epoch(epoch);
        assert_ne!(
            leader_end, UNDEFINED_EPOCH_OFFSET,
            "leader knows no epoch <= {epoch}"
        );
        let end = follower.log_end_offset();
        let (own_epoch, own_end) = follower.end_offset_for_epoch(leader_epoch);
        if own_end == UNDEFINED_EPOCH_OFFSET {
            follower.truncate_to(leader_end.min(end)).unwrap();
            return;
        }
        if own_epoch != leader_epoch {
            follower.truncate_to(own_end.min(end)).unwrap();
            continue;
        }
        follower
            .truncate_to(own_end.min(leader_end).min(end))
            .unwrap();
        return;
    }
}

#[test]
fn leader_append_stamps_the_epoch_and_records_where_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 0, 4, 0); // 0..8
    lead(&mut log, 3, 2, 0); // 8..12
                             // A producer's own partitionLeaderEpoch is overwritten.
    let options = BatchOptions {
        partition_leader_epoch: 42,
        ..BatchOptions::default()
    };
    let record = NewRecord {
        key: None,
        value: Some(b"p"),
        timestamp: 5,
    };
    let mut records = BytesMut::from(&build_batch_with(options, &[record, record])[..]);
    log.append(&mut records, 5, 0).unwrap(); // 12..14
    assert_eq!(
        BatchHeader::parse(&records).unwrap().partition_leader_epoch,
        5
    );

    let epochs: Vec<(i64, i32)> = headers_of(&log)
        .iter()
        .map(|h| (h.base_offset, h.partition_leader_epoch))
        .collect();
    assert_eq!(
        epochs,
        vec![(0, 0), (2, 0), (4, 0), (6, 0), (8, 3), (10, 3), (12, 5)]
    );
    assert_eq!(log.epoch_entries(), vec![(0, 0), (3, 8), (5, 12)]);
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(0), (0, 8));
    assert_eq!(log.end_offset_for_epoch(2), (0, 8));
    assert_eq!(log.end_offset_for_epoch(3), (3, 12));
    assert_eq!(log.end_offset_for_epoch(4), (3, 12));
    assert_eq!(log.end_offset_for_epoch(5), (5, 14));
    assert_eq!(log.end_offset_for_epoch(6), UNDEFINED);
    assert_eq!(log.end_offset_for_epoch(UNDEFINED_EPOCH), UNDEFINED);
    assert_eq!(log.epoch_for_offset(9), Some(3));
    assert_eq!(checkpoint_text(dir.path()), "0\n3\n0 0\n3 8\n5 12\n");
}

#[test]
fn a_refused_leader_append_records_no_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 1, 1, 0);
    let mut bad = BytesMut::from(&build_values_batch(&[b"x"], 0)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        log.append(&mut bad, 7, 0),
        Err(LogError::CorruptMessage(_))
    ));
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    assert_eq!(checkpoint_text(dir.path()), "0\n1\n1 0\n");
}

#[test]
fn epochs_survive_clean_and_unclean_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 0, 3, 0);
    lead(&mut log, 2, 3, 0);
    let entries = log.epoch_entries();
    log.close().unwrap();
    let mut log = open(dir.path());
    assert_eq!(log.epoch_entries(), entries);
    lead(&mut log, 4, 1, 0);
    let entries = log.epoch_entries();
    assert_eq!(entries, vec![(0, 0), (2, 6), (4, 12)]);
    drop(log);
    let log = open(dir.path());
    assert!(log.recovered_unclean());
    assert_eq!(log.epoch_entries(), entries);
}

#[test]
fn a_missing_or_unreadable_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 0, 5, 0); // 0..10
    lead(&mut log, 2, 5, 0); // 10..20
    lead(&mut log, 2, 1, 0); // 20..22
    lead(&mut log, 5, 5, 0); // 22..32
    assert!(log.segment_count() >= 3);
    log.delete_records_before(5).unwrap();
    let entries = log.epoch_entries();
    assert_eq!(entries, vec![(0, 5), (2, 10), (5, 22)]);
    log.close().unwrap();

    let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    fs::remove_file(&path).unwrap();
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), entries);
    assert_eq!(checkpoint_text(dir.path()), "0\n3\n0 5\n2 10\n5 22\n");
    drop(log);

    fs::write(&path, "0\n7\n1 2\n").unwrap();
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), entries);
    drop(log);
    fs::write(&path, "9\n").unwrap();
    assert_eq!(open(dir.path()).epoch_entries(), entries);
}

#[test]
fn a_log_without_epochs_rebuilds_an_empty_checkpoint_once() {
    // Batches written before epochs were stamped carry -1 (the producer's value).
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.append_as_follower(&replicated(0, -1, &[b"a", b"b"]), 0)
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    log.close().unwrap();
    let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    assert!(!path.exists());
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(checkpoint_text(dir.path()), "0\n0\n");
    assert_eq!(log.end_offset_for_epoch(0), UNDEFINED);
}

#[test]
fn recovery_of_a_torn_tail_truncates_the_epoch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let mut log = Log::open(dir.path(), cfg.clone(), 0).unwrap();
    lead(&mut log, 0, 5, 0); // 0..10
    let size = log.size_bytes();
    lead(&mut log, 2, 2, 0); // 10..14, lost below
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 10)]);
    drop(log);
    let file = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("00000000000000000000.log"))
        .unwrap();
    // Half of the first epoch-2 batch survives: a torn write.
    file.set_len(size + 20).unwrap();
    drop(file);

    let mut log = Log::open(dir.path(), cfg, 0).unwrap();
    assert!(log.recovered_unclean());
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.epoch_entries(), vec![(0, 0)]);
    assert_eq!(log.end_offset_for_epoch(2), UNDEFINED);
    assert_eq!(checkpoint_text(dir.path()), "0\n1\n0 0\n");
    lead(&mut log, 3, 1, 0);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (3, 10)]);
}

#[test]
fn entries_written_ahead_of_lost_data_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 1, 2, 0); // 0..4
    log.close().unwrap();
    // A crash between writing the checkpoint and the batches it announces.
    fs::write(
        dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE),
        "0\n3\n1 0\n2 4\n3 9\n",
    )
    .unwrap();
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
}

#[test]
fn a_follower_copy_is_byte_identical_to_the_leader() {
    let leader_dir = tempfile::tempdir().unwrap();
    let stamped = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let mut leader = Log::open(leader_dir.path(), stamped.clone(), 0).unwrap();
    lead(&mut leader, 0, 4, 1);
    lead(&mut leader, 1, 3, 1);
    lead(&mut leader, 4, 6, 1);
    assert!(leader.segment_count() >= 3);

    // Batch by batch (the follower rolls where the leader did) and under
    // LogAppendTime with another clock: nothing may be restamped.
    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = Log::open(follower_dir.path(), stamped, 0).unwrap();
    let appended = catch_up(&mut follower, &leader, 1);
    assert_eq!(appended.len(), 13);
    assert_eq!(
        (appended[0].info.base_offset, appended[0].info.last_offset),
        (0, 1)
    );
    assert_eq!(appended[0].info.log_append_time, -1);
    assert_eq!(appended[0].info.record_count, 2);
    let leader_headers = headers_of(&leader);
    let copied: Vec<BatchHeader> = appended.iter().flat_map(|a| a.batches.clone()).collect();
    assert_eq!(copied, leader_headers);
    assert_eq!(all_batches(&follower), all_batches(&leader));
    assert_eq!(
        segment_files(follower_dir.path()),
        segment_files(leader_dir.path())
    );
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (1, 8), (4, 14)]);
    assert_eq!(
        checkpoint_text(follower_dir.path()),
        checkpoint_text(leader_dir.path())
    );
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    follower.close().unwrap();
    let follower = open(follower_dir.path());
    assert_eq!(all_batches(&follower), all_batches(&leader));

    // In large fetches: same batches and epochs, segments may split elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let mut bulk = open(dir.path());
    let appended = catch_up(&mut bulk, &leader, u64::MAX);
    assert!(appended.iter().any(|a| a.batches.len() > 1));
    assert_eq!(all_batches(&bulk), all_batches(&leader));
    assert_eq!(bulk.epoch_entries(), leader.epoch_entries());
}

#[test]
fn follower_appends_that_do_not_fit_are_refused_whole() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path());
    lead(&mut leader, 0, 2, 0); // 0..4
    lead(&mut leader, 2, 2, 0); // 4..8
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    catch_up(&mut follower, &leader, u64::MAX);
    let first_two = leader.read(0, 1, i64::MAX, true).unwrap().unwrap();
    let first_two = first_two.to_vec().unwrap();

    let state = |log: &Log| {
        (
            log.log_end_offset(),
            log.size_bytes(),
            log.epoch_entries(),
            checkpoint_text(dir.path()),
        )
    };
    let before = state(&follower);

    // Already there: starts below the log end.
    let err = follower.append_as_follower(&first_two, 0).unwrap_err();
    assert!(matches!(
        err,
        LogError::UnexpectedAppendOffset {
            first_offset: 0,
            last_offset: 1,
            log_end_offset: 8
        }
    ));
    // Overlapping batches.
    let mut overlap = replicated(8, 3, &[b"a", b"b"]);
    overlap.extend_from_slice(&replicated(9, 3, &[b"c"]));
    let err = follower.append_as_follower(&overlap, 0).unwrap_err();
    assert!(matches!(
        err,
        LogError::OffsetOutOfOrder {
            expected: 10,
            got: 9
        }
    ));
    // A bad CRC in the second batch: the good first one is not written either.
    let mut damaged = replicated(8, 3, &[b"a"]);
    let mut second = replicated(9, 3, &[b"b"]);
    let last = second.len() - 1;
    second[last] ^= 1;
    damaged.extend_from_slice(&second);
    assert!(matches!(
        follower.append_as_follower(&damaged, 0),
        Err(LogError::CorruptMessage(_))
    ));
    // A truncated trailing batch, and nothing at all.
    let whole = replicated(8, 3, &[b"a"]);
    assert!(matches!(
        follower.append_as_follower(&whole[..whole.len() - 3], 0),
        Err(LogError::CorruptMessage(_))
    ));
    assert!(matches!(
        follower.append_as_follower(&[], 0),
        Err(LogError::CorruptMessage(_))
    ));
    assert_eq!(state(&follower), before);
    // The valid batch alone goes in.
    let info = follower.append_as_follower(&whole, 0).unwrap();
    assert_eq!((info.info.base_offset, info.info.last_offset), (8, 8));
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (2, 4), (3, 8)]);
}

#[test]
fn follower_appends_skip_the_checks_the_leader_made() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_message_bytes: 10,
        cleanup_policy: CleanupPolicy::Compact,
        ..config()
    };
    let mut follower = Log::open(dir.path(), cfg, 0).unwrap();
    // Too large for max.message.bytes and keyless on a compacted topic.
    let info = follower
        .append_as_follower(&replicated(0, 0, &[&[7u8; 100]]), 0)
        .unwrap();
    assert_eq!(info.info.record_count, 1);
    // A compacted leader's batch may span more offsets than it has records: here a
    // header-only batch over offsets 1..=3, as the cleaner leaves them.
    let original = BatchHeader::parse(&replicated(1, 0, &[b"x", b"y", b"z"])).unwrap();
    let fields = batch::RebuiltFields {
        last_offset_delta: 2,
        base_timestamp: 1000,
        max_timestamp: 1000,
        record_count: 0,
        delete_horizon: false,
    };
    let sparse = batch::rebuild_batch(&original, fields, &[]);
    let info = follower.append_as_follower(&sparse, 0).unwrap();
    assert_eq!(info.info.record_count, 0);
    assert_eq!(follower.log_end_offset(), 4);
}

#[test]
fn a_follower_accepts_the_gap_a_compaction_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    follower
        .append_as_follower(&replicated(0, 0, &[b"a", b"b"]), 0)
        .unwrap();
    follower
        .append_as_follower(&replicated(20, 1, &[b"c"]), 0)
        .unwrap();
    assert_eq!(follower.log_end_offset(), 21);
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (1, 20)]);
    let slice = follower.read(5, u64::MAX, i64::MAX, true).unwrap().unwrap();
    let bytes = slice.to_vec().unwrap();
    assert_eq!(BatchHeader::parse(&bytes).unwrap().base_offset, 20);
    drop(follower);
    let follower = open(dir.path());
    assert_eq!(follower.log_end_offset(), 21);
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (1, 20)]);
}

#[test]
fn a_gap_too_wide_for_the_segment_starts_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    follower
        .append_as_follower(&replicated(0, 0, &[b"a"]), 0)
        .unwrap();
    let far = MAX_RELATIVE_OFFSET + 10;
    follower
        .append_as_follower(&replicated(far, 0, &[b"b"]), 0)
        .unwrap();
    assert_eq!(follower.segment_count(), 2);
    assert_eq!(follower.active.base_offset(), far);
    assert_eq!(follower.log_end_offset(), far + 1);
    // From an empty segment too: it is left behind, empty.
    let next = far + 1 + MAX_RELATIVE_OFFSET + 10;
    follower.roll().unwrap();
    follower
        .append_as_follower(&replicated(next, 0, &[b"c"]), 0)
        .unwrap();
    assert_eq!(follower.active.base_offset(), next);
    let follower = {
        drop(follower);
        open(dir.path())
    };
    assert_eq!(follower.log_end_offset(), next + 1);
    assert_eq!(all_batches(&follower).len(), 3);
}

#[test]
fn flush_settings_apply_to_follower_appends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush_messages: 3,
        ..config()
    };
    let mut follower = Log::open(dir.path(), cfg, 0).unwrap();
    follower
        .append_as_follower(&replicated(0, 0, &[b"a", b"b"]), 100)
        .unwrap();
    assert_eq!(
        (follower.unflushed_records, follower.first_unflushed_ms),
        (2, Some(100))
    );
    follower
        .append_as_follower(&replicated(2, 0, &[b"c"]), 200)
        .unwrap();
    assert_eq!(
        (follower.unflushed_records, follower.first_unflushed_ms),
        (0, None)
    );
}

/// The scenario of KIP-101: the leader has epochs 0 (offsets 0-9) and 2 (10-14);
/// the follower, leader in epoch 1 for a while, has 0 (0-9) and 1 (10-19).
#[test]
fn a_diverged_follower_truncates_to_the_leaders_epoch_end_and_converges() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path());
    lead(&mut leader, 0, 5, 0);
    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = open(follower_dir.path());
    catch_up(&mut follower, &leader, u64::MAX);
    lead(&mut follower, 1, 5, 1); // 10..20, never replicated
    lead(&mut leader, 2, 2, 2); // 10..14
    let mut last = BytesMut::from(&build_values_batch(&[b"z"], 0)[..]);
    leader.append(&mut last, 2, 0).unwrap(); // 14
    assert_eq!(leader.epoch_entries(), vec![(0, 0), (2, 10)]);
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (1, 10)]);
    assert_eq!(
        (leader.log_end_offset(), follower.log_end_offset()),
        (15, 20)
    );

    assert_eq!(leader.end_offset_for_epoch(1), (0, 10));
    assert_eq!(follower.end_offset_for_epoch(0), (0, 10));
    follower.truncate_to(10).unwrap();
    assert_eq!(follower.log_end_offset(), 10);
    assert_eq!(follower.epoch_entries(), vec![(0, 0)]);
    catch_up(&mut follower, &leader, u64::MAX);
    assert_eq!(all_batches(&follower), all_batches(&leader));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.log_end_offset(), 15);
}

#[test]
fn truncate_to_cuts_the_epoch_cache_at_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 0, 2, 0); // 0..4
    lead(&mut log, 1, 2, 0); // 4..8
    lead(&mut log, 2, 2, 0); // 8..12
                             // Inside the batch 8..10: the cut falls at 8, and epoch 2 goes with it.
    log.truncate_to(9).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 4)]);
    // A leader that became leader in epoch 5 and wrote nothing, then lost it: a
    // truncation to (or past) the end still drops that entry, as in Kafka.
    log.maybe_assign_epoch_start_offset(5, 8).unwrap();
    assert_eq!(log.end_offset_for_epoch(1), (1, 8));
    assert_eq!(log.latest_epoch(), Some(5));
    log.truncate_to(100).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 4)]);
    assert_eq!(log.log_end_offset(), 8);
    drop(log);
    let mut log = open(dir.path());
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 4)]);
    assert!(matches!(
        log.truncate_to(-1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Below the log start: the log restarts there, without epochs.
    log.delete_records_before(6).unwrap();
    log.truncate_to(3).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
    assert_eq!(log.epoch_entries(), vec![]);
}

#[test]
fn truncate_fully_and_start_at_empties_the_log_and_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 0, 4, 0);
    lead(&mut log, 1, 4, 0);
    assert!(log.segment_count() > 1);
    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(checkpoint_text(dir.path()), "0\n0\n");
    let names: Vec<String> = segment_files(dir.path()).into_iter().map(|f| f.0).collect();
    assert_eq!(names, vec!["00000000000000000100.log"]);
    assert!(matches!(
        log.read(50, u64::MAX, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.append_as_follower(&replicated(100, 3, &[b"a"]), 0)
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 100)]);
    // Also below the old start, and the state survives a reopen.
    log.truncate_fully_and_start_at(7).unwrap();
    lead(&mut log, 4, 1, 0);
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (7, 9));
    assert_eq!(log.epoch_entries(), vec![(4, 7)]);
    let mut log = log;
    assert!(matches!(
        log.truncate_fully_and_start_at(-5),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn moving_the_log_start_collapses_the_epoch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    lead(&mut log, 0, 5, 0); // 0..10
    lead(&mut log, 1, 5, 0); // 10..20
    lead(&mut log, 2, 5, 0); // 20..30
    log.delete_records_before(15).unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 15), (2, 20)]);
    assert_eq!(log.end_offset_for_epoch(0), (0, 15));
    drop(log);
    let mut log = open(dir.path());
    assert_eq!(log.epoch_entries(), vec![(1, 15), (2, 20)]);

    // Retention deleting segments moves the start to a segment base.
    log.set_config(LogConfig {
        retention_bytes: 100,
        ..config()
    });
    assert!(log.apply_retention(0).unwrap() > 0);
    let start = log.log_start_offset();
    assert!(start > 20, "start {start}");
    assert_eq!(log.epoch_entries(), vec![(2, start)]);
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.epoch_entries(), vec![(2, start)]);
}

/// One writer's history for the convergence property: the epochs both replicas
/// share, and how each went on from there.
#[derive(Clone, Debug)]
struct Divergence {
    /// (epoch increment, batches) of the epochs both replicas have in full.
    common: Vec<(i32, usize)>,
    /// Batches the last common leader wrote: the follower got the first
    /// `follower_got`, the new leader the first `leader_got`.
    last_leader_wrote: usize,
    follower_got: usize,
    leader_got: usize,
    /// Batches the follower wrote as leader of the next epoch (0: it never led).
    follower_led: usize,
    /// Batches the new leader wrote in the epoch after that.
    leader_wrote: usize,
}

fn divergence() -> impl Strategy<Value = Divergence> {
    (
        prop::collection::vec((1i32..3, 1usize..4), 0..4),
        0usize..5,
        any::<(u8, u8)>(),
        0usize..5,
        0usize..5,
    )
        .prop_map(
            |(common, wrote, (f, l), follower_led, leader_wrote)| Divergence {
                common,
                last_leader_wrote: wrote,
                follower_got: f as usize % (wrote + 1),
                leader_got: l as usize % (wrote + 1),
                follower_led,
                leader_wrote,
            },
        )
}

/// Appends `n` batches stamped with `epoch` at the log end, as a follower copying
/// them (values tagged by their origin, so two origins never look alike).
fn write_replicated(log: &mut Log, epoch: i32, n: usize, origin: u8, first: usize) {
    for i in first..first + n {
        let value = [origin, epoch as u8, i as u8, 0, 1, 2, 3, 4];
        let b = replicated(log.log_end_offset(), epoch, &[&value, &value[1..]]);
        log.append_as_follower(&b, 0).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Whatever way the follower diverged, Kafka's truncation rule on these
    /// answers leaves it with exactly the leader's batches and epochs.
    #[test]
    fn a_follower_converges_on_the_leader(d in divergence()) {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let mut leader = open(leader_dir.path());
        let mut follower = open(follower_dir.path());
        let mut epoch = 0;
        for &(step, n) in &d.common {
            epoch += step;
            write_replicated(&mut leader, epoch, n, 0, 0);
            write_replicated(&mut follower, epoch, n, 0, 0);
        }
        epoch += 1;
        // The last common leader's batches: the same bytes on both, a prefix each.
        write_replicated(&mut follower, epoch, d.follower_got, 0, 0);
        write_replicated(&mut leader, epoch, d.leader_got, 0, 0);
        prop_assert!(d.follower_got.max(d.leader_got) <= d.last_leader_wrote);
        if d.follower_led > 0 {
            let end = follower.log_end_offset();
            follower.maybe_assign_epoch_start_offset(epoch + 1, end).unwrap();
            write_replicated(&mut follower, epoch + 1, d.follower_led, 1, 0);
        }
        // The new leader records its epoch on election, before writing.
        let end = leader.log_end_offset();
        leader.maybe_assign_epoch_start_offset(epoch + 2, end).unwrap();
        write_replicated(&mut leader, epoch + 2, d.leader_wrote, 2, 0);

        reconcile(&mut follower, &leader);
        catch_up(&mut follower, &leader, 300);
        prop_assert_eq!(all_batches(&follower), all_batches(&leader));
        prop_assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        // The leader's entry for an epoch it has not written in yet has no batch to
        // travel with.
        let leader_end = leader.log_end_offset();
        let written: Vec<(i32, i64)> = leader
            .epoch_entries()
            .into_iter()
            .filter(|&(_, start)| start < leader_end)
            .collect();
        prop_assert_eq!(follower.epoch_entries(), written);
    }
}

#[test]
fn reads_of_a_follower_copy_see_the_leaders_timestamps() {
    // The follower keeps maxTimestamp as the leader stamped it (LogAppendTime).
    let leader_dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let mut leader = Log::open(leader_dir.path(), cfg.clone(), 0).unwrap();
    let mut b = BytesMut::from(&build_values_batch(&[b"a"], 5)[..]);
    leader.append(&mut b, 0, 123_456).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut follower = Log::open(dir.path(), cfg, 0).unwrap();
    catch_up(&mut follower, &leader, u64::MAX);
    assert_eq!(follower.max_timestamp().unwrap(), Some((0, 123_456)));
    let mut buf = [0u8; 8];
    let slice = follower.read(0, u64::MAX, i64::MAX, true).unwrap().unwrap();
    slice
        .file
        .read_exact_at(&mut buf, slice.position + 35)
        .unwrap();
    assert_eq!(i64::from_be_bytes(buf), 123_456);
}
