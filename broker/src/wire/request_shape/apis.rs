//! The request layouts of every API this broker serves, for every version it
//! accepts, written from Kafka's message definitions (`clients/src/main/resources/
//! common/message/*Request.json`). A unit test proves each one against the
//! kafka-protocol crate's own decoder and encoder, version by version.

use kafka_protocol::messages::ApiKey;

use super::schema::Ty::*;
use super::schema::{f, RequestShape, Struct, Tag, ALL};

const fn shape(
    key: ApiKey,
    min: i16,
    max: i16,
    flexible: i16,
    body: &'static Struct,
) -> RequestShape {
    RequestShape {
        key,
        min,
        max,
        flexible,
        body,
    }
}

pub static SHAPES: &[RequestShape] = &[
    shape(ApiKey::Produce, 3, 13, 9, &PRODUCE),
    shape(ApiKey::Fetch, 4, 18, 12, &FETCH),
    shape(ApiKey::ListOffsets, 1, 10, 6, &LIST_OFFSETS),
    shape(ApiKey::Metadata, 0, 13, 9, &METADATA),
    shape(ApiKey::ApiVersions, 0, 4, 3, &API_VERSIONS),
    shape(ApiKey::CreateTopics, 2, 7, 5, &CREATE_TOPICS),
    shape(ApiKey::DeleteTopics, 1, 6, 4, &DELETE_TOPICS),
    shape(ApiKey::DeleteRecords, 0, 2, 2, &DELETE_RECORDS),
    shape(ApiKey::DescribeConfigs, 1, 4, 4, &DESCRIBE_CONFIGS),
    shape(ApiKey::CreatePartitions, 0, 3, 2, &CREATE_PARTITIONS),
    shape(
        ApiKey::IncrementalAlterConfigs,
        0,
        1,
        1,
        &INCREMENTAL_ALTER_CONFIGS,
    ),
    shape(ApiKey::DescribeCluster, 0, 2, 0, &DESCRIBE_CLUSTER),
    shape(ApiKey::InitProducerId, 0, 5, 2, &INIT_PRODUCER_ID),
    shape(ApiKey::FindCoordinator, 0, 6, 3, &FIND_COORDINATOR),
    shape(ApiKey::JoinGroup, 0, 9, 6, &JOIN_GROUP),
    shape(ApiKey::SyncGroup, 0, 5, 4, &SYNC_GROUP),
    shape(ApiKey::Heartbeat, 0, 4, 4, &HEARTBEAT),
    shape(ApiKey::LeaveGroup, 0, 5, 4, &LEAVE_GROUP),
    shape(ApiKey::OffsetCommit, 2, 9, 8, &OFFSET_COMMIT),
    shape(ApiKey::OffsetFetch, 1, 9, 6, &OFFSET_FETCH),
    shape(ApiKey::ListGroups, 0, 5, 3, &LIST_GROUPS),
    shape(ApiKey::DescribeGroups, 0, 6, 5, &DESCRIBE_GROUPS),
    shape(ApiKey::DeleteGroups, 0, 2, 2, &DELETE_GROUPS),
    shape(ApiKey::OffsetDelete, 0, 0, ALL, &OFFSET_DELETE),
    shape(
        ApiKey::OffsetForLeaderEpoch,
        2,
        4,
        4,
        &OFFSET_FOR_LEADER_EPOCH,
    ),
    shape(ApiKey::ElectLeaders, 0, 2, 2, &ELECT_LEADERS),
    shape(
        ApiKey::AlterPartitionReassignments,
        0,
        1,
        0,
        &ALTER_PARTITION_REASSIGNMENTS,
    ),
    shape(
        ApiKey::ListPartitionReassignments,
        0,
        0,
        0,
        &LIST_PARTITION_REASSIGNMENTS,
    ),
    shape(ApiKey::UnregisterBroker, 0, 0, 0, &UNREGISTER_BROKER),
];

