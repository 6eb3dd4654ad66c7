//! Apply: the built objects go to the apiserver by server-side apply, one field manager,
//! forced, in a fixed order (ServiceAccount, ConfigMap, Services, PDB, StatefulSet last, so
//! pods never start before what they mount and resolve exists).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::build::{selector_string, Desired, DATA_VOLUME};
use super::validate::parse_quantity;
use crate::crd::cluster::{Cluster, ClusterStatus};
use crate::Error;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "rill-operator";

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    Ok(api
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await?)
}

/// What `apply_all` did.
#[derive(Debug)]
pub struct Applied {
    /// The StatefulSet as the apiserver has it now.
    pub stateful_set: StatefulSet,
    /// The StatefulSet is being replaced to take a larger volume claim template (deleted
    /// with its pods orphaned); the next reconcile creates it again and it adopts them.
    pub replacing: bool,
    /// Claims whose growth the apiserver refused (e.g. a class without volume expansion).
    pub expansion_refused: Vec<String>,
}

/// Applies every object in order. The StatefulSet's replicas are taken as given: the
/// controller decides them (a scale-down only once the leaving brokers are drained).
///
/// A larger `storage.size` grows each broker's claim, then replaces the StatefulSet,
/// whose volumeClaimTemplates are immutable: it is deleted with `propagationPolicy:
/// Orphan` (the pods keep running) and created again with the new template, which
/// adopts the pods. The pod template does not change, so no broker restarts.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: Desired,
) -> Result<Applied, Error> {
    apply(client, namespace, &desired.service_account).await?;
    apply(client, namespace, &desired.config_map).await?;
    apply(client, namespace, &desired.headless_service).await?;
    apply(client, namespace, &desired.bootstrap_service).await?;
    apply(client, namespace, &desired.pdb).await?;

    let sts = desired.stateful_set;
    let name = sts.name_any();
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let mut expansion_refused = Vec::new();
    let existing = api.get_opt(&name).await?;
    if let Some(existing) = existing.clone() {
        if existing.metadata.deletion_timestamp.is_some() {
            // Our orphan delete is still under way (the garbage collector releases the pods).
            return Ok(Applied {
                stateful_set: existing,
                replacing: true,
                expansion_refused,
            });
        }
        let template_size = |s: &StatefulSet| {
            s.spec
                .as_ref()?
                .volume_claim_templates
                .as_ref()?
                .first()
                .and_then(claim_size)
        };
        let wanted = template_size(&sts);
        let current = template_size(&existing);
        if let (Some(wanted), Some(current)) = (wanted, current) {
            if parse_quantity(&wanted) > parse_quantity(&current) {
                let replicas = existing.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                expansion_refused =
                    expand_volumes(client, namespace, &name, replicas, &wanted).await;
                info!(statefulset = %name, from = %current, to = %wanted,
                      "replacing the StatefulSet for its larger volume claim template; pods are orphaned, not restarted");
                let orphan = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Orphan),
                    preconditions: Some(Preconditions {
                        uid: existing.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                api.delete(&name, &orphan).await?;
                return Ok(Applied {
                    stateful_set: existing,
                    replacing: true,
                    expansion_refused,
                });
            }
        }
    }
    // Every reconcile checks the claims against the template, so a refused growth stays
    // reported until it is fixed, and a claim created before a resize is grown too.
    if let (Some(_), Some(size), Some(replicas)) = (
        &existing,
        sts.spec.as_ref().and_then(|s| {
            s.volume_claim_templates
                .as_ref()?
                .first()
                .and_then(claim_size)
        }),
        sts.spec.as_ref().and_then(|s| s.replicas),
    ) {
        expansion_refused = expand_volumes(client, namespace, &name, replicas, &size).await;
    }
    Ok(Applied {
        stateful_set: apply(client, namespace, &sts).await?,
        replacing: false,
        expansion_refused,
    })
}

fn claim_size(claim: &PersistentVolumeClaim) -> Option<String> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.clone())
}

/// Raises `resources.requests.storage` of each broker's PVC below `size`; returns the
/// claims whose growth was refused (volume expansion depends on the StorageClass).
async fn expand_volumes(
    client: &Client,
    namespace: &str,
    sts: &str,
    replicas: i32,
    size: &str,
) -> Vec<String> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let mut refused = Vec::new();
    let Some(wanted) = parse_quantity(size) else {
        return refused;
    };
    for ordinal in 0..replicas {
        let pvc_name = format!("{DATA_VOLUME}-{sts}-{ordinal}");
        let current = match api.get_opt(&pvc_name).await {
            Ok(Some(pvc)) => claim_size(&pvc),
            Ok(None) => continue,
            Err(e) => {
                warn!(pvc = %pvc_name, error = %e, "reading PVC for expansion");
                continue;
            }
        };
        if current
            .as_deref()
            .and_then(parse_quantity)
            .is_some_and(|c| c >= wanted)
        {
            continue;
        }
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(&pvc_name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => info!(pvc = %pvc_name, size, "expanding volume"),
            Err(e) => {
                warn!(pvc = %pvc_name, size, error = %e, "volume expansion refused");
                refused.push(format!("{pvc_name}: {e}"));
            }
        }
    }
    refused
}

