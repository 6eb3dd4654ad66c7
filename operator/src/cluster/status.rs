//! Status: what the cluster looks like, computed from the observed StatefulSet and pods
//! (pure), with the standard conditions Ready, Progressing and Degraded.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::build::{bootstrap_address, selector_string};
use super::rolling::{is_ready, RollDecision};
use super::scaling::{ScaleActivity, ScaleRefusal};
use super::validate::{ValidatedCluster, ValidationError};
use crate::crd::cluster::{Cluster, ClusterStatus, DEFAULT_KAFKA_PORT};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Container waiting reasons that will not clear up by themselves.
const FAILING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
];

/// What the reconcile saw: the validation outcome, the applied StatefulSet and its pods.
pub struct Observed<'a> {
    pub validated: Result<&'a ValidatedCluster, &'a ValidationError>,
    pub stateful_set: Option<&'a StatefulSet>,
    pub pods: &'a [Pod],
    pub roll: &'a RollDecision,
    /// A scale-down refused or draining, or a rebalance under way (see `rebalance.rs`).
    pub scaling: Option<&'a ScaleActivity>,
    /// The cluster id the brokers answered DescribeCluster with, if they were asked.
    pub cluster_id: Option<&'a str>,
    /// Claims whose growth to `storage.size` the apiserver refused.
    pub expansion_refused: &'a [String],
}

/// The status to write. `now` stamps conditions whose status changed; the others keep
/// their previous `lastTransitionTime`.
pub fn compute(cluster: &Cluster, observed: &Observed<'_>, now: &Time) -> ClusterStatus {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let old = cluster.status.clone().unwrap_or_default();
    let desired = cluster.spec.replicas;

    let ready = observed.pods.iter().filter(|p| is_ready(p)).count() as i32;
    let replicas = observed
        .stateful_set
        .and_then(|s| s.status.as_ref())
        .map_or(0, |s| s.replicas);
    let sts_current = observed.stateful_set.is_some_and(|s| {
        s.status.as_ref().and_then(|st| st.observed_generation) >= s.metadata.generation
    });
    let failing = observed
        .pods
        .iter()
        .find_map(|p| failing_container(p).or_else(|| not_ready_too_long(p, now)));

    let degraded = match (&observed.validated, &failing, observed.scaling) {
        (Err(e), _, _) => (true, e.reason(), e.to_string()),
        (Ok(_), Some(msg), _) => (true, "BrokerFailing", msg.clone()),
        (Ok(_), None, Some(ScaleActivity::Refused(refusal, _))) => {
            (true, ScaleRefusal::REASON, refusal.to_string())
        }
        (Ok(_), None, _) if !observed.expansion_refused.is_empty() => (
            true,
            "VolumeExpansionRefused",
            observed.expansion_refused.join("; "),
        ),
        (Ok(_), None, _) => (false, "AsExpected", String::new()),
    };
    let (draining, rebalancing) = match observed.scaling {
        Some(ScaleActivity::Draining { message, .. }) => (Some(message.clone()), None),
        Some(ScaleActivity::Rebalancing { message, .. }) => (None, Some(message.clone())),
        _ => (None, None),
    };
    let progressing = match (&observed.validated, observed.roll) {
        (Err(_), _) => (
            false,
            "InvalidSpec",
            "the spec is refused; see Degraded".into(),
        ),
        (Ok(_), _) if matches!(observed.scaling, Some(ScaleActivity::Refused(..))) => {
            (false, ScaleRefusal::REASON, "see Degraded".into())
        }
        (Ok(_), _) if !sts_current => (true, "Applying", "the StatefulSet is being updated".into()),
        (Ok(_), RollDecision::Restart { outdated, pod, .. }) => (
            true,
            "RollingRestart",
            format!("{outdated} pods outdated; restarting {pod}"),
        ),
        (Ok(_), RollDecision::Wait { outdated, reason }) if *outdated > 0 => (
            true,
            "RollingRestart",
            format!("{outdated} pods outdated; waiting: {reason}"),
        ),
        (Ok(_), _) if draining.is_some() => (true, "Draining", draining.unwrap_or_default()),
        (Ok(_), _) if ready != desired || replicas != desired => (
            true,
            "Scaling",
            format!("{ready} of {desired} brokers ready"),
        ),
        (Ok(_), _) if rebalancing.is_some() => {
            (true, "Rebalancing", rebalancing.unwrap_or_default())
        }
        (Ok(_), _) => (false, "Stable", String::new()),
    };
    let warnings = observed
        .validated
        .map(|v| v.warnings.join("; "))
        .unwrap_or_default();
    let ready_condition = if observed.validated.is_ok() && ready >= desired {
        let mut msg = format!("{ready} of {desired} brokers ready");
        if !warnings.is_empty() {
            msg.push_str(&format!("; warning: {warnings}"));
        }
        (true, "AllBrokersReady", msg)
    } else {
        (
            false,
            "BrokersNotReady",
            format!("{ready} of {desired} brokers ready"),
        )
    };

    let conditions = [
        (READY, ready_condition),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        condition(
            &old.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    })
    .collect();

    let port = observed
        .validated
        .map_or(DEFAULT_KAFKA_PORT, |v| v.kafka_port);
    ClusterStatus {
        observed_generation: generation,
        conditions,
        ready_brokers: ready,
        replicas,
        cluster_id: observed.cluster_id.map(str::to_string).or(old.cluster_id),
        bootstrap: Some(bootstrap_address(&name, &namespace, port)),
        selector: Some(selector_string(&name)),
        rebalance: observed.scaling.and_then(|s| s.progress()).cloned(),
    }
}

