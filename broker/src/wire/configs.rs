//! DescribeConfigs and IncrementalAlterConfigs for topics (and describing the broker).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error_codes::topic_error;
use super::Context;
use crate::config::{topic_config_value, TOPIC_CONFIG_NAMES};
use crate::log::LogConfig;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Config sources as DescribeConfigs v1+ reports them.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Config types (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: i8,
}

/// Every topic config with its effective value and where that value comes from.
pub fn topic_config_entries(
    config: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIG_NAMES
        .iter()
        .filter_map(|&name| {
            topic_config_value(config, name).map(|value| ConfigEntry {
                name: name.to_string(),
                value,
                source: if overrides.contains_key(name) {
                    SOURCE_DYNAMIC_TOPIC
                } else {
                    SOURCE_DEFAULT
                },
            })
        })
        .collect()
}

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" => TYPE_LIST,
        "message.timestamp.type" | "compression.type" => TYPE_STRING,
        "unclean.leader.election.enable" => TYPE_BOOLEAN,
        "segment.bytes"
        | "segment.index.bytes"
        | "index.interval.bytes"
        | "max.message.bytes"
        | "min.insync.replicas" => TYPE_INT,
        _ => TYPE_LONG,
    }
}

pub fn describe(
    ctx: &Context,
    request: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = ctx.replicas.topic(r.resource_name.as_str()) else {
                        return error(
                            result,
                            ResponseError::UnknownTopicOrPartition,
                            "unknown topic",
                        );
                    };
                    match ctx.replicas.topic_log_config(&topic) {
                        Ok(lc) => topic_config_entries(&lc, &topic.configs),
                        Err(e) => {
                            return error(result, ResponseError::InvalidConfig, &e.to_string())
                        }
                    }
                }
                RESOURCE_BROKER => {
                    let node = ctx.replicas.config().node_id.to_string();
                    if !r.resource_name.is_empty() && r.resource_name.as_str() != node {
                        return error(
                            result,
                            ResponseError::InvalidRequest,
                            &format!("this broker is node.id {node}"),
                        );
                    }
                    ctx.replicas
                        .config()
                        .describe()
                        .into_iter()
                        .map(|(name, value)| ConfigEntry {
                            name,
                            value,
                            source: SOURCE_STATIC_BROKER,
                        })
                        .collect()
                }
                other => {
                    return error(
                        result,
                        ResponseError::InvalidRequest,
                        &format!("resource type {other} is not supported"),
                    )
                }
            };
            let wanted = r.configuration_keys.as_ref();
            let configs = entries
                .into_iter()
                .filter(|e| wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name)))
                .map(|e| {
                    DescribeConfigsResourceResult::default()
                        .with_config_type(config_type(&e.name))
                        .with_name(StrBytes::from_string(e.name))
                        .with_value(Some(StrBytes::from_string(e.value)))
                        .with_config_source(e.source)
                        .with_read_only(r.resource_type == RESOURCE_BROKER)
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn error(
    result: DescribeConfigsResult,
    code: ResponseError,
    message: &str,
) -> DescribeConfigsResult {
    result
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(message.to_string())))
}

pub async fn incremental_alter(
    ctx: &Context,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for r in request.resources {
        responses.push(alter_one(ctx, r, request.validate_only).await);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// One resource of an IncrementalAlterConfigs request.
async fn alter_one(
    ctx: &Context,
    r: kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> AlterConfigsResourceResponse {
    let response = AlterConfigsResourceResponse::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone());
    let fail = |code: ResponseError, message: String| {
        response
            .clone()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    // Broker configs are static (the config file); there is nothing dynamic to
    // delete, so DELETEs succeed as no-ops, as Kafka answers deleting a dynamic
    // config that was never set (e.g. reassignment tools clearing throttles).
    if r.resource_type == RESOURCE_BROKER
        && r.configs.iter().all(|c| c.config_operation == OP_DELETE)
    {
        return response;
    }
    if r.resource_type != RESOURCE_TOPIC {
        return fail(
            ResponseError::InvalidRequest,
            "only topic configs can be altered; broker configs are set in its config file".into(),
        );
    }
    let name = r.resource_name.as_str();
    let Some(topic) = ctx.replicas.topic(name) else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic '{name}'"),
        );
    };
    let mut overrides = topic.configs.clone();
    for c in &r.configs {
        match c.config_operation {
                    OP_SET => {
                        let Some(value) = &c.value else {
                            return fail(ResponseError::InvalidConfig, format!("SET {} without a value", c.name.as_str()));
                        };
                        overrides.insert(c.name.to_string(), value.to_string());
                    }
                    OP_DELETE => {
                        overrides.remove(c.name.as_str());
                    }
                    op => {
                        return fail(
                            ResponseError::InvalidConfig,
                            format!(
                                "operation {op} on {}: APPEND and SUBTRACT need a list config with more than one allowed value",
                                c.name.as_str()
                            ),
                        )
                    }
                }
    }
    match ctx
        .replicas
        .set_topic_configs(name, overrides, validate_only)
        .await
    {
        Ok(()) => response,
        Err(e) => fail(topic_error(&e), e.to_string()),
    }
}
