//! The partition-level replication state machine, in process and deterministic: one
//! `Partition` per broker over its own log in a temporary directory, a `pump` that
//! moves one follower fetch exactly as `fetcher::apply` applies the leader's answer,
//! and a partition image the tests drive as the controller would (leader epoch bumped
//! on every leader change, partition epoch on every change). Time is explicit.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tempfile::TempDir;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::cluster::image::PartitionState;
use crate::log::batch::{batches, build_batch_with, build_values_batch, BatchOptions, NewRecord};
use crate::log::{AppendInfo, Log, LogConfig, LogError};
use crate::partition::{AckStatus, AlterIsr, FollowerFetch, Partition, PartitionError, Role};
use crate::producer_state::SequenceError;

/// `replica.lag.time.max.ms` for these tests.
const LAG_MAX: i64 = 10_000;
/// A fetch size that takes everything there is.
const ALL: u64 = 1 << 20;
/// A fetch size that takes exactly one batch (the first batch is always returned).
const ONE_BATCH: u64 = 1;
/// Bound on the fetches of any catch-up: a loop that needs more is a bug.
const MAX_PUMPS: usize = 50;

fn config(min_isr: i32) -> LogConfig {
    LogConfig {
        // Small segments, so that DeleteRecords removes whole files.
        segment_bytes: 400,
        index_interval_bytes: 100,
        retention_ms: -1,
        flush_messages: u64::MAX,
        min_insync_replicas: min_isr,
        ..LogConfig::default()
    }
}

/// What one follower fetch did on the follower.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// Appended the answer's records (possibly none): the follower's log end and
    /// the high watermark the leader sent.
    Records { log_end: i64, leader_hw: i64 },
    /// Told it diverged: what the leader said and where the follower cut its log.
    Diverging {
        epoch: i32,
        end_offset: i64,
        truncated_to: i64,
    },
    /// Below the leader's log start: started over there.
    BelowLogStart { log_start_offset: i64 },
}

/// Three (or more) brokers' replicas of partition `t-0` and the controller's view.
struct Cluster {
    nodes: BTreeMap<i32, Partition>,
    image: PartitionState,
    dirs: BTreeMap<i32, TempDir>,
}

impl Cluster {
    /// `replicas` with `replicas[0]` leading in epoch 0, the given ISR, applied
    /// everywhere at `now`.
    fn new(replicas: &[i32], isr: &[i32], min_isr: i32, now: i64) -> Cluster {
        let mut nodes = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for &id in replicas {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config(min_isr), now).unwrap();
            let partition = Partition::new(
                "t".to_string(),
                Uuid::nil(),
                0,
                log,
                id,
                Arc::new(Notify::new()),
            );
            nodes.insert(id, partition);
            dirs.insert(id, dir);
        }
        let mut image = PartitionState::new(replicas.to_vec());
        image.isr = isr.to_vec();
        let cluster = Cluster { nodes, image, dirs };
        cluster.publish(now);
        cluster
    }

    /// A reassignment adds replica `id`: the controller lists it (as adding) and it
    /// starts empty, as `ReplicaManager::open_partition` creates it, with no state of
    /// its own. Every broker, the new one included, applies the new image.
    fn add_replica(&mut self, id: i32, min_isr: i32, now: i64) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config(min_isr), now).unwrap();
        let partition = Partition::new(
            "t".to_string(),
            Uuid::nil(),
            0,
            log,
            id,
            Arc::new(Notify::new()),
        );
        assert!(self.nodes.insert(id, partition).is_none());
        self.dirs.insert(id, dir);
        self.image.replicas.push(id);
        self.image.adding.push(id);
        self.image.partition_epoch += 1;
        self.publish(now);
    }

    /// Broker `id` stops (cleanly: snapshot at the log end, or not) and starts again:
    /// its partition is opened from its files, as `ReplicaManager` opens it, and
    /// takes the current image.
    fn restart(&mut self, id: i32, clean: bool, now: i64) {
        let old = self.nodes.remove(&id).unwrap();
        if clean {
            old.close().unwrap();
        } else {
            drop(old);
        }
        let min_isr = 1;
        let log = Log::open(self.dirs[&id].path(), config(min_isr), now).unwrap();
        let partition = Partition::new(
            "t".to_string(),
            Uuid::nil(),
            0,
            log,
            id,
            Arc::new(Notify::new()),
        );
        partition.apply_state(&self.image, now);
        self.nodes.insert(id, partition);
    }

    fn p(&self, id: i32) -> &Partition {
        &self.nodes[&id]
    }

    fn ids(&self) -> Vec<i32> {
        self.nodes.keys().copied().collect()
    }

    /// Every broker applies the current image.
    fn publish(&self, now: i64) {
        self.publish_to(&self.ids(), now);
    }

    /// Only `ids` learn the current image (the others have not caught up yet).
    fn publish_to(&self, ids: &[i32], now: i64) {
        for id in ids {
            self.p(*id).apply_state(&self.image, now);
        }
    }

    /// The controller moves leadership: new leader epoch and partition epoch.
    fn elect(&mut self, leader: i32, isr: &[i32]) {
        self.image.leader = leader;
        self.image.isr = isr.to_vec();
        self.image.leader_epoch += 1;
        self.image.partition_epoch += 1;
    }

    /// The controller accepts a leader's AlterPartition (after checking it the way
    /// the controller does) and every broker applies the result.
    fn alter(&mut self, change: &AlterIsr, now: i64) {
        assert_eq!(change.leader_epoch, self.image.leader_epoch, "stale leader");
        assert_eq!(
            change.partition_epoch, self.image.partition_epoch,
            "stale partition epoch"
        );
        self.image.isr = change.new_isr.clone();
        self.image.partition_epoch += 1;
        self.publish(now);
    }

    /// One fetch by `follower` from the leader it follows, applied exactly as
    /// `fetcher::apply` does: append (with the leader epoch the fetch was made in),
    /// truncate on divergence, or start over at the leader's log start.
    fn pump_with(&self, follower: i32, max_bytes: u64, now: i64) -> Result<Pumped, PartitionError> {
        let f = self.p(follower);
        let (leader, fetch_offset, last_fetched_epoch, epoch) =
            f.follower_position().expect("not following anyone");
        let answer = self.p(leader).fetch_for_follower(
            follower,
            fetch_offset,
            last_fetched_epoch,
            epoch,
            max_bytes,
            now,
        )?;
        Ok(match answer {
            FollowerFetch::Records {
                records,
                high_watermark,
                log_start_offset,
            } => {
                f.append_as_follower(&records, high_watermark, log_start_offset, epoch, now)?;
                Pumped::Records {
                    log_end: f.log_end_offset(),
                    leader_hw: high_watermark,
                }
            }
            FollowerFetch::Diverging {
                epoch: diverging_epoch,
                end_offset,
            } => {
                let truncated_to = f.truncate_diverging(epoch, diverging_epoch, end_offset, now)?;
                Pumped::Diverging {
                    epoch: diverging_epoch,
                    end_offset,
                    truncated_to,
                }
            }
            FollowerFetch::BelowLogStart { log_start_offset } => {
                f.reset_to(epoch, log_start_offset)?;
                Pumped::BelowLogStart { log_start_offset }
            }
        })
    }

    fn pump(&self, follower: i32, now: i64) -> Pumped {
        self.pump_with(follower, ALL, now).unwrap()
    }

    /// Fetches until the follower holds the leader's whole log and has told the
    /// leader so (its last fetch is at the leader's log end, with nothing new).
    /// Returns every step; panics if that takes more than `MAX_PUMPS` fetches.
    fn catch_up(&self, follower: i32, now: i64) -> Vec<Pumped> {
        let leader = self.p(follower).leader_id();
        let mut steps = Vec::new();
        for _ in 0..MAX_PUMPS {
            let before = self.p(follower).log_end_offset();
            let step = self.pump(follower, now);
            let done = matches!(step, Pumped::Records { log_end, .. }
                if log_end == before && log_end == self.p(leader).log_end_offset());
            steps.push(step);
            if done {
                return steps;
            }
        }
        panic!("follower {follower} did not catch up in {MAX_PUMPS} fetches: {steps:?}");
    }
}

