//! The group coordinator: owns every group whose `__consumer_offsets` partition this
//! broker leads, persists offset commits and group metadata as records there, and
//! rebuilds its state from those partitions at start.
//!
//! Which broker coordinates a group follows partition leadership (hash of the group id
//! -> partition -> leader), so nothing here assumes a single node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::membership::{Group, GroupConfig, GroupState, JoinRequest, JoinResponse, SyncResponse};
use super::records::{self, OffsetCommitValue, RecordKey};
use crate::log::batch::{batches, build_batch, NewRecord};
use crate::partition::{AckStatus, Partition, PartitionError, Role};
use crate::replica_manager::{now_ms, ReplicaManager, TopicError, Transition};

/// How long an offset commit waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Blocks (the caller is in `block_in_place`) until the ISR has everything below
/// `required`, or fails as a produce with acks=all would.
fn wait_for_isr(partition: &Partition, required: i64) -> Result<(), PartitionError> {
    let epoch = partition.leader_epoch();
    let deadline = tokio::time::Instant::now() + OFFSETS_COMMIT_TIMEOUT;
    let status = tokio::runtime::Handle::current()
        .block_on(partition.wait_for_ack(required, epoch, deadline));
    match status {
        AckStatus::Done => Ok(()),
        AckStatus::NotLeader => Err(PartitionError::NotLeader {
            topic: partition.topic.clone(),
            partition: partition.index,
        }),
        AckStatus::NotEnoughReplicasAfterAppend { isr, min_isr } => {
            Err(PartitionError::NotEnoughReplicasAfterAppend {
                topic: partition.topic.clone(),
                partition: partition.index,
                isr,
                min_isr,
            })
        }
        AckStatus::Pending => Err(PartitionError::NotEnoughReplicas {
            topic: partition.topic.clone(),
            partition: partition.index,
            isr: partition.isr_size(),
            min_isr: 0,
        }),
    }
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
    groups: Mutex<HashMap<String, Group>>,
    /// `__consumer_offsets` partitions led here whose groups are loaded.
    loaded: Mutex<std::collections::HashSet<i32>>,
}

impl GroupCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>, config: GroupConfig, num_partitions: i32) -> Self {
        GroupCoordinator {
            replicas,
            config,
            num_partitions,
            groups: Mutex::new(HashMap::new()),
            loaded: Mutex::new(std::collections::HashSet::new()),
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
        abs % self.num_partitions
    }

