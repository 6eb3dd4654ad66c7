//! Wiring of the `Cluster` controller: watches, the reconcile pipeline, error backoff.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

use crate::cluster::rolling::{self, RollDecision};
use crate::cluster::rolling::{BrokerView, PartitionView};
use crate::cluster::{apply, build, status, validate};
use crate::crd::Cluster;
use crate::kafka_admin::{AdminClient, AdminConfig};
use crate::metrics::Metrics;
use crate::Error;

const CONTROLLER: &str = "cluster";
/// Only our own children and broker pods are watched.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=rill-operator";
/// Requeue while something is moving (pods starting, a roll in progress).
const BUSY_REQUEUE: Duration = Duration::from_secs(10);
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
}

/// The brokers' answers (cluster id and BrokerView); tests give fixed ones.
pub(crate) enum BrokerSource {
    Kafka,
    #[cfg(test)]
    Fixed((String, BrokerView)),
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, leader: watch::Receiver<bool>) -> Self {
        Self {
            client,
            metrics,
            leader,
            failures: Mutex::new(HashMap::new()),
            brokers: BrokerSource::Kafka,
        }
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
    ctx.metrics
        .reconciles
        .with_label_values(&[CONTROLLER])
        .inc();
    let timer = ctx
        .metrics
        .duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    let started = Instant::now();
    let result = reconcile_cluster(&cluster, &ctx).await;
    timer.observe_duration();
    match &result {
        Ok(_) => ctx.succeeded(&key(&cluster)),
        Err(e) => {
            ctx.metrics
                .errors
                .with_label_values(&[CONTROLLER, e.metric_label()])
                .inc();
        }
    }
    tracing::debug!(cluster = %key(&cluster), elapsed_ms = started.elapsed().as_millis() as u64, "reconcile");
    result
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
                scale_down_held: None,
                cluster_id: None,
            };
            apply::patch_status(client, cluster, &status::compute(cluster, &observed, &now))
                .await?;
            // Nothing to retry until the spec changes.
            return Ok(Action::await_change());
        }
    };

    let applied = apply::apply_all(client, &namespace, build::build(&validated)).await?;
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
        scale_down_held: applied.scale_down_held,
        cluster_id: described.as_ref().map(|(id, _)| id.as_str()),
    };
    let new_status = status::compute(cluster, &observed, &now);
    let settled = roll == RollDecision::UpToDate
        && applied.scale_down_held.is_none()
        && new_status.ready_brokers == validated.replicas
        && new_status.replicas == validated.replicas;
    if cluster.status.as_ref() != Some(&new_status) {
        apply::patch_status(client, cluster, &new_status).await?;
    }
    Ok(Action::requeue(if settled {
        IDLE_REQUEUE
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
async fn observe_brokers(bootstrap: &str, default_min_insync: i32) -> Option<(String, BrokerView)> {
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
            d.cluster_id,
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
            "c1".into(),
            BrokerView {
                registered: (0..3).collect(),
                controller: Some(0),
                partitions: vec![],
            },
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
}
