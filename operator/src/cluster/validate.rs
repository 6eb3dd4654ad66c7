//! Validation: a `Cluster` as the user wrote it -> a `ValidatedCluster` the builders can
//! trust, or a typed error whose `reason()` names the `Degraded` condition.
//!
//! The CRD's schema and CEL rules already refuse most bad specs; this catches what they
//! cannot express (owned broker properties, replication factors above the broker count)
//! and fills in defaults, so `build` never has to make a decision that could fail.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::cluster::{Cluster, PodTemplateOverrides, RackSpec};

/// Broker properties the operator sets itself; a `spec.config` override of one is refused.
pub const OWNED_PROPERTIES: &[&str] = &[
    "advertised.listeners",
    "broker.id",
    "controller.listener.names",
    "controller.quorum.bootstrap.servers",
    "controller.quorum.voters",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "listeners",
    "log.dir",
    "log.dirs",
    "metadata.log.dir",
    "node.id",
    "process.roles",
];

/// Properties that name a number of replicas: more than there are brokers cannot work.
const REPLICA_COUNT_PROPERTIES: &[&str] = &[
    "default.replication.factor",
    "min.insync.replicas",
    "offsets.topic.replication.factor",
];

/// Everything `build` needs, checked and defaulted.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    /// Controller owner reference to the `Cluster`: every built object carries it.
    pub owner: OwnerReference,
    pub replicas: i32,
    pub controllers: i32,
    pub image: String,
    pub resources: Option<ResourceRequirements>,
    pub storage_size: String,
    pub storage_class_name: Option<String>,
    /// `spec.config`, already checked against the owned properties.
    pub config: BTreeMap<String, String>,
    pub kafka_port: i32,
    pub rack: Option<RackSpec>,
    pub template: PodTemplateOverrides,
    /// The Cluster's `rill.dev/restart` annotation: a new value rolls every broker.
    pub restart: Option<String>,
    /// Accepted but doubtful settings, reported in the status.
    pub warnings: Vec<String>,
}

/// Set (to any new value, e.g. a timestamp) on a Cluster to restart every broker, one at
/// a time, like `kubectl rollout restart`: it is copied into the pod template.
pub const RESTART_ANNOTATION: &str = "rill.dev/restart";

/// Node labels a broker can learn its rack from: Kubernetes (PodTopologyLabels
/// admission) copies these from the Node onto the pod when it is bound, where the
/// downward API reads them.
pub const RACK_TOPOLOGY_KEYS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// Why a `Cluster` cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    #[error("the Cluster has no {0}")]
    MissingMetadata(&'static str),
    #[error("replicas must be at least 1, got {0}")]
    TooFewReplicas(i32),
    #[error("controllers must be at least 1, got {0}")]
    TooFewControllers(i32),
    #[error("controllers ({controllers}) must not exceed replicas ({replicas})")]
    ControllersExceedReplicas { controllers: i32, replicas: i32 },
    #[error("storage.size {0:?} is not a positive quantity such as 10Gi")]
    BadStorageSize(String),
    #[error("config {0} is set by the operator and cannot be overridden")]
    OwnedProperty(String),
    #[error("config {key:?}={value:?} cannot be written as a property line")]
    BadProperty { key: String, value: String },
    #[error("config {key}={value} is not a whole number")]
    NotANumber { key: String, value: String },
    #[error(
        "rack.topologyKey {0:?} is not one the brokers can read: use topology.kubernetes.io/zone \
         or topology.kubernetes.io/region (the labels Kubernetes copies onto pods)"
    )]
    UnsupportedTopologyKey(String),
    #[error("config {key}={value} exceeds the {replicas} brokers of the cluster")]
    ExceedsBrokers {
        key: String,
        value: i64,
        replicas: i32,
    },
}

impl ValidationError {
    /// CamelCase reason for the `Degraded` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::TooFewReplicas(_) => "TooFewReplicas",
            Self::TooFewControllers(_) => "TooFewControllers",
            Self::ControllersExceedReplicas { .. } => "ControllersExceedReplicas",
            Self::BadStorageSize(_) => "InvalidStorageSize",
            Self::OwnedProperty(_) => "OwnedConfigOverridden",
            Self::NotANumber { .. } | Self::BadProperty { .. } => "InvalidConfig",
            Self::ExceedsBrokers { .. } => "ReplicationExceedsBrokers",
            Self::UnsupportedTopologyKey(_) => "UnsupportedTopologyKey",
        }
    }
}

