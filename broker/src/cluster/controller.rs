//! The active controller's duties, run on whichever voter leads the quorum: broker
//! liveness from heartbeats (kept in memory, as in Kafka: only the fencing decision is
//! replicated), unfencing brokers that caught up, and preferred-leader rebalancing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::command::ElectionType;
use super::node::ClusterNode;
use super::quorum::HeartbeatHandler;
use super::{Command, MetadataImage};
use crate::config::ClusterConfig;
use crate::rpc::proto::{BrokerHeartbeat, HeartbeatReply};

/// The heartbeat answer to a broker process whose registration is gone (unregistered
/// by an operator while it was alive): it registers again.
pub const NOT_REGISTERED: &str = "broker not registered: register again";

/// How often the controller looks at broker liveness.
const CHECK_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
struct Heartbeat {
    broker_epoch: i64,
    at: Instant,
    applied_index: u64,
}

pub struct Controller {
    node: Arc<ClusterNode>,
    config: ClusterConfig,
    /// The broker default for topics without their own setting.
    unclean_leader_election_enable: bool,
    heartbeats: Mutex<HashMap<i32, Heartbeat>>,
}

impl Controller {
    pub fn new(
        node: Arc<ClusterNode>,
        config: ClusterConfig,
        unclean_leader_election_enable: bool,
    ) -> Self {
        Controller {
            node,
            config,
            unclean_leader_election_enable,
            heartbeats: Mutex::new(HashMap::new()),
        }
    }

    /// Runs until shutdown; acts only while this node is the active controller.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(CHECK_EVERY);
        let mut active_since: Option<Instant> = None;
        let mut last_rebalance = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !self.node.quorum().is_leader() {
                active_since = None;
                continue;
            }
            let since = *active_since.get_or_insert_with(|| {
                tracing::info!(node = self.node.node_id, "became the active controller");
                Instant::now()
            });
            for command in self.liveness_decisions(since, Instant::now()) {
                self.propose(command).await;
            }
            self.sync_learners().await;
            let rebalance_every =
                Duration::from_millis(self.config.leader_imbalance_check_interval_ms as u64);
            if self.config.auto_leader_rebalance_enable
                && last_rebalance.elapsed() >= rebalance_every
            {
                last_rebalance = Instant::now();
                if let Some(command) = self.preferred_elections() {
                    self.propose(command).await;
                }
            }
        }
    }

    /// Keeps the learners in step with the registrations: registered brokers that are
    /// not quorum members (broker-only nodes) join as learners and then receive the
    /// metadata log like every voter; learners no longer registered (unregistered after
    /// a scale-down) are removed, so the leader stops replicating to a gone node. An
    /// unregistered node comes back only by registering again.
    async fn sync_learners(&self) {
        let quorum = self.node.quorum();
        let members = quorum.members();
        let (learners, membership_index) = quorum.learners();
        let (add, remove) =
            learner_changes(&self.node.image(), &members, &learners, membership_index);
        for (id, addr) in add {
            tracing::info!(broker = id, %addr, "adding a broker-only node as a learner");
            if let Err(e) = quorum.add_learner(id, addr).await {
                tracing::warn!(broker = id, error = %e, "cannot add the learner");
            }
        }
        for id in remove {
            tracing::info!(
                broker = id,
                "removing an unregistered broker-only node from the learners"
            );
            if let Err(e) = quorum.remove_learner(id).await {
                tracing::warn!(broker = id, error = %e, "cannot remove the learner");
            }
        }
    }

    async fn propose(&self, command: Command) {
        tracing::info!(?command, "controller decision");
        if let Err(e) = self.node.propose_committed(command).await {
            tracing::warn!(error = %e, "controller decision not committed");
        }
    }

    /// The cluster id once, then fencing of silent brokers and unfencing of caught-up
    /// ones. Brokers not heard from since this controller took over get a full session
    /// timeout from then.
    fn liveness_decisions(&self, active_since: Instant, now: Instant) -> Vec<Command> {
        let session = Duration::from_millis(self.config.broker_session_timeout_ms as u64);
        // A broker that missed two heartbeats while a new process waits to take its
        // id is taken for dead (the usual case: it was killed and restarted).
        let replaced_after =
            2 * Duration::from_millis(self.config.broker_heartbeat_interval_ms as u64);
        let image = self.node.image();
        let heartbeats = self.heartbeats.lock();
        let mut out = Vec::new();
        if image.cluster_id.is_none() {
            out.push(Command::InitCluster {
                cluster_id: crate::metadata::new_cluster_id(),
                unclean_leader_election_enable: self.unclean_leader_election_enable,
            });
        }
        for b in image.brokers.values() {
            let beat = heartbeats
                .get(&b.broker_id)
                .filter(|h| h.broker_epoch == b.broker_epoch);
            // Heartbeats seen before this controller took over count (see
            // `heartbeat`); a broker never heard from gets a session from takeover.
            let last = beat.map_or(active_since, |h| h.at);
            let silent = now.duration_since(last);
            if !b.fenced
                && (silent > session
                    || (b.pending_incarnation.is_some() && silent > replaced_after))
            {
                out.push(Command::FenceBroker {
                    broker_id: b.broker_id,
                    broker_epoch: b.broker_epoch,
                });
            } else if b.fenced
                && !b.in_controlled_shutdown
                && beat.is_some_and(|h| {
                    h.applied_index >= b.registered_index && now.duration_since(h.at) <= session
                })
            {
                out.push(Command::UnfenceBroker {
                    broker_id: b.broker_id,
                    broker_epoch: b.broker_epoch,
                });
            }
        }
        out
    }

    /// Partitions led by someone other than their preferred replica while the preferred
    /// one is active and in sync.
    fn preferred_elections(&self) -> Option<Command> {
        let image = self.node.image();
        let partitions: Vec<(String, i32)> = image
            .topics
            .values()
            .flat_map(|t| {
                t.partitions.iter().enumerate().filter_map(|(i, p)| {
                    let preferred = p.preferred_leader();
                    (p.leader != preferred
                        && p.isr.contains(&preferred)
                        && image.is_active(preferred))
                    .then(|| (t.name.clone(), i as i32))
                })
            })
            .collect();
        (!partitions.is_empty()).then_some(Command::ElectLeaders {
            election: ElectionType::Preferred,
            partitions,
        })
    }
}

