//! A partition: a log plus the role this broker plays for it (leader or follower, from
//! the metadata image), and as leader, its followers' progress, the ISR and the high
//! watermark. Consumers only ever see records below the high watermark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::cluster::image::PartitionState;
use crate::log::{AppendInfo, Log, LogConfig, LogError, ReadSlice};
use crate::producer_state::{
    batch_headers, AppendCheck, ProducerStateManager, SequenceError, PRODUCER_ID_EXPIRATION_MS,
};
use crate::replication::isr::{self, FollowerState};

/// Periodic producer-state snapshots: at most this often, or sooner once the log has
/// grown by `SNAPSHOT_EVERY_OFFSETS`. They bound the log replay after a crash.
const SNAPSHOT_INTERVAL_MS: i64 = 60_000;
const SNAPSHOT_EVERY_OFFSETS: i64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("this broker is not the leader for {topic}-{partition}")]
    NotLeader { topic: String, partition: i32 },
    #[error("{topic}-{partition} has {isr} in-sync replicas, min.insync.replicas is {min_isr}")]
    NotEnoughReplicas {
        topic: String,
        partition: i32,
        isr: i32,
        min_isr: i32,
    },
    #[error("{topic}-{partition}: the ISR shrank to {isr} below min.insync.replicas {min_isr} after the append")]
    NotEnoughReplicasAfterAppend {
        topic: String,
        partition: i32,
        isr: i32,
        min_isr: i32,
    },
    #[error("leader epoch {request} is older than the current {current}")]
    FencedLeaderEpoch { request: i32, current: i32 },
    #[error("leader epoch {request} is newer than the current {current}")]
    UnknownLeaderEpoch { request: i32, current: i32 },
    #[error("broker {0} is not a replica of this partition")]
    NotAReplica(i32),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    ProducerState(#[from] SequenceError),
}