/// The broker image for a `Cluster` that names none: the one released with this operator.
pub fn default_image() -> String {
    format!("rill/broker:{}", env!("CARGO_PKG_VERSION"))
}

pub fn validate(cluster: &Cluster) -> Result<ValidatedCluster, ValidationError> {
    let spec = &cluster.spec;
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = cluster
        .namespace()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(ValidationError::MissingMetadata("uid"))?;

    if spec.replicas < 1 {
        return Err(ValidationError::TooFewReplicas(spec.replicas));
    }
    if spec.controllers < 1 {
        return Err(ValidationError::TooFewControllers(spec.controllers));
    }
    if spec.controllers > spec.replicas {
        return Err(ValidationError::ControllersExceedReplicas {
            controllers: spec.controllers,
            replicas: spec.replicas,
        });
    }
    let mut warnings = Vec::new();
    if spec.controllers % 2 == 0 {
        warnings.push(format!(
            "{} controllers tolerate no more failures than {}; an odd count is recommended",
            spec.controllers,
            spec.controllers - 1
        ));
    }
    match parse_quantity(&spec.storage.size) {
        Some(bytes) if bytes > 0.0 => {}
        _ => return Err(ValidationError::BadStorageSize(spec.storage.size.clone())),
    }
    for (key, value) in &spec.config {
        // One property per line in server.properties: a line break would smuggle in another.
        let bad_char = |s: &str| s.is_empty() || s.contains(['\n', '\r', '=']);
        if bad_char(key) || value.contains(['\n', '\r']) {
            return Err(ValidationError::BadProperty {
                key: key.clone(),
                value: value.clone(),
            });
        }
        if OWNED_PROPERTIES.contains(&key.as_str()) {
            return Err(ValidationError::OwnedProperty(key.clone()));
        }
        if REPLICA_COUNT_PROPERTIES.contains(&key.as_str()) {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| ValidationError::NotANumber {
                    key: key.clone(),
                    value: value.clone(),
                })?;
            if n > i64::from(spec.replicas) {
                return Err(ValidationError::ExceedsBrokers {
                    key: key.clone(),
                    value: n,
                    replicas: spec.replicas,
                });
            }
        }
    }

    if let Some(rack) = &spec.rack {
        if !RACK_TOPOLOGY_KEYS.contains(&rack.topology_key.as_str()) {
            return Err(ValidationError::UnsupportedTopologyKey(
                rack.topology_key.clone(),
            ));
        }
    }

    Ok(ValidatedCluster {
        name,
        namespace,
        owner,
        replicas: spec.replicas,
        controllers: spec.controllers,
        image: spec
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(default_image),
        resources: spec.resources.clone(),
        storage_size: spec.storage.size.clone(),
        storage_class_name: spec.storage.storage_class_name.clone(),
        config: spec.config.clone(),
        kafka_port: spec.listeners.internal.port,
        rack: spec.rack.clone(),
        template: spec.template.clone().unwrap_or_default(),
        restart: cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTART_ANNOTATION))
            .cloned(),
        warnings,
    })
}