/// A plain (non-idempotent) producer's batch of `values`.
fn produce(
    p: &Partition,
    values: &[&[u8]],
    acks: i16,
    now: i64,
) -> Result<AppendInfo, PartitionError> {
    let mut records = BytesMut::from(&build_values_batch(values, now)[..]);
    p.append_as_leader(&mut records, acks, now)
}

/// An idempotent producer's batch: producer 42, epoch 0, from `base_sequence`.
fn idempotent(base_sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            key: None,
            value: Some(v),
            timestamp: 1_000,
        })
        .collect();
    build_batch_with(
        BatchOptions {
            producer_id: 42,
            producer_epoch: 0,
            base_sequence,
            ..BatchOptions::default()
        },
        &records,
    )
}

fn produce_bytes(p: &Partition, batch: &[u8], now: i64) -> Result<AppendInfo, PartitionError> {
    let mut records = BytesMut::from(batch);
    p.append_as_leader(&mut records, -1, now)
}

/// (offset, value) of every record in `bytes`.
fn records_of(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for item in batches(bytes) {
        let (_, batch) = item.unwrap();
        for record in batch.records().unwrap() {
            let record = record.unwrap();
            out.push((record.offset, record.value.unwrap().to_vec()));
        }
    }
    out
}

/// What a consumer can read from the leader `p`, from its log start: never past the
/// high watermark.
fn consumed(p: &Partition) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    for _ in 0..MAX_PUMPS {
        let fetched = p.fetch(offset, 64, true).unwrap();
        let Some(slice) = fetched.slice else {
            return out;
        };
        let records = records_of(&slice.to_vec().unwrap());
        offset = records.last().unwrap().0 + 1;
        out.extend(records);
    }
    panic!("consumer read did not end");
}

/// Every batch of `p`'s log, byte for byte, from its log start to its log end.
fn log_bytes(p: &Partition) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    while let Some(slice) = p.read_to_end(offset, ALL).unwrap() {
        let bytes = slice.to_vec().unwrap();
        for item in batches(&bytes) {
            let (_, batch) = item.unwrap();
            out.push(batch.bytes().to_vec());
            offset = batch.last_offset() + 1;
        }
    }
    out
}

fn values(records: &[(i64, Vec<u8>)]) -> Vec<&[u8]> {
    records.iter().map(|(_, v)| v.as_slice()).collect()
}

/// Test 1: acks=all completes only once every ISR member has fetched past the batch;
/// the high watermark is the smallest ISR log end; consumers stop at it.
#[test]
fn acks_all_waits_for_the_whole_isr_and_consumers_stop_at_the_high_watermark() {
    let t = 1_000;
    let c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 2, t);
    let leader = c.p(1);
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(c.p(2).role(), Role::Follower);
    assert_eq!(c.p(2).follower_position(), Some((1, 0, -1, 0)));

    let a = produce(leader, &[b"a0", b"a1", b"a2"], -1, t).unwrap();
    assert_eq!((a.base_offset, a.last_offset, a.record_count), (0, 2, 3));
    assert_eq!(leader.log_end_offset(), 3);
    assert_eq!(leader.high_watermark(), 0);
    assert_eq!(leader.ack_status(3, 0), AckStatus::Pending);
    assert!(consumed(leader).is_empty());

    // Follower 2 gets the batch; the leader learns it holds it at its next fetch.
    assert_eq!(
        c.pump(2, t),
        Pumped::Records {
            log_end: 3,
            leader_hw: 0
        }
    );
    assert_eq!(
        c.pump(2, t),
        Pumped::Records {
            log_end: 3,
            leader_hw: 0
        }
    );
    // 3 has not fetched: the high watermark waits for it.
    assert_eq!(leader.high_watermark(), 0);
    assert_eq!(leader.ack_status(3, 0), AckStatus::Pending);
    assert_eq!(
        c.pump(3, t),
        Pumped::Records {
            log_end: 3,
            leader_hw: 0
        }
    );
    assert_eq!(leader.ack_status(3, 0), AckStatus::Pending);
    assert_eq!(
        c.pump(3, t),
        Pumped::Records {
            log_end: 3,
            leader_hw: 3
        }
    );
    assert_eq!(leader.high_watermark(), 3);
    assert_eq!(leader.ack_status(3, 0), AckStatus::Done);
    assert_eq!(c.p(3).high_watermark(), 3);
    // 2 learns the high watermark only from its next answer.
    assert_eq!(c.p(2).high_watermark(), 0);
    c.pump(2, t);
    assert_eq!(c.p(2).high_watermark(), 3);
    assert_eq!(
        consumed(leader),
        vec![
            (0, b"a0".to_vec()),
            (1, b"a1".to_vec()),
            (2, b"a2".to_vec())
        ]
    );

    // The high watermark is the minimum over the ISR: 2 at 5, 3 at 3.
    let b = produce(leader, &[b"b0", b"b1"], -1, t).unwrap();
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    c.catch_up(2, t);
    assert_eq!(c.p(2).log_end_offset(), 5);
    assert_eq!(leader.high_watermark(), 3);
    assert_eq!(leader.ack_status(5, 0), AckStatus::Pending);
    assert_eq!(leader.ack_status(3, 0), AckStatus::Done);
    assert_eq!(consumed(leader).len(), 3);
    assert!(leader.fetch(3, ALL, true).unwrap().slice.is_none());
    assert_eq!(leader.fetch(3, ALL, true).unwrap().high_watermark, 3);

    c.catch_up(3, t);
    assert_eq!(leader.high_watermark(), 5);
    assert_eq!(leader.ack_status(5, 0), AckStatus::Done);
    assert_eq!(
        values(&consumed(leader)),
        vec![&b"a0"[..], b"a1", b"a2", b"b0", b"b1"]
    );
    // Consumers are served by the leader only.
    assert!(matches!(
        c.p(2).fetch(0, ALL, true),
        Err(PartitionError::NotLeader { .. })
    ));
}

