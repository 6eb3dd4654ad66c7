//! Commands of the metadata log: every change to cluster metadata is one of these,
//! committed through the Raft quorum and applied in order by every node.
//!
//! Commands carry decisions that need randomness or a view of the whole cluster (topic
//! ids, replica placement) already made by the proposer, so applying them is
//! deterministic: every node reaches the same image from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a broker takes Kafka clients (its advertised PLAINTEXT listener) and where it
/// takes other nodes' tonic traffic (replica fetches, controller requests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoints {
    pub kafka_host: String,
    pub kafka_port: u16,
    /// `host:port` of the node's internal (tonic) listener.
    pub internal: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub topic_id: Uuid,
    /// Replica lists by partition index; the first replica is the preferred leader.
    pub assignments: Vec<Vec<i32>>,
    /// Topic configs set at creation (Kafka names); unset ones follow the broker default.
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Move leadership to the first live in-sync replica of the assignment.
    Preferred,
    /// Elect a leader only where there is none, from the ISR or (when the topic allows
    /// it) from any live replica.
    Unclean,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets the cluster id, and cluster-wide defaults from the first active
    /// controller's config, once, when the quorum first forms.
    InitCluster {
        cluster_id: String,
        /// `unclean.leader.election.enable` for topics that do not set it.
        #[serde(default)]
        unclean_leader_election_enable: bool,
    },
    /// A broker process starting (or restarting). It gets a new broker epoch and stays
    /// fenced until it has caught up with the metadata log.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: Uuid,
        endpoints: BrokerEndpoints,
        rack: Option<String>,
    },
    UnfenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// The broker missed its heartbeats (or a newer incarnation registered).
    FenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// SIGTERM: leadership moves away before the process exits.
    ControlledShutdown {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// The broker is gone for good (scale-down): forget it.
    UnregisterBroker {
        broker_id: i32,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        topic: String,
        /// Replica lists of the new partitions, in index order after the existing ones.
        assignments: Vec<Vec<i32>>,
    },
    /// `None` removes the topic override.
    AlterTopicConfigs {
        topic: String,
        configs: BTreeMap<String, Option<String>>,
    },
    /// A partition leader changing its ISR (Kafka's AlterPartition). Refused unless the
    /// leader epoch and partition epoch are current.
    AlterPartition {
        topic: String,
        partition: i32,
        leader_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    },
    ElectLeaders {
        election: ElectionType,
        partitions: Vec<(String, i32)>,
    },
    /// Starts moving a partition to `target` replicas (`None` cancels a move in flight).
    ReassignPartition {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
    },
}

/// What applying a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    #[default]
    Ok,
    BrokerRegistered {
        broker_epoch: i64,
    },
    ProducerIds {
        first: i64,
        count: i32,
    },
    /// Per-partition outcome of an election or reassignment: (topic, partition, error
    /// code, message).
    Partitions(Vec<(String, i32, i16, Option<String>)>),
    /// The command was refused; `code` is the Kafka error code a client should see.
    Error {
        code: i16,
        message: String,
    },
}
