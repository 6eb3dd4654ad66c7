//! The group coordinator: owns every group whose `__consumer_offsets` partition this
//! broker leads, persists offset commits and group metadata as records there, and
//! rebuilds its state from those partitions at start.
//!
//! Which broker coordinates a group follows partition leadership (hash of the group id
//! -> partition -> leader), so nothing here assumes a single node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, Mutex, MutexGuard};

use super::membership::{Group, GroupConfig, GroupState, JoinRequest, JoinResponse, SyncResponse};
use super::records::{self, OffsetCommitValue, RecordKey};
use crate::log::batch::{batches, build_batch, NewRecord};
use crate::partition::{AckStatus, Partition, PartitionError, Role};
use crate::replica_manager::{now_ms, ReplicaManager, TopicError, Transition};

/// How long a write to `__consumer_offsets` waits for the ISR (Kafka's
/// `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The groups of one `__consumer_offsets` partition: Kafka's coordinator shard. Its
/// lock covers checking a request against the groups and appending the records that
/// result, so the log holds them in the order they were decided. It is never held
/// while an append waits for the ISR: other groups, and other requests of the same
/// group, are served meanwhile.
#[derive(Default)]
struct Shard {
    /// The partition's leader epoch its groups were loaded in; `None` while it is led
    /// elsewhere or still loading.
    loaded_epoch: Option<i32>,
    groups: HashMap<String, Group>,
    /// The log offset of the record behind each committed offset or its deletion, by
    /// (group, topic, partition), as Kafka's `CommitRecordMetadataAndOffset`:
    /// acknowledgements complete in any order, and only the newest record decides what
    /// OffsetFetch sees.
    offset_records: HashMap<(String, String, i32), i64>,
}

impl Shard {
    fn group_or_new(&mut self, group_id: &str, config: &GroupConfig) -> &mut Group {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.to_string(), config))
    }

    /// Makes the commit (or deletion, `None`) written at `record_offset` visible,
    /// unless a newer record for the same partition already is.
    fn apply_offset(
        &mut self,
        group_id: &str,
        tp: (String, i32),
        value: Option<OffsetCommitValue>,
        record_offset: i64,
        config: &GroupConfig,
    ) {
        let key = (group_id.to_string(), tp.0.clone(), tp.1);
        if self
            .offset_records
            .get(&key)
            .is_some_and(|newest| *newest >= record_offset)
        {
            return;
        }
        self.offset_records.insert(key, record_offset);
        match value {
            Some(v) => {
                self.group_or_new(group_id, config).offsets.insert(tp, v);
            }
            None => {
                if let Some(g) = self.groups.get_mut(group_id) {
                    g.offsets.remove(&tp);
                }
            }
        }
    }
}

/// Records appended to a coordinator partition as leader, not yet acknowledged by the
/// ISR. Awaiting them takes no lock.
struct Appended {
    partition: Arc<Partition>,
    /// The leader epoch the records were appended in.
    leader_epoch: i32,
    base_offset: i64,
    /// One past the last offset appended.
    required: i64,
}

impl Appended {
    /// Waits, with no lock held, until the ISR has the records, or fails as Kafka's
    /// coordinator answers a failed write: a timeout or too small an ISR is
    /// COORDINATOR_NOT_AVAILABLE, lost leadership NOT_COORDINATOR.
    async fn acknowledged(&self) -> Result<(), ResponseError> {
        let deadline = tokio::time::Instant::now() + OFFSETS_COMMIT_TIMEOUT;
        let status = self
            .partition
            .wait_for_ack(self.required, self.leader_epoch, deadline)
            .await;
        let error = match status {
            AckStatus::Done => return Ok(()),
            AckStatus::NotLeader => ResponseError::NotCoordinator,
            AckStatus::NotEnoughReplicasAfterAppend { .. } | AckStatus::Pending => {
                ResponseError::CoordinatorNotAvailable
            }
        };
        tracing::warn!(
            partition = self.partition.index,
            offset = self.base_offset,
            ?status,
            "a write to {OFFSETS_TOPIC} was not acknowledged by the ISR"
        );
        Err(error)
    }
}