/// Test 2: a follower silent for longer than lag_max leaves the ISR; the high
/// watermark then moves without it; min.insync.replicas is enforced before and
/// after the append.
#[test]
fn a_silent_follower_leaves_the_isr_and_min_insync_replicas_applies() {
    let t0 = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 2, t0);
    produce(c.p(1), &[b"a0", b"a1", b"a2"], -1, t0).unwrap();
    c.catch_up(2, t0);
    c.catch_up(3, t0);
    assert_eq!(c.p(1).high_watermark(), 3);

    // 3 stops fetching. 2 keeps up with a new batch.
    let t1 = 5_000;
    produce(c.p(1), &[b"b0", b"b1"], -1, t1).unwrap();
    c.catch_up(2, t1);
    assert_eq!(c.p(1).high_watermark(), 3);
    assert_eq!(c.p(1).ack_status(5, 0), AckStatus::Pending);

    // 3 last caught up at t0: exactly lag_max later it is still in sync.
    assert_eq!(c.p(1).isr_change_due(t0 + LAG_MAX, LAG_MAX), None);
    let shrink = c.p(1).isr_change_due(t0 + LAG_MAX + 1, LAG_MAX).unwrap();
    assert_eq!(
        shrink,
        AlterIsr {
            topic: "t".to_string(),
            partition: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![1, 2],
        }
    );
    // One change in flight at a time.
    assert_eq!(c.p(1).isr_change_due(t0 + LAG_MAX + 1, LAG_MAX), None);
    // Refused: asked again.
    c.p(1).alter_isr_failed(0);
    assert_eq!(
        c.p(1).isr_change_due(t0 + LAG_MAX + 1, LAG_MAX).as_ref(),
        Some(&shrink)
    );
    // Until the controller commits it, 3 still holds the high watermark back.
    c.pump(2, t1);
    assert_eq!(c.p(1).high_watermark(), 3);

    let t2 = t0 + LAG_MAX + 1;
    c.alter(&shrink, t2);
    assert_eq!(c.p(1).isr(), vec![1, 2]);
    assert_eq!(c.p(1).high_watermark(), 5);
    assert_eq!(c.p(1).ack_status(5, 0), AckStatus::Done);
    assert_eq!(c.p(1).isr_change_due(t2, LAG_MAX), None);

    // 2 stops too. An acks=all append is still accepted with 2 in sync...
    let cc = produce(c.p(1), &[b"c0", b"c1"], -1, t2).unwrap();
    assert_eq!((cc.base_offset, cc.last_offset), (5, 6));
    assert_eq!(c.p(1).ack_status(7, 0), AckStatus::Pending);
    // ... then 2 is dropped (it last caught up at t1).
    assert_eq!(c.p(1).isr_change_due(t1 + LAG_MAX, LAG_MAX), None);
    let shrink = c.p(1).isr_change_due(t1 + LAG_MAX + 1, LAG_MAX).unwrap();
    assert_eq!(shrink.new_isr, vec![1]);
    assert_eq!(shrink.partition_epoch, 1);
    assert_eq!(c.p(1).ack_status(7, 0), AckStatus::Pending);
    c.alter(&shrink, t1 + LAG_MAX + 1);
    assert_eq!(c.p(1).isr_size(), 1);
    assert_eq!(c.p(1).high_watermark(), 7);
    // Written to the leader alone: the produce fails after the append.
    assert_eq!(
        c.p(1).ack_status(7, 0),
        AckStatus::NotEnoughReplicasAfterAppend { isr: 1, min_isr: 2 }
    );
    // A new acks=all produce is refused up front and writes nothing.
    match produce(c.p(1), &[b"d0"], -1, t2) {
        Err(PartitionError::NotEnoughReplicas { isr, min_isr, .. }) => {
            assert_eq!((isr, min_isr), (1, 2));
        }
        other => panic!("expected NotEnoughReplicas, got {other:?}"),
    }
    assert_eq!(c.p(1).log_end_offset(), 7);
    // acks=1 is not subject to min.insync.replicas; alone in the ISR the leader
    // commits at once.
    let d = produce(c.p(1), &[b"d0"], 1, t2).unwrap();
    assert_eq!(d.base_offset, 7);
    assert_eq!(c.p(1).high_watermark(), 8);
}

/// Test 3: a follower outside the ISR is proposed back only once it has reached the
/// high watermark; while that addition is in flight it already holds the high
/// watermark back (Kafka's maximal ISR).
#[test]
fn a_follower_rejoins_the_isr_once_caught_up() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2], 1, t);
    for i in 0..4u8 {
        produce(c.p(1), &[&[b'a', i, 0], &[b'a', i, 1]], -1, t).unwrap();
    }
    c.catch_up(2, t);
    assert_eq!(c.p(1).high_watermark(), 8);

    // 3 fetches one batch at a time. Its own high watermark is capped at its log end.
    assert_eq!(
        c.pump_with(3, ONE_BATCH, t).unwrap(),
        Pumped::Records {
            log_end: 2,
            leader_hw: 8
        }
    );
    assert_eq!(c.p(3).high_watermark(), 2);
    assert_eq!(c.p(1).isr_change_due(t, LAG_MAX), None);
    for expected_end in [4, 6, 8] {
        assert_eq!(
            c.pump_with(3, ONE_BATCH, t).unwrap(),
            Pumped::Records {
                log_end: expected_end,
                leader_hw: 8
            }
        );
        // The leader has seen 3 only up to its previous fetch: below the HW.
        assert_eq!(c.p(1).isr_change_due(t, LAG_MAX), None);
    }
    assert_eq!(c.p(3).high_watermark(), 8);
    // Fetching at the leader's end: caught up.
    c.pump(3, t);
    let expand = c.p(1).isr_change_due(t, LAG_MAX).unwrap();
    assert_eq!(expand.new_isr, vec![1, 2, 3]);
    assert_eq!(expand.partition_epoch, 0);

    // In flight: a new batch is committed only once 3 has it too.
    produce(c.p(1), &[b"e0", b"e1"], -1, t).unwrap();
    c.catch_up(2, t);
    assert_eq!(c.p(1).high_watermark(), 8);
    c.alter(&expand, t);
    assert_eq!(c.p(1).isr(), vec![1, 2, 3]);
    assert_eq!(c.p(1).high_watermark(), 8);
    c.catch_up(3, t);
    assert_eq!(c.p(1).high_watermark(), 10);
    assert_eq!(c.p(1).isr_change_due(t, LAG_MAX), None);
}