/// What a fetch of one partition found.
pub struct FetchedData {
    pub slice: Option<ReadSlice>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// The leader's answer to a follower's fetch.
#[derive(Debug)]
pub enum FollowerFetch {
    Records {
        records: Vec<u8>,
        high_watermark: i64,
        log_start_offset: i64,
    },
    /// The follower's log diverged from the leader's at `epoch`: it must truncate to
    /// `end_offset` (or its own end of that epoch, if lower) and fetch again.
    Diverging { epoch: i32, end_offset: i64 },
    /// The follower is below the leader's log start: it starts over from there.
    BelowLogStart { log_start_offset: i64 },
}

/// An ISR change the leader wants the controller to make (Kafka's AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterIsr {
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Whether an acks=all produce is done.
#[derive(Debug, PartialEq, Eq)]
pub enum AckStatus {
    Pending,
    Done,
    NotEnoughReplicasAfterAppend {
        isr: i32,
        min_isr: i32,
    },
    /// Leadership moved (or the epoch changed) before the ISR had the batch: the
    /// client must retry on the new leader.
    NotLeader,
}

/// Who leads, who replicates, who is in sync, as this broker last learned it.
struct ReplicaState {
    role: Role,
    leader_id: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// An ISR change sent to the controller and not yet seen in the image: the
    /// partition epoch it was based on and the ISR asked for.
    pending_isr: Option<(i32, Vec<i32>)>,
    /// As leader: each follower's progress.
    followers: BTreeMap<i32, FollowerState>,
    /// As leader: the log end when this epoch began; a follower must reach it to join.
    epoch_start_offset: i64,
    /// This broker stopped hosting the partition (`resign`): its files are gone, and a
    /// request or fetcher still holding it must not write, truncate or lead again.
    removed: bool,
}

impl ReplicaState {
    /// The ISR the high watermark waits for: committed plus any addition in flight,
    /// so a replica being added is already counted (Kafka's maximal ISR).
    fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        if let Some((_, pending)) = &self.pending_isr {
            for r in pending {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    /// This broker's id.
    local_id: i32,
    /// Locked before `log`, never after.
    state: Mutex<ReplicaState>,
    leader_epoch: AtomicI32,
    high_watermark: AtomicI64,
    log: Mutex<Log>,
    /// Idempotent producers' sequences. Always locked after `log`, never before.
    producers: Mutex<ProducerStateManager>,
    /// Woken when the high watermark moves: long-polling fetches and acks=all waits.
    wake: Arc<Notify>,
}

impl Partition {
    /// A partition opened from disk. It serves nothing until the metadata image gives
    /// it a role (`apply_state`).
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        mut log: Log,
        local_id: i32,
        wake: Arc<Notify>,
    ) -> Self {
        // Appends sync after releasing the log: fetches never wait for an fsync.
        log.set_sync_outside_lock();
        let producers = load_producer_state(&topic, index, &log);
        // The high watermark is not persisted: it starts at the log start and is
        // recomputed from the ISR (as leader) or learned from the leader (as follower).
        let high_watermark = AtomicI64::new(log.log_start_offset());
        Partition {
            topic,
            topic_id,
            index,
            local_id,
            state: Mutex::new(ReplicaState {
                role: Role::Follower,
                leader_id: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                pending_isr: None,
                followers: BTreeMap::new(),
                epoch_start_offset: 0,
                removed: false,
            }),
            leader_epoch: AtomicI32::new(-1),
            high_watermark,
            log: Mutex::new(log),
            producers: Mutex::new(producers),
            wake,
        }
    }

    pub fn role(&self) -> Role {
        self.state.lock().role
    }

    pub fn leader_id(&self) -> i32 {
        self.state.lock().leader_id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.lock().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.lock().log_end_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.lock().size_bytes()
    }

    pub fn isr(&self) -> Vec<i32> {
        self.state.lock().isr.clone()
    }

    /// The number of assigned replicas (during a reassignment, old and new).
    pub fn replica_count(&self) -> i32 {
        self.state.lock().replicas.len() as i32
    }

    /// The in-sync replica set's size as the controller committed it.
    pub fn isr_size(&self) -> i32 {
        self.state.lock().isr.len() as i32
    }

    /// Takes the role the metadata image gives this broker. Returns true when the role
    /// or leader epoch changed (the caller then restarts fetching for it).
    pub fn apply_state(&self, image: &PartitionState, now_ms: i64) -> bool {
        let mut state = self.state.lock();
        if state.removed {
            return false;
        }
        let current_epoch = self.leader_epoch();
        let leads = image.leader == self.local_id;
        let new_epoch = image.leader_epoch != current_epoch;
        let changed = new_epoch || (state.role == Role::Leader) != leads;
        if changed {
            if leads {
                let mut log = self.log.lock();
                let end = log.log_end_offset();
                // Followers asking about older epochs learn where they ended even
                // before this leader writes anything.
                if let Err(e) = log.maybe_assign_epoch_start_offset(image.leader_epoch, end) {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "cannot record the leader epoch");
                }
                drop(log);
                state.role = Role::Leader;
                state.epoch_start_offset = end;
                state.followers = image
                    .replicas
                    .iter()
                    .filter(|r| **r != self.local_id)
                    .map(|r| (*r, FollowerState::new(now_ms)))
                    .collect();
                tracing::info!(topic = %self.topic, partition = self.index, epoch = image.leader_epoch, "became leader");
            } else {
                state.role = Role::Follower;
                state.followers.clear();
                tracing::info!(topic = %self.topic, partition = self.index, epoch = image.leader_epoch, leader = image.leader, "became follower");
            }
            state.pending_isr = None;
            self.leader_epoch
                .store(image.leader_epoch, Ordering::Release);
        }
        state.leader_id = image.leader;
        if image.partition_epoch != state.partition_epoch {
            if state
                .pending_isr
                .as_ref()
                .is_some_and(|(based_on, _)| image.partition_epoch > *based_on)
            {
                state.pending_isr = None;
            }
            state.partition_epoch = image.partition_epoch;
        }
        state.isr = image.isr.clone();
        state.replicas = image.replicas.clone();
        if state.role == Role::Leader {
            // Replicas added by a reassignment are tracked from now on.
            for r in &image.replicas {
                if *r != self.local_id {
                    state
                        .followers
                        .entry(*r)
                        .or_insert_with(|| FollowerState::new(now_ms));
                }
            }
            state.followers.retain(|r, _| image.replicas.contains(r));
            self.update_high_watermark(&state);
        }
        changed
    }

