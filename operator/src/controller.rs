//! Wiring of the `Cluster` controller: watches, the reconcile pipeline, error backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::rebalance::{self, Kafka, Scale};
use crate::cluster::rolling::{self, RollDecision};
use crate::cluster::rolling::{BrokerView, PartitionView};
use crate::cluster::{apply, build, status, validate};
use crate::crd::Cluster;
use crate::kafka_admin::{AdminClient, AdminConfig, ClusterDescription};
use crate::metrics::Metrics;
use crate::Error;

const CONTROLLER: &str = "cluster";
/// Only our own children and broker pods are watched.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=rill-operator";
/// Requeue while something is moving (pods starting, a roll in progress).
const BUSY_REQUEUE: Duration = Duration::from_secs(10);
/// While the StatefulSet is replaced (orphan delete, then create).
const REPLACING_REQUEUE: Duration = Duration::from_secs(1);
/// Periodic resync when all is well.
const IDLE_REQUEUE: Duration = Duration::from_secs(300);

/// Shared state of the reconciles.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// True while this replica holds the leader Lease.
    pub leader: watch::Receiver<bool>,
    /// Consecutive failures per Cluster, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Where reconciles learn which brokers are registered.
    pub(crate) brokers: BrokerSource,
    /// Scripted brokers for the scaling steps (tests); the real ones otherwise.
    #[cfg(test)]
    pub(crate) fake_kafka: Option<rebalance::fake::FakeKafka>,
}

/// The brokers' answers (cluster id and BrokerView); tests give fixed ones.
pub(crate) enum BrokerSource {
    Kafka,
    #[cfg(test)]
    Fixed((ClusterDescription, BrokerView)),
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, leader: watch::Receiver<bool>) -> Self {
        Self {
            client,
            metrics,
            leader,
            failures: Mutex::new(HashMap::new()),
            brokers: BrokerSource::Kafka,
            #[cfg(test)]
            fake_kafka: None,
        }
    }

    /// The brokers of a Cluster for the scaling steps, connected on first use.
    fn kafka(&self, bootstrap: String) -> Kafka {
        #[cfg(test)]
        if let Some(fake) = &self.fake_kafka {
            return Kafka::Fake(fake.clone());
        }
        Kafka::admin(bootstrap)
    }

    pub(crate) fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Records one more failure of `key`; returns the delay before its retry.
    pub(crate) fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// Runs one reconcile of `controller` for `key`, counted, timed, its error counted
    /// by reason and its backoff reset on success.
    pub(crate) async fn measured(
        &self,
        controller: &str,
        key: &str,
        reconcile: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        self.metrics
            .reconciles
            .with_label_values(&[controller])
            .inc();
        let timer = self
            .metrics
            .duration
            .with_label_values(&[controller])
            .start_timer();
        let result = reconcile.await;
        timer.observe_duration();
        match &result {
            Ok(_) => self.succeeded(key),
            Err(e) => self
                .metrics
                .errors
                .with_label_values(&[controller, e.metric_label()])
                .inc(),
        }
        result
    }

    pub(crate) fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// 5 s, 10 s, 20 s, ... capped at 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(5u64.saturating_mul(1 << exp)).min(Duration::from_secs(300))
}

fn key(cluster: &Cluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `stop` resolves, waiting for reconciles in flight.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = || watcher::Config::default().labels(MANAGED_BY);
    Controller::new(api::<Cluster>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), owned())
        .owns(api::<ConfigMap>(&client, ns), owned())
        .owns(api::<Service>(&client, ns), owned())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned())
        // Pods belong to the StatefulSet; readiness changes drive the rolling restart.
        .watches(api::<Pod>(&client, ns), owned(), |pod| {
            let instance = pod.labels().get("app.kubernetes.io/instance").cloned();
            let namespace = pod.namespace();
            instance
                .zip(namespace)
                .map(|(name, ns)| ObjectRef::<Cluster>::new(&name).within(&ns))
        })
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;
}

async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    ctx.measured(
        CONTROLLER,
        &key(&cluster),
        reconcile_cluster(&cluster, &ctx),
    )
    .await
}