/// The value of a Kubernetes quantity (`10Gi`, `500M`, `1.5e3`, `250m`), or `None` when it
/// is not one. A float is precise enough to order storage sizes.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty()
        || digits == "."
        || number.len() - digits.len() > 1
        || digits.contains(['+', '-'])
        || digits.matches('.').count() > 1
    {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            10f64.powi(e)
        }
        _ => return None,
    };
    Some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cluster(spec_yaml: &str) -> Cluster {
        let yaml = format!(
            "apiVersion: rill.dev/v1alpha1\nkind: Cluster\n\
             metadata: {{name: x, namespace: ns, uid: 0000-1111}}\nspec:\n{spec_yaml}"
        );
        serde_yaml::from_str(&yaml).expect("fixture Cluster parses")
    }

    #[test]
    fn defaults_fill_in_replicas_controllers_image_and_port() {
        let v = validate(&cluster("  storage: {size: 10Gi}\n")).unwrap();
        assert_eq!((v.replicas, v.controllers), (3, 3));
        assert_eq!(
            v.image,
            format!("rill/broker:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(v.kafka_port, 9092);
        assert_eq!(v.owner.kind, "Cluster");
        assert_eq!(v.owner.controller, Some(true));
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn controllers_above_replicas_are_refused() {
        let err = validate(&cluster("  replicas: 2\n  storage: {size: 1Gi}\n")).unwrap_err();
        assert_eq!(
            err,
            ValidationError::ControllersExceedReplicas {
                controllers: 3,
                replicas: 2
            }
        );
        assert_eq!(err.reason(), "ControllersExceedReplicas");
    }

    #[test]
    fn even_voter_count_is_accepted_with_a_warning() {
        let v = validate(&cluster(
            "  replicas: 4\n  controllers: 2\n  storage: {size: 1Gi}\n",
        ))
        .unwrap();
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("odd"));
    }

    #[test]
    fn owned_properties_are_refused() {
        for key in [
            "node.id",
            "listeners",
            "process.roles",
            "log.dirs",
            "controller.quorum.voters",
        ] {
            let err = validate(&cluster(&format!(
                "  storage: {{size: 1Gi}}\n  config: {{{key}: \"1\"}}\n"
            )))
            .unwrap_err();
            assert_eq!(err, ValidationError::OwnedProperty(key.into()));
            assert_eq!(err.reason(), "OwnedConfigOverridden");
        }
    }

    #[test]
    fn replication_settings_above_the_broker_count_are_refused() {
        let err = validate(&cluster(
            "  storage: {size: 1Gi}\n  config: {default.replication.factor: \"4\"}\n",
        ))
        .unwrap_err();
        assert_eq!(err.reason(), "ReplicationExceedsBrokers");
        let err = validate(&cluster(
            "  storage: {size: 1Gi}\n  config: {min.insync.replicas: two}\n",
        ))
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidConfig");
        let err = validate(&cluster(
            "  storage: {size: 1Gi}\n  config: {num.partitions: \"1\\nnode.id=7\"}\n",
        ))
        .unwrap_err();
        assert!(
            matches!(err, ValidationError::BadProperty { .. }),
            "{err:?}"
        );
        let ok = validate(&cluster(
            "  storage: {size: 1Gi}\n  config: {offsets.topic.replication.factor: \"3\", num.partitions: \"6\"}\n",
        ))
        .unwrap();
        assert_eq!(ok.config.len(), 2);
    }

    #[test]
    fn bad_storage_size_is_refused() {
        for size in ["lots", "0", "10Xi", "-1Gi", ""] {
            let err =
                validate(&cluster(&format!("  storage: {{size: \"{size}\"}}\n"))).unwrap_err();
            assert_eq!(err.reason(), "InvalidStorageSize", "{size}");
        }
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("500M"), Some(5e8));
        assert_eq!(parse_quantity("1.5e3"), Some(1500.0));
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("+3"), Some(3.0));
        assert_eq!(parse_quantity("1..2Gi"), None);
        assert_eq!(parse_quantity("Gi"), None);
        assert!(parse_quantity("20Gi") > parse_quantity("10Gi"));
    }

    #[test]
    fn a_rack_key_the_pod_cannot_read_is_refused() {
        let mut c: Cluster = serde_yaml::from_str(
            "apiVersion: rill.dev/v1alpha1\nkind: Cluster\n\
             metadata: {name: x, namespace: ns, uid: u1}\n\
             spec: {storage: {size: 1Gi}, rack: {topologyKey: kubernetes.io/hostname}}\n",
        )
        .unwrap();
        let err = validate(&c).unwrap_err();
        assert_eq!(err.reason(), "UnsupportedTopologyKey");
        assert!(err.to_string().contains("kubernetes.io/hostname"), "{err}");
        c.spec.rack.as_mut().unwrap().topology_key = "topology.kubernetes.io/region".into();
        assert!(validate(&c).is_ok());
    }
}