    /// Appends a producer's batches as leader, stamped with the leader epoch. acks=all
    /// (-1) is refused up front when the ISR is smaller than `min.insync.replicas`, as
    /// Kafka does; its answer waits for the high watermark (`ack_status`).
    ///
    /// Idempotent batches are checked against the producer state first; a retry of a
    /// batch already in the log writes nothing and returns the original offsets with
    /// `record_count` and `bytes` 0 (and no append time), as Kafka answers it.
    pub fn append_as_leader(
        &self,
        records: &mut BytesMut,
        required_acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        let state = self.state.lock();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
        let mut log = self.log.lock();
        let min_isr = log.config().min_insync_replicas;
        let isr = state.isr.len() as i32;
        if required_acks == -1 && isr < min_isr {
            return Err(PartitionError::NotEnoughReplicas {
                topic: self.topic.clone(),
                partition: self.index,
                isr,
                min_isr,
            });
        }
        let headers = batch_headers(records)?;
        let mut producers = self.producers.lock();
        if let AppendCheck::Duplicate {
            first_offset,
            last_offset,
        } = producers.check(&headers)?
        {
            tracing::debug!(topic = %self.topic, partition = self.index, first_offset, "duplicate batch not appended again");
            return Ok(AppendInfo {
                base_offset: first_offset,
                last_offset,
                log_append_time: -1,
                record_count: 0,
                bytes: 0,
            });
        }
        let info = log.append(records, self.leader_epoch(), now_ms)?;
        // The append rewrote the base offsets (and append times) in `records`.
        producers.apply_appended(records)?;
        drop(producers);
        let pending = log.take_due_sync();
        drop(log);
        drop(state);
        // Fetches and followers are served while the data goes to disk; the producer
        // is answered after it.
        if let Some(pending) = pending {
            pending.sync()?;
        }
        self.update_high_watermark(&self.state.lock());
        Ok(info)
    }

    /// This broker stops hosting the partition (a reassignment moved it away, or the topic
    /// was deleted). Produces waiting for their acknowledgement here learn at once that
    /// this is no longer the leader, as Kafka's purgatory answers them: left waiting, they
    /// would time out, and an idempotent client that times out bumps its epoch and sends
    /// again what may already be written.
    ///
    /// It is also marked removed: the caller deletes its files at once instead of waiting
    /// for every holder to let go (the metadata publisher must not stall on that, or this
    /// broker keeps leading other partitions in epochs the controller already ended), so
    /// a fetcher or request still holding it may no longer change its log.
    pub fn resign(&self) {
        let mut state = self.state.lock();
        state.role = Role::Follower;
        state.removed = true;
        state.followers.clear();
        drop(state);
        self.wake.notify_waiters();
    }

    /// Whether an acks=all append whose last offset is `required - 1`, made in
    /// `leader_epoch`, is acknowledged yet.
    pub fn ack_status(&self, required: i64, leader_epoch: i32) -> AckStatus {
        let state = self.state.lock();
        if state.role != Role::Leader || self.leader_epoch() != leader_epoch {
            return AckStatus::NotLeader;
        }
        if self.high_watermark() < required {
            return AckStatus::Pending;
        }
        let min_isr = self.log.lock().config().min_insync_replicas;
        let isr = state.isr.len() as i32;
        if isr < min_isr {
            return AckStatus::NotEnoughReplicasAfterAppend { isr, min_isr };
        }
        AckStatus::Done
    }

    /// Waits until `ack_status` is no longer Pending, or `deadline` (then Pending).
    /// Woken when the high watermark moves; also looks every 100 ms in case a wake-up
    /// raced with a check.
    pub async fn wait_for_ack(
        &self,
        required: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> AckStatus {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let status = self.ack_status(required, leader_epoch);
            let now = tokio::time::Instant::now();
            if status != AckStatus::Pending || now >= deadline {
                return status;
            }
            let slice = deadline.min(now + std::time::Duration::from_millis(100));
            let _ = tokio::time::timeout_at(slice, notified).await;
        }
    }

    /// Reads for a consumer: never past the high watermark.
    pub fn fetch(
        &self,
        fetch_offset: i64,
        max_bytes: u64,
        min_one_batch: bool,
    ) -> Result<FetchedData, PartitionError> {
        self.ensure_leader()?;
        let log = self.log.lock();
        let high_watermark = self.high_watermark();
        let slice = log.read(fetch_offset, max_bytes, high_watermark, min_one_batch)?;
        Ok(FetchedData {
            slice,
            high_watermark,
            log_start_offset: log.log_start_offset(),
        })
    }