/// The learners to add (registered brokers that are not members, with their internal
/// address) and to remove (learners with no registration). Removal waits until the image
/// has applied the membership that lists the learners: a controller that just took over
/// may not have applied a learner's registration yet.
fn learner_changes(
    image: &MetadataImage,
    members: &BTreeSet<i32>,
    learners: &BTreeSet<i32>,
    membership_index: u64,
) -> (Vec<(i32, String)>, Vec<i32>) {
    let add = image
        .brokers
        .values()
        .filter(|b| !members.contains(&b.broker_id) && !b.endpoints.internal.is_empty())
        .map(|b| (b.broker_id, b.endpoints.internal.clone()))
        .collect();
    let remove = if image.applied_index >= membership_index {
        learners
            .iter()
            .copied()
            .filter(|id| !image.brokers.contains_key(id))
            .collect()
    } else {
        Vec::new()
    };
    (add, remove)
}

impl HeartbeatHandler for Controller {
    fn heartbeat(&self, request: BrokerHeartbeat) -> HeartbeatReply {
        // Every controller records every heartbeat, so one taking over after a
        // controller failover knows who went silent when, instead of granting every
        // broker a fresh session timeout (which would delay fencing a broker that died
        // with the old controller).
        self.heartbeats.lock().insert(
            request.broker_id,
            Heartbeat {
                broker_epoch: request.broker_epoch,
                at: Instant::now(),
                applied_index: request.applied_index,
            },
        );
        let quorum = self.node.quorum();
        if !quorum.is_leader() {
            return HeartbeatReply {
                leader_hint: quorum.leader_id().unwrap_or(0),
                error: "not the active controller".to_string(),
                ..HeartbeatReply::default()
            };
        }
        let image = self.node.image();
        let registration = image.brokers.get(&request.broker_id);
        match registration {
            Some(b) if b.broker_epoch == request.broker_epoch => HeartbeatReply {
                fenced: b.fenced,
                should_shut_down: b.in_controlled_shutdown,
                ..HeartbeatReply::default()
            },
            // Unregistered while alive (only an image that has applied the broker's
            // registration can tell that from a registration it has not seen yet).
            None if request.broker_epoch > 0 && image.applied_index >= request.registered_index => {
                HeartbeatReply {
                    fenced: true,
                    error: NOT_REGISTERED.to_string(),
                    ..HeartbeatReply::default()
                }
            }
            // Unknown or replaced: the broker must register again.
            _ => HeartbeatReply {
                fenced: true,
                error: "stale broker epoch: register again".to_string(),
                ..HeartbeatReply::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::cluster::command::BrokerEndpoints;

    /// Brokers 1 (a voter) and 4 (broker-only) registered, applied up to index 2.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        for (index, id) in [(1, 1), (2, 4)] {
            image.apply(
                index,
                &Command::RegisterBroker {
                    broker_id: id,
                    incarnation_id: Uuid::new_v4(),
                    endpoints: BrokerEndpoints {
                        kafka_host: format!("127.0.0.{id}"),
                        kafka_port: 9092,
                        internal: format!("127.0.0.{id}:9093"),
                    },
                    rack: None,
                },
            );
        }
        image
    }

    #[test]
    fn a_registered_broker_only_node_is_added_as_a_learner_once() {
        let image = image();
        let (add, remove) = learner_changes(&image, &BTreeSet::from([1]), &BTreeSet::new(), 1);
        assert_eq!(add, vec![(4, "127.0.0.4:9093".to_string())]);
        assert!(remove.is_empty());
        let (add, remove) =
            learner_changes(&image, &BTreeSet::from([1, 4]), &BTreeSet::from([4]), 2);
        assert!(add.is_empty() && remove.is_empty());
    }

    #[test]
    fn an_unregistered_learner_is_removed_and_not_added_back() {
        let mut image = image();
        let unregister = Command::UnregisterBroker { broker_id: 4 };
        assert_eq!(image.apply(3, &unregister), super::super::CommandResult::Ok);
        let (add, remove) =
            learner_changes(&image, &BTreeSet::from([1, 4]), &BTreeSet::from([4]), 2);
        assert!(add.is_empty(), "{add:?}");
        assert_eq!(remove, vec![4]);
        // Once removed it stays out: nothing registers it.
        let (add, remove) = learner_changes(&image, &BTreeSet::from([1]), &BTreeSet::new(), 4);
        assert!(add.is_empty() && remove.is_empty());
    }

    #[test]
    fn learners_are_kept_while_the_image_lags_the_membership() {
        // A controller that just took over has applied only up to index 1: learner 5
        // was added (at index 7) after a registration this image has not seen yet.
        let image = MetadataImage {
            applied_index: 1,
            ..MetadataImage::default()
        };
        let (_, remove) = learner_changes(&image, &BTreeSet::from([1, 5]), &BTreeSet::from([5]), 7);
        assert!(remove.is_empty());
    }
}