// Produce
static PRODUCE: Struct = Struct::new(
    "ProduceRequest",
    &[
        f("transactional_id", 3, ALL, Str),
        f("acks", 3, ALL, I16),
        f("timeout_ms", 3, ALL, I32),
        f("topic_data", 3, ALL, Array(&PRODUCE_TOPIC)),
    ],
);
static PRODUCE_TOPIC: Struct = Struct::new(
    "TopicProduceData",
    &[
        f("name", 0, 12, Str),
        f("topic_id", 13, ALL, Uuid),
        f("partition_data", 0, ALL, Array(&PRODUCE_PARTITION)),
    ],
);
static PRODUCE_PARTITION: Struct = Struct::new(
    "PartitionProduceData",
    &[f("index", 0, ALL, I32), f("records", 0, ALL, Bytes)],
);

// Fetch
static FETCH: Struct = Struct {
    name: "FetchRequest",
    fields: &[
        f("replica_id", 0, 14, I32),
        f("max_wait_ms", 0, ALL, I32),
        f("min_bytes", 0, ALL, I32),
        f("max_bytes", 3, ALL, I32),
        f("isolation_level", 4, ALL, I8),
        f("session_id", 7, ALL, I32),
        f("session_epoch", 7, ALL, I32),
        f("topics", 0, ALL, Array(&FETCH_TOPIC)),
        f("forgotten_topics_data", 7, ALL, Array(&FORGOTTEN_TOPIC)),
        f("rack_id", 11, ALL, Str),
    ],
    tags: &[
        Tag {
            tag: 0,
            min: 12,
            ty: Str,
        },
        Tag {
            tag: 1,
            min: 15,
            ty: Nested(&REPLICA_STATE),
        },
    ],
};
static REPLICA_STATE: Struct = Struct::new(
    "ReplicaState",
    &[
        f("replica_id", 15, ALL, I32),
        f("replica_epoch", 15, ALL, I64),
    ],
);
static FETCH_TOPIC: Struct = Struct::new(
    "FetchTopic",
    &[
        f("topic", 0, 12, Str),
        f("topic_id", 13, ALL, Uuid),
        f("partitions", 0, ALL, Array(&FETCH_PARTITION)),
    ],
);
static FETCH_PARTITION: Struct = Struct {
    name: "FetchPartition",
    fields: &[
        f("partition", 0, ALL, I32),
        f("current_leader_epoch", 9, ALL, I32),
        f("fetch_offset", 0, ALL, I64),
        f("last_fetched_epoch", 12, ALL, I32),
        f("log_start_offset", 5, ALL, I64),
        f("partition_max_bytes", 0, ALL, I32),
    ],
    tags: &[
        Tag {
            tag: 0,
            min: 17,
            ty: Uuid,
        },
        Tag {
            tag: 1,
            min: 18,
            ty: I64,
        },
    ],
};
static FORGOTTEN_TOPIC: Struct = Struct::new(
    "ForgottenTopic",
    &[
        f("topic", 7, 12, Str),
        f("topic_id", 13, ALL, Uuid),
        f("partitions", 7, ALL, Int32s),
    ],
);

// ListOffsets
static LIST_OFFSETS: Struct = Struct::new(
    "ListOffsetsRequest",
    &[
        f("replica_id", 0, ALL, I32),
        f("isolation_level", 2, ALL, I8),
        f("topics", 0, ALL, Array(&LIST_OFFSETS_TOPIC)),
        f("timeout_ms", 10, ALL, I32),
    ],
);
static LIST_OFFSETS_TOPIC: Struct = Struct::new(
    "ListOffsetsTopic",
    &[
        f("name", 0, ALL, Str),
        f("partitions", 0, ALL, Array(&LIST_OFFSETS_PARTITION)),
    ],
);
static LIST_OFFSETS_PARTITION: Struct = Struct::new(
    "ListOffsetsPartition",
    &[
        f("partition_index", 0, ALL, I32),
        f("current_leader_epoch", 4, ALL, I32),
        f("timestamp", 0, ALL, I64),
    ],
);

