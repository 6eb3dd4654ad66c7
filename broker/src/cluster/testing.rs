//! A one-node cluster for unit tests: the real quorum (one voter) in a temp dir, the
//! broker registered and unfenced, and a publisher applying each change to the
//! replica manager, as `run` does.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::node::ClusterNode;
use super::quorum::{Quorum, QuorumConfig};
use super::{Command, CommandResult, MetadataImage};
use crate::config::BrokerConfig;
use crate::replica_manager::ReplicaManager;

pub struct SingleNode {
    pub node: Arc<ClusterNode>,
    pub replicas: Arc<ReplicaManager>,
    /// Tests call blocking APIs from their own thread, which has entered the runtime.
    _guard: tokio::runtime::EnterGuard<'static>,
    /// Dropped last: the publisher runs on it.
    pub runtime: tokio::runtime::Runtime,
}

impl SingleNode {
    pub fn start(config: BrokerConfig) -> SingleNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let (node, replicas) = runtime.block_on(async {
            let image = Arc::new(RwLock::new(MetadataImage::default()));
            let quorum = Quorum::start(
                QuorumConfig::new(
                    config.node_id,
                    [(config.node_id, "127.0.0.1:0".to_string())].into(),
                    config.log_dir.join("__cluster_metadata-0"),
                ),
                image.clone(),
            )
            .await
            .expect("one-voter quorum");
            let node = Arc::new(ClusterNode::new(config.node_id, quorum, image));
            let register = Command::RegisterBroker {
                broker_id: config.node_id,
                incarnation_id: node.incarnation_id,
                endpoints: super::lifecycle::endpoints(&config),
                rack: None,
            };
            // A previous node over the same dir left its registration alive.
            let previous = node.image().brokers.get(&config.node_id).cloned();
            if let Some(b) = previous.filter(|b| !b.fenced) {
                let fence = Command::FenceBroker {
                    broker_id: b.broker_id,
                    broker_epoch: b.broker_epoch,
                };
                node.propose_committed(fence)
                    .await
                    .expect("fence the previous node");
            }
            let (result, index) = node.propose_committed(register).await.expect("register");
            let CommandResult::BrokerRegistered { broker_epoch } = result else {
                panic!("{result:?}")
            };
            node.set_registration(broker_epoch, index);
            let unfence = Command::UnfenceBroker {
                broker_id: config.node_id,
                broker_epoch,
            };
            node.propose_committed(unfence).await.expect("unfence");
            let init = Command::InitCluster {
                unclean_leader_election_enable: false,
                cluster_id: crate::metadata::new_cluster_id(),
            };
            node.propose_committed(init).await.expect("init");
            let replicas = Arc::new(ReplicaManager::open(config, node.clone()).expect("open"));
            tokio::spawn(publish(node.clone(), replicas.clone()));
            let applied = *node.quorum().applied().borrow();
            assert!(node.wait_published(applied, Duration::from_secs(10)).await);
            (node, replicas)
        });
        // The guard is dropped before the runtime (field order); the leaked handle
        // (one per test) gives it the 'static lifetime it needs.
        let handle: &'static tokio::runtime::Handle = Box::leak(Box::new(runtime.handle().clone()));
        SingleNode {
            node,
            replicas,
            _guard: handle.enter(),
            runtime,
        }
    }
}

async fn publish(node: Arc<ClusterNode>, replicas: Arc<ReplicaManager>) {
    let mut applied = node.quorum().applied();
    loop {
        let index = *applied.borrow_and_update();
        let image = node.image().clone();
        let r = replicas.clone();
        let _ = tokio::task::spawn_blocking(move || r.apply_image(&image)).await;
        node.set_published(index);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

impl SingleNode {
    /// Stops the quorum so another node can open the same directory.
    pub fn stop(self) {
        self.replicas.shutdown();
        let quorum = self.node.quorum().clone();
        self.runtime.block_on(quorum.shutdown());
    }
}