/// The cluster's broker pods, read from the apiserver (not a cache): the rolling restart
/// must not act on a pod list older than its last delete.
pub async fn list_pods(client: &Client, namespace: &str, cluster: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(&selector_string(cluster)))
        .await?;
    Ok(pods.items)
}

/// Deletes one broker pod, only if it is still the pod that was judged outdated.
pub async fn delete_pod(
    client: &Client,
    namespace: &str,
    pod: &str,
    uid: Option<String>,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => Ok(()),
        // Already gone or replaced: the next reconcile sees the new pod.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the status subresource, by server-side apply with the same field manager.
pub async fn patch_status(
    client: &Client,
    cluster: &Cluster,
    status: &ClusterStatus,
) -> Result<(), Error> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({
        "apiVersion": "rill.dev/v1alpha1",
        "kind": "Cluster",
        "status": status,
    });
    api.patch_status(&cluster.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::build::build;
    use crate::cluster::validate::validate;
    use crate::mock_api::{self, Recorded};
    use serde_json::Value;

    fn desired(size: &str) -> Desired {
        let cluster: Cluster = serde_yaml::from_str(&format!(
            "apiVersion: rill.dev/v1alpha1\nkind: Cluster\n\
             metadata: {{name: x, namespace: ns, uid: u1}}\nspec: {{storage: {{size: {size}}}}}\n"
        ))
        .unwrap();
        build(&validate(&cluster).unwrap())
    }

    /// Server-side apply answers with the applied object.
    fn echo(r: &Recorded) -> (u16, Value) {
        (200, r.body.clone())
    }

    #[tokio::test]
    async fn applies_every_object_in_order_with_one_forced_field_manager() {
        let (client, log) = mock_api::client(|r| match r.method.as_str() {
            "GET" => mock_api::not_found(),
            _ => echo(r),
        });
        apply_all(&client, "ns", desired("10Gi")).await.unwrap();
        let log = log.lock().unwrap();
        let lines: Vec<String> = log.iter().map(Recorded::line).collect();
        assert_eq!(
            lines,
            [
                "PATCH /api/v1/namespaces/ns/serviceaccounts/x-broker",
                "PATCH /api/v1/namespaces/ns/configmaps/x-config",
                "PATCH /api/v1/namespaces/ns/services/x-brokers",
                "PATCH /api/v1/namespaces/ns/services/x-bootstrap",
                "PATCH /apis/policy/v1/namespaces/ns/poddisruptionbudgets/x",
                "GET /apis/apps/v1/namespaces/ns/statefulsets/x",
                "PATCH /apis/apps/v1/namespaces/ns/statefulsets/x",
            ]
        );
        for r in log.iter().filter(|r| r.method == "PATCH") {
            assert_eq!(r.content_type, "application/apply-patch+yaml", "{}", r.uri);
            assert!(r.uri.contains("fieldManager=rill-operator"), "{}", r.uri);
            assert!(r.uri.contains("force=true"), "{}", r.uri);
        }
        assert_eq!(log[0].body["kind"], "ServiceAccount");
        assert_eq!(log[6].body["kind"], "StatefulSet");
        assert_eq!(log[6].body["apiVersion"], "apps/v1");
    }

    #[tokio::test]
    async fn a_bigger_size_grows_the_pvcs_and_replaces_the_statefulset_without_its_pods() {
        let existing = serde_json::to_value(&desired("10Gi").stateful_set).unwrap();
        let (client, log) = mock_api::client(move |r| match (r.method.as_str(), r.line()) {
            ("GET", l) if l.ends_with("/statefulsets/x") => (200, existing.clone()),
            ("GET", l) if l.ends_with("/data-x-2") => mock_api::not_found(),
            ("GET", l) if l.contains("/persistentvolumeclaims/") => (
                200,
                serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "data-x-0"},
                    "spec": {"resources": {"requests": {"storage": "10Gi"}}}}),
            ),
            _ => echo(r),
        });
        apply_all(&client, "ns", desired("20Gi")).await.unwrap();
        let log = log.lock().unwrap();
        let grown: Vec<(String, &Value)> = log
            .iter()
            .filter(|r| r.method == "PATCH" && r.uri.contains("/persistentvolumeclaims/"))
            .map(|r| {
                (
                    r.line(),
                    &r.body["spec"]["resources"]["requests"]["storage"],
                )
            })
            .collect();
        assert_eq!(
            grown,
            [
                (
                    "PATCH /api/v1/namespaces/ns/persistentvolumeclaims/data-x-0".to_string(),
                    &Value::from("20Gi")
                ),
                (
                    "PATCH /api/v1/namespaces/ns/persistentvolumeclaims/data-x-1".to_string(),
                    &Value::from("20Gi")
                ),
            ]
        );
        let pvc_patch = log
            .iter()
            .find(|r| r.uri.contains("/persistentvolumeclaims/data-x-0") && r.method == "PATCH")
            .unwrap();
        assert_eq!(pvc_patch.content_type, "application/merge-patch+json");
        // The template is immutable: the StatefulSet is deleted with its pods orphaned
        // (nothing restarts), to be created again with the new template.
        let sts = log.last().unwrap();
        assert_eq!(
            sts.line(),
            "DELETE /apis/apps/v1/namespaces/ns/statefulsets/x"
        );
        assert_eq!(sts.body["propagationPolicy"], "Orphan");
        assert!(log
            .iter()
            .all(|r| !(r.method == "PATCH" && r.uri.contains("/statefulsets/"))));
    }

    #[tokio::test]
    async fn a_statefulset_being_replaced_is_left_alone_until_it_is_gone() {
        let mut existing = serde_json::to_value(&desired("10Gi").stateful_set).unwrap();
        existing["metadata"]["deletionTimestamp"] = "2026-11-22T05:00:00Z".into();
        let (client, log) = mock_api::client(move |r| match (r.method.as_str(), r.line()) {
            ("GET", l) if l.ends_with("/statefulsets/x") => (200, existing.clone()),
            _ => echo(r),
        });
        let applied = apply_all(&client, "ns", desired("20Gi")).await.unwrap();
        assert!(applied.replacing);
        let log = log.lock().unwrap();
        assert_eq!(
            log.last().unwrap().line(),
            "GET /apis/apps/v1/namespaces/ns/statefulsets/x"
        );
    }

    #[tokio::test]
    async fn deleting_a_pod_sends_its_uid_as_precondition_and_tolerates_it_being_gone() {
        let (client, log) = mock_api::client(|_| mock_api::not_found());
        delete_pod(&client, "ns", "x-2", Some("uid-2".into()))
            .await
            .unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log[0].line(), "DELETE /api/v1/namespaces/ns/pods/x-2");
        assert_eq!(log[0].body["preconditions"]["uid"], "uid-2");
    }

    #[tokio::test]
    async fn status_is_applied_to_the_status_subresource() {
        let (client, log) = mock_api::client(|r| {
            let mut body = r.body.clone();
            body["metadata"] = serde_json::json!({"name": "x", "namespace": "ns"});
            body["spec"] = serde_json::json!({"storage": {"size": "1Gi"}});
            (200, body)
        });
        let cluster: Cluster = serde_yaml::from_str(
            "apiVersion: rill.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x, namespace: ns}\nspec: {storage: {size: 1Gi}}\n",
        )
        .unwrap();
        let status = ClusterStatus {
            ready_brokers: 2,
            ..ClusterStatus::default()
        };
        patch_status(&client, &cluster, &status).await.unwrap();
        let log = log.lock().unwrap();
        assert_eq!(
            log[0].line(),
            "PATCH /apis/rill.dev/v1alpha1/namespaces/ns/clusters/x/status"
        );
        assert!(log[0].uri.contains("fieldManager=rill-operator"));
        assert_eq!(log[0].body["status"]["readyBrokers"], 2);
        assert_eq!(log[0].body["kind"], "Cluster");
    }

    #[tokio::test]
    async fn the_replicas_decided_by_the_controller_are_applied_even_when_fewer() {
        let mut running = desired("10Gi").stateful_set;
        running.spec.as_mut().unwrap().replicas = Some(5);
        let existing = serde_json::to_value(&running).unwrap();
        let (client, log) = mock_api::client(move |r| match r.method.as_str() {
            "GET" => (200, existing.clone()),
            _ => echo(r),
        });
        let applied = apply_all(&client, "ns", desired("10Gi")).await.unwrap();
        assert_eq!(applied.stateful_set.spec.unwrap().replicas, Some(3));
        assert_eq!(
            log.lock().unwrap().last().unwrap().body["spec"]["replicas"],
            3
        );
    }
}
