//! Rolling restart: the StatefulSet is `OnDelete`, so a new pod template (a config or
//! image change) reaches a broker only when the operator deletes its pod. This decides,
//! from what is observed, which single pod may go now, if any.
//!
//! Rule: restart one outdated pod only while every pod is Ready and every broker is
//! registered; the next one only after the restarted pod is back and Ready. Outdated
//! non-voters go first (highest ordinal first), the quorum voters last. A later issue adds
//! ISR checks (leadership moved away, ISR >= min.insync.replicas) before each restart.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

/// Label the StatefulSet controller sets on each pod: the revision it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the rolling restart does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollDecision {
    /// Every pod runs the current template.
    UpToDate,
    /// Pods are outdated but none may go now.
    Wait { outdated: usize, reason: String },
    /// Delete this pod (its uid as the delete precondition); the StatefulSet recreates it.
    Restart {
        outdated: usize,
        pod: String,
        uid: Option<String>,
    },
}

/// The ordinal of pod `<sts>-<N>`.
pub fn ordinal(sts_name: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(sts_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// True when the pod's Ready condition is True and it is not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Decides the next restart. `controllers` are the voter ordinals 0..controllers-1;
/// `registered` holds the node ids the metadata quorum reports as registered brokers.
pub fn decide(
    sts: &StatefulSet,
    pods: &[Pod],
    controllers: i32,
    registered: &BTreeSet<i32>,
) -> RollDecision {
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = sts.status.as_ref() else {
        return wait(0, "the StatefulSet has no status yet");
    };
    let Some(update_revision) = status.update_revision.as_deref() else {
        return wait(0, "the StatefulSet has no update revision yet");
    };
    // Until the StatefulSet controller has seen the latest template, updateRevision is old.
    if status.observed_generation < sts.metadata.generation {
        return wait(
            0,
            "the StatefulSet controller has not observed the latest template",
        );
    }
    let mut outdated: Vec<(i32, &Pod)> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .map(String::as_str)
                != Some(update_revision)
        })
        .filter_map(|p| Some((ordinal(name, p)?, p)))
        .collect();
    if outdated.is_empty() {
        return RollDecision::UpToDate;
    }
    let n = outdated.len();
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if let Some(p) = pods
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_some())
    {
        return wait(n, &format!("pod {} is terminating", name_of(p)));
    }
    if (pods.len() as i32) < desired {
        return wait(n, &format!("{} of {desired} pods exist", pods.len()));
    }
    if let Some(p) = pods.iter().find(|p| !is_ready(p)) {
        return wait(n, &format!("pod {} is not ready", name_of(p)));
    }
    if let Some(missing) = pods
        .iter()
        .filter_map(|p| ordinal(name, p))
        .find(|o| !registered.contains(o))
    {
        return wait(n, &format!("broker {missing} is not registered"));
    }
    // Non-voters before voters, then the highest ordinal first.
    outdated.sort_by_key(|(o, _)| (*o < controllers, std::cmp::Reverse(*o)));
    let (_, pod) = outdated[0];
    RollDecision::Restart {
        outdated: n,
        pod: name_of(pod).to_string(),
        uid: pod.metadata.uid.clone(),
    }
}

fn name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn wait(outdated: usize, reason: &str) -> RollDecision {
    RollDecision::Wait {
        outdated,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::BTreeMap;

    pub(crate) fn sts(replicas: i32, update_revision: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("x".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(2),
                replicas,
                update_revision: Some(update_revision.into()),
                ..StatefulSetStatus::default()
            }),
        }
    }

    pub(crate) fn pod(ordinal: i32, revision: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("x-{ordinal}")),
                uid: Some(format!("uid-{ordinal}")),
                labels: Some(BTreeMap::from([(REVISION_LABEL.into(), revision.into())])),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn all(n: i32) -> BTreeSet<i32> {
        (0..n).collect()
    }

    #[test]
    fn nothing_to_do_when_every_pod_has_the_update_revision() {
        let pods: Vec<_> = (0..3).map(|i| pod(i, "new", true)).collect();
        assert_eq!(
            decide(&sts(3, "new"), &pods, 3, &all(3)),
            RollDecision::UpToDate
        );
    }

    #[test]
    fn restarts_non_voters_first_then_voters_highest_ordinal_first() {
        let pods: Vec<_> = (0..5).map(|i| pod(i, "old", true)).collect();
        let d = decide(&sts(5, "new"), &pods, 3, &all(5));
        assert_eq!(
            d,
            RollDecision::Restart {
                outdated: 5,
                pod: "x-4".into(),
                uid: Some("uid-4".into())
            }
        );
        let mut pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        pods.extend((3..5).map(|i| pod(i, "new", true)));
        let RollDecision::Restart {
            pod: next,
            outdated,
            ..
        } = decide(&sts(5, "new"), &pods, 3, &all(5))
        else {
            panic!("expected a restart");
        };
        assert_eq!((next.as_str(), outdated), ("x-2", 3));
    }

    #[test]
    fn waits_while_the_restarted_pod_is_not_ready_again() {
        let pods = vec![
            pod(0, "old", true),
            pod(1, "old", true),
            pod(2, "new", false),
        ];
        assert_eq!(
            decide(&sts(3, "new"), &pods, 3, &all(3)),
            RollDecision::Wait {
                outdated: 2,
                reason: "pod x-2 is not ready".into()
            }
        );
    }

    #[test]
    fn waits_while_a_pod_is_missing_or_terminating() {
        let pods = vec![pod(0, "old", true), pod(1, "old", true)];
        assert!(matches!(
            decide(&sts(3, "new"), &pods, 3, &all(3)),
            RollDecision::Wait { ref reason, .. } if reason == "2 of 3 pods exist"
        ));
        let mut going = pod(2, "old", true);
        going.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = vec![pod(0, "old", true), pod(1, "old", true), going];
        assert!(matches!(
            decide(&sts(3, "new"), &pods, 3, &all(3)),
            RollDecision::Wait { ref reason, .. } if reason == "pod x-2 is terminating"
        ));
    }

    #[test]
    fn waits_for_every_broker_to_be_registered() {
        let pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        let registered = BTreeSet::from([0, 2]);
        assert!(matches!(
            decide(&sts(3, "new"), &pods, 3, &registered),
            RollDecision::Wait { ref reason, .. } if reason == "broker 1 is not registered"
        ));
    }

    #[test]
    fn waits_until_the_statefulset_controller_saw_the_new_template() {
        let pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        let mut s = sts(3, "old");
        s.metadata.generation = Some(3);
        assert!(matches!(
            decide(&s, &pods, 3, &all(3)),
            RollDecision::Wait { outdated: 0, .. }
        ));
    }

    #[test]
    fn ordinals_come_from_the_pod_name() {
        assert_eq!(ordinal("x", &pod(12, "r", true)), Some(12));
        let mut other = pod(1, "r", true);
        other.metadata.name = Some("xy-1".into());
        assert_eq!(ordinal("x", &other), None);
    }
}
