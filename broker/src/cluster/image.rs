//! The metadata image: cluster state every node holds, built by applying the metadata
//! log's commands in order. It is the Raft state machine and its snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{BrokerEndpoints, Command, CommandResult, ElectionType};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub incarnation_id: Uuid,
    pub endpoints: BrokerEndpoints,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    /// Metadata log index of the registration: the broker is unfenced once it has
    /// applied the log this far (it then knows every partition it hosts).
    #[serde(default)]
    pub registered_index: u64,
    /// A newer process asked to register under this id while this one looked alive.
    /// The controller then fences this registration as soon as its heartbeats are
    /// seen to have stopped, instead of waiting out the whole session timeout.
    #[serde(default)]
    pub pending_incarnation: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when no replica can lead.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped by every change to this partition (Kafka's partition epoch).
    pub partition_epoch: i32,
    /// Replicas being added and removed by a reassignment in flight.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionState>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    /// Next broker epoch to hand out: the Raft index of the registration, as Kafka does,
    /// would also do; a counter keeps it independent of log compaction.
    pub next_broker_epoch: i64,
    pub next_producer_id: i64,
    /// The cluster's `unclean.leader.election.enable` default (set with the id).
    #[serde(default)]
    pub unclean_leader_election_enable: bool,
    /// Raft log index of the last command applied.
    pub applied_index: u64,
}

/// Kafka error codes the image's refusals carry.
pub mod codes {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_REQUEST: i16 = 42;
    pub const BROKER_NOT_AVAILABLE: i16 = 8;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const INELIGIBLE_REPLICA: i16 = 107;
    pub const INVALID_UPDATE_VERSION: i16 = 108;
    pub const NEW_LEADER_ELECTED: i16 = 109;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
}

fn refuse(code: i16, message: impl Into<String>) -> CommandResult {
    CommandResult::Error {
        code,
        message: message.into(),
    }
}

impl PartitionState {
    /// A new partition: every replica in sync, the first one leading.
    pub fn new(replicas: Vec<i32>) -> Self {
        PartitionState {
            leader: replicas.first().copied().unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    pub fn preferred_leader(&self) -> i32 {
        self.replicas.first().copied().unwrap_or(-1)
    }

    fn set_leader(&mut self, leader: i32) {
        if leader != self.leader {
            self.leader = leader;
            self.leader_epoch += 1;
        }
    }
}

impl TopicImage {
    /// The topic's `unclean.leader.election.enable`, else the cluster default.
    pub fn unclean_election_allowed(&self, cluster_default: bool) -> bool {
        self.configs
            .get("unclean.leader.election.enable")
            .map_or(cluster_default, |v| v == "true")
    }
}

impl MetadataImage {
    /// A broker that may lead or join an ISR: registered, not fenced, not shutting down.
    pub fn is_active(&self, broker_id: i32) -> bool {
        self.brokers
            .get(&broker_id)
            .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
    }

    /// Brokers that serve clients, by id.
    pub fn active_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.in_controlled_shutdown)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.topic_id == id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let p = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(p)
    }