/// Test 3b: after a leader change, a follower must also reach the new leader's epoch
/// start offset to join: below it, it may hold records of the previous leader that
/// this one does not have.
#[test]
fn a_follower_rejoins_only_past_the_new_leaders_epoch_start() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2], 1, t);
    produce(c.p(1), &[b"a0", b"a1"], -1, t).unwrap();
    produce(c.p(1), &[b"a2", b"a3"], -1, t).unwrap();
    c.catch_up(2, t);
    assert_eq!(c.p(2).high_watermark(), 4);
    // 3 (not in the ISR) holds 0..4.
    c.pump_with(3, ONE_BATCH, t).unwrap();
    c.pump_with(3, ONE_BATCH, t).unwrap();
    assert_eq!(c.p(3).log_end_offset(), 4);
    // Two more batches: 2 gets both in one fetch (and learns no newer HW), 3 one.
    produce(c.p(1), &[b"b0", b"b1"], -1, t).unwrap();
    produce(c.p(1), &[b"b2", b"b3"], -1, t).unwrap();
    assert_eq!(
        c.pump(2, t),
        Pumped::Records {
            log_end: 8,
            leader_hw: 4
        }
    );

    // 1 fails; 2 leads in epoch 1, its epoch starting at its log end, 8. Its high
    // watermark is what it learnt as a follower: 4.
    let t2 = 2_000;
    c.elect(2, &[1, 2]);
    c.publish(t2);
    assert_eq!(c.p(2).role(), Role::Leader);
    assert_eq!(c.p(2).high_watermark(), 4);
    assert_eq!(c.p(2).end_offset_for_epoch(0), (0, 8));

    // 3 fetches at 4 and then at 6, from the new leader: at or above the high
    // watermark, below the epoch start. Not eligible yet.
    assert_eq!(
        c.pump_with(3, ONE_BATCH, t2).unwrap(),
        Pumped::Records {
            log_end: 6,
            leader_hw: 4
        }
    );
    assert_eq!(c.p(2).isr_change_due(t2, LAG_MAX), None);
    assert_eq!(
        c.pump_with(3, ONE_BATCH, t2).unwrap(),
        Pumped::Records {
            log_end: 8,
            leader_hw: 4
        }
    );
    assert_eq!(c.p(2).isr_change_due(t2, LAG_MAX), None);
    // At 8: eligible (1 is still within lag_max of the election).
    c.pump(3, t2);
    let expand = c.p(2).isr_change_due(t2, LAG_MAX).unwrap();
    assert_eq!(expand.new_isr, vec![1, 2, 3]);
    assert_eq!(expand.leader_epoch, 1);
}

/// Test 4: leader 1 wrote records no follower got; 2 takes over in a new epoch and
/// writes its own. 1, now a follower, cuts its unreplicated suffix, converges byte for
/// byte with 2, and everything acknowledged (below the old HW) survives.
#[test]
fn a_deposed_leader_truncates_its_unreplicated_suffix_and_converges() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 2, t);
    produce(c.p(1), &[b"a0", b"a1", b"a2"], -1, t).unwrap();
    c.catch_up(2, t);
    c.catch_up(3, t);
    assert_eq!(c.p(1).ack_status(3, 0), AckStatus::Done);
    // Never replicated, never acknowledged.
    produce(c.p(1), &[b"b0", b"b1"], -1, t).unwrap();
    assert_eq!(c.p(1).log_end_offset(), 5);
    assert_eq!(c.p(1).ack_status(5, 0), AckStatus::Pending);

    // 1 fails; the controller elects 2 from the ISR and drops 1 from it.
    c.elect(2, &[2, 3]);
    c.publish(t);
    assert_eq!(c.p(1).role(), Role::Follower);
    assert_eq!(c.p(1).ack_status(5, 0), AckStatus::NotLeader);
    assert_eq!(c.p(2).leader_epoch(), 1);
    let cc = produce(c.p(2), &[b"c0", b"c1", b"c2"], -1, t).unwrap();
    assert_eq!((cc.base_offset, cc.last_offset), (3, 5));
    c.catch_up(3, t);
    assert_eq!(c.p(2).high_watermark(), 6);
    assert_eq!(c.p(2).ack_status(6, 1), AckStatus::Done);

    // 1 asks from 5 in epoch 0; the new leader's epoch 0 ends at 3.
    assert_eq!(c.p(1).follower_position(), Some((2, 5, 0, 1)));
    assert_eq!(
        c.pump(1, t),
        Pumped::Diverging {
            epoch: 0,
            end_offset: 3,
            truncated_to: 3
        }
    );
    assert_eq!(c.p(1).log_end_offset(), 3);
    c.catch_up(1, t);

    assert_eq!(log_bytes(c.p(1)), log_bytes(c.p(2)));
    assert_eq!(log_bytes(c.p(3)), log_bytes(c.p(2)));
    assert_eq!(log_bytes(c.p(2)).len(), 2);
    for id in [1, 2, 3] {
        assert_eq!(c.p(id).end_offset_for_epoch(0), (0, 3), "broker {id}");
        assert_eq!(c.p(id).end_offset_for_epoch(1), (1, 6), "broker {id}");
        assert_eq!(c.p(id).high_watermark(), 6, "broker {id}");
    }
    assert_eq!(
        consumed(c.p(2)),
        vec![
            (0, b"a0".to_vec()),
            (1, b"a1".to_vec()),
            (2, b"a2".to_vec()),
            (3, b"c0".to_vec()),
            (4, b"c1".to_vec()),
            (5, b"c2".to_vec()),
        ]
    );
    // 1 caught up with the new leader: it may rejoin.
    let expand = c.p(2).isr_change_due(t, LAG_MAX).unwrap();
    assert_eq!(expand.new_isr, vec![1, 2, 3]);
}

/// Test 4b: 2 is elected (epoch 1) and records its epoch start in its epoch cache,
/// but fails before writing or being fetched from; 1, which still holds unreplicated
/// epoch-0 records, leads again in epoch 2. 2 must drop its empty epoch-1 entry
/// (Kafka's `truncateTo` trims the epoch cache even when no data is cut) and catch
/// up, instead of being sent the same divergence answer forever.
#[test]
fn a_leader_that_never_wrote_in_its_epoch_catches_up_as_follower() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    produce(c.p(1), &[b"a0", b"a1", b"a2"], -1, t).unwrap();
    c.catch_up(2, t);
    c.catch_up(3, t);
    produce(c.p(1), &[b"b0", b"b1"], -1, t).unwrap();

    // A preferred-leader election makes 2 leader; it writes nothing, nobody fetches.
    c.elect(2, &[1, 2, 3]);
    c.publish(t);
    assert_eq!(c.p(2).end_offset_for_epoch(1), (1, 3));
    // 2 fails; 1 leads again in epoch 2 and keeps its epoch-0 records 3..5.
    c.elect(1, &[1, 3]);
    c.publish(t);
    assert_eq!(c.p(1).role(), Role::Leader);
    assert_eq!(c.p(1).end_offset_for_epoch(1), (0, 5));

    assert_eq!(c.p(2).follower_position(), Some((1, 3, 1, 2)));
    assert_eq!(
        c.pump(2, t),
        Pumped::Diverging {
            epoch: 0,
            end_offset: 5,
            truncated_to: 3
        }
    );
    // Nothing to cut, but the epoch-1 entry with no record behind it must go.
    assert_eq!(c.p(2).follower_position(), Some((1, 3, 0, 2)));
    c.catch_up(2, t);
    c.catch_up(3, t);
    assert_eq!(log_bytes(c.p(2)), log_bytes(c.p(1)));
    assert_eq!(log_bytes(c.p(3)), log_bytes(c.p(1)));
    assert_eq!(c.p(1).high_watermark(), 5);
    // The new epoch's records follow.
    produce(c.p(1), &[b"d0"], -1, t).unwrap();
    c.catch_up(2, t);
    c.catch_up(3, t);
    assert_eq!(c.p(2).follower_position(), Some((1, 6, 2, 2)));
    assert_eq!(c.p(1).high_watermark(), 6);
    assert_eq!(log_bytes(c.p(2)), log_bytes(c.p(1)));
    // Same epoch history as the leader: no trace of the empty epoch 1.
    for epoch in 0..=2 {
        assert_eq!(
            c.p(2).end_offset_for_epoch(epoch),
            c.p(1).end_offset_for_epoch(epoch),
            "epoch {epoch}"
        );
    }
    assert_eq!(c.p(2).end_offset_for_epoch(1), (0, 5));
}

