//! openraft's type configuration for the metadata quorum: what the log carries (metadata
//! commands), what applying one returns, and how nodes are named and reached.

use std::io::Cursor;

use crate::cluster::{Command, CommandResult};

openraft::declare_raft_types!(
    /// Raft types of the metadata quorum.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        // Broker ids are i32; the quorum uses them widened to u64 (negative ids are refused
        // at start).
        NodeId = u64,
        // `addr` is the `host:port` of the node's internal tonic listener.
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        // Snapshots are one JSON document small enough to hold in memory.
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