    /// Reads to the log end, ignoring the high watermark: for the group coordinator
    /// loading a partition it just became leader of.
    pub fn read_to_end(
        &self,
        offset: i64,
        max_bytes: u64,
    ) -> Result<Option<ReadSlice>, PartitionError> {
        let log = self.log.lock();
        let end = log.log_end_offset();
        Ok(log.read(offset, max_bytes, end, true)?)
    }

    /// A follower's fetch, at the leader: checks the follower's epoch history against
    /// the leader's, records its progress (which may move the high watermark) and
    /// returns the batches from `fetch_offset`.
    pub fn fetch_for_follower(
        &self,
        replica_id: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        current_leader_epoch: i32,
        max_bytes: u64,
        now_ms: i64,
    ) -> Result<FollowerFetch, PartitionError> {
        let mut state = self.state.lock();
        if state.role != Role::Leader {
            return Err(self.not_leader());
        }
        let epoch = self.leader_epoch();
        if current_leader_epoch < epoch {
            return Err(PartitionError::FencedLeaderEpoch {
                request: current_leader_epoch,
                current: epoch,
            });
        }
        if current_leader_epoch > epoch {
            return Err(PartitionError::UnknownLeaderEpoch {
                request: current_leader_epoch,
                current: epoch,
            });
        }
        if !state.replicas.contains(&replica_id) || replica_id == self.local_id {
            return Err(PartitionError::NotAReplica(replica_id));
        }
        let log = self.log.lock();
        let leader_end = log.log_end_offset();
        if last_fetched_epoch >= 0 {
            let (end_epoch, end_offset) = log.end_offset_for_epoch(last_fetched_epoch);
            if end_epoch != last_fetched_epoch || end_offset < fetch_offset {
                return Ok(FollowerFetch::Diverging {
                    epoch: end_epoch,
                    end_offset,
                });
            }
        }
        if fetch_offset > leader_end {
            // Ahead of the leader in the same epoch: only after an unclean election.
            return Ok(FollowerFetch::Diverging {
                epoch: log.latest_epoch().unwrap_or(-1),
                end_offset: leader_end,
            });
        }
        if fetch_offset < log.log_start_offset() {
            return Ok(FollowerFetch::BelowLogStart {
                log_start_offset: log.log_start_offset(),
            });
        }
        let records = match log.read(fetch_offset, max_bytes, leader_end, true)? {
            Some(slice) => slice.to_vec()?,
            None => Vec::new(),
        };
        let log_start_offset = log.log_start_offset();
        drop(log);
        if let Some(f) = state.followers.get_mut(&replica_id) {
            f.on_fetch(fetch_offset, leader_end, now_ms);
        }
        self.update_high_watermark(&state);
        Ok(FollowerFetch::Records {
            records,
            high_watermark: self.high_watermark(),
            log_start_offset,
        })
    }

