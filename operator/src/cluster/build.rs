//! Build: a `ValidatedCluster` -> every object the cluster needs, as the operator will
//! server-side apply them. Pure and deterministic: the same input gives byte-identical
//! objects, so an apply with nothing changed is a no-op.
//!
//! Names and the pod spec follow the operator/test-harness contract
//! (`x-config`, `x-brokers`, `x-bootstrap`, StatefulSet `x`, PDB `x`, ServiceAccount `x-broker`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, Service, ServiceAccount, ServicePort, ServiceSpec, TCPSocketAction,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::{ValidatedCluster, RESTART_ANNOTATION};

/// Pod-template annotation holding a hash of `server.properties`: a config change changes
/// the template, hence the StatefulSet's update revision, hence a rolling restart.
pub const CONFIG_HASH_ANNOTATION: &str = "rill.dev/config-hash";
/// Port of the metadata quorum (Raft) listener.
pub const CONTROLLER_PORT: i32 = 9093;
/// Port of the broker's Prometheus endpoint.
pub const METRICS_PORT: i32 = 9644;
/// Key of the broker configuration in the ConfigMap.
pub const SERVER_PROPERTIES: &str = "server.properties";
/// Where the ConfigMap is mounted in the broker container.
pub const CONFIG_DIR: &str = "/etc/rill";
/// Where the data volume is mounted; the log lives in `data/` below it.
pub const DATA_DIR: &str = "/var/lib/rill";
/// Name of the broker container.
pub const CONTAINER: &str = "broker";
/// Name of the volume claim template (PVCs are `data-<cluster>-<ordinal>`).
pub const DATA_VOLUME: &str = "data";
/// Cluster DNS domain of the pod and service names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Every object of one cluster, in the order they are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub bootstrap_service: Service,
    pub pdb: PodDisruptionBudget,
    pub stateful_set: StatefulSet,
}

pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}

pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-brokers")
}

pub fn bootstrap_service_name(cluster: &str) -> String {
    format!("{cluster}-bootstrap")
}

pub fn service_account_name(cluster: &str) -> String {
    format!("{cluster}-broker")
}

/// `x-bootstrap.ns.svc:9092`, what Kafka clients in the cluster connect to.
pub fn bootstrap_address(cluster: &str, namespace: &str, port: i32) -> String {
    format!("{}.{namespace}.svc:{port}", bootstrap_service_name(cluster))
}

/// The labels that select a cluster's broker pods (immutable in the StatefulSet).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "rill".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "broker".to_string(),
        ),
    ])
}

/// `selector_labels` as a label selector string, for the scale subresource.
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every object the operator creates.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "rill-operator".into(),
    );
    labels
}

/// DNS name of broker `ordinal`: `x-N.x-brokers.ns.svc.cluster.local`.
pub fn pod_dns_name(v: &ValidatedCluster, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}.{}.{}.svc.{CLUSTER_DOMAIN}",
        v.name,
        headless_service_name(&v.name),
        v.namespace
    )
}