// Metadata
static METADATA: Struct = Struct::new(
    "MetadataRequest",
    &[
        f("topics", 0, ALL, Array(&METADATA_TOPIC)),
        f("allow_auto_topic_creation", 4, ALL, Bool),
        f("include_cluster_authorized_operations", 8, 10, Bool),
        f("include_topic_authorized_operations", 8, ALL, Bool),
    ],
);
static METADATA_TOPIC: Struct = Struct::new(
    "MetadataRequestTopic",
    &[f("topic_id", 10, ALL, Uuid), f("name", 0, ALL, Str)],
);

// ApiVersions
static API_VERSIONS: Struct = Struct::new(
    "ApiVersionsRequest",
    &[
        f("client_software_name", 3, ALL, Str),
        f("client_software_version", 3, ALL, Str),
    ],
);

// CreateTopics
static CREATE_TOPICS: Struct = Struct::new(
    "CreateTopicsRequest",
    &[
        f("topics", 0, ALL, Array(&CREATABLE_TOPIC)),
        f("timeout_ms", 0, ALL, I32),
        f("validate_only", 1, ALL, Bool),
    ],
);
static CREATABLE_TOPIC: Struct = Struct::new(
    "CreatableTopic",
    &[
        f("name", 0, ALL, Str),
        f("num_partitions", 0, ALL, I32),
        f("replication_factor", 0, ALL, I16),
        f("assignments", 0, ALL, Array(&CREATABLE_ASSIGNMENT)),
        f("configs", 0, ALL, Array(&CREATABLE_CONFIG)),
    ],
);
static CREATABLE_ASSIGNMENT: Struct = Struct::new(
    "CreatableReplicaAssignment",
    &[
        f("partition_index", 0, ALL, I32),
        f("broker_ids", 0, ALL, Int32s),
    ],
);
static CREATABLE_CONFIG: Struct = Struct::new(
    "CreatableTopicConfig",
    &[f("name", 0, ALL, Str), f("value", 0, ALL, Str)],
);

// DeleteTopics
static DELETE_TOPICS: Struct = Struct::new(
    "DeleteTopicsRequest",
    &[
        f("topics", 6, ALL, Array(&DELETE_TOPIC_STATE)),
        f("topic_names", 0, 5, Strs),
        f("timeout_ms", 0, ALL, I32),
    ],
);
static DELETE_TOPIC_STATE: Struct = Struct::new(
    "DeleteTopicState",
    &[f("name", 6, ALL, Str), f("topic_id", 6, ALL, Uuid)],
);

// DeleteRecords
static DELETE_RECORDS: Struct = Struct::new(
    "DeleteRecordsRequest",
    &[
        f("topics", 0, ALL, Array(&DELETE_RECORDS_TOPIC)),
        f("timeout_ms", 0, ALL, I32),
    ],
);
static DELETE_RECORDS_TOPIC: Struct = Struct::new(
    "DeleteRecordsTopic",
    &[
        f("name", 0, ALL, Str),
        f("partitions", 0, ALL, Array(&DELETE_RECORDS_PARTITION)),
    ],
);
static DELETE_RECORDS_PARTITION: Struct = Struct::new(
    "DeleteRecordsPartition",
    &[f("partition_index", 0, ALL, I32), f("offset", 0, ALL, I64)],
);

// DescribeConfigs
static DESCRIBE_CONFIGS: Struct = Struct::new(
    "DescribeConfigsRequest",
    &[
        f("resources", 0, ALL, Array(&DESCRIBE_CONFIGS_RESOURCE)),
        f("include_synonyms", 1, ALL, Bool),
        f("include_documentation", 3, ALL, Bool),
    ],
);
static DESCRIBE_CONFIGS_RESOURCE: Struct = Struct::new(
    "DescribeConfigsResource",
    &[
        f("resource_type", 0, ALL, I8),
        f("resource_name", 0, ALL, Str),
        f("configuration_keys", 0, ALL, Strs),
    ],
);