/// Test 5: leader epochs fence stale fetches and stale answers, and a deposed leader
/// refuses appends and fails the acks=all produces it had pending.
#[test]
fn stale_leader_epochs_are_fenced() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    produce(c.p(1), &[b"x0", b"x1"], -1, t).unwrap();
    c.pump(2, t);
    c.pump(3, t);
    produce(c.p(1), &[b"y0", b"y1"], -1, t).unwrap();
    // An answer for 3 made in epoch 0, applied only after the leader changed.
    let (records, high_watermark) = match c.p(1).fetch_for_follower(3, 2, 0, 0, ALL, t) {
        Ok(FollowerFetch::Records {
            records,
            high_watermark,
            ..
        }) => (records, high_watermark),
        other => panic!("expected records, got {other:?}"),
    };
    assert_eq!(records_of(&records).len(), 2);

    // The controller elects 2; 1 has not heard yet and still thinks it leads.
    c.elect(2, &[2, 3]);
    c.publish_to(&[2, 3], t);
    assert_eq!(c.p(1).role(), Role::Leader);
    // A follower of epoch 1 that reaches 1 is told 1 does not know that epoch.
    match c.p(1).fetch_for_follower(3, 2, 0, 1, ALL, t) {
        Err(PartitionError::UnknownLeaderEpoch { request, current }) => {
            assert_eq!((request, current), (1, 0));
        }
        other => panic!("expected UnknownLeaderEpoch, got {other:?}"),
    }
    // Nobody fetches from 1 any more: what it accepts now is never committed.
    produce(c.p(1), &[b"z0"], -1, t).unwrap();
    assert_eq!(c.p(1).ack_status(5, 0), AckStatus::Pending);
    assert_eq!(c.p(1).high_watermark(), 0);

    // The stale answer is dropped.
    assert!(matches!(
        c.p(3).append_as_follower(&records, high_watermark, 0, 0, t),
        Err(PartitionError::NotLeader { .. })
    ));
    assert_eq!(c.p(3).log_end_offset(), 2);

    // The new leader fences old epochs and refuses epochs it does not know.
    match c.p(2).fetch_for_follower(3, 2, 0, 0, ALL, t) {
        Err(PartitionError::FencedLeaderEpoch { request, current }) => {
            assert_eq!((request, current), (0, 1));
        }
        other => panic!("expected FencedLeaderEpoch, got {other:?}"),
    }
    match c.p(2).fetch_for_follower(3, 2, 0, 2, ALL, t) {
        Err(PartitionError::UnknownLeaderEpoch { request, current }) => {
            assert_eq!((request, current), (2, 1));
        }
        other => panic!("expected UnknownLeaderEpoch, got {other:?}"),
    }
    assert!(matches!(
        c.p(2).fetch_for_follower(2, 2, 0, 1, ALL, t),
        Err(PartitionError::NotAReplica(2))
    ));
    assert!(matches!(
        c.p(2).fetch_for_follower(9, 2, 0, 1, ALL, t),
        Err(PartitionError::NotAReplica(9))
    ));
    // The fenced fetches recorded nothing: 3 is still unheard of at 2.
    assert_eq!(c.p(2).high_watermark(), 0);
    c.pump(3, t);
    c.pump(3, t);
    assert_eq!(c.p(2).high_watermark(), 2);

    // 1 learns it lost leadership.
    c.publish_to(&[1], t);
    assert_eq!(c.p(1).role(), Role::Follower);
    assert!(matches!(
        produce(c.p(1), &[b"w0"], 1, t),
        Err(PartitionError::NotLeader { .. })
    ));
    assert_eq!(c.p(1).ack_status(2, 0), AckStatus::NotLeader);
    assert_eq!(c.p(1).ack_status(5, 0), AckStatus::NotLeader);
    assert!(matches!(
        c.p(1).fetch_for_follower(3, 2, 0, 1, ALL, t),
        Err(PartitionError::NotLeader { .. })
    ));
    assert!(matches!(
        c.p(1).fetch(0, ALL, true),
        Err(PartitionError::NotLeader { .. })
    ));
    // And, following 2, gives up everything above what 2 holds.
    c.catch_up(1, t);
    assert_eq!(c.p(1).log_end_offset(), 2);
    assert_eq!(log_bytes(c.p(1)), log_bytes(c.p(2)));
}

/// Test 6: an idempotent producer's retry that reaches the new leader after a leader
/// change is recognised as a duplicate from the replicated producer state.
#[test]
fn idempotent_retries_are_deduplicated_by_the_new_leader() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    let first = idempotent(0, &[b"p0", b"p1", b"p2"]);
    let second = idempotent(3, &[b"p3", b"p4"]);
    let a = produce_bytes(c.p(1), &first, t).unwrap();
    assert_eq!((a.base_offset, a.last_offset, a.record_count), (0, 2, 3));
    let b = produce_bytes(c.p(1), &second, t).unwrap();
    assert_eq!((b.base_offset, b.last_offset, b.record_count), (3, 4, 2));
    // A retry on the same leader, for reference.
    let again = produce_bytes(c.p(1), &second, t).unwrap();
    assert_eq!((again.base_offset, again.record_count), (3, 0));
    c.catch_up(2, t);
    c.catch_up(3, t);

    c.elect(2, &[2, 3]);
    c.publish(t);
    let retry = produce_bytes(c.p(2), &second, t).unwrap();
    assert_eq!(
        retry,
        AppendInfo {
            base_offset: 3,
            last_offset: 4,
            log_append_time: -1,
            record_count: 0,
            bytes: 0,
        }
    );
    let retry = produce_bytes(c.p(2), &first, t).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.record_count),
        (0, 2, 0)
    );
    assert_eq!(c.p(2).log_end_offset(), 5);
    // The sequence goes on where it was on 1.
    let next = produce_bytes(c.p(2), &idempotent(5, &[b"p5"]), t).unwrap();
    assert_eq!((next.base_offset, next.record_count), (5, 1));
    match produce_bytes(c.p(2), &idempotent(7, &[b"p7"]), t) {
        Err(PartitionError::ProducerState(SequenceError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
            ..
        })) => assert_eq!((producer_id, expected, got), (42, 6, 7)),
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
}