fn error_policy(cluster: Arc<Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(&cluster));
    warn!(cluster = %key(&cluster), error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// validate -> build -> apply -> roll -> status.
async fn reconcile_cluster(cluster: &Cluster, ctx: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Children go with it: they carry owner references.
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = cluster.name_any();
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    let validated = match validate::validate(cluster) {
        Ok(v) => v,
        Err(e) => {
            warn!(cluster = %key(cluster), reason = e.reason(), error = %e, "invalid Cluster");
            let sts = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
                .get_opt(&name)
                .await?;
            let pods = apply::list_pods(client, &namespace, &name).await?;
            let observed = status::Observed {
                validated: Err(&e),
                stateful_set: sts.as_ref(),
                pods: &pods,
                roll: &RollDecision::UpToDate,
                scaling: None,
                cluster_id: None,
                expansion_refused: &[],
            };
            apply::patch_status(client, cluster, &status::compute(cluster, &observed, &now))
                .await?;
            // Nothing to retry until the spec changes.
            return Ok(Action::await_change());
        }
    };

    // Scaling decides the StatefulSet's replicas: a scale-down waits for the drain.
    let running = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await?
        .and_then(|s| s.spec?.replicas);
    let scale = Scale {
        name: &name,
        namespace: &namespace,
        desired: validated.replicas,
        controllers: validated.controllers,
        delete_claims: cluster.spec.storage.delete_claims_on_scale_down,
        previous: cluster.status.as_ref().and_then(|s| s.rebalance.as_ref()),
    };
    let mut kafka = ctx.kafka(validated_bootstrap(cluster, &namespace, &name));
    let (replicas, mut scaling) = rebalance::replicas_to_apply(&mut kafka, &scale, running).await;
    let mut desired = build::build(&validated);
    if let Some(spec) = desired.stateful_set.spec.as_mut() {
        spec.replicas = Some(replicas);
    }

    let applied = apply::apply_all(client, &namespace, desired).await?;
    if applied.replacing {
        // The StatefulSet is being recreated for a larger volume claim template.
        return Ok(Action::requeue(REPLACING_REQUEUE));
    }
    let sts = applied.stateful_set;
    let pods = apply::list_pods(client, &namespace, &name).await?;
    // The brokers' own word on who is registered and unfenced (DescribeCluster) and on
    // every partition's ISR (Metadata); a pod being Ready only says its Kafka port is
    // open. Unanswered, nobody counts as registered and no pod is restarted.
    let described = match &ctx.brokers {
        _ if !pods.iter().any(rolling::is_ready) => None,
        BrokerSource::Kafka => {
            observe_brokers(
                &validated_bootstrap(cluster, &namespace, &name),
                build::min_insync_replicas(&validated),
            )
            .await
        }
        #[cfg(test)]
        BrokerSource::Fixed(d) => Some(d.clone()),
    };
    let brokers = described
        .as_ref()
        .map(|(_, b)| b.clone())
        .unwrap_or_default();
    if replicas == validated.replicas {
        let grew = running.is_some_and(|r| r < replicas);
        let description = described.as_ref().map(|(d, _)| d);
        let after =
            rebalance::after_apply(&mut kafka, client, &scale, &pods, description, grew).await?;
        scaling = after.or(scaling.filter(|_| pods.len() as i32 > replicas));
    }
    let roll = rolling::decide(&sts, &pods, validated.controllers, &brokers);
    if let RollDecision::Restart { pod, uid, outdated } = &roll {
        info!(cluster = %key(cluster), %pod, outdated, "restarting an outdated broker");
        apply::delete_pod(client, &namespace, pod, uid.clone()).await?;
    }

    let observed = status::Observed {
        validated: Ok(&validated),
        stateful_set: Some(&sts),
        pods: &pods,
        roll: &roll,
        scaling: scaling.as_ref(),
        cluster_id: described.as_ref().map(|(d, _)| d.cluster_id.as_str()),
        expansion_refused: &applied.expansion_refused,
    };
    let new_status = status::compute(cluster, &observed, &now);
    let settled = roll == RollDecision::UpToDate
        && scaling.is_none()
        && new_status.ready_brokers == validated.replicas
        && new_status.replicas == validated.replicas;
    if cluster.status.as_ref() != Some(&new_status) {
        apply::patch_status(client, cluster, &new_status).await?;
    }
    Ok(Action::requeue(if settled {
        IDLE_REQUEUE
    } else if scaling.as_ref().is_some_and(|s| s.is_moving()) {
        rebalance::MOVING_REQUEUE
    } else {
        BUSY_REQUEUE
    }))
}

fn validated_bootstrap(cluster: &Cluster, namespace: &str, name: &str) -> String {
    build::bootstrap_address(name, namespace, cluster.spec.listeners.internal.port)
}

/// The cluster id and the brokers' view (DescribeCluster, Metadata, and each topic's
/// `min.insync.replicas` override) through the bootstrap Service, bounded: a reconcile must
/// not hang on brokers that are starting.
async fn observe_brokers(
    bootstrap: &str,
    default_min_insync: i32,
) -> Option<(ClusterDescription, BrokerView)> {
    let config = AdminConfig {
        request_timeout: Duration::from_secs(5),
        max_attempts: 2,
        ..AdminConfig::default()
    };
    let result = async {
        let mut admin = AdminClient::connect(&[bootstrap.to_string()], config).await?;
        let described = admin.describe_cluster().await?;
        let metadata = admin.metadata(None).await?;
        let mut partitions = Vec::new();
        for topic in &metadata.topics {
            let configs = admin.describe_topic_configs(&topic.name).await?;
            let min_insync = configs
                .get("min.insync.replicas")
                .and_then(|m| m.parse().ok())
                .unwrap_or(default_min_insync);
            partitions.extend(topic.partitions.iter().map(|p| PartitionView {
                topic: topic.name.clone(),
                partition: p.partition,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                min_insync,
            }));
        }
        Ok::<_, crate::kafka_admin::AdminError>((described, partitions))
    }
    .await;
    match result {
        Ok((d, partitions)) => Some((
            d.clone(),
            BrokerView {
                registered: d
                    .brokers
                    .iter()
                    .filter(|b| !b.is_fenced)
                    .map(|b| b.node_id)
                    .collect(),
                controller: (d.controller_id >= 0).then_some(d.controller_id),
                partitions,
            },
        )),
        Err(e) => {
            warn!(%bootstrap, error = %e, "asking the brokers failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_and_caps_at_five_minutes() {
        let secs: Vec<u64> = [1, 2, 3, 4, 6, 7, 50]
            .map(|n| backoff_delay(n).as_secs())
            .into();
        assert_eq!(secs, [5, 10, 20, 40, 160, 300, 300]);
    }

    use crate::cluster::rolling::REVISION_LABEL;
    use crate::mock_api::{self, Recorded};
    use serde_json::{json, Value};

    fn cluster(spec: &str) -> Cluster {
        serde_yaml::from_str(&format!(
            "apiVersion: rill.dev/v1alpha1\nkind: Cluster\n\
             metadata: {{name: x, namespace: ns, uid: u1, generation: 1}}\nspec: {spec}\n"
        ))
        .unwrap()
    }

    fn context(client: Client, leader: bool) -> Context {
        let (tx, rx) = watch::channel(leader);
        std::mem::forget(tx);
        let mut ctx = Context::new(client, Arc::new(Metrics::new()), rx);
        ctx.brokers = BrokerSource::Fixed((
            ClusterDescription {
                cluster_id: "c1".into(),
                controller_id: 0,
                brokers: (0..3)
                    .map(|node_id| crate::kafka_admin::BrokerInfo {
                        node_id,
                        host: format!("x-{node_id}"),
                        port: 9092,
                        rack: None,
                        is_fenced: false,
                    })
                    .collect(),
            },
            BrokerView {
                registered: (0..3).collect(),
                controller: Some(0),
                partitions: vec![],
            },
        ));
        // No topics: scaling has nothing to move, and no test reaches for a network.
        ctx.fake_kafka = Some(crate::cluster::rebalance::fake::FakeKafka::new(
            3,
            &Default::default(),
        ));
        ctx
    }

    fn pod_json(ordinal: i32, revision: &str) -> Value {
        json!({"metadata": {"name": format!("x-{ordinal}"), "uid": format!("uid-{ordinal}"),
                "labels": {REVISION_LABEL: revision}},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    /// An apiserver with a 3-broker StatefulSet at update revision `new` and pods at `revision`.
    fn server(revision: &'static str) -> impl Fn(&Recorded) -> (u16, Value) + Send + Sync {
        move |r| {
            let line = r.line();
            match r.method.as_str() {
                "GET" if line.ends_with("/statefulsets/x") => mock_api::not_found(),
                "GET" if line.ends_with("/pods") => (
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                           "items": (0..3).map(|i| pod_json(i, revision)).collect::<Vec<_>>()}),
                ),
                "PATCH" if line.ends_with("/statefulsets/x") => {
                    let mut body = r.body.clone();
                    body["metadata"]["generation"] = json!(1);
                    body["status"] = json!({"replicas": 3, "observedGeneration": 1,
                                            "updateRevision": "new"});
                    (200, body)
                }
                "PATCH" if line.ends_with("/clusters/x/status") => {
                    let mut body = serde_json::to_value(cluster("{storage: {size: 1Gi}}")).unwrap();
                    body["status"] = r.body["status"].clone();
                    (200, body)
                }
                "DELETE" => (200, pod_json(2, revision)),
                _ => (200, r.body.clone()),
            }
        }
    }

    #[tokio::test]
    async fn an_outdated_ready_cluster_restarts_exactly_one_broker() {
        let (client, log) = mock_api::client(server("old"));
        let ctx = context(client, true);
        let c = cluster("{storage: {size: 1Gi}}");
        let action = reconcile_cluster(&c, &ctx).await.unwrap();
        assert_eq!(action, Action::requeue(BUSY_REQUEUE));
        let log = log.lock().unwrap();
        let deletes: Vec<String> = log
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(Recorded::line)
            .collect();
        assert_eq!(deletes, ["DELETE /api/v1/namespaces/ns/pods/x-2"]);
        let status = &log
            .iter()
            .find(|r| r.line().ends_with("/clusters/x/status"))
            .unwrap()
            .body["status"];
        assert_eq!(status["clusterId"], "c1", "the id DescribeCluster answered");
        let progressing = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Progressing")
            .unwrap();
        assert_eq!(progressing["reason"], "RollingRestart");
        assert_eq!(status["readyBrokers"], 3);
    }

    #[tokio::test]
    async fn an_up_to_date_ready_cluster_deletes_nothing_and_is_ready() {
        let (client, log) = mock_api::client(server("new"));
        let ctx = context(client, true);
        let action = reconcile_cluster(&cluster("{storage: {size: 1Gi}}"), &ctx)
            .await
            .unwrap();
        assert_eq!(action, Action::requeue(IDLE_REQUEUE));
        let log = log.lock().unwrap();
        assert!(log.iter().all(|r| r.method != "DELETE"));
        let status = &log.last().unwrap().body["status"];
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
    }

    #[tokio::test]
    async fn an_invalid_cluster_only_gets_a_degraded_status() {
        let (client, log) = mock_api::client(server("new"));
        let ctx = context(client, true);
        let c = cluster("{storage: {size: 1Gi}, config: {log.dirs: /tmp}}");
        assert_eq!(
            reconcile_cluster(&c, &ctx).await.unwrap(),
            Action::await_change()
        );
        let log = log.lock().unwrap();
        let writes: Vec<String> = log
            .iter()
            .filter(|r| r.method != "GET")
            .map(Recorded::line)
            .collect();
        assert_eq!(
            writes,
            ["PATCH /apis/rill.dev/v1alpha1/namespaces/ns/clusters/x/status"]
        );
        let degraded = log.last().unwrap().body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap()
            .clone();
        assert_eq!(degraded["reason"], "OwnedConfigOverridden");
    }

    #[tokio::test]
    async fn a_replica_that_is_not_leader_does_not_touch_the_api() {
        let (client, log) = mock_api::client(server("old"));
        let ctx = Arc::new(context(client, false));
        let action = reconcile(Arc::new(cluster("{storage: {size: 1Gi}}")), ctx)
            .await
            .unwrap();
        assert_eq!(action, Action::await_change());
        assert!(log.lock().unwrap().is_empty());
    }

    // --- Scaling (issue 7): scale-down refusal, drain, shrink, unregister; scale-up rebalance.

    use crate::cluster::rebalance::fake::FakeKafka;
    use crate::cluster::scaling::Assignments;
    use crate::kafka_admin::Unregistered;

    /// An apiserver whose StatefulSet runs `running` brokers, with pods 0..pods Ready and
    /// up to date, and PVCs data-x-0..data-x-5.
    fn scaling_server(running: i32, pods: i32) -> impl Fn(&Recorded) -> (u16, Value) + Send + Sync {
        move |r| {
            let line = r.line();
            match r.method.as_str() {
                "GET" if line.ends_with("/statefulsets/x") => {
                    let mut sts = serde_json::to_value(
                        build::build(
                            &validate::validate(&cluster("{storage: {size: 1Gi}}")).unwrap(),
                        )
                        .stateful_set,
                    )
                    .unwrap();
                    sts["spec"]["replicas"] = json!(running);
                    (200, sts)
                }
                "GET" if line.ends_with("/pods") => (
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                           "items": (0..pods).map(|i| pod_json(i, "new")).collect::<Vec<_>>()}),
                ),
                "GET" if line.ends_with("/persistentvolumeclaims") => (
                    200,
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                           "items": (0..6).map(|i| json!({"metadata": {"name": format!("data-x-{i}")}}))
                               .collect::<Vec<_>>()}),
                ),
                "GET" if line.contains("/persistentvolumeclaims/") => mock_api::not_found(),
                "PATCH" if line.ends_with("/statefulsets/x") => {
                    let mut body = r.body.clone();
                    let replicas = body["spec"]["replicas"].clone();
                    body["metadata"]["generation"] = json!(1);
                    body["status"] = json!({"replicas": replicas, "observedGeneration": 1,
                                            "updateRevision": "new"});
                    (200, body)
                }
                "PATCH" if line.ends_with("/clusters/x/status") => {
                    let mut body = serde_json::to_value(cluster("{storage: {size: 1Gi}}")).unwrap();
                    body["status"] = r.body["status"].clone();
                    (200, body)
                }
                "DELETE" => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                _ => (200, r.body.clone()),
            }
        }
    }

    fn scaling_context(
        client: Client,
        brokers: i32,
        fenced_from: i32,
        fake: &FakeKafka,
    ) -> Context {
        let mut ctx = context(client, true);
        ctx.brokers = BrokerSource::Fixed((
            ClusterDescription {
                cluster_id: "c1".into(),
                controller_id: 0,
                brokers: (0..brokers)
                    .map(|node_id| crate::kafka_admin::BrokerInfo {
                        node_id,
                        host: format!("x-{node_id}"),
                        port: 9092,
                        rack: None,
                        is_fenced: node_id >= fenced_from,
                    })
                    .collect(),
            },
            BrokerView {
                registered: (0..brokers.min(fenced_from)).collect(),
                controller: Some(0),
                partitions: vec![],
            },
        ));
        ctx.fake_kafka = Some(fake.clone());
        ctx
    }

    fn sts_replicas_applied(log: &[Recorded]) -> Vec<Value> {
        log.iter()
            .filter(|r| r.method == "PATCH" && r.line().ends_with("/statefulsets/x"))
            .map(|r| r.body["spec"]["replicas"].clone())
            .collect()
    }

    fn written_condition(log: &[Recorded], type_: &str) -> Value {
        log.iter()
            .rfind(|r| r.line().ends_with("/clusters/x/status"))
            .expect("a status write")
            .body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
            .clone()
    }

    fn spread(partitions: i32, rf: i32, brokers: i32) -> Assignments {
        (0..partitions)
            .map(|p| {
                (
                    ("t".to_string(), p),
                    (0..rf).map(|i| (p + i) % brokers).collect(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_refused_scale_down_writes_degraded_and_keeps_the_stateful_set() {
        let (client, log) = mock_api::client(scaling_server(5, 5));
        // RF 4 does not fit on 3 brokers.
        let fake = FakeKafka::new(5, &spread(10, 4, 5));
        let ctx = scaling_context(client, 5, 5, &fake);
        let action = reconcile_cluster(&cluster("{replicas: 3, storage: {size: 1Gi}}"), &ctx)
            .await
            .unwrap();
        assert_eq!(action, Action::requeue(BUSY_REQUEUE));
        let log = log.lock().unwrap();
        assert_eq!(sts_replicas_applied(&log), [json!(5)]);
        assert!(log.iter().all(|r| r.method != "DELETE"));
        let degraded = written_condition(&log, "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "ScaleDownRefused");
        assert_eq!(
            degraded["message"],
            "topic t has replication factor 4, more than the 3 brokers that would remain; \
             keep at least 4 brokers"
        );
        assert_eq!(written_condition(&log, "Ready")["status"], "True");
        assert!(fake.state().reassigned.is_empty());
    }

    #[tokio::test]
    async fn a_refusal_clears_when_the_replicas_go_back() {
        let (client, log) = mock_api::client(scaling_server(5, 5));
        let fake = FakeKafka::new(5, &spread(10, 4, 5));
        let ctx = scaling_context(client, 5, 5, &fake);
        reconcile_cluster(&cluster("{replicas: 5, storage: {size: 1Gi}}"), &ctx)
            .await
            .unwrap();
        let log = log.lock().unwrap();
        assert_eq!(sts_replicas_applied(&log), [json!(5)]);
        let degraded = written_condition(&log, "Degraded");
        assert_eq!(degraded["status"], "False");
    }

    #[tokio::test]
    async fn a_scale_down_drains_before_the_stateful_set_shrinks() {
        let (client, log) = mock_api::client(scaling_server(5, 5));
        let fake = FakeKafka::new(5, &spread(20, 2, 5));
        let ctx = scaling_context(client, 5, 5, &fake);
        let action = reconcile_cluster(&cluster("{replicas: 3, storage: {size: 1Gi}}"), &ctx)
            .await
            .unwrap();
        assert_eq!(action, Action::requeue(rebalance::MOVING_REQUEUE));
        let log = log.lock().unwrap();
        assert_eq!(
            sts_replicas_applied(&log),
            [json!(5)],
            "held while draining"
        );
        let progressing = written_condition(&log, "Progressing");
        assert_eq!(progressing["reason"], "Draining");
        assert_eq!(written_condition(&log, "Degraded")["status"], "False");
        let status = &log
            .iter()
            .rfind(|r| r.line().ends_with("/clusters/x/status"))
            .unwrap()
            .body["status"];
        // Partitions p with p % 5 in {2, 3, 4} touch broker 3 or 4: 12 of 20.
        assert_eq!(
            status["rebalance"],
            json!({"partitionsMoved": 0, "partitionsToMove": 12})
        );
        assert_eq!(fake.state().reassigned.len(), rebalance::MAX_MOVES);
    }

    #[tokio::test]
    async fn drained_brokers_are_removed_then_unregistered_and_their_claims_deleted() {
        // Drained: nothing on 3 and 4. The StatefulSet shrinks to 3.
        let (client, log) = mock_api::client(scaling_server(5, 5));
        let fake = FakeKafka::new(5, &spread(6, 2, 3));
        let ctx = scaling_context(client, 5, 5, &fake);
        let c = cluster("{replicas: 3, storage: {size: 1Gi, deleteClaimsOnScaleDown: true}}");
        reconcile_cluster(&c, &ctx).await.unwrap();
        {
            let log = log.lock().unwrap();
            assert_eq!(sts_replicas_applied(&log), [json!(3)]);
            let progressing = written_condition(&log, "Progressing");
            assert_eq!(progressing["reason"], "Draining");
            assert_eq!(progressing["message"], "waiting for pods x-3, x-4 to go");
            assert!(log.iter().all(|r| r.method != "DELETE"), "pods still there");
        }
        assert!(fake.state().unregistered.is_empty());

        // Pods 3 and 4 are gone; the quorum still lists them, fenced.
        let (client, log) = mock_api::client(scaling_server(3, 3));
        let ctx = scaling_context(client, 5, 3, &fake);
        let action = reconcile_cluster(&c, &ctx).await.unwrap();
        assert_eq!(action, Action::requeue(IDLE_REQUEUE));
        assert_eq!(fake.state().unregistered, [3, 4]);
        let log = log.lock().unwrap();
        let deleted: Vec<String> = log
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(Recorded::line)
            .collect();
        assert_eq!(
            deleted,
            [
                "DELETE /api/v1/namespaces/ns/persistentvolumeclaims/data-x-3",
                "DELETE /api/v1/namespaces/ns/persistentvolumeclaims/data-x-4",
                "DELETE /api/v1/namespaces/ns/persistentvolumeclaims/data-x-5",
            ]
        );
        assert_eq!(written_condition(&log, "Progressing")["status"], "False");
    }

    #[tokio::test]
    async fn claims_are_kept_while_a_broker_cannot_be_unregistered_or_by_default() {
        let fake = FakeKafka::new(3, &spread(6, 2, 3));
        fake.state().unregister_answer = Unregistered::Unsupported;
        let (client, log) = mock_api::client(scaling_server(3, 3));
        let ctx = scaling_context(client, 5, 3, &fake);
        let c = cluster("{replicas: 3, storage: {size: 1Gi, deleteClaimsOnScaleDown: true}}");
        reconcile_cluster(&c, &ctx).await.unwrap();
        let deleted: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(Recorded::line)
            .collect();
        // Broker 5 was never registered: its claim goes; 3 and 4 stay registered.
        assert_eq!(
            deleted,
            ["DELETE /api/v1/namespaces/ns/persistentvolumeclaims/data-x-5"]
        );

        let fake = FakeKafka::new(3, &spread(6, 2, 3));
        let (client, log) = mock_api::client(scaling_server(3, 3));
        let ctx = scaling_context(client, 5, 3, &fake);
        reconcile_cluster(&cluster("{replicas: 3, storage: {size: 1Gi}}"), &ctx)
            .await
            .unwrap();
        assert_eq!(fake.state().unregistered, [3, 4]);
        assert!(log.lock().unwrap().iter().all(|r| r.method != "DELETE"));
    }

    #[tokio::test]
    async fn a_scale_up_rebalances_onto_the_new_brokers_once_registered() {
        let fake = FakeKafka::new(5, &spread(12, 3, 3));
        // Brokers 3 and 4 not registered yet: nothing moves, pods are awaited.
        let (client, log) = mock_api::client(scaling_server(3, 5));
        let ctx = scaling_context(client, 3, 3, &fake);
        let c = cluster("{replicas: 5, storage: {size: 1Gi}}");
        reconcile_cluster(&c, &ctx).await.unwrap();
        assert_eq!(sts_replicas_applied(&log.lock().unwrap()), [json!(5)]);
        assert!(fake.state().reassigned.is_empty());

        // All five registered: the first batch goes out.
        let (client, log) = mock_api::client(scaling_server(5, 5));
        let ctx = scaling_context(client, 5, 5, &fake);
        let action = reconcile_cluster(&c, &ctx).await.unwrap();
        assert_eq!(action, Action::requeue(rebalance::MOVING_REQUEUE));
        let log = log.lock().unwrap();
        let progressing = written_condition(&log, "Progressing");
        assert_eq!(progressing["reason"], "Rebalancing");
        // 36 replicas over 5 brokers: 3 and 4 take 7 each (14 replicas), in 7 partitions
        // that each send one replica to 3 and one to 4.
        assert_eq!(progressing["message"], "moved 0 of 7 partitions");
        let reassigned = fake.state().reassigned.clone();
        // Preferred leaders come out balanced through these same partitions: no reorder.
        assert_eq!(reassigned.len(), 7, "{reassigned:?}");
        for m in &reassigned {
            assert!(m.replicas.contains(&3) && m.replicas.contains(&4), "{m:?}");
        }
    }

    #[tokio::test]
    async fn a_balanced_cluster_elects_preferred_leaders_and_ends_the_rebalance() {
        let a = spread(10, 2, 5);
        let fake = FakeKafka::new(5, &a);
        // t-0 is led by its second replica.
        fake.state().metadata.topics[0].partitions[0].leader = a[&("t".to_string(), 0)][1];
        let (client, log) = mock_api::client(scaling_server(5, 5));
        let ctx = scaling_context(client, 5, 5, &fake);
        let mut c = cluster("{replicas: 5, storage: {size: 1Gi}}");
        c.status = Some(crate::crd::cluster::ClusterStatus {
            rebalance: Some(crate::crd::cluster::RebalanceStatus {
                partitions_moved: 8,
                partitions_to_move: 10,
            }),
            ..Default::default()
        });
        let action = reconcile_cluster(&c, &ctx).await.unwrap();
        assert_eq!(action, Action::requeue(IDLE_REQUEUE));
        assert_eq!(fake.state().elected, [("t".to_string(), 0)]);
        assert!(fake.state().reassigned.is_empty());
        let log = log.lock().unwrap();
        let status = &log
            .iter()
            .rfind(|r| r.line().ends_with("/clusters/x/status"))
            .unwrap()
            .body["status"];
        assert!(status.get("rebalance").is_none(), "{status}");
        assert_eq!(written_condition(&log, "Progressing")["reason"], "Stable");
    }
}
