//! Replica-management APIs for admins and clients: ElectLeaders,
//! AlterPartitionReassignments, ListPartitionReassignments, OffsetForLeaderEpoch.
//! Changes go to the metadata quorum; the answer comes once this broker applied them.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::cluster::command::ElectionType;
use crate::cluster::node::ClusterError;
use crate::cluster::{Command, CommandResult};
use crate::partition::Role;

/// ElectLeaders' election types: 0 preferred, 1 unclean.
const PREFERRED: i8 = 0;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn message(e: &ClusterError) -> Option<StrBytes> {
    Some(StrBytes::from_string(e.to_string()))
}

pub async fn elect_leaders(
    ctx: &Context,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let election = if version == 0 || request.election_type == PREFERRED {
        ElectionType::Preferred
    } else {
        ElectionType::Unclean
    };
    // Null means every partition (Kafka: all partitions of all topics).
    let partitions: Vec<(String, i32)> = match &request.topic_partitions {
        Some(tps) => tps
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect(),
        None => {
            let image = ctx.replicas.cluster().image();
            image
                .topics
                .values()
                .flat_map(|t| (0..t.partitions.len() as i32).map(|p| (t.name.clone(), p)))
                .collect()
        }
    };
    let results = match ctx
        .replicas
        .cluster()
        .propose(Command::ElectLeaders {
            election,
            partitions: partitions.clone(),
        })
        .await
    {
        Ok(CommandResult::Partitions(results)) => results,
        Ok(other) => {
            tracing::error!(?other, "unexpected election result");
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code());
        }
        Err(e) => partitions
            .into_iter()
            .map(|(t, p)| (t, p, e.code(), Some(e.to_string())))
            .collect(),
    };
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code, msg) in results {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(msg.map(StrBytes::from_string));
        match by_topic.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(name(&topic))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(by_topic)
}

pub async fn alter_reassignments(
    ctx: &Context,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let cluster = ctx.replicas.cluster();
    let mut responses = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let topic = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let target = p
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
            let command = Command::ReassignPartition {
                topic: topic.clone(),
                partition: p.partition_index,
                target,
            };
            let base = ReassignablePartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_message(None);
            partitions.push(match cluster.propose(command).await {
                Ok(_) => base,
                Err(e) => base
                    .with_error_code(e.code())
                    .with_error_message(message(&e)),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}

pub fn list_reassignments(
    ctx: &Context,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.replicas.cluster().image();
    let wanted = |topic: &str, p: i32| match &request.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&p)),
    };
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let topics = image
        .topics
        .values()
        .filter_map(|t| {
            let partitions: Vec<_> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    (!p.adding.is_empty() || !p.removing.is_empty()) && wanted(&t.name, *i as i32)
                })
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(name(&t.name))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}

/// OffsetForLeaderEpoch: where an epoch ended in this leader's log, so a client (or a
/// follower) can find out whether its log diverged.
pub fn offset_for_leader_epoch(
    ctx: &Context,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(partition) = ctx.replicas.partition(t.topic.0.as_str(), p.partition)
                    else {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if partition.role() != Role::Leader {
                        return base.with_error_code(ResponseError::NotLeaderOrFollower.code());
                    }
                    let current = partition.leader_epoch();
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < current {
                        return base.with_error_code(ResponseError::FencedLeaderEpoch.code());
                    }
                    if p.current_leader_epoch > current {
                        return base.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                    }
                    let (epoch, end) = partition.end_offset_for_epoch(p.leader_epoch);
                    base.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