// CreatePartitions
static CREATE_PARTITIONS: Struct = Struct::new(
    "CreatePartitionsRequest",
    &[
        f("topics", 0, ALL, Array(&CREATE_PARTITIONS_TOPIC)),
        f("timeout_ms", 0, ALL, I32),
        f("validate_only", 0, ALL, Bool),
    ],
);
static CREATE_PARTITIONS_TOPIC: Struct = Struct::new(
    "CreatePartitionsTopic",
    &[
        f("name", 0, ALL, Str),
        f("count", 0, ALL, I32),
        f("assignments", 0, ALL, Array(&CREATE_PARTITIONS_ASSIGNMENT)),
    ],
);
static CREATE_PARTITIONS_ASSIGNMENT: Struct = Struct::new(
    "CreatePartitionsAssignment",
    &[f("broker_ids", 0, ALL, Int32s)],
);

// IncrementalAlterConfigs
static INCREMENTAL_ALTER_CONFIGS: Struct = Struct::new(
    "IncrementalAlterConfigsRequest",
    &[
        f("resources", 0, ALL, Array(&ALTER_CONFIGS_RESOURCE)),
        f("validate_only", 0, ALL, Bool),
    ],
);
static ALTER_CONFIGS_RESOURCE: Struct = Struct::new(
    "AlterConfigsResource",
    &[
        f("resource_type", 0, ALL, I8),
        f("resource_name", 0, ALL, Str),
        f("configs", 0, ALL, Array(&ALTERABLE_CONFIG)),
    ],
);
static ALTERABLE_CONFIG: Struct = Struct::new(
    "AlterableConfig",
    &[
        f("name", 0, ALL, Str),
        f("config_operation", 0, ALL, I8),
        f("value", 0, ALL, Str),
    ],
);

// DescribeCluster
static DESCRIBE_CLUSTER: Struct = Struct::new(
    "DescribeClusterRequest",
    &[
        f("include_cluster_authorized_operations", 0, ALL, Bool),
        f("endpoint_type", 1, ALL, I8),
        f("include_fenced_brokers", 2, ALL, Bool),
    ],
);

// InitProducerId
static INIT_PRODUCER_ID: Struct = Struct::new(
    "InitProducerIdRequest",
    &[
        f("transactional_id", 0, ALL, Str),
        f("transaction_timeout_ms", 0, ALL, I32),
        f("producer_id", 3, ALL, I64),
        f("producer_epoch", 3, ALL, I16),
    ],
);

// FindCoordinator
static FIND_COORDINATOR: Struct = Struct::new(
    "FindCoordinatorRequest",
    &[
        f("key", 0, 3, Str),
        f("key_type", 1, ALL, I8),
        f("coordinator_keys", 4, ALL, Strs),
    ],
);

// JoinGroup
static JOIN_GROUP: Struct = Struct::new(
    "JoinGroupRequest",
    &[
        f("group_id", 0, ALL, Str),
        f("session_timeout_ms", 0, ALL, I32),
        f("rebalance_timeout_ms", 1, ALL, I32),
        f("member_id", 0, ALL, Str),
        f("group_instance_id", 5, ALL, Str),
        f("protocol_type", 0, ALL, Str),
        f("protocols", 0, ALL, Array(&JOIN_GROUP_PROTOCOL)),
        f("reason", 8, ALL, Str),
    ],
);
static JOIN_GROUP_PROTOCOL: Struct = Struct::new(
    "JoinGroupRequestProtocol",
    &[f("name", 0, ALL, Str), f("metadata", 0, ALL, Bytes)],
);

// SyncGroup
static SYNC_GROUP: Struct = Struct::new(
    "SyncGroupRequest",
    &[
        f("group_id", 0, ALL, Str),
        f("generation_id", 0, ALL, I32),
        f("member_id", 0, ALL, Str),
        f("group_instance_id", 3, ALL, Str),
        f("protocol_type", 5, ALL, Str),
        f("protocol_name", 5, ALL, Str),
        f("assignments", 0, ALL, Array(&SYNC_GROUP_ASSIGNMENT)),
    ],
);
static SYNC_GROUP_ASSIGNMENT: Struct = Struct::new(
    "SyncGroupRequestAssignment",
    &[f("member_id", 0, ALL, Str), f("assignment", 0, ALL, Bytes)],
);