/// Waits for group metadata written by a background step (session expiry), only to
/// log a failure: nobody waits for the answer.
fn log_unacknowledged(appended: Appended, group_id: String) {
    tokio::spawn(async move {
        if let Err(e) = appended.acknowledged().await {
            tracing::error!(group = %group_id, error = ?e, "group metadata not replicated");
        }
    });
}

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's `offset.metadata.max.bytes` default.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

pub struct CommitRequest {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct DescribedGroup {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

pub struct GroupCoordinator {
    replicas: Arc<ReplicaManager>,
    config: GroupConfig,
    /// `offsets.topic.num.partitions`
    num_partitions: i32,
    /// One per `__consumer_offsets` partition, indexed by partition.
    shards: Vec<Mutex<Shard>>,
}

impl GroupCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>, config: GroupConfig, num_partitions: i32) -> Self {
        GroupCoordinator {
            replicas,
            config,
            num_partitions,
            shards: (0..num_partitions.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        }
    }

    /// Kafka's choice: `Utils.abs(groupId.hashCode) % partitions`, with Java's String
    /// hash, so a group lands on the same partition number as in Apache Kafka.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        let mut h: i32 = 0;
        for unit in group_id.encode_utf16() {
            h = h.wrapping_mul(31).wrapping_add(unit as i32);
        }
        // Kafka's Utils.abs: |h|, and 0 for i32::MIN (whose |h| does not exist).
        let abs = if h == i32::MIN { 0 } else { h.abs() };
        abs % self.num_partitions.max(1)
    }

