//! The admin calls: one method per Kafka admin operation, each building its request
//! for the negotiated version, naming the first error code in the answer, and turning
//! the answer into the plain types of `types.rs`.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, ElectLeadersRequest,
    IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest, MetadataResponse, TopicName,
    UnregisterBrokerRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::types::{
    BrokerInfo, ClusterDescription, ClusterMetadata, CreatedTopic, ElectionResult,
    OngoingReassignment, PartitionMetadata, ReassignmentTarget, TopicId, TopicMetadata,
    Unregistered,
};
use super::{metadata_request, AdminClient, AdminError, KafkaError, Target};

/// ElectLeaders' election type for the preferred (first) replica.
const ELECTION_PREFERRED: i8 = 0;

/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs config source: set on the topic itself (DYNAMIC_TOPIC_CONFIG).
const SOURCE_TOPIC_CONFIG: i8 = 1;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn ids(v: &[BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}

fn kafka_error(code: i16, message: Option<&StrBytes>) -> Option<KafkaError> {
    KafkaError::from_code(code, message.map(|m| m.as_str()))
}

impl AdminClient {
    /// Metadata for `topics` (`None`: every topic). Never auto-creates a topic.
    /// Topic and partition errors are reported in the result, not as `Err`.
    pub async fn metadata(
        &mut self,
        topics: Option<&[&str]>,
    ) -> Result<ClusterMetadata, AdminError> {
        self.metadata_from(Target::AnyBroker, topics).await
    }

    async fn metadata_from(
        &mut self,
        target: Target,
        topics: Option<&[&str]>,
    ) -> Result<ClusterMetadata, AdminError> {
        let response = self
            .call(
                target,
                "cluster",
                |version| metadata_request(topics, version),
                |r: &MetadataResponse| kafka_error(r.error_code, None),
            )
            .await?;
        self.remember_cluster(&response);
        Ok(cluster_metadata(response))
    }

    /// One topic's metadata; `None` when it does not exist (UNKNOWN_TOPIC_OR_PARTITION).
    /// Retriable topic errors (LEADER_NOT_AVAILABLE while it is being created) are retried.
    pub async fn describe_topic(
        &mut self,
        topic: &str,
    ) -> Result<Option<TopicMetadata>, AdminError> {
        let response = self
            .call(
                Target::AnyBroker,
                topic,
                |version| metadata_request(Some(&[topic]), version),
                |r: &MetadataResponse| {
                    kafka_error(r.error_code, None).or_else(|| {
                        r.topics
                            .iter()
                            .filter_map(|t| kafka_error(t.error_code, None))
                            .find(|e| e.is_retriable())
                    })
                },
            )
            .await?;
        self.remember_cluster(&response);
        let Some(found) = cluster_metadata(response)
            .topics
            .into_iter()
            .find(|t| t.name == topic)
        else {
            return Ok(None);
        };
        match found.error {
            None => Ok(Some(found)),
            Some(e) if e.error == ResponseError::UnknownTopicOrPartition => Ok(None),
            Some(error) => Err(AdminError::Kafka {
                api: "Metadata",
                resource: topic.to_string(),
                error,
            }),
        }
    }

    /// DescribeCluster: cluster id, controller and every broker, fenced ones flagged.
    pub async fn describe_cluster(&mut self) -> Result<ClusterDescription, AdminError> {
        let response = self
            .call(
                Target::AnyBroker,
                "cluster",
                |version| {
                    DescribeClusterRequest::default().with_include_fenced_brokers(version >= 2)
                },
                |r| kafka_error(r.error_code, r.error_message.as_ref()),
            )
            .await?;
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    node_id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                    is_fenced: b.is_fenced,
                })
                .collect(),
        })
    }

    /// CreateTopics for one topic with `configs` as its topic configs.
    pub async fn create_topic(
        &mut self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<CreatedTopic, AdminError> {
        let timeout_ms = self.timeout_ms();
        let response = self
            .call(
                Target::Controller,
                topic,
                |_| {
                    let configs = configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(text(k))
                                .with_value(Some(text(v)))
                        })
                        .collect();
                    CreateTopicsRequest::default()
                        .with_timeout_ms(timeout_ms)
                        .with_topics(vec![CreatableTopic::default()
                            .with_name(name(topic))
                            .with_num_partitions(partitions)
                            .with_replication_factor(replication_factor)
                            .with_configs(configs)])
                },
                |r| {
                    r.topics
                        .iter()
                        .find_map(|t| kafka_error(t.error_code, t.error_message.as_ref()))
                },
            )
            .await?;
        let created = response.topics.iter().find(|t| t.name.0.as_str() == topic);
        Ok(CreatedTopic {
            topic_id: created.and_then(|t| TopicId::from_bytes(*t.topic_id.as_bytes())),
            // Counts come back from v5; -1 before, when the request's hold.
            partitions: created
                .map(|t| t.num_partitions)
                .filter(|&n| n > 0)
                .unwrap_or(partitions),
            replication_factor: created
                .map(|t| t.replication_factor)
                .filter(|&n| n > 0)
                .unwrap_or(replication_factor),
        })
    }

    /// DeleteTopics by name. A topic that does not exist fails with
    /// UNKNOWN_TOPIC_OR_PARTITION; callers wanting idempotence treat that as done.
    pub async fn delete_topic(&mut self, topic: &str) -> Result<(), AdminError> {
        let timeout_ms = self.timeout_ms();
        self.call(
            Target::Controller,
            topic,
            |version| {
                let request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                // v6 names topics by name or id in `topics`; before, by name only.
                if version >= 6 {
                    request.with_topics(vec![
                        DeleteTopicState::default().with_name(Some(name(topic)))
                    ])
                } else {
                    request.with_topic_names(vec![name(topic)])
                }
            },
            |r| {
                r.responses
                    .iter()
                    .find_map(|t| kafka_error(t.error_code, t.error_message.as_ref()))
            },
        )
        .await?;
        Ok(())
    }

    /// CreatePartitions: grow `topic` to `total` partitions, the broker placing them.
    pub async fn create_partitions(&mut self, topic: &str, total: i32) -> Result<(), AdminError> {
        let timeout_ms = self.timeout_ms();
        self.call(
            Target::Controller,
            topic,
            |_| {
                CreatePartitionsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(name(topic))
                        .with_count(total)])
            },
            |r| {
                r.results
                    .iter()
                    .find_map(|t| kafka_error(t.error_code, t.error_message.as_ref()))
            },
        )
        .await?;
        Ok(())
    }

    /// The configs set on the topic itself (source TOPIC_CONFIG), not defaults nor
    /// broker-wide values. UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
    pub async fn describe_topic_configs(
        &mut self,
        topic: &str,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        let response = self
            .call(
                Target::AnyBroker,
                topic,
                |_| {
                    DescribeConfigsRequest::default().with_resources(vec![
                        DescribeConfigsResource::default()
                            .with_resource_type(RESOURCE_TOPIC)
                            .with_resource_name(text(topic))
                            .with_configuration_keys(None),
                    ])
                },
                |r| {
                    r.results
                        .iter()
                        .find_map(|t| kafka_error(t.error_code, t.error_message.as_ref()))
                },
            )
            .await?;
        Ok(response
            .results
            .iter()
            .filter(|r| r.resource_name.as_str() == topic)
            .flat_map(|r| r.configs.iter())
            .filter(|c| c.config_source == SOURCE_TOPIC_CONFIG)
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect())
    }

    /// IncrementalAlterConfigs on a topic: SET each of `set`, DELETE each of `delete`
    /// (back to the broker default). Other topic configs are left alone.
    pub async fn incremental_alter_topic_configs(
        &mut self,
        topic: &str,
        set: &BTreeMap<String, String>,
        delete: &BTreeSet<String>,
    ) -> Result<(), AdminError> {
        self.call(
            Target::AnyBroker,
            topic,
            |_| {
                let configs = set
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(text(k))
                            .with_config_operation(OP_SET)
                            .with_value(Some(text(v)))
                    })
                    .chain(delete.iter().map(|k| {
                        AlterableConfig::default()
                            .with_name(text(k))
                            .with_config_operation(OP_DELETE)
                            .with_value(None)
                    }))
                    .collect();
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(text(topic))
                        .with_configs(configs),
                ])
            },
            |r| {
                r.responses
                    .iter()
                    .find_map(|t| kafka_error(t.error_code, t.error_message.as_ref()))
            },
        )
        .await?;
        Ok(())
    }

    /// AlterPartitionReassignments: move each partition to its target replicas, or
    /// cancel its ongoing reassignment (`replicas: None`). Fails with the first error
    /// the controller answers, for the request or for any partition.
    pub async fn alter_partition_reassignments(
        &mut self,
        targets: &[ReassignmentTarget],
    ) -> Result<(), AdminError> {
        let timeout_ms = self.timeout_ms();
        let mut by_topic: BTreeMap<&str, Vec<&ReassignmentTarget>> = BTreeMap::new();
        for t in targets {
            by_topic.entry(t.topic.as_str()).or_default().push(t);
        }
        let resource = by_topic.keys().copied().collect::<Vec<_>>().join(",");
        self.call(
            Target::Controller,
            &resource,
            |_| {
                let topics =
                    by_topic
                        .iter()
                        .map(|(topic, parts)| {
                            ReassignableTopic::default()
                                .with_name(name(topic))
                                .with_partitions(
                                    parts
                                        .iter()
                                        .map(|p| {
                                            ReassignablePartition::default()
                                                .with_partition_index(p.partition)
                                                .with_replicas(p.replicas.as_ref().map(|r| {
                                                    r.iter().copied().map(BrokerId).collect()
                                                }))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(topics)
            },
            |r| {
                kafka_error(r.error_code, r.error_message.as_ref()).or_else(|| {
                    r.responses.iter().find_map(|t| {
                        t.partitions.iter().find_map(|p| {
                            kafka_error(p.error_code, p.error_message.as_ref()).map(|mut e| {
                                let at = format!("{}-{}", t.name.0.as_str(), p.partition_index);
                                e.message = Some(match e.message {
                                    Some(m) => format!("{at}: {m}"),
                                    None => at,
                                });
                                e
                            })
                        })
                    })
                })
            },
        )
        .await?;
        Ok(())
    }

    /// ListPartitionReassignments for `partitions` (topic -> partition indexes), or
    /// for every partition with `None`. Only partitions being reassigned are listed.
    pub async fn list_partition_reassignments(
        &mut self,
        partitions: Option<&BTreeMap<String, Vec<i32>>>,
    ) -> Result<Vec<OngoingReassignment>, AdminError> {
        let timeout_ms = self.timeout_ms();
        let response = self
            .call(
                Target::Controller,
                "cluster",
                |_| {
                    ListPartitionReassignmentsRequest::default()
                        .with_timeout_ms(timeout_ms)
                        .with_topics(partitions.map(|p| {
                            p.iter()
                                .map(|(topic, indexes)| {
                                    ListPartitionReassignmentsTopics::default()
                                        .with_name(name(topic))
                                        .with_partition_indexes(indexes.clone())
                                })
                                .collect()
                        }))
                },
                |r| kafka_error(r.error_code, r.error_message.as_ref()),
            )
            .await?;
        let mut ongoing: Vec<OngoingReassignment> = response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OngoingReassignment {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    replicas: ids(&p.replicas),
                    adding_replicas: ids(&p.adding_replicas),
                    removing_replicas: ids(&p.removing_replicas),
                })
            })
            .collect();
        ongoing.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(ongoing)
    }

    /// Every partition's replicas and leader, internal topics included: Metadata for
    /// all topics, asked of the controller (whose image is the newest; another broker's
    /// can lag a finished reassignment) or, when it is unreachable, of any broker.
    pub async fn all_metadata(&mut self) -> Result<ClusterMetadata, AdminError> {
        self.metadata_from(Target::Controller, None).await
    }

    /// ElectLeaders (preferred): each partition's first replica becomes its leader when
    /// it is in sync. Per-partition outcomes are returned; ELECTION_NOT_NEEDED counts
    /// as success. Fails only on a request-level error.
    pub async fn elect_leaders(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ElectionResult>, AdminError> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let timeout_ms = self.timeout_ms();
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic.as_str()).or_default().push(*partition);
        }
        let resource = by_topic.keys().copied().collect::<Vec<_>>().join(",");
        let response = self
            .call(
                Target::Controller,
                &resource,
                |_| {
                    ElectLeadersRequest::default()
                        .with_election_type(ELECTION_PREFERRED)
                        .with_timeout_ms(timeout_ms)
                        .with_topic_partitions(Some(
                            by_topic
                                .iter()
                                .map(|(t, ps)| {
                                    TopicPartitions::default()
                                        .with_topic(name(t))
                                        .with_partitions(ps.clone())
                                })
                                .collect(),
                        ))
                },
                |r| kafka_error(r.error_code, None),
            )
            .await?;
        Ok(response
            .replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result.iter().map(|p| ElectionResult {
                    topic: t.topic.0.to_string(),
                    partition: p.partition_id,
                    error: kafka_error(p.error_code, p.error_message.as_ref())
                        .filter(|e| e.error != ResponseError::ElectionNotNeeded),
                })
            })
            .collect())
    }

    /// UnregisterBroker: the metadata quorum forgets broker `id` (after its pod is gone
    /// for good). Brokers without the API yet answer `Unsupported`.
    pub async fn unregister_broker(&mut self, id: i32) -> Result<Unregistered, AdminError> {
        let result = self
            .call(
                Target::AnyBroker,
                &format!("broker {id}"),
                |_| UnregisterBrokerRequest::default().with_broker_id(BrokerId(id)),
                |r| kafka_error(r.error_code, r.error_message.as_ref()),
            )
            .await;
        match result {
            Ok(_) => Ok(Unregistered::Done),
            Err(e) if e.is(ResponseError::BrokerIdNotRegistered) => Ok(Unregistered::NotRegistered),
            Err(AdminError::UnsupportedVersion { .. }) => Ok(Unregistered::Unsupported),
            Err(e) if e.is(ResponseError::UnsupportedVersion) => Ok(Unregistered::Unsupported),
            Err(e) => Err(e),
        }
    }
}

fn cluster_metadata(response: MetadataResponse) -> ClusterMetadata {
    let mut brokers: Vec<BrokerInfo> = response
        .brokers
        .iter()
        .map(|b| BrokerInfo {
            node_id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            is_fenced: false,
        })
        .collect();
    brokers.sort_by_key(|b| b.node_id);
    ClusterMetadata {
        cluster_id: response.cluster_id.as_ref().map(|c| c.to_string()),
        controller_id: response.controller_id.0,
        brokers,
        topics: response.topics.iter().map(topic_metadata).collect(),
    }
}

fn topic_metadata(t: &MetadataResponseTopic) -> TopicMetadata {
    let mut partitions: Vec<PartitionMetadata> = t
        .partitions
        .iter()
        .map(|p| PartitionMetadata {
            partition: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: ids(&p.replica_nodes),
            isr: ids(&p.isr_nodes),
            offline_replicas: ids(&p.offline_replicas),
            error: kafka_error(p.error_code, None),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicMetadata {
        name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
        topic_id: TopicId::from_bytes(*t.topic_id.as_bytes()),
        is_internal: t.is_internal,
        partitions,
        error: kafka_error(t.error_code, None),
    }
}