    /// As leader: the ISR change due now, if any (laggards out, caught-up replicas
    /// in), and only when none is in flight. The caller sends it to the controller and
    /// calls `alter_isr_failed` if it is refused.
    pub fn isr_change_due(&self, now_ms: i64, lag_max_ms: i64) -> Option<AlterIsr> {
        let mut state = self.state.lock();
        if state.role != Role::Leader || state.pending_isr.is_some() {
            return None;
        }
        let hw = self.high_watermark();
        let out = isr::out_of_sync(
            self.local_id,
            &state.isr,
            &state.followers,
            now_ms,
            lag_max_ms,
        );
        let joining: Vec<i32> = state
            .followers
            .iter()
            .filter(|(id, f)| {
                !state.isr.contains(id)
                    && isr::may_join(f, hw, state.epoch_start_offset, now_ms, lag_max_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        if out.is_empty() && joining.is_empty() {
            return None;
        }
        let mut new_isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| !out.contains(r))
            .chain(joining)
            .collect();
        new_isr.sort_unstable();
        state.pending_isr = Some((state.partition_epoch, new_isr.clone()));
        Some(AlterIsr {
            topic: self.topic.clone(),
            partition: self.index,
            leader_epoch: self.leader_epoch(),
            partition_epoch: state.partition_epoch,
            new_isr,
        })
    }

    /// The controller refused (or never got) an ISR change: forget it so the next
    /// check can ask again from the current state.
    pub fn alter_isr_failed(&self, partition_epoch: i32) {
        let mut state = self.state.lock();
        if state
            .pending_isr
            .as_ref()
            .is_some_and(|(based_on, _)| *based_on == partition_epoch)
        {
            state.pending_isr = None;
        }
    }

    /// As follower: where to fetch from the leader: (leader, fetch offset, epoch of the
    /// last batch held, the leader epoch this broker knows). `None` when not following.
    pub fn follower_position(&self) -> Option<(i32, i64, i32, i32)> {
        let state = self.state.lock();
        if state.role != Role::Follower || state.removed || state.leader_id < 0 {
            return None;
        }
        let log = self.log.lock();
        Some((
            state.leader_id,
            log.log_end_offset(),
            log.latest_epoch().unwrap_or(-1),
            self.leader_epoch(),
        ))
    }

    /// As follower: appends the leader's batches (offsets and epochs as the leader
    /// wrote them) and takes the leader's high watermark, capped at this log's end.
    /// `leader_epoch` is the epoch the fetch was made in: a stale answer is dropped.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader_high_watermark: i64,
        leader_log_start_offset: i64,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        let state = self.state.lock();
        if state.role != Role::Follower || state.removed || self.leader_epoch() != leader_epoch {
            return Err(self.not_leader());
        }
        let mut log = self.log.lock();
        // Records the leader deleted (DeleteRecords, retention) go here too, or they
        // would come back if this replica led (Kafka's maybeIncrementLogStartOffset).
        let new_start = leader_log_start_offset.min(log.log_end_offset());
        if new_start > log.log_start_offset() {
            log.delete_records_before(new_start)?;
        }
        if !records.is_empty() {
            let appended = log.append_as_follower(records, now_ms)?;
            let mut producers = self.producers.lock();
            for header in &appended.batches {
                producers.apply(header);
            }
        }
        let hw = leader_high_watermark.min(log.log_end_offset());
        self.high_watermark.store(hw, Ordering::Release);
        let pending = log.take_due_sync();
        drop(log);
        drop(state);
        // Synced before the next fetch tells the leader this replica has the data.
        if let Some(pending) = pending {
            pending.sync()?;
        }
        Ok(())
    }

    /// As follower: the leader says this log diverged at `epoch`, which it ends at
    /// `end_offset`. Truncate to where both agree, as Kafka's fetcher does.
    /// `fetch_epoch` is the leader epoch the fetch was made in: an answer from an
    /// epoch no longer current is dropped, as Kafka's fetcher drops it.
    pub fn truncate_diverging(
        &self,
        fetch_epoch: i32,
        epoch: i32,
        end_offset: i64,
        now_ms: i64,
    ) -> Result<i64, PartitionError> {
        let state = self.state.lock();
        // Never on a leader's log, nor from an answer of an older epoch.
        if state.role != Role::Follower || state.removed || self.leader_epoch() != fetch_epoch {
            return Err(self.not_leader());
        }
        let mut log = self.log.lock();
        let target = if epoch < 0 || end_offset < 0 {
            // The leader holds no epoch as old as ours: keep only what is committed.
            self.high_watermark().min(log.log_end_offset())
        } else {
            let (own_epoch, own_end) = log.end_offset_for_epoch(epoch);
            if own_epoch < 0 {
                end_offset.min(log.log_end_offset())
            } else {
                end_offset.min(own_end)
            }
        };
        let end = log.log_end_offset();
        if target < end {
            tracing::info!(topic = %self.topic, partition = self.index, from = end, to = target, "truncating diverged log");
        }
        // Even with nothing to cut: an epoch entry at the log end with no record behind
        // it (this broker led an epoch and wrote nothing) must go, as Kafka's
        // `truncateTo` drops it, or the next fetch reports that epoch and diverges again.
        log.truncate_to(target)?;
        if target < end {
            self.reload_producers(&log, now_ms);
            let hw = self.high_watermark().min(target);
            self.high_watermark.store(hw, Ordering::Release);
        }
        Ok(target)
    }

    /// As follower: this log is below the leader's log start; start empty there.
    pub fn reset_to(&self, fetch_epoch: i32, offset: i64) -> Result<(), PartitionError> {
        let state = self.state.lock();
        // As in `truncate_diverging`: never on a leader's log, nor from an old epoch.
        if state.role != Role::Follower || state.removed || self.leader_epoch() != fetch_epoch {
            return Err(self.not_leader());
        }
        let mut log = self.log.lock();
        log.truncate_fully_and_start_at(offset)?;
        if let Err(e) = self.producers.lock().truncate_fully_and_start_at(offset) {
            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "resetting producer state failed");
        }
        self.high_watermark.store(offset, Ordering::Release);
        Ok(())
    }