/// Test 6b: a follower that truncates a producer's unreplicated batch rebuilds its
/// producer state from what is left plus what it fetches: leading again, it answers a
/// retry with the offsets the batch has in the replicated log, not its old ones.
#[test]
fn producer_state_follows_truncation_and_refetch() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    let first = idempotent(0, &[b"q0", b"q1"]);
    let second = idempotent(2, &[b"q2", b"q3"]);
    produce_bytes(c.p(1), &first, t).unwrap();
    c.catch_up(2, t);
    c.catch_up(3, t);
    // Reaches 1 only.
    let lost = produce_bytes(c.p(1), &second, t).unwrap();
    assert_eq!((lost.base_offset, lost.last_offset), (2, 3));

    c.elect(2, &[2, 3]);
    c.publish(t);
    // Someone else writes first on 2; then the producer's retry lands at 3..4.
    produce(c.p(2), &[b"other"], 1, t).unwrap();
    let landed = produce_bytes(c.p(2), &second, t).unwrap();
    assert_eq!(
        (landed.base_offset, landed.last_offset, landed.record_count),
        (3, 4, 2)
    );
    c.catch_up(3, t);
    let steps = c.catch_up(1, t);
    assert_eq!(
        steps[0],
        Pumped::Diverging {
            epoch: 0,
            end_offset: 2,
            truncated_to: 2
        }
    );
    assert_eq!(log_bytes(c.p(1)), log_bytes(c.p(2)));

    // 1 leads again: its producer state matches the replicated log.
    c.elect(1, &[1, 2, 3]);
    c.publish(t);
    let retry = produce_bytes(c.p(1), &second, t).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.record_count),
        (3, 4, 0)
    );
    let next = produce_bytes(c.p(1), &idempotent(4, &[b"q4"]), t).unwrap();
    assert_eq!((next.base_offset, next.record_count), (5, 1));
}

/// Test 7: a follower below the leader's log start (after DeleteRecords) is told so,
/// starts over at the leader's log start and replicates on from there.
#[test]
fn a_follower_below_the_log_start_starts_over_there() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2], 1, t);
    for i in 0..12u8 {
        produce(c.p(1), &[&[b'r', i, 0], &[b'r', i, 1]], -1, t).unwrap();
    }
    c.catch_up(2, t);
    assert_eq!(c.p(1).high_watermark(), 24);
    // 3, outside the ISR, holds the first batch only.
    c.pump_with(3, ONE_BATCH, t).unwrap();
    assert_eq!(c.p(3).follower_position(), Some((1, 2, 0, 0)));

    // DeleteRecords only below the high watermark.
    assert!(matches!(
        c.p(1).delete_records_before(25),
        Err(PartitionError::Log(LogError::OffsetOutOfRange { .. }))
    ));
    assert_eq!(c.p(1).delete_records_before(10).unwrap(), 10);
    assert_eq!(c.p(1).log_start_offset(), 10);
    assert!(matches!(
        c.p(1).fetch(2, ALL, true),
        Err(PartitionError::Log(LogError::OffsetOutOfRange { .. }))
    ));

    assert_eq!(
        c.pump(3, t),
        Pumped::BelowLogStart {
            log_start_offset: 10
        }
    );
    assert_eq!(c.p(3).log_start_offset(), 10);
    assert_eq!(c.p(3).log_end_offset(), 10);
    assert_eq!(c.p(3).high_watermark(), 10);
    assert_eq!(c.p(3).follower_position(), Some((1, 10, -1, 0)));
    c.catch_up(3, t);
    assert_eq!(c.p(3).log_end_offset(), 24);
    assert_eq!(log_bytes(c.p(3)), log_bytes(c.p(1)));
    assert_eq!(c.p(3).end_offset_for_epoch(0), (0, 24));
    assert_eq!(c.p(3).high_watermark(), 24);
    let expand = c.p(1).isr_change_due(t, LAG_MAX).unwrap();
    assert_eq!(expand.new_isr, vec![1, 2, 3]);
    c.alter(&expand, t);
    produce(c.p(1), &[b"s0"], -1, t).unwrap();
    c.catch_up(2, t);
    c.catch_up(3, t);
    assert_eq!(c.p(1).high_watermark(), 25);
    assert_eq!(log_bytes(c.p(3)), log_bytes(c.p(1)));
}

/// Test 7b: Kafka's follower moves its log start offset up to the leader's, as the
/// fetch answers carry it (`maybeIncrementLogStartOffset`), so records deleted with
/// DeleteRecords stay deleted when the follower becomes leader.
#[test]
fn deleted_records_stay_deleted_after_a_leader_change() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    for i in 0..12u8 {
        produce(c.p(1), &[&[b'r', i, 0], &[b'r', i, 1]], -1, t).unwrap();
    }
    c.catch_up(2, t);
    c.catch_up(3, t);
    assert_eq!(c.p(1).delete_records_before(10).unwrap(), 10);
    c.catch_up(2, t);
    c.catch_up(3, t);
    assert_eq!(c.p(2).log_start_offset(), 10);

    c.elect(2, &[2, 3]);
    c.publish(t);
    assert_eq!(c.p(2).log_start_offset(), 10);
    assert_eq!(consumed(c.p(2)).first().map(|(o, _)| *o), Some(10));
}