    /// Creates `__consumer_offsets` if it does not exist yet (Kafka does so on the
    /// first FindCoordinator).
    pub async fn ensure_offsets_topic(&self) -> Result<(), TopicError> {
        if self.replicas.topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        // Kafka's rule: the topic waits until `offsets.topic.replication.factor`
        // brokers are up rather than starting with fewer replicas for good.
        let cluster = &self.replicas.config().cluster;
        let rf = match cluster.offsets_topic_replication_factor {
            -1 => self.replicas.config().default_replication_factor,
            rf => rf,
        };
        if self.replicas.active_broker_count() < rf as usize {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "{OFFSETS_TOPIC} needs {rf} brokers, {} are up",
                self.replicas.active_broker_count()
            )));
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), (100 * 1024 * 1024).to_string()),
        ]);
        match self
            .replicas
            .create_topic(OFFSETS_TOPIC, self.num_partitions, rf, configs, false)
            .await
        {
            Ok(_) | Err(TopicError::TopicAlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn shard_of(&self, partition: i32) -> &Mutex<Shard> {
        // `partition_for` keeps partitions below `num_partitions`, the shard count.
        &self.shards[partition.clamp(0, self.shards.len() as i32 - 1) as usize]
    }

    /// Whether this broker coordinates the groups of `shard`'s partition now: it
    /// leads the partition, in the epoch its groups were loaded in.
    fn check_coordinator(
        &self,
        shard: &Shard,
        partition: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        let partition = self
            .replicas
            .partition(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        match partition.role() {
            Role::Leader if shard.loaded_epoch == Some(partition.leader_epoch()) => Ok(partition),
            // Led here, but its groups are still being read from the log: answering
            // from empty state would hand consumers "no committed offset".
            Role::Leader => Err(ResponseError::CoordinatorLoadInProgress),
            Role::Follower => Err(ResponseError::NotCoordinator),
        }
    }

    /// The shard of a group, locked, and its partition, if this broker coordinates it.
    async fn coordinator_shard(
        &self,
        group_id: &str,
    ) -> Result<(MutexGuard<'_, Shard>, Arc<Partition>), ResponseError> {
        let p = self.partition_for(group_id);
        let shard = self.shard_of(p).lock().await;
        let partition = self.check_coordinator(&shard, p)?;
        Ok((shard, partition))
    }

    /// FindCoordinator: the broker leading the group's partition (any broker answers).
    pub async fn find_coordinator(&self, group_id: &str) -> Result<i32, ResponseError> {
        self.ensure_offsets_topic().await.map_err(|e| {
            tracing::warn!(error = %e, "cannot create {OFFSETS_TOPIC}");
            ResponseError::CoordinatorNotAvailable
        })?;
        let image = self.replicas.cluster().image();
        match image.partition(OFFSETS_TOPIC, self.partition_for(group_id)) {
            Some(p) if p.leader >= 0 => Ok(p.leader),
            _ => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Leadership of `__consumer_offsets` partitions moved: load the groups of the
    /// partitions led here now, drop those of partitions led elsewhere. Runs where
    /// blocking is allowed (it reads the log); requests for a partition being loaded
    /// are answered COORDINATOR_LOAD_IN_PROGRESS meanwhile, not held.
    pub fn on_transitions(&self, transitions: &[Transition]) {
        for t in transitions.iter().filter(|t| t.topic == OFFSETS_TOPIC) {
            let lock = self.shard_of(t.partition);
            *lock.blocking_lock() = Shard::default();
            if !t.leader {
                continue;
            }
            let Some(partition) = self.replicas.partition(OFFSETS_TOPIC, t.partition) else {
                continue;
            };
            let epoch = partition.leader_epoch();
            match self.load_partition(&partition) {
                Ok((mut shard, n)) => {
                    shard.loaded_epoch = Some(epoch);
                    *lock.blocking_lock() = shard;
                    tracing::info!(partition = t.partition, records = n, "loaded groups")
                }
                Err(e) => {
                    tracing::error!(partition = t.partition, error = %e, "cannot load groups")
                }
            }
        }
    }

    /// Rebuilds the groups and committed offsets of one `__consumer_offsets` partition,
    /// to its log end: a new leader holds every commit the old one acknowledged.
    fn load_partition(&self, partition: &Partition) -> Result<(Shard, usize), PartitionError> {
        let mut shard = Shard::default();
        let mut loaded = 0;
        let mut offset = partition.log_start_offset();
        let end = partition.log_end_offset();
        while offset < end {
            let Some(slice) = partition.read_to_end(offset, 4 * 1024 * 1024)? else {
                break;
            };
            let bytes = slice.to_vec()?;
            let mut next = offset;
            for batch in batches(&bytes) {
                let (_, batch) = batch?;
                next = batch.last_offset() + 1;
                let Some(records) = batch.records() else {
                    tracing::warn!(
                        partition = partition.index,
                        "skipping a compressed batch in {OFFSETS_TOPIC}"
                    );
                    continue;
                };
                for record in records {
                    let record = record?;
                    if self.apply_record(&mut shard, record.offset, record.key, record.value) {
                        loaded += 1;
                    }
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        Ok((shard, loaded))
    }

    /// Applies one `__consumer_offsets` record, written at `offset`, to a shard.
    fn apply_record(
        &self,
        shard: &mut Shard,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> bool {
        let Some(key) = key.map(records::decode_key) else {
            return false;
        };
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a record in {OFFSETS_TOPIC}");
                return false;
            }
        };
        match key {
            RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            } => match value.map(records::decode_offset_commit) {
                Some(Ok(v)) => {
                    shard.apply_offset(&group, (topic, partition), Some(v), offset, &self.config)
                }
                None => shard.apply_offset(&group, (topic, partition), None, offset, &self.config),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "skipping an offset commit");
                    return false;
                }
            },
            RecordKey::GroupMetadata { group } => match value.map(records::decode_group_metadata) {
                Some(Ok(v)) => {
                    shard
                        .group_or_new(&group, &self.config)
                        .restore(v, Instant::now());
                }
                None => {
                    shard.groups.remove(&group);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "skipping group metadata");
                    return false;
                }
            },
        }
        true
    }

    /// Appends records to the group's partition as leader. The caller holds the
    /// shard's lock, so records land in the order the shard decided them; it awaits
    /// the acknowledgement after releasing it. `Ok(None)` when there is nothing to
    /// write.
    fn append(
        &self,
        partition: &Arc<Partition>,
        entries: &[(Bytes, Option<Bytes>)],
    ) -> Result<Option<Appended>, ResponseError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let records: Vec<NewRecord<'_>> = entries
            .iter()
            .map(|(k, v)| NewRecord {
                key: Some(k.as_ref()),
                value: v.as_deref(),
                timestamp: now,
            })
            .collect();
        let mut buf = BytesMut::from(&build_batch(&records)[..]);
        let leader_epoch = partition.leader_epoch();
        // The append may fsync: it runs where blocking is allowed. It never waits for
        // the ISR here.
        let appended =
            tokio::task::block_in_place(|| partition.append_as_leader(&mut buf, -1, now));
        match appended {
            Ok(info) => Ok(Some(Appended {
                partition: partition.clone(),
                leader_epoch,
                base_offset: info.base_offset,
                required: info.last_offset + 1,
            })),
            Err(e) => {
                tracing::error!(error = %e, "cannot write to {OFFSETS_TOPIC}");
                // Kafka's coordinator maps append errors so.
                Err(match e {
                    PartitionError::NotLeader { .. } => ResponseError::NotCoordinator,
                    PartitionError::NotEnoughReplicas { .. }
                    | PartitionError::NotEnoughReplicasAfterAppend { .. } => {
                        ResponseError::CoordinatorNotAvailable
                    }
                    PartitionError::Log(crate::log::LogError::MessageTooLarge { .. }) => {
                        ResponseError::InvalidCommitOffsetSize
                    }
                    _ => ResponseError::UnknownServerError,
                })
            }
        }
    }

    /// Appends a group's metadata (its members and assignment) under the shard lock.
    fn append_group(&self, partition: &Arc<Partition>, group: &Group) -> Option<Appended> {
        let key = records::encode_key(&RecordKey::GroupMetadata {
            group: group.id.clone(),
        });
        let value = records::encode_group_metadata(&group.to_metadata_value(now_ms()));
        match self.append(partition, &[(key, Some(value))]) {
            Ok(appended) => appended,
            Err(e) => {
                tracing::error!(group = %group.id, error = ?e, "group metadata not persisted");
                None
            }
        }
    }

    /// After an acknowledged write: whether the shard still belongs to the leadership
    /// the write was made in (else the groups were reloaded from the log, or dropped).
    fn same_leadership(shard: &Shard, appended: &Appended) -> bool {
        shard.loaded_epoch == Some(appended.leader_epoch)
    }

    pub async fn join(&self, group_id: &str, request: JoinRequest) -> JoinResponse {
        let member_id = request.member_id.clone();
        if group_id.is_empty() {
            return join_error(ResponseError::InvalidGroupId, &member_id);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut shard = match self.coordinator_shard(group_id).await {
                Ok((shard, _)) => shard,
                Err(e) => return join_error(e, &member_id),
            };
            shard.group_or_new(group_id, &self.config).join(
                request,
                tx,
                Instant::now(),
                &self.config,
            );
        }
        rx.await
            .unwrap_or_else(|_| join_error(ResponseError::UnknownServerError, &member_id))
    }

    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResponse {
        let (tx, rx) = oneshot::channel();
        let appended = {
            let (mut shard, partition) = match self.coordinator_shard(group_id).await {
                Ok(found) => found,
                Err(e) => return sync_error(e),
            };
            let Some(group) = shard.groups.get_mut(group_id) else {
                return sync_error(ResponseError::UnknownMemberId);
            };
            if group.sync(
                member_id,
                group_instance_id,
                generation,
                assignments,
                tx,
                Instant::now(),
            ) {
                self.append_group(&partition, group)
            } else {
                None
            }
        };
        // The leader's answer follows the write of the assignment, as before; a failed
        // write is logged, the assignment stays in force in memory.
        if let Some(appended) = appended {
            if let Err(e) = appended.acknowledged().await {
                tracing::error!(group = %group_id, error = ?e, "group metadata not replicated");
            }
        }
        rx.await
            .unwrap_or_else(|_| sync_error(ResponseError::UnknownServerError))
    }

    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let (mut shard, _) = self.coordinator_shard(group_id).await?;
        let group = shard
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        group.heartbeat(member_id, group_instance_id, generation, Instant::now())
    }

    /// LeaveGroup for several members; the outer error is for the whole request.
    pub async fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let (results, appended) = {
            let (mut shard, partition) = self.coordinator_shard(group_id).await?;
            let group = shard
                .groups
                .get_mut(group_id)
                .ok_or(ResponseError::UnknownMemberId)?;
            let now = Instant::now();
            let mut became_empty = false;
            let results = members
                .iter()
                .map(|(id, instance)| {
                    group.leave(id, instance.as_deref(), now).map(|empty| {
                        became_empty |= empty;
                    })
                })
                .collect();
            let appended = became_empty
                .then(|| self.append_group(&partition, group))
                .flatten();
            (results, appended)
        };
        if let Some(appended) = appended {
            if let Err(e) = appended.acknowledged().await {
                tracing::error!(group = %group_id, error = ?e, "group metadata not replicated");
            }
        }
        Ok(results)
    }

    /// OffsetCommit: validated against the group and appended to `__consumer_offsets`
    /// under the shard's lock, then acknowledged by the ISR with no lock held, and
    /// visible to OffsetFetch only once acknowledged.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        commits: Vec<CommitRequest>,
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut results = Vec::with_capacity(commits.len());
        let mut accepted = Vec::new();
        let appended = {
            let (mut shard, partition) = self.coordinator_shard(group_id).await?;
            if !shard.groups.contains_key(group_id) && generation >= 0 {
                return Err(ResponseError::IllegalGeneration);
            }
            let group = shard.group_or_new(group_id, &self.config);
            group.validate_commit(member_id, group_instance_id, generation)?;
            let now = now_ms();
            let mut entries = Vec::new();
            for c in commits {
                let metadata = c.metadata.unwrap_or_default();
                if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                    results.push(Err(ResponseError::OffsetMetadataTooLarge));
                    continue;
                }
                if self.replicas.partition(&c.topic, c.partition).is_none() {
                    results.push(Err(ResponseError::UnknownTopicOrPartition));
                    continue;
                }
                let value = OffsetCommitValue {
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata,
                    commit_timestamp: now,
                };
                let key = RecordKey::OffsetCommit {
                    group: group_id.to_string(),
                    topic: c.topic.clone(),
                    partition: c.partition,
                };
                entries.push((
                    records::encode_key(&key),
                    Some(records::encode_offset_commit(&value)),
                ));
                accepted.push((results.len(), (c.topic, c.partition), value));
                results.push(Ok(()));
            }
            self.append(&partition, &entries)
        };
        let acknowledged = match appended {
            Ok(None) => return Ok(results),
            Ok(Some(appended)) => appended.acknowledged().await.map(|()| appended),
            Err(e) => Err(e),
        };
        let appended = match acknowledged {
            Ok(appended) => appended,
            Err(e) => {
                for (i, _, _) in &accepted {
                    results[*i] = Err(e);
                }
                return Ok(results);
            }
        };
        let mut shard = self.shard_of(appended.partition.index).lock().await;
        if Self::same_leadership(&shard, &appended) {
            for (record, (_, tp, value)) in (appended.base_offset..).zip(accepted) {
                shard.apply_offset(group_id, tp, Some(value), record, &self.config);
            }
        }
        Ok(results)
    }

    /// OffsetFetch: committed offsets of the given partitions, or of all when `None`.
    #[allow(clippy::type_complexity)]
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, Vec<(i32, Option<OffsetCommitValue>)>)>, ResponseError> {
        let (shard, _) = self.coordinator_shard(group_id).await?;
        let offsets = shard.groups.get(group_id).map(|g| &g.offsets);
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, offsets.and_then(|o| o.get(&(topic.clone(), p)).cloned())))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetCommitValue>)>> =
                    BTreeMap::new();
                for ((topic, p), v) in offsets.into_iter().flatten() {
                    by_topic
                        .entry(topic.clone())
                        .or_default()
                        .push((*p, Some(v.clone())));
                }
                for parts in by_topic.values_mut() {
                    parts.sort_by_key(|(p, _)| *p);
                }
                by_topic.into_iter().collect()
            }
        })
    }

    /// (group id, protocol type, state) of every group this broker coordinates.
    pub async fn list_groups(&self) -> Vec<(String, String, &'static str)> {
        let mut out = Vec::new();
        for (p, lock) in self.shards.iter().enumerate() {
            let shard = lock.lock().await;
            if self.check_coordinator(&shard, p as i32).is_err() {
                continue;
            }
            out.extend(shard.groups.values().map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            }));
        }
        out.sort();
        out
    }

    pub async fn describe_group(
        &self,
        group_id: &str,
    ) -> Result<Option<DescribedGroup>, ResponseError> {
        let (shard, _) = self.coordinator_shard(group_id).await?;
        let Some(g) = shard.groups.get(group_id) else {
            return Ok(None);
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        Ok(Some(DescribedGroup {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    // Kafka shows assignments only once the group is stable.
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }))
    }

    /// DeleteGroups: only groups without members; tombstones for their offsets and
    /// metadata are acknowledged before the group is forgotten.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        let (appended, offsets) = {
            let (shard, partition) = self.coordinator_shard(group_id).await?;
            let group = shard
                .groups
                .get(group_id)
                .ok_or(ResponseError::GroupIdNotFound)?;
            if !group.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            let offsets: Vec<(String, i32)> = group.offsets.keys().cloned().collect();
            let mut entries: Vec<(Bytes, Option<Bytes>)> = offsets
                .iter()
                .map(|(topic, p)| {
                    let key = RecordKey::OffsetCommit {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *p,
                    };
                    (records::encode_key(&key), None)
                })
                .collect();
            entries.push((
                records::encode_key(&RecordKey::GroupMetadata {
                    group: group_id.to_string(),
                }),
                None,
            ));
            (self.append(&partition, &entries)?, offsets)
        };
        let Some(appended) = appended else {
            return Ok(());
        };
        appended.acknowledged().await?;
        let mut shard = self.shard_of(appended.partition.index).lock().await;
        if Self::same_leadership(&shard, &appended) {
            for (record, tp) in (appended.base_offset..).zip(offsets) {
                shard.apply_offset(group_id, tp, None, record, &self.config);
            }
            // A member that joined meanwhile keeps the group (its metadata is written
            // again when it settles).
            if shard.groups.get(group_id).is_some_and(|g| g.is_empty()) {
                shard.groups.remove(group_id);
            }
        }
        Ok(())
    }

    /// OffsetDelete: removes committed offsets of topics the group does not consume.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let mut results = Vec::with_capacity(partitions.len());
        let mut deleted = Vec::new();
        let appended = {
            let (shard, coordinator) = self.coordinator_shard(group_id).await?;
            let group = shard
                .groups
                .get(group_id)
                .ok_or(ResponseError::GroupIdNotFound)?;
            let subscribed = group.subscribed_topics();
            let mut entries = Vec::new();
            for (topic, p) in partitions {
                if subscribed.contains(topic) {
                    results.push(Err(ResponseError::GroupSubscribedToTopic));
                    continue;
                }
                if group.offsets.contains_key(&(topic.clone(), *p)) {
                    let key = RecordKey::OffsetCommit {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *p,
                    };
                    entries.push((records::encode_key(&key), None));
                    deleted.push((topic.clone(), *p));
                }
                results.push(Ok(()));
            }
            self.append(&coordinator, &entries)?
        };
        let Some(appended) = appended else {
            return Ok(results);
        };
        appended.acknowledged().await?;
        let mut shard = self.shard_of(appended.partition.index).lock().await;
        if Self::same_leadership(&shard, &appended) {
            for (record, tp) in (appended.base_offset..).zip(deleted) {
                shard.apply_offset(group_id, tp, None, record, &self.config);
            }
        }
        Ok(results)
    }

    /// Session expiry and rebalance deadlines; run a few times a second. The metadata
    /// of groups left empty is appended here; its acknowledgement is awaited apart.
    pub async fn tick(&self) {
        let now = Instant::now();
        for (p, lock) in self.shards.iter().enumerate() {
            let mut shard = lock.lock().await;
            let partition = self.check_coordinator(&shard, p as i32).ok();
            for group in shard.groups.values_mut() {
                let was_empty = group.is_empty();
                if group.tick(now) && group.is_empty() && !was_empty {
                    if let Some(partition) = &partition {
                        if let Some(appended) = self.append_group(partition, group) {
                            log_unacknowledged(appended, group.id.clone());
                        }
                    }
                }
            }
        }
    }

    /// Deletes expired committed offsets (`offsets.retention.minutes`) with tombstones,
    /// and forgets groups left with neither members nor offsets. Returns how many
    /// offsets were deleted.
    pub async fn expire_offsets(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for (p, lock) in self.shards.iter().enumerate() {
            // (group, expired partitions, forget the group)
            let mut written = Vec::new();
            let appended = {
                let mut shard = lock.lock().await;
                let Ok(partition) = self.check_coordinator(&shard, p as i32) else {
                    continue;
                };
                let mut entries: Vec<(Bytes, Option<Bytes>)> = Vec::new();
                for group in shard.groups.values_mut() {
                    let expired = group.expired_offsets(now_ms, self.config.offsets_retention_ms);
                    if expired.is_empty() {
                        continue;
                    }
                    entries.extend(expired.iter().map(|(topic, p)| {
                        let key = RecordKey::OffsetCommit {
                            group: group.id.clone(),
                            topic: topic.clone(),
                            partition: *p,
                        };
                        (records::encode_key(&key), None)
                    }));
                    let forget = group.offsets.len() == expired.len();
                    if forget {
                        entries.push((
                            records::encode_key(&RecordKey::GroupMetadata {
                                group: group.id.clone(),
                            }),
                            None,
                        ));
                    }
                    written.push((group.id.clone(), expired, forget));
                }
                match self.append(&partition, &entries) {
                    Ok(Some(appended)) => appended,
                    Ok(None) | Err(_) => continue,
                }
            };
            if appended.acknowledged().await.is_err() {
                continue;
            }
            let mut shard = lock.lock().await;
            if !Self::same_leadership(&shard, &appended) {
                continue;
            }
            let mut record = appended.base_offset;
            for (group_id, expired, forget) in written {
                for tp in expired {
                    shard.apply_offset(&group_id, tp, None, record, &self.config);
                    record += 1;
                    deleted += 1;
                }
                if forget {
                    record += 1;
                    if shard
                        .groups
                        .get(&group_id)
                        .is_some_and(|g| g.is_empty() && g.offsets.is_empty())
                    {
                        tracing::info!(group = %group_id, "group expired: no members and no offsets left");
                        shard.groups.remove(&group_id);
                    }
                }
            }
        }
        deleted
    }
}