    fn reload_producers(&self, log: &Log, now_ms: i64) {
        if let Err(e) = self.producers.lock().truncate_and_reload(log, now_ms) {
            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "reloading producer state after truncation failed");
        }
    }

    /// Recomputes the high watermark from the log end and the followers' progress,
    /// and wakes waiters when it moved.
    fn update_high_watermark(&self, state: &ReplicaState) {
        if state.role != Role::Leader {
            return;
        }
        let end = self.log.lock().log_end_offset();
        let current = self.high_watermark();
        let hw = isr::high_watermark(
            current,
            self.local_id,
            end,
            &state.maximal_isr(),
            &state.followers,
        )
        .min(end);
        if hw != current {
            self.high_watermark.store(hw, Ordering::Release);
            self.wake.notify_waiters();
        }
    }

    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().offset_for_timestamp(timestamp)
    }

    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().max_timestamp()
    }

    /// OffsetForLeaderEpoch: (epoch, end offset) as the leader's epoch history has it.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log.lock().end_offset_for_epoch(epoch)
    }

    /// DeleteRecords: only below the high watermark, as Kafka requires.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, PartitionError> {
        self.ensure_leader()?;
        let mut log = self.log.lock();
        let hw = self.high_watermark();
        let target = if offset == -1 { hw } else { offset };
        if target > hw {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: hw,
            }));
        }
        Ok(log.delete_records_before(target)?)
    }

    pub fn set_config(&self, config: LogConfig) {
        self.log.lock().set_config(config);
    }

    /// Periodic work: time-based flush and roll, producer expiry and snapshots, then
    /// retention.
    pub fn tick(&self, now_ms: i64, retention: bool) -> Result<usize, LogError> {
        let mut log = self.log.lock();
        log.tick(now_ms)?;
        // A failed clean is logged, not returned: retention must still run.
        if let Err(e) = log.compact(now_ms) {
            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "log compaction failed");
        }
        self.tick_producers(&log, now_ms);
        if retention {
            log.apply_retention(now_ms)
        } else {
            Ok(0)
        }
    }

    pub fn flush(&self) -> Result<(), LogError> {
        self.log.lock().flush()
    }

    /// Consumes the partition and closes its log cleanly (clean-shutdown marker),
    /// with a producer-state snapshot at the log end so the restart replays nothing.
    pub fn close(self) -> Result<(), LogError> {
        let log = self.log.into_inner();
        let mut producers = self.producers.into_inner();
        if let Err(e) = producers.write_snapshot(log.log_end_offset(), now_ms()) {
            // Not fatal: the next open rebuilds the state from the log.
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "producer snapshot at close failed");
        }
        log.close()
    }

    /// Expires silent producers and writes a snapshot when one is due. Failures are
    /// logged, not returned: the log is fine, and the state can be rebuilt from it.
    fn tick_producers(&self, log: &Log, now_ms: i64) {
        let mut producers = self.producers.lock();
        producers.remove_expired(now_ms, PRODUCER_ID_EXPIRATION_MS);
        let end = log.log_end_offset();
        if producers.snapshot_due(end, now_ms, SNAPSHOT_INTERVAL_MS, SNAPSHOT_EVERY_OFFSETS) {
            if let Err(e) = producers.write_snapshot(end, now_ms) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "producer snapshot failed");
            }
        }
    }

    pub fn delete(self) -> Result<(), LogError> {
        self.log.into_inner().delete()
    }

    fn ensure_leader(&self) -> Result<(), PartitionError> {
        match self.role() {
            Role::Leader => Ok(()),
            Role::Follower => Err(self.not_leader()),
        }
    }

    fn not_leader(&self) -> PartitionError {
        PartitionError::NotLeader {
            topic: self.topic.clone(),
            partition: self.index,
        }
    }
}