/// A divergence answer made for an earlier epoch can be applied after this broker
/// became leader (the fetcher applies answers on another thread than the metadata).
/// Kafka drops answers whose epoch is no longer current; a leader's log must never be
/// cut by one: here it would lose records it has since committed.
#[test]
fn a_stale_divergence_answer_does_not_truncate_a_new_leader() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    produce(c.p(1), &[b"a0", b"a1", b"a2"], -1, t).unwrap();
    c.catch_up(2, t);
    c.catch_up(3, t);
    // Not replicated before leadership moves to 2 (1 stays in the ISR).
    produce(c.p(1), &[b"x0", b"x1"], -1, t).unwrap();
    c.elect(2, &[1, 2, 3]);
    c.publish(t);
    produce(c.p(2), &[b"y0", b"y1"], 1, t).unwrap();

    // 1's fetch from 2 in epoch 1 is answered "diverged at 3"...
    let (leader, offset, last_epoch, epoch) = c.p(1).follower_position().unwrap();
    assert_eq!((leader, offset, last_epoch, epoch), (2, 5, 0, 1));
    let answer = c
        .p(2)
        .fetch_for_follower(1, offset, last_epoch, epoch, ALL, t)
        .unwrap();
    let (diverging_epoch, end_offset) = match answer {
        FollowerFetch::Diverging { epoch, end_offset } => (epoch, end_offset),
        other => panic!("expected Diverging, got {other:?}"),
    };
    assert_eq!((diverging_epoch, end_offset), (0, 3));

    // ... but before it is applied, 2 fails and 1 (in the ISR) leads in epoch 2,
    // replicates x to 3 and commits a new batch.
    c.elect(1, &[1, 3]);
    c.publish(t);
    c.catch_up(3, t);
    produce(c.p(1), &[b"z0"], -1, t).unwrap();
    c.catch_up(3, t);
    assert_eq!(c.p(1).high_watermark(), 6);
    assert_eq!(c.p(1).ack_status(6, 2), AckStatus::Done);
    let committed = log_bytes(c.p(1));

    // The stale answer arrives now, applied as `fetcher::apply` applies it.
    let applied = c.p(1).truncate_diverging(1, diverging_epoch, end_offset, t);
    assert!(
        matches!(applied, Err(PartitionError::NotLeader { .. })),
        "{applied:?}"
    );
    assert_eq!(c.p(1).log_end_offset(), 6);
    assert_eq!(c.p(1).high_watermark(), 6);
    assert_eq!(log_bytes(c.p(1)), committed);
    assert_eq!(
        values(&consumed(c.p(1))),
        vec![&b"a0"[..], b"a1", b"a2", b"x0", b"x1", b"z0"]
    );
}

/// Same for a stale "below the log start" answer: applied on a broker that leads
/// since, it would empty the leader's log.
#[test]
fn a_stale_below_log_start_answer_does_not_reset_a_new_leader() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2], 1, t);
    for i in 0..6u8 {
        produce(c.p(1), &[&[b'r', i, 0], &[b'r', i, 1]], -1, t).unwrap();
    }
    c.catch_up(2, t);
    c.pump_with(3, ONE_BATCH, t).unwrap();
    assert_eq!(c.p(1).delete_records_before(6).unwrap(), 6);
    let (_, offset, last_epoch, epoch) = c.p(3).follower_position().unwrap();
    let answer = c
        .p(1)
        .fetch_for_follower(3, offset, last_epoch, epoch, ALL, t)
        .unwrap();
    let log_start_offset = match answer {
        FollowerFetch::BelowLogStart { log_start_offset } => log_start_offset,
        other => panic!("expected BelowLogStart, got {other:?}"),
    };
    assert_eq!(log_start_offset, 6);

    // 1 and 2 are lost; an unclean election makes 3 leader, and it takes a write.
    c.elect(3, &[3]);
    c.publish(t);
    let w = produce(c.p(3), &[b"w0"], 1, t).unwrap();
    assert_eq!(w.base_offset, 2);
    assert_eq!(c.p(3).high_watermark(), 3);

    let applied = c.p(3).reset_to(c.p(3).leader_epoch(), log_start_offset);
    assert!(
        matches!(applied, Err(PartitionError::NotLeader { .. })),
        "{applied:?}"
    );
    assert_eq!(c.p(3).log_start_offset(), 0);
    assert_eq!(c.p(3).log_end_offset(), 3);
    assert_eq!(c.p(3).high_watermark(), 3);
    assert_eq!(consumed(c.p(3)).len(), 3);
}

/// An image with no leader: the former leader stops serving and fails pending
/// acks=all produces; nobody follows.
#[test]
fn a_leaderless_partition_serves_nothing() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t);
    produce(c.p(1), &[b"a0"], -1, t).unwrap();
    assert_eq!(c.p(1).ack_status(1, 0), AckStatus::Pending);
    c.elect(-1, &[1]);
    c.publish(t);
    assert_eq!(c.p(1).role(), Role::Follower);
    assert_eq!(c.p(1).ack_status(1, 0), AckStatus::NotLeader);
    assert!(matches!(
        produce(c.p(1), &[b"a1"], 1, t),
        Err(PartitionError::NotLeader { .. })
    ));
    for id in [1, 2, 3] {
        assert_eq!(c.p(id).follower_position(), None, "broker {id}");
        assert_eq!(c.p(id).leader_epoch(), 1, "broker {id}");
    }
}

/// Kafka's caught-up rule under a steady load: a follower that always reaches the log
/// end the leader had at its previous fetch stays in the ISR although it is never
/// exactly at the end; one that fetches all the time but falls further behind leaves
/// once it has not been caught up for lag_max, and comes back once it catches up.
#[test]
fn a_follower_that_keeps_pace_stays_and_one_that_falls_behind_leaves() {
    let t0 = 1_000;
    let step = LAG_MAX / 4;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 1, t0);
    produce(c.p(1), &[b"start"], -1, t0).unwrap();
    c.catch_up(2, t0);
    c.catch_up(3, t0);
    let mut changes = Vec::new();
    for k in 1..=12u8 {
        let now = t0 + i64::from(k) * step;
        produce(c.p(1), &[&[b'a', k]], -1, now).unwrap();
        produce(c.p(1), &[&[b'b', k]], -1, now).unwrap();
        // 2 takes everything (the leader learns it only at 2's next fetch, by when
        // the end has moved again); 3 takes one batch per fetch.
        c.pump(2, now);
        c.pump_with(3, ONE_BATCH, now).unwrap();
        if let Some(change) = c.p(1).isr_change_due(now, LAG_MAX) {
            changes.push((k, change.new_isr.clone()));
            c.alter(&change, now);
        }
    }
    // 3 last caught up at t0: still in sync at t0 + lag_max (k = 4), out at k = 5.
    assert_eq!(changes, vec![(5, vec![1, 2])]);
    assert_eq!(c.p(1).isr(), vec![1, 2]);
    // The high watermark follows 2 (one fetch behind the leader's end).
    let leader_end = c.p(1).log_end_offset();
    assert_eq!(leader_end, 25);
    assert_eq!(c.p(1).high_watermark(), 23);

    let now = t0 + 13 * step;
    c.catch_up(3, now);
    let expand = c.p(1).isr_change_due(now, LAG_MAX).unwrap();
    assert_eq!(expand.new_isr, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_leader_that_stops_hosting_the_partition_answers_its_waiting_produces_at_once() {
    let t = 1_000;
    let c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 2, t);
    let leader = c.p(1);
    produce(leader, &[b"a0"], -1, t).unwrap();
    assert_eq!(leader.ack_status(1, 0), AckStatus::Pending);
    // A reassignment removes broker 1 while an acks=all produce waits for the ISR: it is
    // answered NotLeader (the client retries on the new leader with the same sequence),
    // not left Pending until its deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let (status, ()) = tokio::join!(leader.wait_for_ack(1, 0, deadline), async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        leader.resign();
    });
    assert_eq!(status, AckStatus::NotLeader);
    assert_eq!(leader.role(), Role::Follower);
}