fn join_error(error: ResponseError, member_id: &str) -> JoinResponse {
    JoinResponse {
        error: Some(error),
        generation: -1,
        member_id: member_id.to_string(),
        ..Default::default()
    }
}

fn sync_error(error: ResponseError) -> SyncResponse {
    SyncResponse {
        error: Some(error),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    /// Tests run on their own thread, which has entered the runtime.
    fn wait<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Handle::current().block_on(f)
    }

    fn commit(c: &GroupCoordinator, group: &str, topic: &str, partition: i32, offset: i64) {
        let results = wait(c.commit_offsets(
            group,
            "",
            None,
            -1,
            vec![CommitRequest {
                topic: topic.into(),
                partition,
                offset,
                leader_epoch: -1,
                metadata: Some(format!("m{offset}")),
            }],
        ))
        .unwrap();
        assert_eq!(results, vec![Ok(())]);
    }

    fn committed(
        c: &GroupCoordinator,
        group: &str,
        topic: &str,
    ) -> Vec<(i32, Option<(i64, String)>)> {
        let found =
            wait(c.fetch_offsets(group, Some(vec![(topic.to_string(), vec![0, 1])]))).unwrap();
        found[0]
            .1
            .iter()
            .map(|(p, v)| (*p, v.as_ref().map(|v| (v.offset, v.metadata.clone()))))
            .collect()
    }

    /// Commits are records in `__consumer_offsets`: a new coordinator over the same
    /// logs sees them, and expiry writes tombstones that a reload honours too.
    #[test]
    fn commits_survive_a_reload_and_expire_with_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::dev("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let group_config = GroupConfig {
            offsets_retention_ms: 60_000,
            ..config.group.clone()
        };
        let cluster = crate::cluster::testing::SingleNode::start(config.clone());
        let replicas = cluster.replicas.clone();
        wait(replicas.create_topic("t", 2, 1, BTreeMap::new(), false)).unwrap();
        let c = GroupCoordinator::new(replicas.clone(), group_config.clone(), 3);
        assert_eq!(wait(c.find_coordinator("g")).unwrap(), 1);
        let loaded: Vec<Transition> = (0..3)
            .map(|p| Transition {
                topic: OFFSETS_TOPIC.to_string(),
                partition: p,
                leader: true,
            })
            .collect();
        // Led here but not loaded yet: clients are told to wait.
        assert_eq!(
            wait(c.fetch_offsets("g", None)).err(),
            Some(ResponseError::CoordinatorLoadInProgress)
        );
        c.on_transitions(&loaded);
        commit(&c, "g", "t", 0, 5);
        commit(&c, "g", "t", 1, 7);
        commit(&c, "g", "t", 0, 6);
        assert_eq!(
            committed(&c, "g", "t"),
            vec![(0, Some((6, "m6".into()))), (1, Some((7, "m7".into())))]
        );
        // An unknown topic is refused per partition, not for the request.
        let r = wait(c.commit_offsets(
            "g",
            "",
            None,
            -1,
            vec![CommitRequest {
                topic: "nope".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        ))
        .unwrap();
        assert_eq!(r, vec![Err(ResponseError::UnknownTopicOrPartition)]);

        let reloaded = GroupCoordinator::new(replicas.clone(), group_config.clone(), 3);
        reloaded.on_transitions(&loaded);
        assert_eq!(committed(&reloaded, "g", "t"), committed(&c, "g", "t"));

        // Not yet old enough, then expired.
        assert_eq!(wait(reloaded.expire_offsets(now_ms())), 0);
        assert_eq!(wait(reloaded.expire_offsets(now_ms() + 61_000)), 2);
        assert_eq!(committed(&reloaded, "g", "t"), vec![(0, None), (1, None)]);
        assert!(
            wait(reloaded.list_groups()).is_empty(),
            "a group with nothing left is forgotten"
        );

        let again = GroupCoordinator::new(replicas.clone(), group_config, 3);
        again.on_transitions(&loaded);
        assert_eq!(committed(&again, "g", "t"), vec![(0, None), (1, None)]);
        drop(replicas);
        cluster.stop();
    }

    /// Acknowledgements complete in any order: an older commit acknowledged last does
    /// not hide a newer one, nor bring back an offset deleted after it.
    #[test]
    fn only_the_newest_offset_record_is_visible() {
        let config = GroupConfig::default();
        let value = |offset| OffsetCommitValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        };
        let tp = || ("t".to_string(), 0);
        let mut shard = Shard::default();
        shard.apply_offset("g", tp(), Some(value(6)), 11, &config);
        shard.apply_offset("g", tp(), Some(value(5)), 10, &config);
        assert_eq!(shard.groups["g"].offsets[&tp()].offset, 6);
        shard.apply_offset("g", tp(), None, 12, &config);
        shard.apply_offset("g", tp(), Some(value(7)), 9, &config);
        assert!(shard.groups["g"].offsets.is_empty());
        shard.apply_offset("g", tp(), Some(value(8)), 13, &config);
        assert_eq!(shard.groups["g"].offsets[&tp()].offset, 8);
    }

    #[test]
    fn the_partition_of_a_group_is_kafkas() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::dev("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        let cluster = crate::cluster::testing::SingleNode::start(config);
        let c = GroupCoordinator::new(cluster.replicas.clone(), GroupConfig::default(), 50);
        // Values from Java: Utils.abs(g.hashCode()) % 50.
        assert_eq!(c.partition_for("my-group"), 12); // hashCode -1906497762
        assert_eq!(c.partition_for("console-consumer-1"), 24);
        assert_eq!(c.partition_for("g"), 3);
        assert_eq!(c.partition_for(""), 0);
    }
}