    /// Creates `__consumer_offsets` if it does not exist yet (Kafka does so on the
    /// first FindCoordinator).
    pub fn ensure_offsets_topic(&self) -> Result<(), TopicError> {
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
        {
            Ok(_) | Err(TopicError::TopicAlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The `__consumer_offsets` partition of a group, if this broker leads it.
    fn coordinator_partition(&self, group_id: &str) -> Result<Arc<Partition>, ResponseError> {
        let partition = self
            .replicas
            .partition(OFFSETS_TOPIC, self.partition_for(group_id))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        match partition.role() {
            // Led here, but its groups are still being read from the log: answering
            // from empty state would hand consumers "no committed offset".
            Role::Leader if !self.loaded.lock().contains(&partition.index) => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            Role::Leader => Ok(partition),
            Role::Follower => Err(ResponseError::NotCoordinator),
        }
    }

    /// FindCoordinator: the broker leading the group's partition (any broker answers).
    pub fn find_coordinator(&self, group_id: &str) -> Result<i32, ResponseError> {
        self.ensure_offsets_topic().map_err(|e| {
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
    /// partitions led here now, drop those of partitions led elsewhere.
    pub fn on_transitions(&self, transitions: &[Transition]) {
        for t in transitions.iter().filter(|t| t.topic == OFFSETS_TOPIC) {
            self.loaded.lock().remove(&t.partition);
            self.unload_partition(t.partition);
            if t.leader {
                match self.load_partition(t.partition) {
                    Ok(n) => {
                        self.loaded.lock().insert(t.partition);
                        tracing::info!(partition = t.partition, records = n, "loaded groups")
                    }
                    Err(e) => {
                        tracing::error!(partition = t.partition, error = %e, "cannot load groups")
                    }
                }
            }
        }
    }

    fn unload_partition(&self, partition: i32) {
        self.groups
            .lock()
            .retain(|id, _| self.partition_for(id) != partition);
    }

    /// Rebuilds the groups and committed offsets of one `__consumer_offsets` partition,
    /// to its log end: a new leader holds every commit the old one acknowledged.
    fn load_partition(&self, p: i32) -> Result<usize, PartitionError> {
        let mut loaded = 0;
        {
            let Some(partition) = self.replicas.partition(OFFSETS_TOPIC, p) else {
                return Ok(0);
            };
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
                            partition = p,
                            "skipping a compressed batch in {OFFSETS_TOPIC}"
                        );
                        continue;
                    };
                    for record in records {
                        let record = record?;
                        if self.apply_record(record.key, record.value) {
                            loaded += 1;
                        }
                    }
                }
                if next <= offset {
                    break;
                }
                offset = next;
            }
        }
        Ok(loaded)
    }

    /// Applies one `__consumer_offsets` record to the in-memory state.
    fn apply_record(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
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
        let mut groups = self.groups.lock();
        let now = Instant::now();
        match key {
            RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            } => {
                let g = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group, &self.config));
                match value.map(records::decode_offset_commit) {
                    Some(Ok(v)) => {
                        g.offsets.insert((topic, partition), v);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "skipping an offset commit");
                        return false;
                    }
                }
            }
            RecordKey::GroupMetadata { group } => match value.map(records::decode_group_metadata) {
                Some(Ok(v)) => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group, &self.config))
                        .restore(v, now);
                }
                None => {
                    groups.remove(&group);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "skipping group metadata");
                    return false;
                }
            },
        }
        true
    }

    /// Appends records to the group's partition, waiting for acks=all.
    fn persist(
        &self,
        partition: &Partition,
        entries: &[(Bytes, Option<Bytes>)],
    ) -> Result<(), ResponseError> {
        if entries.is_empty() {
            return Ok(());
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
        // SyncGroup reaches this from an async handler; the other callers already run
        // inside `block_in_place`, where a nested call costs nothing.
        tokio::task::block_in_place(|| {
            let info = partition.append_as_leader(&mut buf, -1, now)?;
            // Like a produce with acks=all: the commit is answered once the ISR has it,
            // so a new coordinator after failover still has it.
            wait_for_isr(partition, info.last_offset + 1)
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write to {OFFSETS_TOPIC}");
            match e {
                PartitionError::NotLeader { .. } => ResponseError::NotCoordinator,
                PartitionError::NotEnoughReplicas { .. }
                | PartitionError::NotEnoughReplicasAfterAppend { .. } => {
                    ResponseError::CoordinatorNotAvailable
                }
                PartitionError::Log(crate::log::LogError::MessageTooLarge { .. }) => {
                    ResponseError::InvalidCommitOffsetSize
                }
                _ => ResponseError::UnknownServerError,
            }
        })
    }

    fn persist_group(&self, partition: &Partition, group: &Group) {
        let key = records::encode_key(&RecordKey::GroupMetadata {
            group: group.id.clone(),
        });
        let value = records::encode_group_metadata(&group.to_metadata_value(now_ms()));
        if let Err(e) = self.persist(partition, &[(key, Some(value))]) {
            tracing::error!(group = %group.id, error = ?e, "group metadata not persisted");
        }
    }

    pub async fn join(&self, group_id: &str, request: JoinRequest) -> JoinResponse {
        let member_id = request.member_id.clone();
        if group_id.is_empty() {
            return join_error(ResponseError::InvalidGroupId, &member_id);
        }
        if let Err(e) = self.coordinator_partition(group_id) {
            return join_error(e, &member_id);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut groups = self.groups.lock();
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id.to_string(), &self.config));
            group.join(request, tx, Instant::now(), &self.config);
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
        let partition = match self.coordinator_partition(group_id) {
            Ok(p) => p,
            Err(e) => return sync_error(e),
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut groups = self.groups.lock();
            let Some(group) = groups.get_mut(group_id) else {
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
                self.persist_group(&partition, group);
            }
        }
        rx.await
            .unwrap_or_else(|_| sync_error(ResponseError::UnknownServerError))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        self.coordinator_partition(group_id)?;
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        group.heartbeat(member_id, group_instance_id, generation, Instant::now())
    }

    /// LeaveGroup for several members; the outer error is for the whole request.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let partition = self.coordinator_partition(group_id)?;
        let mut groups = self.groups.lock();
        let group = groups
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
        if became_empty {
            self.persist_group(&partition, group);
        }
        Ok(results)
    }

    /// OffsetCommit: validated against the group, written to `__consumer_offsets`, and
    /// visible to OffsetFetch only once written.
    pub fn commit_offsets(
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
        let partition = self.coordinator_partition(group_id)?;
        let mut groups = self.groups.lock();
        let group = match groups.get_mut(group_id) {
            Some(g) => g,
            None if generation < 0 => groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id.to_string(), &self.config)),
            None => return Err(ResponseError::IllegalGeneration),
        };
        group.validate_commit(member_id, group_instance_id, generation)?;
        let now = now_ms();
        let mut results = Vec::with_capacity(commits.len());
        let mut entries = Vec::new();
        let mut accepted = Vec::new();
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
        if let Err(e) = self.persist(&partition, &entries) {
            for (i, _, _) in &accepted {
                results[*i] = Err(e);
            }
            return Ok(results);
        }
        for (_, tp, value) in accepted {
            group.offsets.insert(tp, value);
        }
        Ok(results)
    }

    /// OffsetFetch: committed offsets of the given partitions, or of all when `None`.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, Vec<(i32, Option<OffsetCommitValue>)>)>, ResponseError> {
        self.coordinator_partition(group_id)?;
        let groups = self.groups.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
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
    pub fn list_groups(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .values()
            .filter(|g| self.coordinator_partition(&g.id).is_ok())
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect();
        out.sort();
        out
    }

    pub fn describe_group(&self, group_id: &str) -> Result<Option<DescribedGroup>, ResponseError> {
        self.coordinator_partition(group_id)?;
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
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
    /// metadata are written before the group is forgotten.
    pub fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        let partition = self.coordinator_partition(group_id)?;
        let mut groups = self.groups.lock();
        let group = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        if !group.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut entries: Vec<(Bytes, Option<Bytes>)> = group
            .offsets
            .keys()
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
        self.persist(&partition, &entries)?;
        groups.remove(group_id);
        Ok(())
    }

    /// OffsetDelete: removes committed offsets of topics the group does not consume.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let coordinator = self.coordinator_partition(group_id)?;
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let subscribed = group.subscribed_topics();
        let mut results = Vec::with_capacity(partitions.len());
        let mut entries = Vec::new();
        let mut deleted = Vec::new();
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
        self.persist(&coordinator, &entries)?;
        for tp in deleted {
            group.offsets.remove(&tp);
        }
        Ok(results)
    }

    /// Session expiry and rebalance deadlines; run a few times a second.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            let was_empty = group.is_empty();
            if group.tick(now) && group.is_empty() && !was_empty {
                if let Ok(partition) = self.coordinator_partition(&group.id) {
                    self.persist_group(&partition, group);
                }
            }
        }
    }

    /// Deletes expired committed offsets (`offsets.retention.minutes`) with tombstones,
    /// and forgets groups left with neither members nor offsets. Returns how many
    /// offsets were deleted.
    pub fn expire_offsets(&self, now_ms: i64) -> usize {
        let mut groups = self.groups.lock();
        let mut deleted = 0;
        let mut forgotten = Vec::new();
        for group in groups.values_mut() {
            let expired = group.expired_offsets(now_ms, self.config.offsets_retention_ms);
            if expired.is_empty() {
                continue;
            }
            let Ok(partition) = self.coordinator_partition(&group.id) else {
                continue;
            };
            let mut entries: Vec<(Bytes, Option<Bytes>)> = expired
                .iter()
                .map(|(topic, p)| {
                    let key = RecordKey::OffsetCommit {
                        group: group.id.clone(),
                        topic: topic.clone(),
                        partition: *p,
                    };
                    (records::encode_key(&key), None)
                })
                .collect();
            let forget = group.offsets.len() == expired.len();
            if forget {
                entries.push((
                    records::encode_key(&RecordKey::GroupMetadata {
                        group: group.id.clone(),
                    }),
                    None,
                ));
            }
            if self.persist(&partition, &entries).is_err() {
                continue;
            }
            for tp in &expired {
                group.offsets.remove(tp);
            }
            deleted += expired.len();
            if forget {
                forgotten.push(group.id.clone());
            }
        }
        for id in forgotten {
            tracing::info!(group = %id, "group expired: no members and no offsets left");
            groups.remove(&id);
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

    fn commit(c: &GroupCoordinator, group: &str, topic: &str, partition: i32, offset: i64) {
        let results = c
            .commit_offsets(
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
            )
            .unwrap();
        assert_eq!(results, vec![Ok(())]);
    }

    fn committed(
        c: &GroupCoordinator,
        group: &str,
        topic: &str,
    ) -> Vec<(i32, Option<(i64, String)>)> {
        let found = c
            .fetch_offsets(group, Some(vec![(topic.to_string(), vec![0, 1])]))
            .unwrap();
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
        replicas
            .create_topic("t", 2, 1, BTreeMap::new(), false)
            .unwrap();
        let c = GroupCoordinator::new(replicas.clone(), group_config.clone(), 3);
        assert_eq!(c.find_coordinator("g").unwrap(), 1);
        let loaded: Vec<Transition> = (0..3)
            .map(|p| Transition {
                topic: OFFSETS_TOPIC.to_string(),
                partition: p,
                leader: true,
            })
            .collect();
        // Led here but not loaded yet: clients are told to wait.
        assert_eq!(
            c.fetch_offsets("g", None).err(),
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
        let r = c
            .commit_offsets(
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
            )
            .unwrap();
        assert_eq!(r, vec![Err(ResponseError::UnknownTopicOrPartition)]);

        let reloaded = GroupCoordinator::new(replicas.clone(), group_config.clone(), 3);
        reloaded.on_transitions(&loaded);
        assert_eq!(committed(&reloaded, "g", "t"), committed(&c, "g", "t"));

        // Not yet old enough, then expired.
        assert_eq!(reloaded.expire_offsets(now_ms()), 0);
        assert_eq!(reloaded.expire_offsets(now_ms() + 61_000), 2);
        assert_eq!(committed(&reloaded, "g", "t"), vec![(0, None), (1, None)]);
        assert!(
            reloaded.list_groups().is_empty(),
            "a group with nothing left is forgotten"
        );

        let again = GroupCoordinator::new(replicas.clone(), group_config, 3);
        again.on_transitions(&loaded);
        assert_eq!(committed(&again, "g", "t"), vec![(0, None), (1, None)]);
        drop(replicas);
        cluster.stop();
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