// Heartbeat
static HEARTBEAT: Struct = Struct::new(
    "HeartbeatRequest",
    &[
        f("group_id", 0, ALL, Str),
        f("generation_id", 0, ALL, I32),
        f("member_id", 0, ALL, Str),
        f("group_instance_id", 3, ALL, Str),
    ],
);

// LeaveGroup
static LEAVE_GROUP: Struct = Struct::new(
    "LeaveGroupRequest",
    &[
        f("group_id", 0, ALL, Str),
        f("member_id", 0, 2, Str),
        f("members", 3, ALL, Array(&MEMBER_IDENTITY)),
    ],
);
static MEMBER_IDENTITY: Struct = Struct::new(
    "MemberIdentity",
    &[
        f("member_id", 3, ALL, Str),
        f("group_instance_id", 3, ALL, Str),
        f("reason", 5, ALL, Str),
    ],
);

// OffsetCommit
static OFFSET_COMMIT: Struct = Struct::new(
    "OffsetCommitRequest",
    &[
        f("group_id", 0, ALL, Str),
        f("generation_id_or_member_epoch", 1, ALL, I32),
        f("member_id", 1, ALL, Str),
        f("group_instance_id", 7, ALL, Str),
        f("retention_time_ms", 2, 4, I64),
        f("topics", 0, ALL, Array(&OFFSET_COMMIT_TOPIC)),
    ],
);
static OFFSET_COMMIT_TOPIC: Struct = Struct::new(
    "OffsetCommitRequestTopic",
    &[
        f("name", 0, ALL, Str),
        f("partitions", 0, ALL, Array(&OFFSET_COMMIT_PARTITION)),
    ],
);
static OFFSET_COMMIT_PARTITION: Struct = Struct::new(
    "OffsetCommitRequestPartition",
    &[
        f("partition_index", 0, ALL, I32),
        f("committed_offset", 0, ALL, I64),
        f("committed_leader_epoch", 6, ALL, I32),
        f("committed_metadata", 0, ALL, Str),
    ],
);

// OffsetFetch
static OFFSET_FETCH: Struct = Struct::new(
    "OffsetFetchRequest",
    &[
        f("group_id", 0, 7, Str),
        f("topics", 0, 7, Array(&OFFSET_FETCH_TOPIC)),
        f("groups", 8, ALL, Array(&OFFSET_FETCH_GROUP)),
        f("require_stable", 7, ALL, Bool),
    ],
);
static OFFSET_FETCH_TOPIC: Struct = Struct::new(
    "OffsetFetchRequestTopic",
    &[f("name", 0, 7, Str), f("partition_indexes", 0, 7, Int32s)],
);
static OFFSET_FETCH_GROUP: Struct = Struct::new(
    "OffsetFetchRequestGroup",
    &[
        f("group_id", 8, ALL, Str),
        f("member_id", 9, ALL, Str),
        f("member_epoch", 9, ALL, I32),
        f("topics", 8, ALL, Array(&OFFSET_FETCH_TOPICS)),
    ],
);
static OFFSET_FETCH_TOPICS: Struct = Struct::new(
    "OffsetFetchRequestTopics",
    &[
        f("name", 8, ALL, Str),
        f("partition_indexes", 8, ALL, Int32s),
    ],
);

// ListGroups
static LIST_GROUPS: Struct = Struct::new(
    "ListGroupsRequest",
    &[
        f("states_filter", 4, ALL, Strs),
        f("types_filter", 5, ALL, Strs),
    ],
);

// DescribeGroups
static DESCRIBE_GROUPS: Struct = Struct::new(
    "DescribeGroupsRequest",
    &[
        f("groups", 0, ALL, Strs),
        f("include_authorized_operations", 3, ALL, Bool),
    ],
);