/// How long a started broker may take to become ready (register, catch up with the
/// metadata log, get unfenced) before the cluster is reported Degraded.
pub const BROKER_READY_TIMEOUT_S: i64 = 180;

/// `pod x-1 not ready 181 s after it started`, for a broker that never comes back.
fn not_ready_too_long(pod: &Pod, now: &Time) -> Option<String> {
    if is_ready(pod) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let started = pod.status.as_ref()?.start_time.as_ref()?;
    let secs = now.0.as_second() - started.0.as_second();
    (secs > BROKER_READY_TIMEOUT_S).then(|| {
        format!(
            "pod {} not ready {secs} s after it started",
            pod.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// `pod x-1: CrashLoopBackOff` for a pod whose broker container cannot start.
fn failing_container(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|cs| {
        let reason = cs.state.as_ref()?.waiting.as_ref()?.reason.as_deref()?;
        FAILING_REASONS.contains(&reason).then(|| {
            format!(
                "pod {}: {reason}",
                pod.metadata.name.as_deref().unwrap_or_default()
            )
        })
    })
}

/// A condition of `type_`, keeping its last transition time while its status holds.
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rolling::tests::{pod, sts};
    use crate::cluster::validate::ValidatedCluster;
    use k8s_openapi::api::apps::v1::StatefulSet;

    /// A valid cluster observed with nothing in motion; each test sets what it is about.
    fn observed<'a>(
        v: &'a ValidatedCluster,
        sts: &'a StatefulSet,
        pods: &'a [Pod],
    ) -> Observed<'a> {
        Observed {
            validated: Ok(v),
            stateful_set: Some(sts),
            pods,
            roll: &RollDecision::UpToDate,
            scaling: None,
            cluster_id: None,
            expansion_refused: &[],
        }
    }
    use crate::cluster::validate::validate;
    use crate::crd::cluster::RebalanceStatus;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};
    use k8s_openapi::jiff::Timestamp;

    fn cluster(spec: &str) -> Cluster {
        let mut c: Cluster = serde_yaml::from_str(&format!(
            "apiVersion: rill.dev/v1alpha1\nkind: Cluster\n\
             metadata: {{name: x, namespace: ns, uid: u1, generation: 2}}\nspec:\n{spec}"
        ))
        .unwrap();
        c.status = None;
        c
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn get<'a>(s: &'a ClusterStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn all_brokers_ready_is_ready_and_stable() {
        let c = cluster("  storage: {size: 1Gi}\n");
        let v = validate(&c).unwrap();
        let pods: Vec<_> = (0..3).map(|i| pod(i, "r", true)).collect();
        let s = compute(
            &c,
            &Observed {
                ..observed(&v, &sts(3, "r"), &pods)
            },
            &at(100),
        );
        assert_eq!(s.ready_brokers, 3);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.bootstrap.as_deref(), Some("x-bootstrap.ns.svc:9092"));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/component=broker,app.kubernetes.io/instance=x,app.kubernetes.io/name=rill")
        );
        assert_eq!(
            (
                get(&s, READY).status.as_str(),
                get(&s, READY).reason.as_str()
            ),
            ("True", "AllBrokersReady")
        );
        assert_eq!(get(&s, PROGRESSING).status, "False");
        assert_eq!(get(&s, DEGRADED).status, "False");
        assert_eq!(get(&s, READY).observed_generation, Some(2));
    }

    #[test]
    fn an_invalid_spec_is_degraded_with_the_validation_reason() {
        let c = cluster("  storage: {size: 1Gi}\n  config: {node.id: \"3\"}\n");
        let err = validate(&c).unwrap_err();
        let s = compute(
            &c,
            &Observed {
                validated: Err(&err),
                stateful_set: None,
                pods: &[],
                roll: &RollDecision::UpToDate,
                scaling: None,
                cluster_id: None,
                expansion_refused: &[],
            },
            &at(100),
        );
        let d = get(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "OwnedConfigOverridden")
        );
        assert!(d.message.contains("node.id"));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, PROGRESSING).reason, "InvalidSpec");
    }

    #[test]
    fn a_crash_looping_broker_is_degraded_and_not_ready() {
        let c = cluster("  storage: {size: 1Gi}\n");
        let v = validate(&c).unwrap();
        let mut pods: Vec<_> = (0..2).map(|i| pod(i, "r", true)).collect();
        let mut bad = pod(2, "r", false);
        bad.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "broker".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    ..ContainerStateWaiting::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        pods.push(bad);
        let s = compute(
            &c,
            &Observed {
                ..observed(&v, &sts(3, "r"), &pods)
            },
            &at(100),
        );
        assert_eq!(s.ready_brokers, 2);
        let d = get(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.message.as_str()),
            ("True", "pod x-2: CrashLoopBackOff")
        );
        let r = get(&s, READY);
        assert_eq!(
            (r.status.as_str(), r.message.as_str()),
            ("False", "2 of 3 brokers ready")
        );
        assert_eq!(get(&s, PROGRESSING).reason, "Scaling");
    }

    #[test]
    fn a_rolling_restart_is_progressing_and_transition_times_persist() {
        let mut c = cluster("  storage: {size: 1Gi}\n");
        let v = validate(&c).unwrap();
        let pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        let roll = RollDecision::Restart {
            outdated: 3,
            pod: "x-2".into(),
            uid: None,
        };
        let set = sts(3, "new");
        let observed = Observed {
            roll: &roll,
            ..observed(&v, &set, &pods)
        };
        let first = compute(&c, &observed, &at(100));
        let p = get(&first, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "RollingRestart")
        );
        assert_eq!(p.message, "3 pods outdated; restarting x-2");
        c.status = Some(first);
        let roll = RollDecision::UpToDate;
        let second = compute(
            &c,
            &Observed {
                roll: &roll,
                ..observed
            },
            &at(200),
        );
        // Ready stayed True: its transition time is the first one; Progressing flipped.
        assert_eq!(get(&second, READY).last_transition_time, at(100));
        assert_eq!(get(&second, PROGRESSING).status, "False");
        assert_eq!(get(&second, PROGRESSING).last_transition_time, at(200));
    }

    fn with_scaling(activity: &ScaleActivity, sts_replicas: i32) -> ClusterStatus {
        let mut c = cluster("  replicas: 3\n  storage: {size: 1Gi}\n");
        c.spec.replicas = 3;
        let v = validate(&c).unwrap();
        let pods: Vec<_> = (0..sts_replicas).map(|i| pod(i, "r", true)).collect();
        compute(
            &c,
            &Observed {
                scaling: Some(activity),
                ..observed(&v, &sts(sts_replicas, "r"), &pods)
            },
            &at(100),
        )
    }

    #[test]
    fn a_refused_scale_down_is_degraded_but_the_running_brokers_stay_ready() {
        let refusal = ScaleRefusal::ReplicationFactor {
            topic: "orders".into(),
            replication_factor: 4,
            desired: 3,
        };
        let s = with_scaling(&ScaleActivity::Refused(refusal.clone(), None), 5);
        let d = get(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str(), d.message.clone()),
            ("True", "ScaleDownRefused", refusal.to_string())
        );
        assert!(d.message.contains("topic orders has replication factor 4"));
        assert_eq!(get(&s, READY).status, "True");
        let p = get(&s, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "ScaleDownRefused")
        );
        assert_eq!(s.replicas, 5);
        assert_eq!(s.rebalance, None);
    }

    #[test]
    fn a_drain_is_progressing_with_its_progress_and_not_degraded() {
        let progress = RebalanceStatus {
            partitions_moved: 4,
            partitions_to_move: 10,
        };
        let s = with_scaling(
            &ScaleActivity::Draining {
                message: "draining brokers 3, 4: moved 4 of 10 partitions".into(),
                progress: Some(progress.clone()),
            },
            5,
        );
        let p = get(&s, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            (
                "True",
                "Draining",
                "draining brokers 3, 4: moved 4 of 10 partitions"
            )
        );
        assert_eq!(get(&s, DEGRADED).status, "False");
        assert_eq!(s.rebalance, Some(progress));
    }

    #[test]
    fn a_rebalance_is_progressing_once_all_brokers_are_ready() {
        let s = with_scaling(
            &ScaleActivity::Rebalancing {
                message: "moved 0 of 7 partitions".into(),
                progress: Some(RebalanceStatus {
                    partitions_moved: 0,
                    partitions_to_move: 7,
                }),
            },
            3,
        );
        let p = get(&s, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str(), p.message.as_str()),
            ("True", "Rebalancing", "moved 0 of 7 partitions")
        );
        assert_eq!(s.rebalance.unwrap().partitions_to_move, 7);
    }

    #[test]
    fn a_broker_that_never_gets_ready_is_degraded() {
        let c = cluster("  storage: {size: 1Gi}\n");
        let v = validate(&c).unwrap();
        let mut stuck = pod(2, "new", false);
        stuck.status.as_mut().unwrap().start_time = Some(at(1_000));
        let pods = vec![pod(0, "new", true), pod(1, "new", true), stuck];
        let observed = |pods: &[Pod]| {
            compute(
                &c,
                &Observed {
                    ..observed(&v, &sts(3, "new"), pods)
                },
                &at(1_000 + BROKER_READY_TIMEOUT_S + 1),
            )
        };
        let s = observed(&pods);
        let degraded = get(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "BrokerFailing")
        );
        assert_eq!(
            degraded.message,
            format!(
                "pod x-2 not ready {} s after it started",
                BROKER_READY_TIMEOUT_S + 1
            )
        );
        // Within the timeout it is only starting.
        let mut starting = pods.clone();
        starting[2].status.as_mut().unwrap().start_time = Some(at(1_000 + 10));
        assert_eq!(get(&observed(&starting), "Degraded").status, "False");
    }
}