/// An idempotent producer's batch: producer `pid`, epoch `epoch`, from `base_sequence`.
fn idempotent_from(pid: i64, epoch: i16, base_sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            key: None,
            value: Some(v),
            timestamp: 1_000,
        })
        .collect();
    build_batch_with(
        BatchOptions {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence,
            ..BatchOptions::default()
        },
        &records,
    )
}

/// Test 13: a replica a reassignment adds starts empty, copies the whole log from the
/// leader, then leads (the old replicas are removed): a retry of a batch the old
/// leader acknowledged is answered as a duplicate with its original offsets, and the
/// log does not grow. Kafka keeps producer state on followers exactly for this.
#[test]
fn a_replica_added_by_a_reassignment_deduplicates_retries_once_it_leads() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], 2, t);
    // Enough traffic from several producers to span segments, interleaved.
    let mut seqs = [0i32; 3];
    let mut last = Vec::new();
    for round in 0..16u8 {
        for (k, seq) in seqs.iter_mut().enumerate() {
            let pid = 100 + k as i64;
            let n = 1 + (round as usize + k) % 3;
            let vals: Vec<Vec<u8>> = (0..n)
                .map(|i| vec![b'v', k as u8, round, i as u8])
                .collect();
            let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
            let batch = idempotent_from(pid, 0, *seq, &refs);
            let info = produce_bytes(c.p(1), &batch, t).unwrap();
            *seq += n as i32;
            if round == 15 {
                last.push((batch, info));
            }
        }
        c.pump(2, t);
        c.pump(3, t);
    }
    c.catch_up(2, t);
    c.catch_up(3, t);
    let end = c.p(1).log_end_offset();

    // The reassignment adds 4 and 5; they copy everything from the leader.
    c.add_replica(4, 2, t);
    c.add_replica(5, 2, t);
    c.catch_up(4, t);
    c.catch_up(5, t);
    assert_eq!(c.p(4).log_end_offset(), end);
    assert_eq!(log_bytes(c.p(4)), log_bytes(c.p(1)));
    let expand = c.p(1).isr_change_due(t, LAG_MAX).unwrap();
    assert_eq!(expand.new_isr, vec![1, 2, 3, 4, 5]);
    c.alter(&expand, t);

    // The reassignment completes: 1, 2, 3 leave, 4 leads.
    c.image.replicas = vec![4, 5];
    c.image.adding.clear();
    c.elect(4, &[4, 5]);
    c.publish_to(&[4, 5], t);

    for (batch, original) in &last {
        let retry = produce_bytes(c.p(4), batch, t).unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset, retry.record_count),
            (original.base_offset, original.last_offset, 0),
            "a retry of a batch the old leader acknowledged must not be written again"
        );
    }
    assert_eq!(c.p(4).log_end_offset(), end);
    // Each producer goes on where it was.
    for (k, seq) in seqs.iter().enumerate() {
        let pid = 100 + k as i64;
        let next = produce_bytes(c.p(4), &idempotent_from(pid, 0, *seq, &[b"next"]), t).unwrap();
        assert_eq!(next.record_count, 1);
        match produce_bytes(c.p(4), &idempotent_from(pid, 0, *seq + 5, &[b"gap"]), t) {
            Err(PartitionError::ProducerState(SequenceError::OutOfOrderSequence { .. })) => {}
            other => panic!("expected OutOfOrderSequence for {pid}, got {other:?}"),
        }
    }
}

/// Test 13b: as test 13, but the leader's log start moved up (DeleteRecords) before
/// the new replica fetched, so it starts over there (`reset_to`) and copies the rest.
#[test]
fn a_replica_reset_to_the_leaders_log_start_deduplicates_retries_once_it_leads() {
    let t = 1_000;
    let mut c = Cluster::new(&[1, 2], &[1, 2], 1, t);
    let mut seq = 0;
    let mut last = None;
    for i in 0..12u8 {
        let batch = idempotent(seq, &[&[b'r', i, 0], &[b'r', i, 1]]);
        let info = produce_bytes(c.p(1), &batch, t).unwrap();
        seq += 2;
        last = Some((batch, info));
    }
    c.catch_up(2, t);
    assert_eq!(c.p(1).delete_records_before(10).unwrap(), 10);
    let end = c.p(1).log_end_offset();

    c.add_replica(3, 1, t);
    let steps = c.catch_up(3, t);
    assert_eq!(
        steps[0],
        Pumped::BelowLogStart {
            log_start_offset: 10
        }
    );
    assert_eq!(c.p(3).log_start_offset(), 10);
    assert_eq!(c.p(3).log_end_offset(), end);

    c.image.replicas = vec![3];
    c.image.adding.clear();
    c.elect(3, &[3]);
    c.publish_to(&[3], t);
    let (batch, original) = last.unwrap();
    let retry = produce_bytes(c.p(3), &batch, t).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.record_count),
        (original.base_offset, original.last_offset, 0)
    );
    assert_eq!(c.p(3).log_end_offset(), end);
    let next = produce_bytes(c.p(3), &idempotent(seq, &[b"next"]), t).unwrap();
    assert_eq!((next.base_offset, next.record_count), (end, 1));
}

/// Test 13c: as test 13, but the new replica restarts after it caught up (cleanly, or
/// not, with producer snapshots from its periodic work behind): the producer state it
/// opens with still answers the retry as a duplicate once it leads.
#[test]
fn a_restarted_new_replica_deduplicates_retries_once_it_leads() {
    for clean in [true, false] {
        let t = 1_000;
        let mut c = Cluster::new(&[1, 2], &[1, 2], 1, t);
        let mut seq = 0;
        let mut sent = Vec::new();
        for i in 0..12u8 {
            let batch = idempotent(seq, &[&[b'r', i, 0], &[b'r', i, 1]]);
            let info = produce_bytes(c.p(1), &batch, t).unwrap();
            seq += 2;
            sent.push((batch, info));
            if i == 5 {
                c.catch_up(2, t);
                c.add_replica(3, 1, t);
                c.catch_up(3, t);
                // Periodic work on the new replica: a producer snapshot.
                c.p(3).tick(t + 61_000, false).unwrap();
            }
        }
        c.catch_up(2, t);
        c.catch_up(3, t);
        c.p(3).tick(t + 200_000, false).unwrap();
        let end = c.p(1).log_end_offset();
        c.restart(3, clean, t);
        assert_eq!(c.p(3).log_end_offset(), end);

        c.image.replicas = vec![3, 2];
        c.image.adding.clear();
        c.elect(3, &[2, 3]);
        c.publish_to(&[2, 3], t);
        for (batch, original) in sent.iter().rev().take(5) {
            let retry = produce_bytes(c.p(3), batch, t).unwrap();
            assert_eq!(
                (retry.base_offset, retry.last_offset, retry.record_count),
                (original.base_offset, original.last_offset, 0),
                "clean restart: {clean}"
            );
        }
        assert_eq!(c.p(3).log_end_offset(), end);
    }
}
