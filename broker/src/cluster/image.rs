//! The metadata image: cluster state every node holds, built by applying the metadata
//! log's commands in order. It is the Raft state machine and its snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{BrokerEndpoints, Command, CommandResult};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub incarnation_id: Uuid,
    pub endpoints: BrokerEndpoints,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
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
    /// Raft log index of the last command applied.
    pub applied_index: u64,
}

impl MetadataImage {
    /// Applies one committed command. Must be deterministic: it runs on every node.
    pub fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        self.applied_index = index;
        let _ = command;
        CommandResult::Ok
    }
}
