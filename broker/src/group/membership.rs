//! One consumer group's membership and rebalance state machine (Kafka's classic
//! protocol): Empty -> PreparingRebalance -> CompletingRebalance -> Stable.
//!
//! Pure state: time comes in as `Instant`s and replies leave through oneshot channels,
//! so the rules are unit-tested without sockets or disks. `coordinator` does the I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::records::{GroupMetadataValue, MemberMetadata, OffsetCommitValue};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The names Kafka's tools print and ListGroups filters by.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Broker settings that bound what members may ask for.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i32,
    /// `offsets.retention.minutes`, in ms: committed offsets of a group that has been
    /// empty this long (or, for standalone commits, that are this old) are deleted.
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394): a new member first gets its id, then joins with it.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member's id, instance id and metadata.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResponse {
    fn error(error: ResponseError, member_id: &str) -> Self {
        JoinResponse {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ResponseError) -> Self {
        SyncResponse {
            error: Some(error),
            ..Default::default()
        }
    }
}

pub type JoinReply = oneshot::Sender<JoinResponse>;
pub type SyncReply = oneshot::Sender<SyncResponse>;

pub struct Member {
    pub id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat: Instant,
    awaiting_join: Option<JoinReply>,
    awaiting_sync: Option<SyncReply>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// In join order: the first member becomes leader when there is none.
    pub members: IndexMap<String, Member>,
    /// Member ids handed out by KIP-394 that have not joined with them yet.
    pending_members: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// A rebalance from Empty waits out `group.initial.rebalance.delay.ms` so a group
    /// starting together does not rebalance once per member.
    initial_delay: Duration,
    initial_delay_until: Option<Instant>,
    pub offsets: HashMap<(String, i32), OffsetCommitValue>,
    /// Wall-clock ms since which the group has had no member (offset expiry).
    pub empty_since_ms: Option<i64>,
}

