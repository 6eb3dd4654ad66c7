//! Metadata: brokers, controller, and topics with their partitions, leaders and ISR.
//! Topics that do not exist are created here when auto-create is allowed.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::error_codes::topic_error;
use super::{authorized_operations, Context};
use crate::metadata::TopicRecord;
use crate::replica_manager::TopicError;

pub async fn handle(ctx: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 has no null: an empty list means every topic.
    let requested = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match requested {
        None => ctx
            .replicas
            .topics()
            .iter()
            .map(|t| topic_response(ctx, t))
            .collect(),
        Some(requested) => {
            let mut topics = Vec::with_capacity(requested.len());
            for t in requested {
                let by_name = t.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => ctx.replicas.topic(name),
                    None => ctx.replicas.topic_by_id(t.topic_id),
                };
                topics.push(match (found, by_name) {
                    (Some(topic), _) => topic_response(ctx, &topic),
                    (None, Some(name)) => {
                        // v0-v3 have no flag: auto-create is implied by the broker config.
                        let allow = version < 4 || request.allow_auto_topic_creation;
                        lookup_or_create(ctx, &name, allow).await
                    }
                    (None, None) => error_topic(None, t.topic_id, ResponseError::UnknownTopicId),
                });
            }
            topics
        }
    };
    // Kafka lists the brokers that serve clients: registered and not fenced.
    let image = ctx.replicas.cluster().image();
    let brokers = image
        .active_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.broker_id))
                .with_host(StrBytes::from_string(b.endpoints.kafka_host.clone()))
                .with_port(b.endpoints.kafka_port as i32)
                .with_rack(
                    b.rack
                        .clone()
                        .filter(|_| version >= 1)
                        .map(StrBytes::from_string),
                )
        })
        .collect();
    let controller = super::client_controller_id(ctx);
    let topics = if request.include_topic_authorized_operations {
        topics
            .into_iter()
            .map(|t: MetadataResponseTopic| {
                t.with_topic_authorized_operations(authorized_operations::topic())
            })
            .collect()
    } else {
        topics
    };
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(image.cluster_id.clone().map(StrBytes::from_string))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics);
    // Asked for in v8-v10 only (later clients use DescribeCluster).
    if request.include_cluster_authorized_operations {
        response.with_cluster_authorized_operations(authorized_operations::cluster())
    } else {
        response
    }
}

async fn lookup_or_create(
    ctx: &Context,
    name: &str,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    if !(allow_auto_create && ctx.replicas.config().auto_create_topics_enable) {
        let code = match crate::replica_manager::validate_topic_name(name) {
            Ok(()) => ResponseError::UnknownTopicOrPartition,
            Err(_) => ResponseError::InvalidTopicException,
        };
        return error_topic(Some(name), Uuid::nil(), code);
    }
    match ctx
        .replicas
        .create_topic(name, -1, -1, Default::default(), false)
        .await
    {
        Ok(topic) => {
            tracing::info!(
                topic = name,
                partitions = topic.partitions,
                "auto-created topic"
            );
            topic_response(ctx, &topic)
        }
        // A concurrent request created it first: answer with what exists.
        Err(TopicError::TopicAlreadyExists(_)) => match ctx.replicas.topic(name) {
            Some(t) => topic_response(ctx, &t),
            None => error_topic(
                Some(name),
                Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            ),
        },
        Err(e) => error_topic(Some(name), Uuid::nil(), topic_error(&e)),
    }
}

/// A topic's partitions as the metadata image has them: leader, epoch, replicas, ISR,
/// and the replicas on brokers that are down (offline).
fn topic_response(ctx: &Context, topic: &TopicRecord) -> MetadataResponseTopic {
    let image = ctx.replicas.cluster().image();
    let ids = |v: &[i32]| v.iter().map(|r| BrokerId(*r)).collect::<Vec<_>>();
    let partitions = image
        .topics
        .get(&topic.name)
        .map(|t| t.partitions.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let error = if p.leader < 0 || !image.is_active(p.leader) {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !image.is_active(*r))
                .collect();
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}

fn error_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
}