/// The producer state of a freshly opened log. A failure leaves the state empty, which
/// Kafka's rules treat like producers it has not seen: they are accepted, so a broken
/// snapshot or unreadable log never stops the partition from serving.
fn load_producer_state(topic: &str, index: i32, log: &Log) -> ProducerStateManager {
    match ProducerStateManager::load(log, now_ms()) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(%topic, partition = index, error = %e, "cannot load producer state; starting empty");
            ProducerStateManager::new(log.dir())
        }
    }
}

fn now_ms() -> i64 {
    crate::replica_manager::now_ms()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Barrier};
    use std::time::Duration;

    use super::*;
    use crate::log::batch::{build_batch, NewRecord};

    fn batch(value: &str) -> BytesMut {
        BytesMut::from(
            &build_batch(&[NewRecord {
                key: None,
                value: Some(value.as_bytes()),
                timestamp: 1000,
            }])[..],
        )
    }

    /// Kafka's reads take no lock an append holds across its fsync: a consumer fetch
    /// is answered while an append (flush.messages=1) is stopped inside its fsync, and
    /// the append is answered only once the fsync is done.
    #[test]
    fn a_fetch_is_answered_while_an_append_is_in_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let in_fsync = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        {
            let (armed, in_fsync, release) = (armed.clone(), in_fsync.clone(), release.clone());
            log.set_before_sync(Arc::new(move || {
                if armed.swap(false, Ordering::AcqRel) {
                    in_fsync.wait();
                    release.wait();
                }
            }));
        }
        let partition = Arc::new(Partition::new(
            "t".into(),
            Uuid::nil(),
            0,
            log,
            1,
            Arc::new(Notify::new()),
        ));
        partition.apply_state(&PartitionState::new(vec![1]), 0);
        partition
            .append_as_leader(&mut batch("first"), -1, 0)
            .unwrap();
        assert_eq!(partition.high_watermark(), 1);

        armed.store(true, Ordering::Release);
        let appending = {
            let partition = partition.clone();
            std::thread::spawn(move || partition.append_as_leader(&mut batch("second"), -1, 0))
        };
        in_fsync.wait();
        // The append is inside its fsync now; a fetch must not wait for it.
        let (tx, rx) = mpsc::channel();
        {
            let partition = partition.clone();
            std::thread::spawn(move || {
                let fetched = partition
                    .fetch(0, 1 << 20, true)
                    .map(|f| (f.high_watermark, f.slice.map(|s| s.to_vec().unwrap().len())));
                let _ = tx.send(fetched);
            });
        }
        let fetched = rx.recv_timeout(Duration::from_secs(5));
        let appended_early = appending.is_finished();
        release.wait();
        let (hw, first_batch_len) = fetched.expect("the fetch waited for the fsync").unwrap();
        assert_eq!(hw, 1, "the unsynced append is not acknowledged yet");
        assert_eq!(first_batch_len, Some(batch("first").len()));
        assert!(!appended_early, "the append was answered before its fsync");
        let info = appending.join().unwrap().unwrap();
        assert_eq!(info.base_offset, 1);
        assert_eq!(partition.high_watermark(), 2);
    }

    /// A partition this broker stopped hosting (its files deleted while a fetcher still
    /// held it) takes no more follower writes, truncations or roles: the fetcher's late
    /// answer must not land in a log that a new assignment may recreate.
    #[test]
    fn a_removed_partition_refuses_follower_writes_and_new_roles() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        let partition = Partition::new("t".into(), Uuid::nil(), 0, log, 1, Arc::new(Notify::new()));
        let following = PartitionState::new(vec![2, 1]);
        assert!(partition.apply_state(&following, 0));
        assert!(partition.follower_position().is_some());
        partition
            .append_as_follower(&batch("before"), 1, 0, 0, 0)
            .unwrap();
        assert_eq!(partition.log_end_offset(), 1);

        partition.resign();
        assert_eq!(partition.follower_position(), None);
        assert!(partition
            .append_as_follower(&batch("late"), 2, 0, 0, 0)
            .is_err());
        assert!(partition.truncate_diverging(0, 0, 0, 0).is_err());
        assert!(partition.reset_to(0, 0).is_err());
        assert_eq!(
            partition.log_end_offset(),
            1,
            "nothing written after removal"
        );
        let leading = PartitionState {
            leader: 1,
            leader_epoch: 1,
            partition_epoch: 1,
            ..following
        };
        assert!(!partition.apply_state(&leading, 0));
        assert_eq!(partition.role(), Role::Follower);
    }
}