impl Group {
    pub fn new(id: String, config: &GroupConfig) -> Self {
        Group {
            id,
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: Duration::from_millis(config.initial_rebalance_delay_ms.max(0) as u64),
            initial_delay_until: None,
            offsets: HashMap::new(),
            empty_since_ms: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn join(&mut self, req: JoinRequest, reply: JoinReply, now: Instant, config: &GroupConfig) {
        if let Err(e) = self.validate_join(&req, config) {
            let _ = reply.send(JoinResponse::error(e, &req.member_id));
            return;
        }
        if req.member_id.is_empty() {
            if let Some(instance) = req.group_instance_id.clone() {
                return self.join_static_unknown(req, instance, reply, now);
            }
            let member_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id {
                // KIP-394: hand out the id and expect the member back with it.
                self.pending_members.insert(
                    member_id.clone(),
                    now + Duration::from_millis(req.session_timeout_ms as u64),
                );
                let _ = reply.send(JoinResponse::error(
                    ResponseError::MemberIdRequired,
                    &member_id,
                ));
                return;
            }
            return self.add_member_and_rebalance(member_id, req, reply, now);
        }
        if self.pending_members.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(id, req, reply, now);
        }
        let Some(member) = self.members.get_mut(&req.member_id) else {
            let _ = reply.send(JoinResponse::error(
                ResponseError::UnknownMemberId,
                &req.member_id,
            ));
            return;
        };
        if member.group_instance_id != req.group_instance_id {
            let _ = reply.send(JoinResponse::error(
                ResponseError::FencedInstanceId,
                &req.member_id,
            ));
            return;
        }
        member.last_heartbeat = now;
        let unchanged = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                let member = self.members.get_mut(&req.member_id).expect("checked above");
                update_member(member, req);
                member.awaiting_join = Some(reply);
                self.maybe_complete_join(now);
            }
            GroupState::CompletingRebalance | GroupState::Stable if unchanged && !is_leader => {
                // A follower re-sending its join (e.g. after a lost response): answer
                // with the current generation instead of rebalancing everyone.
                let response = self.join_response_for(&req.member_id);
                let _ = reply.send(response);
            }
            _ => {
                let member = self.members.get_mut(&req.member_id).expect("checked above");
                update_member(member, req);
                member.awaiting_join = Some(reply);
                self.prepare_rebalance(now);
            }
        }
    }

    /// A static member (group.instance.id) restarting: it takes over its old
    /// membership under a new member id. With the same subscription in a stable group
    /// nothing is rebalanced: it gets the current generation and its old assignment.
    fn join_static_unknown(
        &mut self,
        req: JoinRequest,
        instance: String,
        reply: JoinReply,
        now: Instant,
    ) {
        let new_id = format!("{}-{}", instance, uuid::Uuid::new_v4());
        let old_id = self
            .members
            .values()
            .find(|m| m.group_instance_id.as_deref() == Some(instance.as_str()))
            .map(|m| m.id.clone());
        let Some(old_id) = old_id else {
            return self.add_member_and_rebalance(new_id, req, reply, now);
        };
        let Some(mut old) = self.members.shift_remove(&old_id) else {
            return;
        };
        if let Some(r) = old.awaiting_join.take() {
            let _ = r.send(JoinResponse::error(
                ResponseError::FencedInstanceId,
                &old_id,
            ));
        }
        if let Some(r) = old.awaiting_sync.take() {
            let _ = r.send(SyncResponse::error(ResponseError::FencedInstanceId));
        }
        let unchanged = old.protocols == req.protocols;
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        old.id = new_id.clone();
        old.last_heartbeat = now;
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && unchanged && !was_leader {
            self.members.insert(new_id.clone(), old);
            let response = self.join_response_for(&new_id);
            let _ = reply.send(response);
            return;
        }
        update_member(&mut old, req);
        old.awaiting_join = Some(reply);
        self.members.insert(new_id, old);
        self.prepare_rebalance(now);
    }

    fn validate_join(&self, req: &JoinRequest, config: &GroupConfig) -> Result<(), ResponseError> {
        if self.id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if req.session_timeout_ms < config.min_session_timeout_ms
            || req.session_timeout_ms > config.max_session_timeout_ms
        {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(req.protocol_type.as_str())
                || self
                    .members
                    .values()
                    .all(|m| m.protocol_type == req.protocol_type);
            let shared = req.protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
            if !same_type || !shared {
                return Err(ResponseError::InconsistentGroupProtocol);
            }
        }
        Ok(())
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        req: JoinRequest,
        reply: JoinReply,
        now: Instant,
    ) {
        let mut member = Member {
            id: id.clone(),
            group_instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: Duration::ZERO,
            rebalance_timeout: Duration::ZERO,
            protocol_type: String::new(),
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_heartbeat: now,
            awaiting_join: Some(reply),
            awaiting_sync: None,
        };
        update_member(&mut member, req);
        self.members.insert(id, member);
        self.prepare_rebalance(now);
    }

    /// Start (or continue) a rebalance: every member must rejoin before the deadline.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(r) = m.awaiting_sync.take() {
                    let _ = r.send(SyncResponse::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        if self.state != GroupState::PreparingRebalance {
            let from_empty = self.state == GroupState::Empty;
            self.state = GroupState::PreparingRebalance;
            let timeout = self.max_rebalance_timeout();
            self.rebalance_deadline = Some(now + timeout);
            self.initial_delay_until = (from_empty && !self.initial_delay.is_zero())
                .then(|| now + self.initial_delay.min(timeout));
        }
        self.maybe_complete_join(now);
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|d| now >= d);
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        if (all_joined && delay_over) || deadline_passed {
            self.complete_join();
        }
    }

    /// Members that did not rejoin in time are dropped; the rest form the new
    /// generation, the leader gets everyone's metadata.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.awaiting_join.is_some());
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response_for(&id);
            if let Some(r) = self
                .members
                .get_mut(&id)
                .and_then(|m| m.awaiting_join.take())
            {
                let _ = r.send(response);
            }
        }
    }

    /// Each member votes for its most preferred protocol among those all support.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: IndexMap<&String, usize> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| votes.contains_key(n)) {
                if let Some(v) = votes.get_mut(name) {
                    *v += 1;
                }
            }
        }
        votes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(n, _)| (*n).clone())
    }

    fn join_response_for(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// SyncGroup. Returns true when the leader's assignment made the group Stable, so
    /// the coordinator persists the new group metadata.
    pub fn sync(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        reply: SyncReply,
        now: Instant,
    ) -> bool {
        if let Err(e) = self.check_member(member_id, group_instance_id, generation) {
            let _ = reply.send(SyncResponse::error(e));
            return false;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::Empty => {
                let _ = reply.send(SyncResponse::error(ResponseError::UnknownMemberId));
                false
            }
            GroupState::PreparingRebalance => {
                let _ = reply.send(SyncResponse::error(ResponseError::RebalanceInProgress));
                false
            }
            GroupState::Stable => {
                let response = self.sync_response_for(member_id);
                let _ = reply.send(response);
                false
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = Some(reply);
                }
                if self.leader.as_deref() != Some(member_id) {
                    return false;
                }
                let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = assignments.remove(&m.id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in ids {
                    let response = self.sync_response_for(&id);
                    if let Some(r) = self
                        .members
                        .get_mut(&id)
                        .and_then(|m| m.awaiting_sync.take())
                    {
                        let _ = r.send(response);
                    }
                }
                true
            }
        }
    }

    fn sync_response_for(&self, member_id: &str) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    fn check_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let Some(m) = self.members.get(member_id) else {
            if let Some(instance) = instance {
                if self
                    .members
                    .values()
                    .any(|m| m.group_instance_id.as_deref() == Some(instance))
                {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
            return Err(ResponseError::UnknownMemberId);
        };
        if instance.is_some() && m.group_instance_id.as_deref() != instance {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_member(member_id, instance, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member, by member id or (static members) instance id.
    /// Returns true when the group became empty (its metadata should be persisted).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now: Instant,
    ) -> Result<bool, ResponseError> {
        let id = match instance {
            Some(instance) => {
                let found = self
                    .members
                    .values()
                    .find(|m| m.group_instance_id.as_deref() == Some(instance))
                    .map(|m| m.id.clone())
                    .ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && found != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
                found
            }
            None => {
                if self.pending_members.remove(member_id).is_some() {
                    return Ok(false);
                }
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(self.remove_member(&id, now))
    }

    /// Removes a member and rebalances the rest. True when the group is now empty.
    fn remove_member(&mut self, id: &str, now: Instant) -> bool {
        let Some(mut m) = self.members.shift_remove(id) else {
            return false;
        };
        if let Some(r) = m.awaiting_join.take() {
            let _ = r.send(JoinResponse::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(r) = m.awaiting_sync.take() {
            let _ = r.send(SyncResponse::error(ResponseError::UnknownMemberId));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty => {}
        }
        if self.members.is_empty() && self.state == GroupState::PreparingRebalance {
            self.complete_join();
        }
        self.members.is_empty()
    }

    /// Time passes: expire silent members and unclaimed KIP-394 ids, end rebalances
    /// whose deadline passed. True when the group's metadata changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        self.pending_members.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        let mut changed = false;
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id, now);
            changed = true;
        }
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now);
            changed |= self.state != GroupState::PreparingRebalance;
        }
        changed
    }

    /// May this commit land? Kafka's rules: members commit for their generation; a
    /// standalone consumer (generation -1, no member id) only while the group is empty.
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        // Kafka's order of checks (ClassicGroup.validateOffsetCommit): the member and
        // its generation first, so a member that missed a rebalance learns it is
        // behind (ILLEGAL_GENERATION, and rejoins) rather than being told to wait.
        let empty = self.state == GroupState::Empty;
        if generation < 0 && empty {
            // The admin client, or a consumer without group management.
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            self.check_member(member_id, instance, generation)?;
        } else if !empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Offsets due for deletion at `now_ms` (Kafka's KIP-211 rules): all of them once a
    /// managed group has been empty for the retention period; for a group that never
    /// had members (standalone commits), each offset once it is that old.
    pub fn expired_offsets(&mut self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if !self.members.is_empty() {
            self.empty_since_ms = None;
            return Vec::new();
        }
        let empty_since = *self.empty_since_ms.get_or_insert(now_ms);
        let managed = self.protocol_type.is_some();
        self.offsets
            .iter()
            .filter(|(_, v)| {
                let since = if managed {
                    empty_since
                } else {
                    v.commit_timestamp
                };
                now_ms.saturating_sub(since) >= retention_ms
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Topics the live members subscribe to (for OffsetDelete).
    pub fn subscribed_topics(&self) -> Vec<String> {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut topics: Vec<String> = self
            .members
            .values()
            .flat_map(|m| super::records::subscribed_topics(&m.metadata_for(&protocol)))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    pub fn to_metadata_value(&self, now_ms: i64) -> GroupMetadataValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberMetadata {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores a group from its last metadata record: members continue in their
    /// generation and must heartbeat within their session timeout from now.
    pub fn restore(&mut self, value: GroupMetadataValue, now: Instant) {
        self.generation = value.generation;
        self.protocol_type = Some(value.protocol_type.clone()).filter(|p| !p.is_empty());
        self.protocol = value.protocol.clone();
        self.leader = value.leader.clone();
        self.members.clear();
        let protocol = value.protocol.unwrap_or_default();
        for m in value.members {
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    last_heartbeat: now,
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
        }
        // Persisted when the group last changed state: for an empty group, when it emptied.
        self.empty_since_ms =
            (value.current_state_timestamp >= 0).then_some(value.current_state_timestamp);
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }
}

fn update_member(member: &mut Member, req: JoinRequest) {
    member.group_instance_id = req.group_instance_id;
    member.client_id = req.client_id;
    member.client_host = req.client_host;
    member.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    member.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
    member.protocol_type = req.protocol_type;
    member.protocols = req.protocols;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..Default::default()
        }
    }

    fn join_req(
        member_id: &str,
        instance: Option<&str>,
        protocols: &[(&str, &[u8])],
    ) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), Bytes::copy_from_slice(m)))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn join(g: &mut Group, req: JoinRequest, now: Instant) -> oneshot::Receiver<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        g.join(req, tx, now, &config());
        rx
    }

    /// KIP-394 round trip, then a real join.
    fn join_new(g: &mut Group, now: Instant) -> oneshot::Receiver<JoinResponse> {
        let first = join(g, join_req("", None, &[("range", b"m")]), now)
            .try_recv()
            .unwrap();
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        assert!(!first.member_id.is_empty());
        join(g, join_req(&first.member_id, None, &[("range", b"m")]), now)
    }

    fn sync(
        g: &mut Group,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> oneshot::Receiver<SyncResponse> {
        let (tx, rx) = oneshot::channel();
        g.sync(member, None, generation, assignments, tx, now);
        rx
    }

    #[test]
    fn a_single_member_joins_syncs_and_is_stable() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let mut rx = join_new(&mut g, now);
        let r = rx
            .try_recv()
            .expect("join completes at once with one member");
        assert_eq!(r.error, None);
        assert_eq!(r.generation, 1);
        assert_eq!(r.leader, r.member_id);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let mut s = sync(
            &mut g,
            &r.member_id,
            1,
            vec![(r.member_id.clone(), Bytes::from_static(b"A"))],
            now,
        );
        let s = s.try_recv().unwrap();
        assert_eq!(s.error, None);
        assert_eq!(s.assignment.as_ref(), b"A");
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&r.member_id, None, 1, now), Ok(()));
        assert_eq!(
            g.heartbeat(&r.member_id, None, 0, now),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 1, now),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_second_member_triggers_a_rebalance_that_waits_for_the_first() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join_new(&mut g, now).try_recv().unwrap();
        sync(&mut g, &a.member_id, 1, vec![], now);
        assert_eq!(g.state, GroupState::Stable);
        let mut b_rx = join_new(&mut g, now);
        assert!(b_rx.try_recv().is_err(), "b waits for a to rejoin");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a.member_id, None, 1, now),
            Err(ResponseError::RebalanceInProgress)
        );
        let a2 = join(
            &mut g,
            join_req(&a.member_id, None, &[("range", b"m")]),
            now,
        )
        .try_recv()
        .unwrap();
        let b = b_rx.try_recv().unwrap();
        assert_eq!((a2.generation, b.generation), (2, 2));
        assert_eq!(a2.leader, a.member_id, "the leader stays");
        assert_eq!(a2.members.len(), 2);
        assert!(b.members.is_empty(), "followers get no member list");
        // The follower's sync waits for the leader's assignment.
        let mut b_sync = sync(&mut g, &b.member_id, 2, vec![], now);
        assert!(b_sync.try_recv().is_err());
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"p0")),
            (b.member_id.clone(), Bytes::from_static(b"p1")),
        ];
        let a_sync = sync(&mut g, &a.member_id, 2, assignments, now)
            .try_recv()
            .unwrap();
        assert_eq!(a_sync.assignment.as_ref(), b"p0");
        assert_eq!(b_sync.try_recv().unwrap().assignment.as_ref(), b"p1");
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join_new(&mut g, now).try_recv().unwrap();
        sync(&mut g, &a.member_id, 1, vec![], now);
        let mut b_rx = join_new(&mut g, now);
        join(
            &mut g,
            join_req(&a.member_id, None, &[("range", b"m")]),
            now,
        );
        let b = b_rx.try_recv().unwrap();
        sync(&mut g, &a.member_id, 2, vec![], now);
        assert_eq!(g.state, GroupState::Stable);
        // b keeps heartbeating, a goes silent past its 10 s session.
        let later = now + Duration::from_secs(8);
        assert_eq!(g.heartbeat(&b.member_id, None, 2, later), Ok(()));
        assert!(g.tick(now + Duration::from_secs(11)));
        assert!(!g.members.contains_key(&a.member_id));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let b2 = join(
            &mut g,
            join_req(&b.member_id, None, &[("range", b"m")]),
            now + Duration::from_secs(11),
        )
        .try_recv()
        .unwrap();
        assert_eq!(b2.generation, 3);
        assert_eq!(b2.leader, b.member_id);
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_deadline() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join_new(&mut g, now).try_recv().unwrap();
        sync(&mut g, &a.member_id, 1, vec![], now);
        let mut b_rx = join_new(&mut g, now);
        assert!(!g.tick(now + Duration::from_secs(5)));
        assert!(
            g.tick(now + Duration::from_secs(31)),
            "rebalance timeout is 30 s"
        );
        let b = b_rx.try_recv().unwrap();
        assert_eq!(b.generation, 2);
        assert_eq!(g.members.len(), 1);
        assert_eq!(b.leader, b.member_id);
    }

    #[test]
    fn a_static_member_rejoining_unchanged_keeps_its_assignment_without_rebalance() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join(&mut g, join_req("", Some("i-a"), &[("range", b"m")]), now)
            .try_recv()
            .unwrap();
        assert_eq!(a.error, None, "static members skip KIP-394");
        let mut b_rx = join(&mut g, join_req("", Some("i-b"), &[("range", b"m")]), now);
        join(
            &mut g,
            join_req(&a.member_id, Some("i-a"), &[("range", b"m")]),
            now,
        );
        let b = b_rx.try_recv().unwrap();
        let assignments = vec![
            (a.member_id.clone(), Bytes::from_static(b"A")),
            (b.member_id.clone(), Bytes::from_static(b"B")),
        ];
        let leader = if a.leader == a.member_id { &a } else { &b };
        sync(&mut g, &leader.member_id, b.generation, assignments, now);
        assert_eq!(g.state, GroupState::Stable);
        let generation = g.generation;
        // b restarts: new member id, same instance id, same subscription.
        let follower_instance = if leader.member_id == a.member_id {
            "i-b"
        } else {
            "i-a"
        };
        let old_id = if leader.member_id == a.member_id {
            b.member_id.clone()
        } else {
            a.member_id.clone()
        };
        let r = join(
            &mut g,
            join_req("", Some(follower_instance), &[("range", b"m")]),
            now,
        )
        .try_recv()
        .unwrap();
        assert_eq!(r.error, None);
        assert_ne!(r.member_id, old_id);
        assert_eq!(r.generation, generation, "no rebalance");
        assert_eq!(g.state, GroupState::Stable);
        let s = sync(&mut g, &r.member_id, generation, vec![], now)
            .try_recv()
            .unwrap();
        let expected: &[u8] = if follower_instance == "i-b" {
            b"B"
        } else {
            b"A"
        };
        assert_eq!(s.assignment.as_ref(), expected);
        // The old member id is fenced out.
        assert!(g
            .heartbeat(&old_id, Some(follower_instance), generation, now)
            .is_err());
    }

    #[test]
    fn leaving_empties_the_group_and_commits_follow_the_rules() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join_new(&mut g, now).try_recv().unwrap();
        assert_eq!(
            g.validate_commit(&a.member_id, None, 1),
            Err(ResponseError::RebalanceInProgress)
        );
        // A commit from the generation before the rebalance: the member is behind
        // (librdkafka's 0113 commits during a cooperative rebalance and expects this).
        assert_eq!(
            g.validate_commit(&a.member_id, None, 0),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.validate_commit("someone-else", None, 1),
            Err(ResponseError::UnknownMemberId)
        );
        sync(&mut g, &a.member_id, 1, vec![], now);
        assert_eq!(g.validate_commit(&a.member_id, None, 1), Ok(()));
        assert_eq!(
            g.validate_commit(&a.member_id, None, 7),
            Err(ResponseError::IllegalGeneration)
        );
        // A standalone commit into a live group: Kafka checks the member first.
        assert_eq!(
            g.validate_commit("", None, -1),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(g.leave(&a.member_id, None, now), Ok(true));
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(
            g.validate_commit("", None, -1),
            Ok(()),
            "standalone commits on an empty group"
        );
        assert_eq!(
            g.leave(&a.member_id, None, now),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn incompatible_protocols_and_bad_timeouts_are_refused() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        join_new(&mut g, now).try_recv().unwrap();
        let mut rx = join(&mut g, join_req("", None, &[("roundrobin", b"m")]), now);
        assert_eq!(
            rx.try_recv().unwrap().error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let mut bad = join_req("", None, &[("range", b"m")]);
        bad.session_timeout_ms = 10;
        let (tx, mut rx) = oneshot::channel();
        g.join(bad, tx, now, &config());
        assert_eq!(
            rx.try_recv().unwrap().error,
            Some(ResponseError::InvalidSessionTimeout)
        );
    }

    #[test]
    fn the_protocol_most_members_prefer_wins() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join(
            &mut g,
            join_req(
                "",
                Some("a"),
                &[("range", b""), ("cooperative-sticky", b"")],
            ),
            now,
        )
        .try_recv()
        .unwrap();
        let (tx, _b) = oneshot::channel();
        g.join(
            join_req(
                "",
                Some("b"),
                &[("cooperative-sticky", b""), ("range", b"")],
            ),
            tx,
            now,
            &config(),
        );
        let (tx, _c) = oneshot::channel();
        g.join(
            join_req(
                "",
                Some("c"),
                &[("cooperative-sticky", b""), ("range", b"")],
            ),
            tx,
            now,
            &config(),
        );
        let (tx, _a2) = oneshot::channel();
        g.join(
            join_req(
                &a.member_id,
                Some("a"),
                &[("range", b""), ("cooperative-sticky", b"")],
            ),
            tx,
            now,
            &config(),
        );
        assert_eq!(g.protocol.as_deref(), Some("cooperative-sticky"));
    }

    #[test]
    fn a_managed_groups_offsets_expire_only_after_it_has_been_empty_long_enough() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join_new(&mut g, now).try_recv().unwrap();
        sync(&mut g, &a.member_id, 1, vec![], now);
        let old = OffsetCommitValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        };
        g.offsets.insert(("t".into(), 0), old);
        // Live members keep even ancient commits.
        assert!(g.expired_offsets(1_000_000, 1000).is_empty());
        assert_eq!(g.leave(&a.member_id, None, now), Ok(true));
        // Empty from 2_000_000 on: the retention counts from then, not from the commit.
        assert!(g.expired_offsets(2_000_000, 1000).is_empty());
        assert!(g.expired_offsets(2_000_999, 1000).is_empty());
        assert_eq!(
            g.expired_offsets(2_001_000, 1000),
            vec![("t".to_string(), 0)]
        );
    }

    #[test]
    fn metadata_round_trips_through_restore() {
        let now = Instant::now();
        let mut g = Group::new("g".into(), &config());
        let a = join_new(&mut g, now).try_recv().unwrap();
        sync(
            &mut g,
            &a.member_id,
            1,
            vec![(a.member_id.clone(), Bytes::from_static(b"A"))],
            now,
        );
        let value = g.to_metadata_value(5);
        let mut restored = Group::new("g".into(), &config());
        restored.restore(value, now);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation, 1);
        assert_eq!(restored.heartbeat(&a.member_id, None, 1, now), Ok(()));
        let s = sync(&mut restored, &a.member_id, 1, vec![], now)
            .try_recv()
            .unwrap();
        assert_eq!(s.assignment.as_ref(), b"A");
    }
}
