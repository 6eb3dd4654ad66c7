//! What the Topic reconciler must do, decided without I/O: the spec against the topic
//! as the cluster has it. The spec wins for configs (values set out of band are
//! overwritten or deleted, and reported as drift); partitions only grow; a different
//! replication factor is refused until reassignment is supported.

use std::collections::{BTreeMap, BTreeSet};

use crate::kafka_admin::TopicId;

/// The Topic resource as the reconciler needs it, free of the CRD types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpecView {
    /// The Kafka topic name.
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic configs by Kafka's names (`retention.ms`, `cleanup.policy`, ...).
    pub config: BTreeMap<String, String>,
}

/// The topic as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTopic {
    pub id: Option<TopicId>,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Only the configs set on the topic (source TOPIC_CONFIG), not defaults.
    pub configs: BTreeMap<String, String>,
}

/// Whether the spec is one the operator already applied. It tells a user's edit of the
/// spec from a change made behind the operator's back (drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecStatus {
    /// New or edited since the last successful reconcile
    /// (`metadata.generation != status.observedGeneration`): differences are expected.
    Changed,
    /// Already applied: any config difference was made out of band.
    Applied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    },
    CreatePartitions {
        total: i32,
    },
    AlterConfigs {
        set: BTreeMap<String, String>,
        delete: BTreeSet<String>,
    },
}

/// A change the spec asks for that the reconciler will not make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("partitions cannot be reduced from {from} to {to}")]
    PartitionsDecrease { from: i32, to: i32 },
    #[error("replication factor change needs reassignment, not supported yet")]
    ReplicationFactorChange { from: i16, to: i16 },
    #[error("partitions must be at least 1, got {0}")]
    InvalidPartitions(i32),
    #[error("replication factor must be at least 1, got {0}")]
    InvalidReplicationFactor(i16),
}

impl Refusal {
    /// A condition reason (CamelCase) for the Topic's status.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PartitionsDecrease { .. } => "PartitionDecreaseRefused",
            Refusal::ReplicationFactorChange { .. } => "ReplicationFactorChangeRefused",
            Refusal::InvalidPartitions(_) | Refusal::InvalidReplicationFactor(_) => "InvalidSpec",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub topic: String,
    /// In the order to apply them.
    pub actions: Vec<Action>,
    pub refused: Vec<Refusal>,
    /// Configs changed out of band (only with `SpecStatus::Applied`); the actions put
    /// them back to the spec.
    pub drift: BTreeSet<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }

    /// Whether `observed` shows every action done. Brokers learn metadata changes a
    /// little after the controller commits them, so a read right after a write may
    /// not show it yet.
    pub fn is_visible_in(&self, observed: Option<&ObservedTopic>) -> bool {
        self.actions.iter().all(|action| match (action, observed) {
            (_, None) => false,
            (Action::Create { .. }, Some(_)) => true,
            (Action::CreatePartitions { total }, Some(o)) => o.partitions >= *total,
            (Action::AlterConfigs { set, delete }, Some(o)) => {
                set.iter().all(|(k, v)| o.configs.get(k) == Some(v))
                    && delete.iter().all(|k| !o.configs.contains_key(k))
            }
        })
    }
}

