//! Custom resource types of group `rill.dev`, version `v1alpha1`.
//!
//! The Rust types are the source of truth: `crdgen` prints the CRDs from them and a test
//! keeps the checked-in `crds/` in step. Rules the apiserver must enforce on updates (what
//! may not shrink or change) are CEL rules attached with `#[x_kube(validation = ...)]`.

pub mod cluster;
pub mod topic;

pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use topic::{Topic, TopicSpec, TopicStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every Rill resource.
pub const GROUP: &str = "rill.dev";

/// Both CRDs, in the order crdgen prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Cluster::crd(), Topic::crd()]
}

/// `(file name, YAML)` of each CRD as checked into `crds/`: `<crd name>.yaml`.
pub fn files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    all()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"));
            Ok((name, serde_yaml::to_string(&crd)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const REGENERATE: &str = "cargo run -p rill-operator --bin crdgen -- --out crds";

    #[test]
    fn checked_in_crds_match_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        for (name, want) in files().expect("CRDs serialize") {
            let path = dir.join(&name);
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "crds/ is stale: {} differs from the Rust types; run `{REGENERATE}`",
                path.display()
            );
        }
    }

    /// Every keyword the apiserver refuses in a structural schema, anywhere in the tree.
    fn non_structural(v: &Value, path: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if [
                        "anyOf",
                        "oneOf",
                        "allOf",
                        "$ref",
                        "not",
                        "definitions",
                        "$defs",
                    ]
                    .contains(&k.as_str())
                    {
                        found.push(format!("{path}/{k}"));
                    }
                    non_structural(child, &format!("{path}/{k}"), found);
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, c)| non_structural(c, &format!("{path}/{i}"), found)),
            _ => {}
        }
    }

    #[test]
    fn schemas_are_structural() {
        for crd in all() {
            let v = serde_json::to_value(&crd).unwrap();
            let mut found = Vec::new();
            non_structural(&v["spec"]["versions"][0]["schema"], "", &mut found);
            assert!(found.is_empty(), "{:?}: {found:?}", crd.metadata.name);
        }
    }

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        serde_json::to_value(crd).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            .clone()
    }

    fn rules(v: &Value) -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn cluster_carries_its_cel_rules_and_subresources() {
        let crd = Cluster::crd();
        let spec = &schema_of(&crd)["properties"]["spec"];
        assert_eq!(rules(spec), ["self.controllers <= self.replicas"]);
        assert_eq!(
            rules(&spec["properties"]["controllers"]),
            ["self == oldSelf"]
        );
        let size_rules = rules(&spec["properties"]["storage"]["properties"]["size"]);
        assert!(size_rules[1].contains("quantity(self).compareTo(quantity(oldSelf)) >= 0"));
        assert!(
            rules(&spec["properties"]["storage"])[0].contains("self.storageClassName == oldSelf")
        );
        assert_eq!(spec["properties"]["replicas"]["default"], 3);
        assert_eq!(spec["properties"]["replicas"]["minimum"], 1.0);
        let scale = crd.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .scale
            .as_ref()
            .unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let cols: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["READY", "BROKERS", "BOOTSTRAP", "AGE"]);
        assert_eq!(crd.spec.names.short_names, Some(vec!["rillc".to_string()]));
    }

    #[test]
    fn topic_carries_its_cel_rules() {
        let crd = Topic::crd();
        let spec = &schema_of(&crd)["properties"]["spec"];
        assert_eq!(
            rules(&spec["properties"]["partitions"]),
            ["self >= oldSelf"]
        );
        assert_eq!(
            rules(&spec["properties"]["replicationFactor"]),
            ["self == oldSelf"]
        );
        assert_eq!(
            rules(&spec["properties"]["clusterRef"]),
            ["self == oldSelf"]
        );
        assert!(rules(spec)[0].contains("self.topicName == oldSelf.topicName"));
        let cols: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["CLUSTER", "PARTITIONS", "REPLICATION", "READY", "AGE"]
        );
    }
}