    /// Applies one committed command. Must be deterministic: it runs on every node.
    pub fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        self.applied_index = index;
        match command {
            Command::InitCluster {
                cluster_id,
                unclean_leader_election_enable,
            } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                    self.unclean_leader_election_enable = *unclean_leader_election_enable;
                }
                CommandResult::Ok
            }
            Command::RegisterBroker {
                broker_id,
                incarnation_id,
                endpoints,
                rack,
            } => {
                if let Some(b) = self.brokers.get_mut(broker_id) {
                    if b.incarnation_id == *incarnation_id {
                        // A retried proposal of the same registration.
                        return CommandResult::BrokerRegistered {
                            broker_epoch: b.broker_epoch,
                        };
                    }
                    if !b.fenced && !b.in_controlled_shutdown {
                        // Either a second process with this node.id, or a restart
                        // before the controller noticed the old one died: the
                        // controller fences the old one once its heartbeats are seen
                        // to have stopped, then this succeeds.
                        b.pending_incarnation = Some(*incarnation_id);
                        return refuse(
                            codes::DUPLICATE_BROKER_REGISTRATION,
                            format!(
                                "node.id {broker_id} is registered by another live process \
                                 (incarnation {})",
                                b.incarnation_id
                            ),
                        );
                    }
                }
                self.next_broker_epoch += 1;
                let broker_epoch = self.next_broker_epoch;
                // A restart is a new incarnation: the old one is gone, so it leads nothing.
                if self.brokers.contains_key(broker_id) {
                    self.remove_from_leadership(*broker_id);
                }
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        broker_epoch,
                        incarnation_id: *incarnation_id,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        in_controlled_shutdown: false,
                        registered_index: index,
                        pending_incarnation: None,
                    },
                );
                CommandResult::BrokerRegistered { broker_epoch }
            }
            Command::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => match self.current_broker(*broker_id, *broker_epoch) {
                Err(e) => e,
                Ok(b) => {
                    b.fenced = false;
                    b.in_controlled_shutdown = false;
                    self.elect_where_leaderless();
                    CommandResult::Ok
                }
            },
            Command::FenceBroker {
                broker_id,
                broker_epoch,
            } => match self.current_broker(*broker_id, *broker_epoch) {
                Err(e) => e,
                Ok(b) => {
                    b.fenced = true;
                    self.remove_from_leadership(*broker_id);
                    CommandResult::Ok
                }
            },
            Command::ControlledShutdown {
                broker_id,
                broker_epoch,
            } => match self.current_broker(*broker_id, *broker_epoch) {
                Err(e) => e,
                Ok(b) => {
                    b.in_controlled_shutdown = true;
                    self.remove_from_leadership(*broker_id);
                    CommandResult::Ok
                }
            },
            // Kafka's UnregisterBroker: the broker leaves every ISR it can leave and
            // the leadership it held; its replicas stay assigned (offline) until an
            // operator moves them. A live process registers again on its next
            // heartbeat.
            Command::UnregisterBroker { broker_id } => {
                if self.brokers.remove(broker_id).is_none() {
                    return refuse(
                        codes::BROKER_ID_NOT_REGISTERED,
                        format!("Broker ID {broker_id} is not currently registered"),
                    );
                }
                self.remove_from_leadership(*broker_id);
                CommandResult::Ok
            }
            Command::CreateTopics { topics } => {
                for t in topics {
                    if self.topics.contains_key(&t.name) {
                        return refuse(
                            codes::TOPIC_ALREADY_EXISTS,
                            format!("Topic '{}' already exists.", t.name),
                        );
                    }
                }
                for t in topics {
                    let partitions = t
                        .assignments
                        .iter()
                        .map(|r| self.initial_state(r.clone()))
                        .collect();
                    self.topics.insert(
                        t.name.clone(),
                        TopicImage {
                            name: t.name.clone(),
                            topic_id: t.topic_id,
                            partitions,
                            configs: t.configs.clone(),
                        },
                    );
                }
                CommandResult::Ok
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => CommandResult::Ok,
                None => refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"),
            },
            Command::CreatePartitions { topic, assignments } => {
                let states: Vec<_> = assignments
                    .iter()
                    .map(|r| self.initial_state(r.clone()))
                    .collect();
                match self.topics.get_mut(topic) {
                    None => refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"),
                    Some(t) => {
                        t.partitions.extend(states);
                        CommandResult::Ok
                    }
                }
            }
            Command::AlterTopicConfigs { topic, configs } => match self.topics.get_mut(topic) {
                None => refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic"),
                Some(t) => {
                    for (k, v) in configs {
                        match v {
                            Some(v) => t.configs.insert(k.clone(), v.clone()),
                            None => t.configs.remove(k),
                        };
                    }
                    // Allowing unclean election may give leaderless partitions a leader.
                    self.elect_where_leaderless();
                    CommandResult::Ok
                }
            },
            Command::AlterPartition {
                topic,
                partition,
                leader_id,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => self.alter_partition(
                topic,
                *partition,
                *leader_id,
                *leader_epoch,
                *partition_epoch,
                new_isr,
            ),
            Command::ElectLeaders {
                election,
                partitions,
            } => {
                let results = partitions
                    .iter()
                    .map(|(t, p)| {
                        let (code, msg) = self.elect(t, *p, election);
                        (t.clone(), *p, code, msg)
                    })
                    .collect();
                CommandResult::Partitions(results)
            }
            Command::ReassignPartition {
                topic,
                partition,
                target,
            } => self.reassign(topic, *partition, target.as_deref()),
            Command::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => match self.current_broker(*broker_id, *broker_epoch) {
                Err(e) => e,
                Ok(_) => {
                    let first = self.next_producer_id;
                    let count = PRODUCER_ID_BLOCK_SIZE;
                    self.next_producer_id += count as i64;
                    CommandResult::ProducerIds { first, count }
                }
            },
        }
    }

    fn current_broker(
        &mut self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<&mut BrokerRegistration, CommandResult> {
        match self.brokers.get_mut(&broker_id) {
            None => Err(refuse(
                codes::BROKER_NOT_AVAILABLE,
                format!("broker {broker_id} is not registered"),
            )),
            Some(b) if b.broker_epoch != broker_epoch => Err(refuse(
                codes::STALE_BROKER_EPOCH,
                format!(
                    "broker {broker_id} epoch {broker_epoch} is stale (current {})",
                    b.broker_epoch
                ),
            )),
            Some(b) => Ok(b),
        }
    }

    /// A new partition's state: every assigned replica starts in the ISR (an empty log
    /// has nothing to miss, as in Kafka) and the first active one leads.
    fn initial_state(&self, replicas: Vec<i32>) -> PartitionState {
        let mut state = PartitionState::new(replicas);
        state.leader = state
            .replicas
            .iter()
            .copied()
            .find(|r| self.is_active(*r))
            .unwrap_or(-1);
        state
    }

    /// The broker is gone (fenced, shutting down, restarted): it leaves every ISR it can
    /// leave and every partition it led gets a new leader from the ISR.
    fn remove_from_leadership(&mut self, broker_id: i32) {
        let active: Vec<i32> = self.active_brokers().map(|b| b.broker_id).collect();
        let unclean_default = self.unclean_leader_election_enable;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election_allowed(unclean_default);
            for p in &mut topic.partitions {
                if !p.replicas.contains(&broker_id) {
                    continue;
                }
                let mut changed = false;
                // Never empty the ISR: the last member is the one that has everything
                // committed, and it must stay electable when it comes back.
                if p.isr.contains(&broker_id) && p.isr.len() > 1 {
                    p.isr.retain(|r| *r != broker_id);
                    changed = true;
                }
                if p.leader == broker_id {
                    let leader = choose_leader(p, &active, unclean);
                    if leader != p.leader {
                        if !p.isr.contains(&leader) && leader != -1 {
                            p.isr = vec![leader];
                        }
                        p.set_leader(leader);
                        changed = true;
                    }
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Gives a leader to every partition without one that can have one now.
    fn elect_where_leaderless(&mut self) {
        let active: Vec<i32> = self.active_brokers().map(|b| b.broker_id).collect();
        let unclean_default = self.unclean_leader_election_enable;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election_allowed(unclean_default);
            for p in &mut topic.partitions {
                if p.leader != -1 && active.contains(&p.leader) {
                    continue;
                }
                let leader = choose_leader(p, &active, unclean);
                if leader != -1 && leader != p.leader {
                    if !p.isr.contains(&leader) {
                        p.isr = vec![leader];
                    }
                    p.set_leader(leader);
                    p.partition_epoch += 1;
                }
            }
        }
    }

    fn elect(
        &mut self,
        topic: &str,
        partition: i32,
        election: &ElectionType,
    ) -> (i16, Option<String>) {
        let active: Vec<i32> = self.active_brokers().map(|b| b.broker_id).collect();
        let unclean_default = self.unclean_leader_election_enable;
        let Some(t) = self.topics.get_mut(topic) else {
            return (codes::UNKNOWN_TOPIC_OR_PARTITION, None);
        };
        let unclean = t.unclean_election_allowed(unclean_default);
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
        else {
            return (codes::UNKNOWN_TOPIC_OR_PARTITION, None);
        };
        match election {
            ElectionType::Preferred => {
                let preferred = p.preferred_leader();
                if p.leader == preferred {
                    return (codes::ELECTION_NOT_NEEDED, None);
                }
                if !p.isr.contains(&preferred) || !active.contains(&preferred) {
                    return (
                        codes::PREFERRED_LEADER_NOT_AVAILABLE,
                        Some(format!(
                            "preferred replica {preferred} is not an active in-sync replica"
                        )),
                    );
                }
                p.set_leader(preferred);
                p.partition_epoch += 1;
                (0, None)
            }
            ElectionType::Unclean => {
                if p.leader != -1 && active.contains(&p.leader) {
                    return (codes::ELECTION_NOT_NEEDED, None);
                }
                let leader = choose_leader(p, &active, unclean);
                if leader == -1 {
                    return (codes::ELIGIBLE_LEADERS_NOT_AVAILABLE, None);
                }
                if !p.isr.contains(&leader) {
                    p.isr = vec![leader];
                }
                p.set_leader(leader);
                p.partition_epoch += 1;
                (0, None)
            }
        }
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> CommandResult {
        let active: Vec<i32> = self.active_brokers().map(|b| b.broker_id).collect();
        let Some(p) = self.topics.get_mut(topic).and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
        }) else {
            return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
        };
        if p.leader != leader_id || p.leader_epoch != leader_epoch {
            return refuse(
                codes::FENCED_LEADER_EPOCH,
                format!(
                    "leader {leader_id} epoch {leader_epoch} is not current (leader {} epoch {})",
                    p.leader, p.leader_epoch
                ),
            );
        }
        if p.partition_epoch != partition_epoch {
            return refuse(
                codes::INVALID_UPDATE_VERSION,
                format!(
                    "partition epoch {partition_epoch} is not current ({})",
                    p.partition_epoch
                ),
            );
        }
        if !new_isr.contains(&leader_id) {
            return refuse(codes::INVALID_REQUEST, "the ISR must contain the leader");
        }
        for r in new_isr {
            if !p.replicas.contains(r) {
                return refuse(codes::INELIGIBLE_REPLICA, format!("{r} is not a replica"));
            }
            // A fenced broker may not join (it would hold back the high watermark).
            if !p.isr.contains(r) && !active.contains(r) {
                return refuse(codes::INELIGIBLE_REPLICA, format!("{r} is not active"));
            }
        }
        let mut isr = new_isr.to_vec();
        isr.sort_unstable();
        isr.dedup();
        p.isr = isr;
        p.partition_epoch += 1;
        complete_reassignment(p, &active);
        CommandResult::Partitions(vec![(topic.to_string(), partition, 0, None)])
    }

    fn reassign(&mut self, topic: &str, partition: i32, target: Option<&[i32]>) -> CommandResult {
        let active: Vec<i32> = self.active_brokers().map(|b| b.broker_id).collect();
        let known: Vec<i32> = self.brokers.keys().copied().collect();
        let Some(p) = self.topics.get_mut(topic).and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
        }) else {
            return refuse(codes::UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
        };
        let ok = CommandResult::Partitions(vec![(topic.to_string(), partition, 0, None)]);
        let Some(target) = target else {
            if p.adding.is_empty() && p.removing.is_empty() {
                return refuse(
                    codes::NO_REASSIGNMENT_IN_PROGRESS,
                    "no reassignment in progress",
                );
            }
            // Cancel: back to the original replicas (the current ones minus those added).
            let adding = std::mem::take(&mut p.adding);
            p.removing.clear();
            p.replicas.retain(|r| !adding.contains(r));
            p.isr.retain(|r| !adding.contains(r));
            if adding.contains(&p.leader) {
                let leader = choose_leader(p, &active, false);
                p.set_leader(leader);
            }
            p.partition_epoch += 1;
            return ok;
        };
        let mut dedup = target.to_vec();
        dedup.sort_unstable();
        dedup.dedup();
        if target.is_empty() || dedup.len() != target.len() {
            return refuse(
                codes::INVALID_REPLICA_ASSIGNMENT,
                "the target replicas must be distinct and not empty",
            );
        }
        if let Some(r) = target.iter().find(|r| !known.contains(r)) {
            return refuse(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!("broker {r} is not registered"),
            );
        }
        // Kafka's order during a move: the target first, then the replicas leaving.
        let original: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| !p.adding.contains(r))
            .collect();
        p.adding = target
            .iter()
            .copied()
            .filter(|r| !original.contains(r))
            .collect();
        p.removing = original
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        p.replicas = target.to_vec();
        p.replicas.extend(p.removing.iter().copied());
        p.partition_epoch += 1;
        complete_reassignment(p, &active);
        ok
    }
}