/// `controller.quorum.voters`: ordinals 0..controllers-1 on the controller port.
pub fn voters(v: &ValidatedCluster) -> String {
    (0..v.controllers)
        .map(|i| format!("{i}@{}:{CONTROLLER_PORT}", pod_dns_name(v, i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The replication factor the operator defaults to. It derives from the voter count, which
/// is fixed, not from `replicas`: scaling must not change the config (and restart pods).
fn default_replication_factor(v: &ValidatedCluster) -> i32 {
    v.controllers.min(3)
}

/// The cluster-wide `min.insync.replicas`: the spec's, else the operator's default.
pub fn min_insync_replicas(v: &ValidatedCluster) -> i32 {
    v.config
        .get("min.insync.replicas")
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(if default_replication_factor(v) >= 3 {
            2
        } else {
            1
        })
}

/// `server.properties`: the operator's settings, then `spec.config` over the defaults,
/// one `name=value` per line, sorted. Per-pod settings (node.id, listeners) are `--set` args.
pub fn server_properties(v: &ValidatedCluster) -> String {
    let rf = default_replication_factor(v);
    let mut props: BTreeMap<String, String> = BTreeMap::from([
        ("default.replication.factor".into(), rf.to_string()),
        (
            "min.insync.replicas".into(),
            min_insync_replicas(v).to_string(),
        ),
        ("offsets.topic.replication.factor".into(), rf.to_string()),
    ]);
    props.extend(v.config.clone());
    // Owned: validation refuses overrides of these, set last so nothing can shadow them.
    props.extend([
        (
            "controller.listener.names".to_string(),
            "CONTROLLER".to_string(),
        ),
        ("controller.quorum.voters".to_string(), voters(v)),
        (
            "inter.broker.listener.name".to_string(),
            "PLAINTEXT".to_string(),
        ),
        (
            "listener.security.protocol.map".to_string(),
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string(),
        ),
        ("log.dirs".to_string(), format!("{DATA_DIR}/data")),
    ]);
    let mut out = format!(
        "# Generated by rill-operator for Cluster {}/{}; edit the Cluster, not this file.\n",
        v.namespace, v.name
    );
    for (k, value) in props {
        out.push_str(&format!("{k}={value}\n"));
    }
    out
}

/// Stable 64-bit FNV-1a of the text as 16 hex digits (std's hasher is not stable across
/// Rust releases, and an operator upgrade must not restart every broker).
pub fn config_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn meta(v: &ValidatedCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(&v.name)),
        owner_references: Some(vec![v.owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// `command`/`args` of the broker container, exactly as the contract spells them.
pub fn broker_args(v: &ValidatedCluster) -> Vec<String> {
    let port = v.kafka_port;
    let headless = headless_service_name(&v.name);
    let mut args: Vec<String> = [
        "run".to_string(),
        "--config".into(),
        format!("{CONFIG_DIR}/{SERVER_PROPERTIES}"),
        "--roles-from-voters".into(),
        "--set".into(),
        "node.id=$(RILL_NODE_ID)".into(),
        "--set".into(),
        format!("listeners=PLAINTEXT://$(POD_IP):{port},CONTROLLER://$(POD_IP):{CONTROLLER_PORT}"),
        "--set".into(),
        format!(
            "advertised.listeners=PLAINTEXT://$(POD_NAME).{headless}.{}.svc.{CLUSTER_DOMAIN}:{port}",
            v.namespace
        ),
    ]
    .into();
    if v.rack.is_some() {
        args.extend(["--set".into(), format!("broker.rack=$({RACK_ENV})")]);
    }
    args
}

/// The env var holding the pod's copy of its node's topology label.
const RACK_ENV: &str = "RILL_RACK";

fn broker_container(v: &ValidatedCluster) -> Container {
    Container {
        name: CONTAINER.into(),
        image: Some(v.image.clone()),
        command: Some(vec!["rill-broker".into()]),
        args: Some(broker_args(v)),
        env: Some(
            [
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("POD_IP", "status.podIP"),
                field_env(
                    "RILL_NODE_ID",
                    "metadata.labels['apps.kubernetes.io/pod-index']",
                ),
            ]
            .into_iter()
            .chain(v.rack.as_ref().map(|rack| {
                field_env(
                    RACK_ENV,
                    &format!("metadata.labels['{}']", rack.topology_key),
                )
            }))
            .collect(),
        ),
        ports: Some(vec![
            container_port("kafka", v.kafka_port),
            container_port("controller", CONTROLLER_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        // The broker opens its Kafka listener only once it is registered and unfenced.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(v.kafka_port),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: v.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn non_empty<K: Ord + Clone, T: Clone>(m: &BTreeMap<K, T>) -> Option<BTreeMap<K, T>> {
    (!m.is_empty()).then(|| m.clone())
}

fn pod_template(v: &ValidatedCluster, config_hash: &str) -> PodTemplateSpec {
    let t = &v.template;
    // The operator's labels and annotation win over the user's.
    let mut labels = t.labels.clone();
    labels.extend(self::labels(&v.name));
    let mut annotations = t.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), config_hash.into());
    if let Some(restart) = &v.restart {
        annotations.insert(RESTART_ANNOTATION.into(), restart.clone());
    }
    let spread = v.rack.as_ref().map(|rack| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: rack.topology_key.clone(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&v.name)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(service_account_name(&v.name)),
            // Brokers never call the Kubernetes API.
            automount_service_account_token: Some(false),
            // Room for a controlled shutdown: leadership moves away before the exit.
            termination_grace_period_seconds: Some(60),
            containers: vec![broker_container(v)],
            volumes: Some(vec![Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map_name(&v.name),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            node_selector: non_empty(&t.node_selector),
            tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
            priority_class_name: t.priority_class_name.clone(),
            topology_spread_constraints: spread,
            ..PodSpec::default()
        }),
    }
}

pub fn build(v: &ValidatedCluster) -> Desired {
    let properties = server_properties(v);
    let hash = config_hash(&properties);
    let selector = selector_labels(&v.name);

    let service_account = ServiceAccount {
        metadata: meta(v, service_account_name(&v.name)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let config_map = ConfigMap {
        metadata: meta(v, config_map_name(&v.name)),
        data: Some(BTreeMap::from([(
            SERVER_PROPERTIES.to_string(),
            properties,
        )])),
        ..ConfigMap::default()
    };
    let headless_service = Service {
        metadata: meta(v, headless_service_name(&v.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Brokers must resolve each other before any is ready: the quorum forms first.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector.clone()),
            ports: Some(vec![
                port("kafka", v.kafka_port),
                port("controller", CONTROLLER_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let bootstrap_service = Service {
        metadata: meta(v, bootstrap_service_name(&v.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector.clone()),
            ports: Some(vec![port("kafka", v.kafka_port)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(v, v.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    let stateful_set = StatefulSet {
        metadata: meta(v, v.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(v.replicas),
            service_name: Some(headless_service_name(&v.name)),
            pod_management_policy: Some("Parallel".into()),
            // The operator, not the StatefulSet controller, decides when a broker restarts.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: pod_template(v, &hash),
            volume_claim_templates: Some(vec![volume_claim_template(v)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Desired {
        service_account,
        config_map,
        headless_service,
        bootstrap_service,
        pdb,
        stateful_set,
    }
}

fn volume_claim_template(v: &ValidatedCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector_labels(&v.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: v.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(v.storage_size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::validate::validate;
    use crate::cluster::validate::RESTART_ANNOTATION;
    use crate::crd::Cluster;

    const BASIC: &str = include_str!("fixtures/cluster-basic.yaml");
    const OVERRIDES: &str = include_str!("fixtures/cluster-overrides.yaml");

    fn cluster(yaml: &str) -> Cluster {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn desired(c: &Cluster) -> Desired {
        build(&validate(c).expect("fixture is valid"))
    }

    fn pod_spec(d: &Desired) -> &PodSpec {
        d.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn config_hash_of(d: &Desired) -> String {
        let template = &d.stateful_set.spec.as_ref().unwrap().template;
        template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn server_properties_are_exactly_the_fixture() {
        let d = desired(&cluster(BASIC));
        let data = d.config_map.data.as_ref().unwrap();
        assert_eq!(
            data[SERVER_PROPERTIES],
            include_str!("fixtures/cluster-basic.server.properties")
        );
        assert_eq!(d.config_map.metadata.name.as_deref(), Some("x-config"));
    }

    #[test]
    fn voters_are_the_first_ordinals_on_the_controller_port() {
        let v = validate(&cluster(BASIC)).unwrap();
        assert_eq!(
            voters(&v),
            "0@x-0.x-brokers.ns.svc.cluster.local:9093,\
             1@x-1.x-brokers.ns.svc.cluster.local:9093,\
             2@x-2.x-brokers.ns.svc.cluster.local:9093"
        );
    }

    #[test]
    fn broker_container_follows_the_contract() {
        let d = desired(&cluster(BASIC));
        let pod = pod_spec(&d);
        let c = &pod.containers[0];
        assert_eq!(c.name, "broker");
        assert_eq!(
            c.image.as_deref(),
            Some(format!("rill/broker:{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(c.command.as_deref(), Some(&["rill-broker".to_string()][..]));
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "run",
                "--config",
                "/etc/rill/server.properties",
                "--roles-from-voters",
                "--set",
                "node.id=$(RILL_NODE_ID)",
                "--set",
                "listeners=PLAINTEXT://$(POD_IP):9092,CONTROLLER://$(POD_IP):9093",
                "--set",
                "advertised.listeners=PLAINTEXT://$(POD_NAME).x-brokers.ns.svc.cluster.local:9092",
            ]
        );
        let env: Vec<(&str, &str)> = c
            .env
            .iter()
            .flatten()
            .map(|e| {
                let path = &e
                    .value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path;
                (e.name.as_str(), path.as_str())
            })
            .collect();
        assert_eq!(
            env,
            [
                ("POD_NAME", "metadata.name"),
                ("POD_NAMESPACE", "metadata.namespace"),
                ("POD_IP", "status.podIP"),
                (
                    "RILL_NODE_ID",
                    "metadata.labels['apps.kubernetes.io/pod-index']"
                ),
            ]
        );
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .tcp_socket
            .as_ref()
            .unwrap();
        assert_eq!(probe.port, IntOrString::Int(9092));
        let ports: Vec<(&str, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [("kafka", 9092), ("controller", 9093), ("metrics", 9644)]
        );
        let mounts: Vec<(&str, &str)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(mounts, [("data", "/var/lib/rill"), ("config", "/etc/rill")]);
        assert_eq!(pod.service_account_name.as_deref(), Some("x-broker"));
        assert_eq!(
            pod.volumes.as_ref().unwrap()[0]
                .config_map
                .as_ref()
                .unwrap()
                .name,
            "x-config"
        );
    }

    #[test]
    fn stateful_set_is_parallel_on_delete_with_a_data_claim() {
        let d = desired(&cluster(BASIC));
        let sts = &d.stateful_set;
        assert_eq!(sts.metadata.name.as_deref(), Some("x"));
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("x-brokers"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("10Gi".into())
        );
        assert_eq!(claim_spec.storage_class_name, None);
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels, &labels("x"));
        assert_eq!(pod_labels["app.kubernetes.io/managed-by"], "rill-operator");
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap(),
            &selector_labels("x")
        );
    }

    #[test]
    fn services_pdb_and_account_have_the_contract_names() {
        let d = desired(&cluster(BASIC));
        let headless = d.headless_service.spec.as_ref().unwrap();
        assert_eq!(
            d.headless_service.metadata.name.as_deref(),
            Some("x-brokers")
        );
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let ports: Vec<(&str, i32)> = headless
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.port))
            .collect();
        assert_eq!(ports, [("kafka", 9092), ("controller", 9093)]);
        let bootstrap = d.bootstrap_service.spec.as_ref().unwrap();
        assert_eq!(
            d.bootstrap_service.metadata.name.as_deref(),
            Some("x-bootstrap")
        );
        assert_eq!(bootstrap.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(bootstrap.publish_not_ready_addresses, None);
        assert_eq!(bootstrap.ports.as_ref().unwrap()[0].port, 9092);
        let pdb = d.pdb.spec.as_ref().unwrap();
        assert_eq!(d.pdb.metadata.name.as_deref(), Some("x"));
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(d.service_account.metadata.name.as_deref(), Some("x-broker"));
        assert_eq!(
            bootstrap_address("x", "ns", 9092),
            "x-bootstrap.ns.svc:9092"
        );
        assert_eq!(
            selector_string("x"),
            "app.kubernetes.io/component=broker,app.kubernetes.io/instance=x,app.kubernetes.io/name=rill"
        );
    }

    #[test]
    fn every_object_is_owned_by_the_cluster_as_controller() {
        let d = desired(&cluster(BASIC));
        let metas = [
            &d.service_account.metadata,
            &d.config_map.metadata,
            &d.headless_service.metadata,
            &d.bootstrap_service.metadata,
            &d.pdb.metadata,
            &d.stateful_set.metadata,
        ];
        for m in metas {
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "Cluster");
            assert_eq!(owners[0].api_version, "rill.dev/v1alpha1");
            assert_eq!(owners[0].name, "x");
            assert_eq!(owners[0].uid, "6f1d3c1e-0000-4000-8000-000000000001");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("ns"));
            assert_eq!(m.labels.as_ref().unwrap(), &labels("x"));
        }
    }

    #[test]
    fn config_change_changes_the_hash_and_replicas_do_not() {
        let base = cluster(BASIC);
        let hash = config_hash_of(&desired(&base));
        assert_eq!(hash.len(), 16);
        assert_eq!(hash, config_hash_of(&desired(&base)), "deterministic");

        let mut more = base.clone();
        more.spec.replicas = 7;
        let d = desired(&more);
        assert_eq!(config_hash_of(&d), hash);
        assert_eq!(d.stateful_set.spec.as_ref().unwrap().replicas, Some(7));

        let mut changed = base.clone();
        changed
            .spec
            .config
            .insert("num.partitions".into(), "12".into());
        assert_ne!(config_hash_of(&desired(&changed)), hash);
    }

    #[test]
    fn overrides_reach_the_pod_and_the_operator_labels_win() {
        let d = desired(&cluster(OVERRIDES));
        let spec = d.stateful_set.spec.as_ref().unwrap();
        let meta = spec.template.metadata.as_ref().unwrap();
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "data");
        assert_eq!(labels["app.kubernetes.io/name"], "rill");
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(spread.topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread.max_skew, 1);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("rill/broker:custom"));
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["memory"], Quantity("4Gi".into()));
        assert_eq!(
            c.args.as_ref().unwrap()[7],
            "listeners=PLAINTEXT://$(POD_IP):19092,CONTROLLER://$(POD_IP):9093"
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .tcp_socket
                .as_ref()
                .unwrap()
                .port,
            IntOrString::Int(19092)
        );
        // The rack is the node's zone, copied onto the pod and read through the downward API.
        let args = c.args.as_ref().unwrap();
        assert_eq!(
            args[args.len() - 2..],
            ["--set", "broker.rack=$(RILL_RACK)"]
        );
        let rack = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "RILL_RACK");
        let field = rack
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            field.field_path,
            "metadata.labels['topology.kubernetes.io/zone']"
        );
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast-ssd")
        );
        // One voter: replication defaults follow it, not the 5 brokers.
        let props = &d.config_map.data.as_ref().unwrap()[SERVER_PROPERTIES];
        assert!(props.contains(
            "\ncontroller.quorum.voters=0@big-0.big-brokers.kafka.svc.cluster.local:9093\n"
        ));
        assert!(props.contains("\ndefault.replication.factor=1\n"));
        assert!(props.contains("\nmin.insync.replicas=1\n"));
    }

    #[test]
    fn the_restart_annotation_changes_the_pod_template_only() {
        let mut c = cluster(BASIC);
        let before = desired(&c);
        c.metadata.annotations = Some(BTreeMap::from([(
            RESTART_ANNOTATION.to_string(),
            "2026-11-22T05:00:00Z".to_string(),
        )]));
        let after = desired(&c);
        let template = |d: &Desired| d.stateful_set.spec.as_ref().unwrap().template.clone();
        assert_ne!(template(&before), template(&after));
        let annotations = template(&after).metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[RESTART_ANNOTATION], "2026-11-22T05:00:00Z");
        assert_eq!(config_hash_of(&before), config_hash_of(&after));
        assert_eq!(before.config_map, after.config_map);
    }

    #[test]
    fn building_twice_gives_identical_objects() {
        let c = cluster(OVERRIDES);
        assert_eq!(desired(&c), desired(&c));
    }
}
