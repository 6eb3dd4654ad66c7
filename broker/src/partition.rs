//! A partition: a log plus the role this broker plays for it and its high watermark.
//!
//! On a single node every partition is led here and the high watermark is the log end.
//! Replication will add followers and move the high watermark by the ISR instead; the
//! handlers only ever read `high_watermark()`, so they need no change then.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use bytes::BytesMut;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::log::{AppendInfo, Log, LogConfig, LogError, ReadSlice};
use crate::producer_state::{
    batch_headers, AppendCheck, ProducerStateManager, SequenceError, PRODUCER_ID_EXPIRATION_MS,
};

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

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    role: Mutex<Role>,
    leader_epoch: AtomicI32,
    high_watermark: AtomicI64,
    log: Mutex<Log>,
    /// Idempotent producers' sequences. Always locked after `log`, never before.
    producers: Mutex<ProducerStateManager>,
}

impl Partition {
    pub fn new(topic: String, topic_id: Uuid, index: i32, log: Log) -> Self {
        let high_watermark = AtomicI64::new(log.log_end_offset());
        let producers = load_producer_state(&topic, index, &log);
        Partition {
            topic,
            topic_id,
            index,
            role: Mutex::new(Role::Leader),
            leader_epoch: AtomicI32::new(0),
            high_watermark,
            log: Mutex::new(log),
            producers: Mutex::new(producers),
        }
    }

    pub fn role(&self) -> Role {
        *self.role.lock()
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

    /// The in-sync replica set's size: this node alone until replication lands.
    pub fn isr_size(&self) -> i32 {
        1
    }

    /// Appends a producer's batches as leader. acks=all (-1) is refused up front when
    /// the ISR is smaller than `min.insync.replicas`, as Kafka does. The high watermark
    /// follows the log end while this node is the only replica.
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
        self.ensure_leader()?;
        let mut log = self.log.lock();
        let min_isr = log.config().min_insync_replicas;
        if required_acks == -1 && self.isr_size() < min_isr {
            return Err(PartitionError::NotEnoughReplicas {
                topic: self.topic.clone(),
                partition: self.index,
                isr: self.isr_size(),
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
        self.high_watermark
            .store(log.log_end_offset(), Ordering::Release);
        Ok(info)
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

    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().offset_for_timestamp(timestamp)
    }

    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.log.lock().max_timestamp()
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
            Role::Follower => Err(PartitionError::NotLeader {
                topic: self.topic.clone(),
                partition: self.index,
            }),
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
