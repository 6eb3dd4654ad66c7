//! `Cluster`: a set of Rill brokers run as one StatefulSet.

// Each printcolumn(...) repeats `type_ = ...`; clippy takes that for a duplicate attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Kafka listener port used when `spec.listeners.internal.port` is not set.
pub const DEFAULT_KAFKA_PORT: i32 = 9092;

/// Desired state of a Rill cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rill.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    shortname = "rillc",
    category = "rill",
    status = "ClusterStatus",
    derive = "PartialEq",
    doc = "A Rill cluster: brokers in a StatefulSet with a Raft metadata quorum.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "READY",
        type_ = "integer",
        json_path = ".status.readyBrokers",
        description = "Brokers that are ready"
    ),
    printcolumn(
        name = "BROKERS",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired brokers"
    ),
    printcolumn(
        name = "BOOTSTRAP",
        type_ = "string",
        json_path = ".status.bootstrap",
        description = "Address for Kafka clients"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.controllers <= self.replicas")
    .message("controllers must not exceed replicas")
    .reason(Reason::FieldValueInvalid)
    .field_path(".controllers"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of brokers.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,

    /// Number of metadata-quorum voters (ordinals 0..controllers-1). Odd is recommended.
    /// Fixed at creation for now.
    #[serde(default = "default_controllers")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("controllers is immutable"))]
    pub controllers: i32,

    /// Broker image; defaults to `rill/broker:<operator version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Compute resources of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent volume of each broker.
    pub storage: StorageSpec,

    /// Kafka broker property overrides (`server.properties`). Properties the operator owns
    /// (node.id, listeners, process.roles, log.dirs, controller.quorum.voters, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// Listeners the brokers open.
    #[serde(default)]
    pub listeners: ListenersSpec,

    /// Spread brokers over a node topology domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<RackSpec>,

    /// Pod template overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateOverrides>,
}

fn default_replicas() -> i32 {
    3
}

fn default_controllers() -> i32 {
    3
}

/// Storage of each broker: one PersistentVolumeClaim per pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) && \
     (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message("storageClassName is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's volume, a Kubernetes quantity such as `10Gi`. May grow, never shrink.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(
        validation = Rule::new("isQuantity(self)").message("size must be a quantity such as 10Gi"),
        validation = Rule::new("!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0")
            .message("storage size may not shrink")
    )]
    pub size: String,

    /// StorageClass of the volumes; the cluster default when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Delete the volumes of brokers removed by a scale-down once they are unregistered.
    /// Kept by default: a later scale-up reuses them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_claims_on_scale_down: bool,
}

/// Listeners of the brokers. Only the internal (in-cluster, plaintext) one exists for now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// The in-cluster plaintext Kafka listener.
    #[serde(default)]
    pub internal: InternalListener,
}

/// The in-cluster plaintext Kafka listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InternalListener {
    /// Kafka port.
    #[serde(default = "default_kafka_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for InternalListener {
    fn default() -> Self {
        Self {
            port: DEFAULT_KAFKA_PORT,
        }
    }
}

fn default_kafka_port() -> i32 {
    DEFAULT_KAFKA_PORT
}

/// Rack awareness: brokers spread over the values of a node label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RackSpec {
    /// Node label whose values are the racks, e.g. `topology.kubernetes.io/zone`.
    #[schemars(length(min = 1))]
    pub topology_key: String,
}

/// The few pod template fields a user may set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations (the operator's own annotations win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Pod nodeSelector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod priorityClassName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state of a Rill cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Brokers whose pod is Ready.
    #[serde(default)]
    pub ready_brokers: i32,
    /// Broker pods that exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// The cluster id of the metadata quorum, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Bootstrap address for Kafka clients in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// Label selector of the broker pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Partition moves of the scale-up rebalance or scale-down drain under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
}

/// Progress of partition reassignments while brokers are added or drained.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// Partitions whose replicas have reached their new brokers.
    pub partitions_moved: i32,
    /// Partitions this rebalance moves in all (grows if topics appear meanwhile).
    pub partitions_to_move: i32,
}
