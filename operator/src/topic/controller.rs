//! Wiring of the `Topic` controller: a finalizer so deleting a Topic deletes the topic,
//! the Cluster lookup, the Kafka reconcile (`reconcile.rs`) and the status (`status.rs`).
//! The spec wins: a periodic resync puts back configs changed out of band.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{
    predicates, reflector, watcher, Controller, Predicate, PredicateConfig, WatchStreamExt,
};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::plan::{SpecStatus, TopicSpecView};
use super::reconcile::{delete, reconcile_with};
use super::status::{self, Blocked};
use crate::cluster::apply::FIELD_MANAGER;
use crate::cluster::build::bootstrap_address;
use crate::controller::Context;
use crate::crd::topic::FINALIZER;
use crate::crd::{Cluster, Topic, TopicStatus};
use crate::kafka_admin::{AdminClient, AdminConfig, AdminError};
use crate::Error;

const CONTROLLER: &str = "topic";
/// How often a synced topic is compared with its spec again (drift is only seen then).
const RESYNC: Duration = Duration::from_secs(30);
/// Retry of a Topic whose Cluster is missing: it may be created later.
const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(10);

/// Runs the controller until `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let topics: Api<Topic> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // Status writes must not trigger a reconcile: it would overwrite the status it just
    // wrote (a DriftCorrected report would last milliseconds). Spec (generation),
    // annotations (unmanaged) and finalizers still do; resyncs requeue on their own.
    let (reader, writer) = reflector::store();
    let triggers = watcher(topics, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(predicates::finalizers),
            PredicateConfig::default(),
        );
    Controller::for_stream(triggers, reader)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "topic controller");
            }
        })
        .await;
}

fn key(topic: &Topic) -> String {
    format!(
        "topic:{}/{}",
        topic.namespace().unwrap_or_default(),
        topic.name_any()
    )
}

async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let namespace = topic
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    let run = finalizer(&api, FINALIZER, topic.clone(), |event| async {
        match event {
            Event::Apply(t) => apply(&t, &ctx, &namespace).await,
            Event::Cleanup(t) => cleanup(&t, &ctx, &namespace).await,
        }
    });
    ctx.measured(CONTROLLER, &key(&topic), async {
        run.await.map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

fn error_policy(topic: Arc<Topic>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(&topic));
    warn!(topic = %key(&topic), %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The bootstrap address of the Cluster a Topic names, or why there is none.
async fn bootstrap(topic: &Topic, ctx: &Context, namespace: &str) -> Result<Option<String>, Error> {
    let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &topic.spec.cluster_ref.name;
    Ok(clusters
        .get_opt(name)
        .await?
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            c.status.and_then(|s| s.bootstrap).unwrap_or_else(|| {
                bootstrap_address(name, namespace, c.spec.listeners.internal.port)
            })
        }))
}

async fn apply(topic: &Topic, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    if !topic.is_managed() {
        write_status(
            ctx,
            topic,
            namespace,
            status::blocked(topic, &Blocked::Unmanaged, &now),
        )
        .await?;
        return Ok(Action::await_change());
    }
    let Some(bootstrap) = bootstrap(topic, ctx, namespace).await? else {
        let why = Blocked::ClusterNotFound(topic.spec.cluster_ref.name.clone());
        write_status(ctx, topic, namespace, status::blocked(topic, &why, &now)).await?;
        return Ok(Action::requeue(WAIT_FOR_CLUSTER));
    };
    let spec = TopicSpecView {
        name: topic.kafka_name(),
        partitions: topic.spec.partitions,
        replication_factor: topic.spec.replication_factor,
        config: topic.spec.config.clone(),
    };
    // Differences in a generation already applied can only come from outside the spec.
    let applied_before = topic.status.as_ref().and_then(|s| s.observed_generation);
    let spec_status = if applied_before.is_some() && applied_before == topic.metadata.generation {
        SpecStatus::Applied
    } else {
        SpecStatus::Changed
    };
    let outcome = match connect(&bootstrap).await {
        Ok(mut admin) => reconcile_with(&mut admin, &spec, spec_status).await,
        Err(e) => Err(e),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let why = Blocked::ClusterUnreachable(e.to_string());
            write_status(ctx, topic, namespace, status::blocked(topic, &why, &now)).await?;
            return Err(e.into());
        }
    };
    if !outcome.applied.is_empty() {
        info!(topic = %key(topic), applied = ?outcome.applied, "topic changed to match its spec");
    }
    write_status(
        ctx,
        topic,
        namespace,
        status::from_outcome(topic, &outcome, &now),
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

async fn cleanup(topic: &Topic, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    if !topic.is_managed() {
        return Ok(Action::await_change());
    }
    // With its Cluster gone (or going) there is no topic left to delete: the
    // finalizer must not hold the Topic forever.
    let Some(bootstrap) = bootstrap(topic, ctx, namespace).await? else {
        info!(topic = %key(topic), "Cluster gone: releasing the Topic");
        return Ok(Action::await_change());
    };
    let mut admin = connect(&bootstrap).await?;
    delete(&mut admin, &topic.kafka_name()).await?;
    info!(topic = %key(topic), "deleted the topic");
    Ok(Action::await_change())
}

async fn connect(bootstrap: &str) -> Result<AdminClient, AdminError> {
    AdminClient::connect(&[bootstrap.to_string()], AdminConfig::default()).await
}

async fn write_status(
    ctx: &Context,
    topic: &Topic,
    namespace: &str,
    new: TopicStatus,
) -> Result<(), Error> {
    if topic.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({ "apiVersion": "rill.dev/v1alpha1", "kind": "Topic", "status": new });
    api.patch_status(
        &topic.name_any(),
        &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