pub fn plan(spec: &TopicSpecView, observed: Option<&ObservedTopic>, status: SpecStatus) -> Plan {
    let mut plan = Plan {
        topic: spec.name.clone(),
        actions: Vec::new(),
        refused: Vec::new(),
        drift: BTreeSet::new(),
    };
    let partitions_valid = spec.partitions >= 1;
    let replication_factor_valid = spec.replication_factor >= 1;
    if !partitions_valid {
        plan.refused
            .push(Refusal::InvalidPartitions(spec.partitions));
    }
    if !replication_factor_valid {
        plan.refused
            .push(Refusal::InvalidReplicationFactor(spec.replication_factor));
    }
    let Some(observed) = observed else {
        if partitions_valid && replication_factor_valid {
            plan.actions.push(Action::Create {
                partitions: spec.partitions,
                replication_factor: spec.replication_factor,
                configs: spec.config.clone(),
            });
        }
        return plan;
    };

    if replication_factor_valid && spec.replication_factor != observed.replication_factor {
        plan.refused.push(Refusal::ReplicationFactorChange {
            from: observed.replication_factor,
            to: spec.replication_factor,
        });
    }

    let set: BTreeMap<String, String> = spec
        .config
        .iter()
        .filter(|(k, v)| observed.configs.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete: BTreeSet<String> = observed
        .configs
        .keys()
        .filter(|k| !spec.config.contains_key(*k))
        .cloned()
        .collect();
    if status == SpecStatus::Applied {
        plan.drift = set.keys().chain(delete.iter()).cloned().collect();
    }
    if !set.is_empty() || !delete.is_empty() {
        plan.actions.push(Action::AlterConfigs { set, delete });
    }

    if partitions_valid {
        if spec.partitions > observed.partitions {
            plan.actions.push(Action::CreatePartitions {
                total: spec.partitions,
            });
        } else if spec.partitions < observed.partitions {
            plan.refused.push(Refusal::PartitionsDecrease {
                from: observed.partitions,
                to: spec.partitions,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn spec(partitions: i32, replication_factor: i16, config: &[(&str, &str)]) -> TopicSpecView {
        TopicSpecView {
            name: "orders".into(),
            partitions,
            replication_factor,
            config: configs(config),
        }
    }

    fn observed(
        partitions: i32,
        replication_factor: i16,
        config: &[(&str, &str)],
    ) -> ObservedTopic {
        ObservedTopic {
            id: TopicId::from_bytes([7; 16]),
            partitions,
            replication_factor,
            configs: configs(config),
        }
    }

    #[test]
    fn a_missing_topic_is_created_with_the_spec() {
        let p = plan(
            &spec(6, 3, &[("retention.ms", "3600000")]),
            None,
            SpecStatus::Changed,
        );
        assert_eq!(p.topic, "orders");
        assert_eq!(
            p.actions,
            vec![Action::Create {
                partitions: 6,
                replication_factor: 3,
                configs: configs(&[("retention.ms", "3600000")]),
            }]
        );
        assert!(p.refused.is_empty());
        assert!(p.drift.is_empty());
    }

    #[test]
    fn a_topic_matching_the_spec_needs_nothing() {
        let s = spec(3, 1, &[("cleanup.policy", "compact")]);
        let o = observed(3, 1, &[("cleanup.policy", "compact")]);
        let p = plan(&s, Some(&o), SpecStatus::Applied);
        assert!(p.is_noop());
        assert!(p.refused.is_empty());
        assert!(p.drift.is_empty());
    }

    #[test]
    fn more_partitions_in_the_spec_grow_the_topic_to_the_total() {
        let p = plan(
            &spec(8, 1, &[]),
            Some(&observed(3, 1, &[])),
            SpecStatus::Changed,
        );
        assert_eq!(p.actions, vec![Action::CreatePartitions { total: 8 }]);
        assert!(p.refused.is_empty());
    }

    #[test]
    fn fewer_partitions_are_refused_with_both_counts() {
        let p = plan(
            &spec(2, 1, &[]),
            Some(&observed(5, 1, &[])),
            SpecStatus::Changed,
        );
        assert!(p.actions.is_empty());
        assert_eq!(
            p.refused,
            vec![Refusal::PartitionsDecrease { from: 5, to: 2 }]
        );
        assert_eq!(
            p.refused[0].to_string(),
            "partitions cannot be reduced from 5 to 2"
        );
        assert_eq!(p.refused[0].reason(), "PartitionDecreaseRefused");
    }

    #[test]
    fn a_different_replication_factor_is_refused_but_configs_still_apply() {
        let p = plan(
            &spec(3, 3, &[("retention.ms", "1000")]),
            Some(&observed(3, 1, &[])),
            SpecStatus::Changed,
        );
        assert_eq!(
            p.refused,
            vec![Refusal::ReplicationFactorChange { from: 1, to: 3 }]
        );
        assert_eq!(
            p.refused[0].to_string(),
            "replication factor change needs reassignment, not supported yet"
        );
        assert_eq!(
            p.actions,
            vec![Action::AlterConfigs {
                set: configs(&[("retention.ms", "1000")]),
                delete: BTreeSet::new(),
            }]
        );
    }

    #[test]
    fn a_spec_edit_sets_and_deletes_configs_without_calling_it_drift() {
        let p = plan(
            &spec(
                3,
                1,
                &[("retention.ms", "2000"), ("segment.bytes", "1048576")],
            ),
            Some(&observed(
                3,
                1,
                &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
            )),
            SpecStatus::Changed,
        );
        assert_eq!(
            p.actions,
            vec![Action::AlterConfigs {
                set: configs(&[("retention.ms", "2000"), ("segment.bytes", "1048576")]),
                delete: names(&["cleanup.policy"]),
            }]
        );
        assert!(p.drift.is_empty());
    }

    #[test]
    fn out_of_band_config_changes_are_drift_and_the_spec_wins() {
        // Someone changed retention.ms, added max.message.bytes and removed
        // cleanup.policy behind the operator's back.
        let p = plan(
            &spec(
                3,
                1,
                &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
            ),
            Some(&observed(
                3,
                1,
                &[("retention.ms", "5"), ("max.message.bytes", "100")],
            )),
            SpecStatus::Applied,
        );
        assert_eq!(
            p.actions,
            vec![Action::AlterConfigs {
                set: configs(&[("cleanup.policy", "compact"), ("retention.ms", "1000")]),
                delete: names(&["max.message.bytes"]),
            }]
        );
        assert_eq!(
            p.drift,
            names(&["cleanup.policy", "max.message.bytes", "retention.ms"])
        );
    }

    #[test]
    fn configs_are_applied_before_partitions_grow() {
        let p = plan(
            &spec(4, 1, &[("retention.ms", "1000")]),
            Some(&observed(2, 1, &[])),
            SpecStatus::Changed,
        );
        assert_eq!(
            p.actions,
            vec![
                Action::AlterConfigs {
                    set: configs(&[("retention.ms", "1000")]),
                    delete: BTreeSet::new(),
                },
                Action::CreatePartitions { total: 4 },
            ]
        );
    }

    #[test]
    fn a_plan_is_visible_once_every_action_shows() {
        let s = spec(4, 1, &[("retention.ms", "1000")]);
        let p = plan(
            &s,
            Some(&observed(2, 1, &[("cleanup.policy", "compact")])),
            SpecStatus::Changed,
        );
        assert!(!p.is_visible_in(None));
        assert!(!p.is_visible_in(Some(&observed(2, 1, &[("cleanup.policy", "compact")]))));
        assert!(!p.is_visible_in(Some(&observed(
            4,
            1,
            &[("retention.ms", "1000"), ("cleanup.policy", "compact")]
        ))));
        assert!(!p.is_visible_in(Some(&observed(3, 1, &[("retention.ms", "1000")]))));
        assert!(p.is_visible_in(Some(&observed(4, 1, &[("retention.ms", "1000")]))));

        let create = plan(&s, None, SpecStatus::Changed);
        assert!(!create.is_visible_in(None));
        assert!(create.is_visible_in(Some(&observed(4, 1, &[("retention.ms", "1000")]))));
        let noop = plan(
            &s,
            Some(&observed(4, 1, &[("retention.ms", "1000")])),
            SpecStatus::Applied,
        );
        assert!(noop.is_visible_in(None), "nothing to wait for");
    }

    #[test]
    fn an_invalid_spec_creates_nothing() {
        let p = plan(&spec(0, 0, &[]), None, SpecStatus::Changed);
        assert!(p.actions.is_empty());
        assert_eq!(
            p.refused,
            vec![
                Refusal::InvalidPartitions(0),
                Refusal::InvalidReplicationFactor(0)
            ]
        );
        assert_eq!(
            p.refused[0].to_string(),
            "partitions must be at least 1, got 0"
        );
        assert_eq!(p.refused[1].reason(), "InvalidSpec");
    }

    #[test]
    fn invalid_counts_on_an_existing_topic_are_refused_once_and_configs_still_apply() {
        let p = plan(
            &spec(0, 1, &[("retention.ms", "1")]),
            Some(&observed(3, 1, &[])),
            SpecStatus::Changed,
        );
        assert_eq!(p.refused, vec![Refusal::InvalidPartitions(0)]);
        assert_eq!(
            p.actions,
            vec![Action::AlterConfigs {
                set: configs(&[("retention.ms", "1")]),
                delete: BTreeSet::new(),
            }]
        );
    }
}
