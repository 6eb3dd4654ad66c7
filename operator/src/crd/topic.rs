//! `Topic`: a Kafka topic of a Rill `Cluster`.

// Each printcolumn(...) repeats `type_ = ...`; clippy takes that for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Annotation that, set to `"false"`, leaves the topic alone (no create, update or delete).
pub const MANAGED_ANNOTATION: &str = "rill.dev/managed";

/// Finalizer that lets the operator delete the Kafka topic before the resource goes.
pub const FINALIZER: &str = "rill.dev/topic";

/// Desired state of a topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rill.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    shortname = "rillt",
    category = "rill",
    status = "TopicStatus",
    derive = "PartialEq",
    doc = "A Kafka topic in a Rill cluster.",
    printcolumn(
        name = "CLUSTER",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "PARTITIONS", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(
        name = "REPLICATION",
        type_ = "integer",
        json_path = ".spec.replicationFactor"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "has(self.topicName) == has(oldSelf.topicName) && \
     (!has(self.topicName) || self.topicName == oldSelf.topicName)"
).message("topicName is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The `Cluster` (same namespace) that holds the topic. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,

    /// Number of partitions; may grow, never shrink.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions may not decrease"))]
    pub partitions: i32,

    /// Replicas of each partition. Immutable for now.
    // int32 in the schema: the apiserver warns on the unknown format int16.
    #[schemars(with = "i32", range(min = 1, max = 32767))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable"))]
    pub replication_factor: i16,

    /// Topic configs (`retention.ms`, `cleanup.policy`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// Kafka topic name; defaults to `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub topic_name: Option<String>,
}

/// Reference to a `Cluster` in the topic's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the `Cluster`.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Observed state of a topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Kafka topic id (UUID), once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the topic has in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor the topic has in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub replication_factor: Option<i16>,
    /// Ready (and others the Topic reconciler sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl Topic {
    /// The Kafka topic name: `spec.topicName` or else `metadata.name`.
    pub fn kafka_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }

    /// False when the `rill.dev/managed: "false"` annotation is set.
    pub fn is_managed(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MANAGED_ANNOTATION))
            .is_none_or(|v| v != "false")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(yaml: &str) -> Topic {
        serde_yaml::from_str(yaml).expect("valid Topic YAML")
    }

    #[test]
    fn kafka_name_defaults_to_metadata_name() {
        let t = topic(
            "apiVersion: rill.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\n\
             spec: {clusterRef: {name: x}, partitions: 3, replicationFactor: 3}\n",
        );
        assert_eq!(t.kafka_name(), "orders");
        assert!(t.is_managed());
    }

    #[test]
    fn topic_name_and_unmanaged_annotation_are_honoured() {
        let t = topic(
            "apiVersion: rill.dev/v1alpha1\nkind: Topic\n\
             metadata: {name: orders, annotations: {rill.dev/managed: \"false\"}}\n\
             spec: {clusterRef: {name: x}, partitions: 3, replicationFactor: 3, topicName: Orders.v2}\n",
        );
        assert_eq!(t.kafka_name(), "Orders.v2");
        assert!(!t.is_managed());
    }
}
