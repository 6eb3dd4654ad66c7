//! OffsetCommit, OffsetFetch and OffsetDelete: committed consumer positions, kept by
//! the group coordinator in `__consumer_offsets`.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Context;
use crate::group::records::OffsetCommitValue;
use crate::group::CommitRequest;

pub async fn offset_commit(
    ctx: &Context,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    // v10 names topics by id.
    let topics: Vec<(String, _)> = request
        .topics
        .into_iter()
        .map(|t| {
            let name = if version >= 10 {
                ctx.replicas
                    .topic_by_id(t.topic_id)
                    .map(|r| r.name)
                    .unwrap_or_default()
            } else {
                t.name.0.to_string()
            };
            (name, t)
        })
        .collect();
    let commits: Vec<CommitRequest> = topics
        .iter()
        .flat_map(|(name, t)| {
            t.partitions.iter().map(move |p| CommitRequest {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let results = ctx
        .groups
        .commit_offsets(
            &group_id,
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.generation_id_or_member_epoch,
            commits,
        )
        .await;
    let mut codes = match results {
        Ok(r) => r
            .into_iter()
            .map(|r| r.err().map_or(0, |e| e.code()))
            .collect::<Vec<_>>(),
        Err(e) => vec![e.code(); topics.iter().map(|(_, t)| t.partitions.len()).sum()],
    }
    .into_iter();
    let topics = topics
        .into_iter()
        .map(|(_, t)| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

fn committed(v: &Option<OffsetCommitValue>) -> (i64, i32, StrBytes) {
    match v {
        Some(v) => (
            v.offset,
            v.leader_epoch,
            StrBytes::from_string(v.metadata.clone()),
        ),
        None => (-1, -1, StrBytes::from_static_str("")),
    }
}

pub async fn offset_fetch(
    ctx: &Context,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version < 8 {
        let topics = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        return match ctx
            .groups
            .fetch_offsets(request.group_id.0.as_str(), topics)
            .await
        {
            Err(e) if version >= 2 => OffsetFetchResponse::default().with_error_code(e.code()),
            Err(_) => OffsetFetchResponse::default(),
            Ok(found) => OffsetFetchResponse::default().with_topics(
                found
                    .into_iter()
                    .map(|(topic, parts)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|(p, v)| {
                                        let (offset, epoch, metadata) = committed(v);
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(metadata))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        };
    }
    let mut groups = Vec::with_capacity(request.groups.len());
    for g in request.groups {
        let topics = g.topics.map(|ts| {
            ts.into_iter()
                .map(|t| {
                    let name = if version >= 10 {
                        ctx.replicas
                            .topic_by_id(t.topic_id)
                            .map(|r| r.name)
                            .unwrap_or_default()
                    } else {
                        t.name.0.to_string()
                    };
                    (name, t.partition_indexes)
                })
                .collect()
        });
        let base = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        let group = match ctx
            .groups
            .fetch_offsets(g.group_id.0.as_str(), topics)
            .await
        {
            Err(e) => base.with_error_code(e.code()),
            Ok(found) => base.with_topics(
                found
                    .into_iter()
                    .map(|(topic, parts)| {
                        let topic_id = ctx.replicas.topic(&topic).map(|t| t.id).unwrap_or_default();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_topic_id(topic_id)
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|(p, v)| {
                                        let (offset, epoch, metadata) = committed(v);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(metadata))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        };
        groups.push(group);
    }
    OffsetFetchResponse::default().with_groups(groups)
}

pub async fn offset_delete(ctx: &Context, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let results = ctx
        .groups
        .delete_offsets(request.group_id.0.as_str(), &partitions)
        .await;
    let mut codes = match results {
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
        Ok(r) => r
            .into_iter()
            .map(|r| r.err().map_or(0, |e: ResponseError| e.code())),
    };
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
