//! The Kafka protocol server. `server` accepts connections, `connection` knows framing
//! only, `dispatch` decodes a request and routes it to the handler module of its API
//! family; `response` encodes answers, splicing log files in for zero-copy fetches.

mod admin;
mod api_versions;
mod authorized_operations;
mod budget;
mod cluster;
mod configs;
mod connection;
mod dispatch;
pub(crate) mod error_codes;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod replication;
pub mod request_shape;
mod response;
pub mod server;

use std::sync::Arc;

use crate::group::GroupCoordinator;
use crate::metrics::Metrics;
use crate::producer_state::ProducerIdManager;
use crate::replica_manager::ReplicaManager;

/// What every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
    pub groups: Arc<GroupCoordinator>,
    pub producer_ids: Arc<ProducerIdManager>,
}

pub use api_versions::supported_versions;

/// The topic a produce or fetch names (by id from v13, by name before), and the error
/// for partitions that cannot be found under it. Existence is left to the partition
/// lookup, so the hot paths read no topic metadata when topics come by name.
fn topic_for_partitions(
    ctx: &Context,
    by_id: bool,
    name: &kafka_protocol::messages::TopicName,
    id: uuid::Uuid,
) -> (Option<String>, kafka_protocol::ResponseError) {
    if by_id {
        (
            ctx.replicas.topic_name_by_id(id),
            kafka_protocol::ResponseError::UnknownTopicId,
        )
    } else {
        (
            Some(name.0.to_string()),
            kafka_protocol::ResponseError::UnknownTopicOrPartition,
        )
    }
}

/// A partition's current leader for a NOT_LEADER_OR_FOLLOWER answer (KIP-951).
struct LeaderHint {
    leader: i32,
    epoch: i32,
    /// The leader's (id, host, port), when the response does not list it yet.
    endpoint: Option<(i32, String, i32)>,
}

/// KIP-951: a NOT_LEADER_OR_FOLLOWER answer names the partition's current leader, and
/// the response lists that broker's endpoint once (`named` holds those listed).
fn leader_hint(
    ctx: &Context,
    topic: Option<&str>,
    partition: i32,
    code: kafka_protocol::ResponseError,
    named: &mut Vec<i32>,
) -> Option<LeaderHint> {
    if code != kafka_protocol::ResponseError::NotLeaderOrFollower {
        return None;
    }
    let image = ctx.replicas.cluster().image();
    let p = image.partition(topic?, partition)?;
    let b = image
        .brokers
        .get(&p.leader)
        .filter(|_| image.is_active(p.leader))?;
    let endpoint = (!named.contains(&p.leader)).then(|| {
        named.push(p.leader);
        (
            p.leader,
            b.endpoints.kafka_host.clone(),
            b.endpoints.kafka_port as i32,
        )
    });
    Some(LeaderHint {
        leader: p.leader,
        epoch: p.leader_epoch,
        endpoint,
    })
}

/// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when
/// the partition exists elsewhere (the client should look up the leader), else
/// `unknown` as Kafka answers.
fn not_hosted(
    ctx: &Context,
    topic: Option<&str>,
    partition: i32,
    unknown: kafka_protocol::ResponseError,
) -> kafka_protocol::ResponseError {
    let exists = topic.is_some_and(|t| {
        ctx.replicas
            .cluster()
            .image()
            .partition(t, partition)
            .is_some()
    });
    if exists {
        kafka_protocol::ResponseError::NotLeaderOrFollower
    } else {
        unknown
    }
}

/// The controller id clients are told: admin clients send CreateTopics and the like
/// there, so it must be a broker they can reach. That is the active controller when it
/// is also a broker, else this broker (which forwards to the quorum), as Kafka's KRaft
/// brokers name a broker too.
fn client_controller_id(ctx: &Context) -> i32 {
    let cluster = ctx.replicas.cluster();
    match cluster.quorum().leader_id() {
        Some(leader) if cluster.image().is_active(leader) => leader,
        _ => ctx.replicas.config().node_id,
    }
}
