//! Rolling restart: the StatefulSet is `OnDelete`, so a new pod template (a config,
//! image or resources change, or the `rill.dev/restart` annotation) reaches a broker only
//! when the operator deletes its pod. This decides, from what is observed, which single
//! pod may go now, if any.
//!
//! Rules, in order:
//! - an outdated pod that is not Ready is replaced first: it serves nothing, and its old
//!   template may be why it fails (a bad config that was since fixed);
//! - otherwise a pod goes only while every pod is Ready, every broker registered, every
//!   partition fully in sync (ISR = replicas), and taking this broker out leaves every
//!   partition it holds at or above `min.insync.replicas`;
//! - non-voters first (highest ordinal first), then the quorum voters, the active
//!   controller last of all, so the metadata quorum moves its leader once.
//!
//! The broker moves its leadership away on SIGTERM (controlled shutdown) before it exits.

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

/// One partition as the brokers report it, with the `min.insync.replicas` that applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub min_insync: i32,
}

/// What the brokers said (DescribeCluster and Metadata): the checks before a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerView {
    /// Registered, unfenced brokers.
    pub registered: BTreeSet<i32>,
    /// The active controller, when known.
    pub controller: Option<i32>,
    pub partitions: Vec<PartitionView>,
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

/// Decides the next restart. `controllers` are the voter ordinals 0..controllers-1.
pub fn decide(
    sts: &StatefulSet,
    pods: &[Pod],
    controllers: i32,
    brokers: &BrokerView,
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
    if let Some((_, down)) = outdated.iter().find(|(_, p)| !is_ready(p)) {
        return restart(n, down);
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
        .find(|o| !brokers.registered.contains(o))
    {
        return wait(n, &format!("broker {missing} is not registered"));
    }
    if let Some(p) = brokers
        .partitions
        .iter()
        .find(|p| p.replicas.iter().any(|r| !p.isr.contains(r)))
    {
        return wait(
            n,
            &format!(
                "partition {}-{} is not fully in sync (ISR {:?} of replicas {:?})",
                p.topic, p.partition, p.isr, p.replicas
            ),
        );
    }
    // Non-voters before voters, the active controller last, then the highest ordinal first.
    outdated.sort_by_key(|(o, _)| {
        (
            *o < controllers,
            brokers.controller == Some(*o),
            std::cmp::Reverse(*o),
        )
    });
    let (next, pod) = outdated[0];
    if let Some(p) = brokers
        .partitions
        .iter()
        .find(|p| p.isr.contains(&next) && (p.isr.len() as i32) - 1 < p.min_insync)
    {
        return wait(
            n,
            &format!(
                "restarting broker {next} would leave {}-{} with {} in-sync replicas, below \
                 min.insync.replicas={}",
                p.topic,
                p.partition,
                p.isr.len() - 1,
                p.min_insync
            ),
        );
    }
    restart(n, pod)
}

fn restart(outdated: usize, pod: &Pod) -> RollDecision {
    RollDecision::Restart {
        outdated,
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

    fn all(n: i32) -> BrokerView {
        BrokerView {
            registered: (0..n).collect(),
            ..BrokerView::default()
        }
    }

    fn partition(replicas: &[i32], isr: &[i32], min_insync: i32) -> PartitionView {
        PartitionView {
            topic: "t".into(),
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            min_insync,
        }
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
        let registered = BrokerView {
            registered: BTreeSet::from([0, 2]),
            ..BrokerView::default()
        };
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
    fn an_outdated_pod_that_is_down_is_replaced_first() {
        // x-2 crash-loops on a bad template; the fix makes it outdated: replace it even
        // though it is not ready (waiting for it would wait forever).
        let pods = vec![
            pod(0, "old", true),
            pod(1, "old", true),
            pod(2, "bad", false),
        ];
        let d = decide(&sts(3, "old"), &pods, 3, &all(3));
        assert_eq!(
            d,
            RollDecision::Restart {
                outdated: 1,
                pod: "x-2".into(),
                uid: Some("uid-2".into())
            }
        );
    }

    #[test]
    fn waits_until_every_partition_is_fully_in_sync() {
        let pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        let mut view = all(3);
        view.partitions = vec![
            partition(&[0, 1, 2], &[0, 1, 2], 2),
            partition(&[1, 2, 0], &[1, 0], 2),
        ];
        assert_eq!(
            decide(&sts(3, "new"), &pods, 3, &view),
            RollDecision::Wait {
                outdated: 3,
                reason: "partition t-0 is not fully in sync (ISR [1, 0] of replicas [1, 2, 0])"
                    .into()
            }
        );
        view.partitions[1].isr = vec![1, 2, 0];
        assert!(matches!(
            decide(&sts(3, "new"), &pods, 3, &view),
            RollDecision::Restart { .. }
        ));
    }

    #[test]
    fn never_takes_a_partition_below_min_insync_replicas() {
        let pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        let mut view = all(3);
        // Replication factor 2 with min.insync.replicas=2: any restart of 1 or 2 breaks acks=all.
        view.partitions = vec![partition(&[1, 2], &[1, 2], 2)];
        assert_eq!(
            decide(&sts(3, "new"), &pods, 3, &view),
            RollDecision::Wait {
                outdated: 3,
                reason: "restarting broker 2 would leave t-0 with 1 in-sync replicas, below \
                         min.insync.replicas=2"
                    .into()
            }
        );
        view.partitions[0].min_insync = 1;
        assert!(matches!(
            decide(&sts(3, "new"), &pods, 3, &view),
            RollDecision::Restart { ref pod, .. } if pod == "x-2"
        ));
    }

    #[test]
    fn the_active_controller_goes_last() {
        let pods: Vec<_> = (0..3).map(|i| pod(i, "old", true)).collect();
        let mut view = all(3);
        view.controller = Some(2);
        let order: Vec<String> = (0..3)
            .map(|k| {
                // After each restart the pod is on the new revision.
                let pods: Vec<_> = pods
                    .iter()
                    .cloned()
                    .map(|mut p| {
                        let o = ordinal("x", &p).unwrap();
                        if [1, 0, 2][..k].contains(&o) {
                            p.metadata.labels =
                                Some(BTreeMap::from([(REVISION_LABEL.into(), "new".into())]));
                        }
                        p
                    })
                    .collect();
                match decide(&sts(3, "new"), &pods, 3, &view) {
                    RollDecision::Restart { pod, .. } => pod,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(order, ["x-1", "x-0", "x-2"]);
    }

    #[test]
    fn ordinals_come_from_the_pod_name() {
        assert_eq!(ordinal("x", &pod(12, "r", true)), Some(12));
        let mut other = pod(1, "r", true);
        other.metadata.name = Some("xy-1".into());
        assert_eq!(ordinal("x", &other), None);
    }
}
