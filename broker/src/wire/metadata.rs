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
use super::Context;
use crate::metadata::TopicRecord;
use crate::replica_manager::TopicError;

pub fn handle(ctx: &Context, request: MetadataRequest, version: i16) -> MetadataResponse {
    let config = ctx.replicas.config();
    let node = BrokerId(config.node_id);
    let broker = MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(StrBytes::from_string(config.advertised_host.clone()))
        .with_port(config.advertised_port as i32);
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
        Some(requested) => requested
            .into_iter()
            .map(|t| {
                let by_name = t.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => ctx.replicas.topic(name),
                    None => ctx.replicas.topic_by_id(t.topic_id),
                };
                match (found, by_name) {
                    (Some(topic), _) => topic_response(ctx, &topic),
                    (None, Some(name)) => {
                        // v0-v3 have no flag: auto-create is implied by the broker config.
                        let allow = version < 4 || request.allow_auto_topic_creation;
                        lookup_or_create(ctx, &name, allow)
                    }
                    (None, None) => error_topic(None, t.topic_id, ResponseError::UnknownTopicId),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(ctx.replicas.cluster_id())))
        .with_controller_id(node)
        .with_topics(topics)
}

fn lookup_or_create(ctx: &Context, name: &str, allow_auto_create: bool) -> MetadataResponseTopic {
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

fn topic_response(ctx: &Context, topic: &TopicRecord) -> MetadataResponseTopic {
    let node = BrokerId(ctx.replicas.config().node_id);
    let partitions = (0..topic.partitions)
        .map(|p| {
            let partition = ctx.replicas.partition(&topic.name, p);
            let (error, epoch) = match &partition {
                Some(p) => (0, p.leader_epoch()),
                None => (ResponseError::LeaderNotAvailable.code(), -1),
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
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
