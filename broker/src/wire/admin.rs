//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::configs::topic_config_entries;
use super::error_codes::{partition_error, topic_error};
use super::Context;
use crate::replica_manager::TopicError;

pub async fn create_topics(
    ctx: &Context,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen = std::collections::HashSet::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        topics.push(create_one(ctx, t, &mut seen, request.validate_only, version).await);
    }
    CreateTopicsResponse::default().with_topics(topics)
}

async fn create_one(
    ctx: &Context,
    t: kafka_protocol::messages::create_topics_request::CreatableTopic,
    seen: &mut std::collections::HashSet<String>,
    validate_only: bool,
    version: i16,
) -> CreatableTopicResult {
    let name = t.name.0.to_string();
    let result = CreatableTopicResult::default()
        .with_name(t.name.clone())
        .with_num_partitions(-1)
        .with_replication_factor(-1);
    if !seen.insert(name.clone()) {
        return result
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_string(format!(
                "topic '{name}' appears more than once in the request"
            ))));
    }
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        if let Some(v) = &c.value {
            configs.insert(c.name.to_string(), v.to_string());
        }
    }
    // Manual assignments fix the partition count and replication factor.
    let mut assignments = None;
    let (partitions, replication_factor) = if t.assignments.is_empty() {
        (t.num_partitions, t.replication_factor)
    } else if t.num_partitions != -1 || t.replication_factor != -1 {
        return failed(
            result,
            ResponseError::InvalidRequest,
            "both partition assignments and partition count/replication factor were given",
        );
    } else {
        match manual_assignments(ctx, &t.assignments) {
            Ok(a) => {
                let shape = (a.len() as i32, a[0].len() as i16);
                assignments = Some(a);
                shape
            }
            Err(message) => {
                return failed(result, ResponseError::InvalidReplicaAssignment, &message)
            }
        }
    };
    match ctx
        .replicas
        .create_topic_with(
            &name,
            partitions,
            replication_factor,
            assignments,
            configs,
            validate_only,
        )
        .await
    {
        Ok(record) => {
            let entries = if version >= 5 {
                ctx.replicas
                    .topic_log_config(&record)
                    .map(|lc| {
                        topic_config_entries(&lc, &record.configs)
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_string(e.name))
                                    .with_value(Some(StrBytes::from_string(e.value)))
                                    .with_config_source(e.source)
                            })
                            .collect()
                    })
                    .ok()
            } else {
                None
            };
            result
                .with_topic_id(if validate_only {
                    Uuid::nil()
                } else {
                    record.id
                })
                .with_num_partitions(record.partitions)
                .with_replication_factor(record.replication_factor)
                .with_configs(entries)
        }
        Err(e) => failed_with(result, &e),
    }
}

/// A CreateTopics replica assignment as replica lists by partition index: every index
/// from 0 once, the same number of distinct, registered brokers for each.
fn manual_assignments(
    ctx: &Context,
    assignments: &[kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment],
) -> Result<Vec<Vec<i32>>, String> {
    let image = ctx.replicas.cluster().image();
    let mut by_index: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for a in assignments {
        let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        let mut distinct = replicas.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if replicas.is_empty() || distinct.len() != replicas.len() {
            return Err(format!(
                "partition {} needs distinct replicas, got {replicas:?}",
                a.partition_index
            ));
        }
        if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
            return Err(format!("assignment names an unknown broker {b}"));
        }
        if by_index.insert(a.partition_index, replicas).is_some() {
            return Err(format!("partition {} is assigned twice", a.partition_index));
        }
    }
    let count = by_index.len() as i32;
    if by_index.keys().copied().ne(0..count) {
        return Err("partition indexes must be 0..n without gaps".into());
    }
    let lists: Vec<Vec<i32>> = by_index.into_values().collect();
    if lists.iter().any(|r| r.len() != lists[0].len()) {
        return Err("every partition needs the same number of replicas".into());
    }
    Ok(lists)
}

fn failed(
    result: CreatableTopicResult,
    code: ResponseError,
    message: &str,
) -> CreatableTopicResult {
    result
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(message.to_string())))
}

fn failed_with(result: CreatableTopicResult, e: &TopicError) -> CreatableTopicResult {
    result
        .with_error_code(topic_error(e).code())
        .with_error_message(Some(StrBytes::from_string(e.to_string())))
}

pub async fn delete_topics(
    ctx: &Context,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6 names topics by name or id; earlier versions by name only.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        responses.push(delete_one(ctx, name, id).await);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete_one(ctx: &Context, name: Option<String>, id: Uuid) -> DeletableTopicResult {
    let name = name.or_else(|| ctx.replicas.topic_by_id(id).map(|t| t.name));
    let mut result = DeletableTopicResult::default()
        .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id);
    let Some(name) = name else {
        return result.with_error_code(ResponseError::UnknownTopicId.code());
    };
    match ctx.replicas.delete_topic(&name).await {
        Ok(record) => {
            tracing::info!(topic = %name, "deleted topic");
            result.topic_id = record.id;
            result
        }
        Err(e) => result
            .with_error_code(topic_error(&e).code())
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}

pub async fn create_partitions(
    ctx: &Context,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let created = ctx
            .replicas
            .create_partitions(t.name.0.as_str(), t.count, request.validate_only)
            .await;
        results.push(match created {
            Ok(_) => result,
            Err(e) => result
                .with_error_code(topic_error(&e).code())
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub fn delete_records(ctx: &Context, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions =
                t.partitions
                    .iter()
                    .map(|p| {
                        let result = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        match ctx.replicas.partition(t.name.0.as_str(), p.partition_index) {
                            None => result
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                            Some(partition) => match partition.delete_records_before(p.offset) {
                                Ok(low) => result.with_low_watermark(low),
                                Err(e) => result.with_error_code(partition_error(&e).code()),
                            },
                        }
                    })
                    .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