/// Producer ids handed to a broker per AllocateProducerIds, as Kafka's block size.
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

/// The leader to elect: the first replica in assignment order that is active and in
/// the ISR; with unclean election allowed, failing that, the first active replica.
fn choose_leader(p: &PartitionState, active: &[i32], unclean: bool) -> i32 {
    let clean = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && active.contains(r));
    match clean {
        Some(r) => r,
        None if unclean => p
            .replicas
            .iter()
            .copied()
            .find(|r| active.contains(r))
            .unwrap_or(-1),
        None => -1,
    }
}

/// Finishes a reassignment once every added replica is in sync: the replicas leaving
/// drop out of the assignment and the ISR, and leadership moves if the leader left.
fn complete_reassignment(p: &mut PartitionState, active: &[i32]) {
    if p.adding.is_empty() && p.removing.is_empty() {
        return;
    }
    if !p.adding.iter().all(|r| p.isr.contains(r)) {
        return;
    }
    let removing = std::mem::take(&mut p.removing);
    p.adding.clear();
    p.replicas.retain(|r| !removing.contains(r));
    if p.isr.iter().any(|r| !removing.contains(r)) {
        p.isr.retain(|r| !removing.contains(r));
    }
    if removing.contains(&p.leader) || p.leader == -1 {
        let leader = choose_leader(p, active, false);
        p.set_leader(leader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::command::NewTopic;

    fn endpoints(id: i32) -> BrokerEndpoints {
        BrokerEndpoints {
            kafka_host: format!("127.0.0.{id}"),
            kafka_port: 19092,
            internal: format!("127.0.0.{id}:19093"),
        }
    }

    /// An image with brokers 1..=n registered and unfenced and topic "t" with the given
    /// assignments.
    fn cluster(n: i32, assignments: Vec<Vec<i32>>) -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut index = 0;
        let mut next = || {
            index += 1;
            index
        };
        for id in 1..=n {
            let r = image.apply(
                next(),
                &Command::RegisterBroker {
                    broker_id: id,
                    incarnation_id: Uuid::new_v4(),
                    endpoints: endpoints(id),
                    rack: None,
                },
            );
            let CommandResult::BrokerRegistered { broker_epoch } = r else {
                panic!("{r:?}")
            };
            let cmd = Command::UnfenceBroker {
                broker_id: id,
                broker_epoch,
            };
            assert_eq!(image.apply(next(), &cmd), CommandResult::Ok);
        }
        let create = Command::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
                assignments,
                configs: BTreeMap::new(),
            }],
        };
        assert_eq!(image.apply(next(), &create), CommandResult::Ok);
        image
    }

    /// A new incarnation of broker `id` registers (at `index`) and is unfenced (at
    /// `index + 1`), as after a restart; returns its broker epoch.
    fn rejoin(image: &mut MetadataImage, index: u64, id: i32) -> i64 {
        let register = Command::RegisterBroker {
            broker_id: id,
            incarnation_id: Uuid::new_v4(),
            endpoints: endpoints(id),
            rack: None,
        };
        let r = image.apply(index, &register);
        let CommandResult::BrokerRegistered { broker_epoch } = r else {
            panic!("{r:?}")
        };
        let unfence = Command::UnfenceBroker {
            broker_id: id,
            broker_epoch,
        };
        assert_eq!(image.apply(index + 1, &unfence), CommandResult::Ok);
        broker_epoch
    }

    fn epoch(image: &MetadataImage, id: i32) -> i64 {
        image.brokers[&id].broker_epoch
    }

    fn p0(image: &MetadataImage) -> PartitionState {
        image.partition("t", 0).unwrap().clone()
    }

    #[test]
    fn fencing_the_leader_elects_the_next_isr_member_and_bumps_epochs() {
        let mut image = cluster(3, vec![vec![1, 2, 3]]);
        assert_eq!(p0(&image).leader, 1);
        assert_eq!(p0(&image).isr, vec![1, 2, 3]);
        let e = epoch(&image, 1);
        image.apply(
            10,
            &Command::FenceBroker {
                broker_id: 1,
                broker_epoch: e,
            },
        );
        let p = p0(&image);
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 1));
        assert_eq!(p.isr, vec![2, 3]);
        assert_eq!(image.active_brokers().count(), 2);
    }

    #[test]
    fn the_last_isr_member_stays_in_the_isr_and_leads_again_when_it_returns() {
        let mut image = cluster(2, vec![vec![1, 2]]);
        let (e1, e2) = (epoch(&image, 1), epoch(&image, 2));
        image.apply(
            10,
            &Command::FenceBroker {
                broker_id: 2,
                broker_epoch: e2,
            },
        );
        assert_eq!(p0(&image).isr, vec![1]);
        image.apply(
            11,
            &Command::FenceBroker {
                broker_id: 1,
                broker_epoch: e1,
            },
        );
        let p = p0(&image);
        assert_eq!((p.leader, p.isr.clone()), (-1, vec![1]));
        // Broker 2 is back but out of sync: unclean election is off, so no leader.
        let live = image.apply(
            12,
            &Command::RegisterBroker {
                broker_id: 1,
                incarnation_id: Uuid::new_v4(),
                endpoints: endpoints(1),
                rack: None,
            },
        );
        // Broker 1's old registration is fenced, so a new incarnation may register;
        // broker 2 below is fenced too. A live one could not be replaced:
        assert!(
            matches!(live, CommandResult::BrokerRegistered { .. }),
            "{live:?}"
        );
        rejoin(&mut image, 12, 2);
        assert_eq!(p0(&image).leader, -1);
        // Broker 1, the last in-sync replica, comes back and leads.
        rejoin(&mut image, 14, 1);
        let p = p0(&image);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
        assert!(p.leader_epoch > 1);
    }

    #[test]
    fn a_second_live_process_with_the_same_node_id_is_refused() {
        let mut image = cluster(2, vec![vec![1, 2]]);
        let register = Command::RegisterBroker {
            broker_id: 2,
            incarnation_id: Uuid::new_v4(),
            endpoints: endpoints(2),
            rack: None,
        };
        let r = image.apply(10, &register);
        assert!(
            matches!(
                r,
                CommandResult::Error {
                    code: codes::DUPLICATE_BROKER_REGISTRATION,
                    ..
                }
            ),
            "{r:?}"
        );
        let e2 = epoch(&image, 2);
        image.apply(
            11,
            &Command::FenceBroker {
                broker_id: 2,
                broker_epoch: e2,
            },
        );
        let r = image.apply(12, &register);
        assert!(matches!(r, CommandResult::BrokerRegistered { .. }), "{r:?}");
        assert_eq!(
            image.apply(13, &register),
            r,
            "a retried proposal gets the same epoch"
        );
    }

    #[test]
    fn unclean_election_when_the_topic_allows_it() {
        let mut image = cluster(2, vec![vec![1, 2]]);
        let (e1, e2) = (epoch(&image, 1), epoch(&image, 2));
        image.apply(
            10,
            &Command::FenceBroker {
                broker_id: 2,
                broker_epoch: e2,
            },
        );
        image.apply(
            11,
            &Command::FenceBroker {
                broker_id: 1,
                broker_epoch: e1,
            },
        );
        rejoin(&mut image, 12, 2);
        assert_eq!(p0(&image).leader, -1);
        let configs = [(
            "unclean.leader.election.enable".to_string(),
            Some("true".to_string()),
        )];
        image.apply(
            14,
            &Command::AlterTopicConfigs {
                topic: "t".into(),
                configs: configs.into_iter().collect(),
            },
        );
        let p = p0(&image);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn the_cluster_default_allows_unclean_election_unless_the_topic_says_no() {
        let mut image = cluster(2, vec![vec![1, 2]]);
        image.unclean_leader_election_enable = true;
        let (e1, e2) = (epoch(&image, 1), epoch(&image, 2));
        image.apply(
            10,
            &Command::FenceBroker {
                broker_id: 2,
                broker_epoch: e2,
            },
        );
        image.apply(
            11,
            &Command::FenceBroker {
                broker_id: 1,
                broker_epoch: e1,
            },
        );
        rejoin(&mut image, 12, 2);
        assert_eq!((p0(&image).leader, p0(&image).isr.clone()), (2, vec![2]));
        let t = &image.topics["t"];
        let no = BTreeMap::from([(
            "unclean.leader.election.enable".to_string(),
            "false".to_string(),
        )]);
        assert!(t.unclean_election_allowed(true));
        assert!(!TopicImage {
            configs: no,
            ..t.clone()
        }
        .unclean_election_allowed(true));
    }

    #[test]
    fn alter_partition_checks_epochs_and_eligibility() {
        let mut image = cluster(3, vec![vec![1, 2, 3]]);
        let shrink = |leader_epoch, partition_epoch, new_isr: Vec<i32>| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader_id: 1,
            leader_epoch,
            partition_epoch,
            new_isr,
        };
        let r = image.apply(10, &shrink(0, 0, vec![1, 2]));
        assert!(matches!(r, CommandResult::Partitions(_)), "{r:?}");
        assert_eq!(
            (p0(&image).isr, p0(&image).partition_epoch),
            (vec![1, 2], 1)
        );
        // The same request again carries a stale partition epoch.
        let r = image.apply(11, &shrink(0, 0, vec![1]));
        assert!(matches!(
            r,
            CommandResult::Error {
                code: codes::INVALID_UPDATE_VERSION,
                ..
            }
        ));
        let r = image.apply(12, &shrink(5, 1, vec![1]));
        assert!(matches!(
            r,
            CommandResult::Error {
                code: codes::FENCED_LEADER_EPOCH,
                ..
            }
        ));
        let r = image.apply(13, &shrink(0, 1, vec![1, 4]));
        assert!(matches!(
            r,
            CommandResult::Error {
                code: codes::INELIGIBLE_REPLICA,
                ..
            }
        ));
        let e3 = epoch(&image, 3);
        image.apply(
            14,
            &Command::FenceBroker {
                broker_id: 3,
                broker_epoch: e3,
            },
        );
        let pe = p0(&image).partition_epoch;
        let r = image.apply(15, &shrink(0, pe, vec![1, 2, 3]));
        assert!(matches!(
            r,
            CommandResult::Error {
                code: codes::INELIGIBLE_REPLICA,
                ..
            }
        ));
        assert_eq!(p0(&image).isr, vec![1, 2]);
    }

    #[test]
    fn reassignment_adds_then_removes_and_moves_leadership() {
        let mut image = cluster(5, vec![vec![1, 2, 3]]);
        let move_to = Command::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            target: Some(vec![3, 4, 5]),
        };
        image.apply(20, &move_to);
        let p = p0(&image);
        assert_eq!(p.replicas, vec![3, 4, 5, 1, 2]);
        assert_eq!(
            (p.adding.clone(), p.removing.clone()),
            (vec![4, 5], vec![1, 2])
        );
        assert_eq!(p.leader, 1);
        // The leader adds the new replicas to the ISR as they catch up.
        let grow = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader_id: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![1, 2, 3, 4, 5],
        };
        image.apply(21, &grow);
        let p = p0(&image);
        assert_eq!(p.replicas, vec![3, 4, 5]);
        assert_eq!(p.isr, vec![3, 4, 5]);
        assert_eq!((p.leader, p.leader_epoch), (3, 1));
        assert!(p.adding.is_empty() && p.removing.is_empty());
    }

    #[test]
    fn preferred_election_and_producer_id_blocks() {
        let mut image = cluster(3, vec![vec![1, 2, 3]]);
        let e1 = epoch(&image, 1);
        image.apply(
            10,
            &Command::ControlledShutdown {
                broker_id: 1,
                broker_epoch: e1,
            },
        );
        assert_eq!(p0(&image).leader, 2);
        let r = image.apply(
            11,
            &Command::ElectLeaders {
                election: ElectionType::Preferred,
                partitions: vec![("t".into(), 0), ("nope".into(), 0)],
            },
        );
        let CommandResult::Partitions(results) = r else {
            panic!()
        };
        assert_eq!(results[0].2, codes::PREFERRED_LEADER_NOT_AVAILABLE);
        assert_eq!(results[1].2, codes::UNKNOWN_TOPIC_OR_PARTITION);
        let broker_epoch = rejoin(&mut image, 12, 1);
        // Back, but not in the ISR until its leader says it caught up.
        let p = p0(&image);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3]));
        let grow = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader_id: 2,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![1, 2, 3],
        };
        image.apply(14, &grow);
        let r = image.apply(
            15,
            &Command::ElectLeaders {
                election: ElectionType::Preferred,
                partitions: vec![("t".into(), 0)],
            },
        );
        assert_eq!(r, CommandResult::Partitions(vec![("t".into(), 0, 0, None)]));
        assert_eq!(p0(&image).leader, 1);
        let alloc = Command::AllocateProducerIds {
            broker_id: 1,
            broker_epoch,
        };
        assert_eq!(
            image.apply(16, &alloc),
            CommandResult::ProducerIds {
                first: 0,
                count: 1000
            }
        );
        assert_eq!(
            image.apply(17, &alloc),
            CommandResult::ProducerIds {
                first: 1000,
                count: 1000
            }
        );
        let stale = Command::AllocateProducerIds {
            broker_id: 1,
            broker_epoch: e1,
        };
        assert!(matches!(
            image.apply(18, &stale),
            CommandResult::Error {
                code: codes::STALE_BROKER_EPOCH,
                ..
            }
        ));
    }

    #[test]
    fn unregistering_forgets_the_broker_and_its_leadership_but_not_its_replicas() {
        let mut image = cluster(3, vec![vec![1, 2, 3], vec![3, 2, 1]]);
        let old_epoch = epoch(&image, 1);
        let unregister = Command::UnregisterBroker { broker_id: 1 };
        assert_eq!(image.apply(10, &unregister), CommandResult::Ok);
        assert!(!image.brokers.contains_key(&1));
        assert!(!image.is_active(1));
        let p = p0(&image);
        assert_eq!((p.leader, p.leader_epoch), (2, 1));
        assert_eq!(p.isr, vec![2, 3]);
        // The assignment is the operator's to change (an offline replica until then).
        assert_eq!(p.replicas, vec![1, 2, 3]);
        let p1 = image.partition("t", 1).unwrap();
        assert_eq!((p1.leader, p1.isr.clone()), (3, vec![3, 2]));
        assert_eq!(p1.replicas, vec![3, 2, 1]);

        // Kafka's answer for an id it does not know.
        assert_eq!(
            image.apply(11, &unregister),
            CommandResult::Error {
                code: codes::BROKER_ID_NOT_REGISTERED,
                message: "Broker ID 1 is not currently registered".into(),
            }
        );

        // The same node registering again is a new broker epoch, fenced until caught up.
        let register = Command::RegisterBroker {
            broker_id: 1,
            incarnation_id: Uuid::new_v4(),
            endpoints: endpoints(1),
            rack: None,
        };
        let CommandResult::BrokerRegistered { broker_epoch } = image.apply(12, &register) else {
            panic!("not registered")
        };
        assert!(broker_epoch > old_epoch);
        assert!(image.brokers[&1].fenced);
        let unfence = Command::UnfenceBroker {
            broker_id: 1,
            broker_epoch,
        };
        assert_eq!(image.apply(13, &unfence), CommandResult::Ok);
        assert!(image.is_active(1));
    }
}