// DeleteGroups
static DELETE_GROUPS: Struct =
    Struct::new("DeleteGroupsRequest", &[f("groups_names", 0, ALL, Strs)]);

// OffsetDelete
static OFFSET_DELETE: Struct = Struct::new(
    "OffsetDeleteRequest",
    &[
        f("group_id", 0, ALL, Str),
        f("topics", 0, ALL, Array(&OFFSET_DELETE_TOPIC)),
    ],
);
static OFFSET_DELETE_TOPIC: Struct = Struct::new(
    "OffsetDeleteRequestTopic",
    &[
        f("name", 0, ALL, Str),
        f("partitions", 0, ALL, Array(&OFFSET_DELETE_PARTITION)),
    ],
);
static OFFSET_DELETE_PARTITION: Struct = Struct::new(
    "OffsetDeleteRequestPartition",
    &[f("partition_index", 0, ALL, I32)],
);

// OffsetForLeaderEpoch
static OFFSET_FOR_LEADER_EPOCH: Struct = Struct::new(
    "OffsetForLeaderEpochRequest",
    &[
        f("replica_id", 3, ALL, I32),
        f("topics", 0, ALL, Array(&OFFSET_FOR_LEADER_TOPIC)),
    ],
);
static OFFSET_FOR_LEADER_TOPIC: Struct = Struct::new(
    "OffsetForLeaderTopic",
    &[
        f("topic", 0, ALL, Str),
        f("partitions", 0, ALL, Array(&OFFSET_FOR_LEADER_PARTITION)),
    ],
);
static OFFSET_FOR_LEADER_PARTITION: Struct = Struct::new(
    "OffsetForLeaderPartition",
    &[
        f("partition", 0, ALL, I32),
        f("current_leader_epoch", 2, ALL, I32),
        f("leader_epoch", 0, ALL, I32),
    ],
);

// ElectLeaders
static ELECT_LEADERS: Struct = Struct::new(
    "ElectLeadersRequest",
    &[
        f("election_type", 1, ALL, I8),
        f("topic_partitions", 0, ALL, Array(&ELECT_TOPIC_PARTITIONS)),
        f("timeout_ms", 0, ALL, I32),
    ],
);
static ELECT_TOPIC_PARTITIONS: Struct = Struct::new(
    "TopicPartitions",
    &[f("topic", 0, ALL, Str), f("partitions", 0, ALL, Int32s)],
);

// AlterPartitionReassignments
static ALTER_PARTITION_REASSIGNMENTS: Struct = Struct::new(
    "AlterPartitionReassignmentsRequest",
    &[
        f("timeout_ms", 0, ALL, I32),
        f("allow_replication_factor_change", 1, ALL, Bool),
        f("topics", 0, ALL, Array(&REASSIGNABLE_TOPIC)),
    ],
);
static REASSIGNABLE_TOPIC: Struct = Struct::new(
    "ReassignableTopic",
    &[
        f("name", 0, ALL, Str),
        f("partitions", 0, ALL, Array(&REASSIGNABLE_PARTITION)),
    ],
);
static REASSIGNABLE_PARTITION: Struct = Struct::new(
    "ReassignablePartition",
    &[
        f("partition_index", 0, ALL, I32),
        f("replicas", 0, ALL, Int32s),
    ],
);

// ListPartitionReassignments
static LIST_PARTITION_REASSIGNMENTS: Struct = Struct::new(
    "ListPartitionReassignmentsRequest",
    &[
        f("timeout_ms", 0, ALL, I32),
        f("topics", 0, ALL, Array(&LIST_REASSIGNMENTS_TOPICS)),
    ],
);
static LIST_REASSIGNMENTS_TOPICS: Struct = Struct::new(
    "ListPartitionReassignmentsTopics",
    &[
        f("name", 0, ALL, Str),
        f("partition_indexes", 0, ALL, Int32s),
    ],
);

// UnregisterBroker
static UNREGISTER_BROKER: Struct =
    Struct::new("UnregisterBrokerRequest", &[f("broker_id", 0, ALL, I32)]);
