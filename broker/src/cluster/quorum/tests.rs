//! In-process clusters on loopback: every node is a `Quorum` behind its own tonic server on
//! an ephemeral 127.0.0.1 port. The image's apply is the lead's, so these check what this
//! layer guarantees: indexes, applied indexes, identical images, leaders, files on disk.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::*;

/// Upper bound on any one test: a hang fails instead of blocking the run.
const TEST_LIMIT: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future<Output = ()>>(test: F) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test did not finish in time");
}

fn config(
    id: i32,
    voters: &BTreeMap<i32, String>,
    dir: &Path,
    snapshot_every: u64,
) -> QuorumConfig {
    QuorumConfig {
        node_id: id,
        voters: voters.clone(),
        dir: dir.to_path_buf(),
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 500,
        election_timeout_max_ms: 1000,
        snapshot_every,
        local_ip: None,
    }
}

struct TestNode {
    id: i32,
    quorum: Quorum,
    image: Arc<RwLock<MetadataImage>>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

async fn bind(addr: &str) -> TcpListener {
    TcpListener::bind(addr).await.expect("bind loopback")
}

/// Binds one loopback listener per node id; the voters map names their addresses.
async fn listeners(ids: &[i32]) -> (BTreeMap<i32, String>, BTreeMap<i32, TcpListener>) {
    let mut voters = BTreeMap::new();
    let mut bound = BTreeMap::new();
    for &id in ids {
        let listener = bind("127.0.0.1:0").await;
        voters.insert(id, listener.local_addr().unwrap().to_string());
        bound.insert(id, listener);
    }
    (voters, bound)
}

async fn start_node(
    id: i32,
    voters: &BTreeMap<i32, String>,
    dir: &Path,
    listener: TcpListener,
    snapshot_every: u64,
) -> TestNode {
    let image = Arc::new(RwLock::new(MetadataImage::default()));
    let quorum = Quorum::start(config(id, voters, dir, snapshot_every), image.clone())
        .await
        .expect("quorum start");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .add_service(quorum.raft_service())
        .add_service(quorum.controller_service(Arc::new(NoControllerLogic)));
    let server = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stop_rx.await;
            })
            .await;
    });
    TestNode {
        id,
        quorum,
        image,
        stop_server: Some(stop_tx),
        server,
    }
}

impl TestNode {
    /// Stops the quorum member and its server (closing its connections, so peers see it
    /// gone and a restart on the same port is reached afresh).
    async fn stop(mut self) {
        self.quorum.shutdown().await;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }

    fn image_json(&self) -> String {
        serde_json::to_string(&*self.image.read()).unwrap()
    }

    fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.quorum.inner.raft.metrics().borrow().clone()
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node names the same leader and that leader (when among `nodes`)
/// knows it leads.
async fn agreed_leader(nodes: &[&TestNode]) -> i32 {
    eventually("an agreed leader", || {
        let leader = nodes[0].quorum.leader_id()?;
        let agreed = nodes.iter().all(|n| n.quorum.leader_id() == Some(leader));
        let leads = nodes
            .iter()
            .filter(|n| n.id == leader)
            .all(|n| n.quorum.is_leader());
        (agreed && leads).then_some(leader)
    })
    .await
}

fn command(n: u64) -> Command {
    Command::InitCluster {
        cluster_id: format!("cluster-{n}"),
        unclean_leader_election_enable: false,
    }
}

async fn assert_same_applied(nodes: &[&TestNode], index: u64) {
    for node in nodes {
        assert!(
            node.quorum.wait_applied(index, WAIT).await,
            "node {} did not apply index {index}",
            node.id
        );
    }
    // Followers learn the commit a heartbeat later than the leader: compare once all have
    // applied the same last index.
    let images = eventually("identical images", || {
        let first = nodes[0].image_json();
        nodes
            .iter()
            .all(|n| {
                n.image_json() == first
                    && *n.quorum.applied().borrow() == *nodes[0].quorum.applied().borrow()
            })
            .then_some(first)
    })
    .await;
    let applied = nodes[0].image.read().applied_index;
    assert!(applied >= index);
    assert!(!images.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_elects_itself_and_applies() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (voters, mut bound) = listeners(&[1]).await;
        let addr = voters[&1].clone();
        let node = start_node(1, &voters, dir.path(), bound.remove(&1).unwrap(), 1000).await;
        assert_eq!(agreed_leader(&[&node]).await, 1);
        assert!(node.quorum.is_leader());

        let first = node.quorum.propose(command(1)).await.unwrap();
        assert_eq!(first.result, CommandResult::Ok);
        assert!(
            first.index >= 1,
            "index {} after the membership entry",
            first.index
        );
        let second = node.quorum.propose(command(2)).await.unwrap();
        assert_eq!(second.index, first.index + 1);
        assert_eq!(node.image.read().applied_index, second.index);
        assert_eq!(*node.quorum.applied().borrow(), second.index);
        let term = node.metrics().vote.leader_id().term;
        let image = node.image_json();
        node.stop().await;
        // As if the node died in the middle of appending: half a frame at the end.
        {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("raft-log"))
                .unwrap();
            log.write_all(&[64, 0, 0, 0, 9, 9, 9, 9, b'{']).unwrap();
        }

        // Restart from the same directory: the log and vote are still there (the torn tail
        // is cut), the image is rebuilt to the same applied index, and new proposals follow
        // on.
        let node = start_node(1, &voters, dir.path(), bind(&addr).await, 1000).await;
        assert!(node.quorum.wait_applied(second.index, WAIT).await);
        assert!(node.metrics().vote.leader_id().term >= term);
        assert_eq!(node.image_json(), image);
        agreed_leader(&[&node]).await;
        let third = node.quorum.propose(command(3)).await.unwrap();
        assert!(third.index > second.index);
        assert_eq!(node.image.read().applied_index, third.index);
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_commit_through_a_follower() {
    bounded(async {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (voters, mut bound) = listeners(&[1, 2, 3]).await;
        let mut nodes = Vec::new();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            nodes.push(
                start_node(
                    id,
                    &voters,
                    dirs[i].path(),
                    bound.remove(&id).unwrap(),
                    1000,
                )
                .await,
            );
        }
        let all: Vec<&TestNode> = nodes.iter().collect();
        let leader = agreed_leader(&all).await;
        assert_eq!(all.iter().filter(|n| n.quorum.is_leader()).count(), 1);

        let follower = all.iter().find(|n| n.id != leader).unwrap();
        assert!(!follower.quorum.is_leader());
        let forwarded = follower.quorum.propose(command(1)).await.unwrap();
        assert_eq!(forwarded.result, CommandResult::Ok);
        let leader_node = all.iter().find(|n| n.id == leader).unwrap();
        let direct = leader_node.quorum.propose(command(2)).await.unwrap();
        assert_eq!(direct.index, forwarded.index + 1);
        assert_same_applied(&all, direct.index).await;
        for node in nodes {
            node.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_and_restarted_node_catches_up() {
    bounded(async {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (voters, mut bound) = listeners(&[1, 2, 3]).await;
        let mut nodes = Vec::new();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            nodes.push(
                start_node(
                    id,
                    &voters,
                    dirs[i].path(),
                    bound.remove(&id).unwrap(),
                    1000,
                )
                .await,
            );
        }
        let old_leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
        let before = nodes[0].quorum.propose(command(1)).await.unwrap();

        let pos = nodes.iter().position(|n| n.id == old_leader).unwrap();
        nodes.remove(pos).stop().await;
        let survivors: Vec<&TestNode> = nodes.iter().collect();
        let new_leader = eventually("a new leader", || {
            survivors
                .iter()
                .find(|n| n.quorum.is_leader())
                .map(|n| n.id)
                .filter(|&id| id != old_leader)
        })
        .await;
        assert_ne!(new_leader, old_leader);
        let mut last = before;
        for (i, node) in survivors.iter().enumerate() {
            let proposed = node.quorum.propose(command(10 + i as u64)).await.unwrap();
            assert!(proposed.index > last.index);
            last = proposed;
        }
        assert_same_applied(&survivors, last.index).await;

        // The old leader comes back on its old address with its old directory.
        let restarted = start_node(
            old_leader,
            &voters,
            dirs[pos].path(),
            bind(&voters[&old_leader]).await,
            1000,
        )
        .await;
        nodes.push(restarted);
        let all: Vec<&TestNode> = nodes.iter().collect();
        assert_same_applied(&all, last.index).await;
        assert_eq!(agreed_leader(&all).await, new_leader);
        // It takes proposals again (forwarded).
        let restarted = all.iter().find(|n| n.id == old_leader).unwrap();
        let after = restarted.quorum.propose(command(20)).await.unwrap();
        assert_same_applied(&all, after.index).await;
        for node in nodes {
            node.stop().await;
        }
    })
    .await;
}

fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join("snapshot.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_bring_up_late_nodes() {
    bounded(async {
        const EVERY: u64 = 5;
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (voters, mut bound) = listeners(&[1, 2, 3]).await;
        // Node 3 is down (nothing listens on its port) while the others commit.
        drop(bound.remove(&3));
        let mut nodes = Vec::new();
        for (i, id) in [1, 2].into_iter().enumerate() {
            nodes.push(
                start_node(
                    id,
                    &voters,
                    dirs[i].path(),
                    bound.remove(&id).unwrap(),
                    EVERY,
                )
                .await,
            );
        }
        let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
        let mut last = 0;
        for n in 0..20 {
            let proposer = &nodes[n % 2];
            last = proposer
                .quorum
                .propose(command(n as u64))
                .await
                .unwrap()
                .index;
        }
        let pair: Vec<&TestNode> = nodes.iter().collect();
        assert_same_applied(&pair, last).await;

        // Every node snapshots on its own and purges the log behind the snapshot.
        for (i, node) in nodes.iter().enumerate() {
            let purged = eventually("a snapshot and a purged log", || {
                let m = node.metrics();
                let snapshot = m.snapshot?;
                let purged = m.purged?;
                (snapshot.index + EVERY > last && purged.index > 0).then_some(purged.index)
            })
            .await;
            assert!(snapshot_file(dirs[i].path()).exists());
            assert!(
                purged + EVERY + 2 >= last - EVERY,
                "log not bounded: purged {purged} of {last}"
            );
        }

        // Node 3 starts with an empty directory: the entries it lacks are purged
        // everywhere, so it can only catch up by installing a snapshot.
        let leader_purged = nodes
            .iter()
            .find(|n| n.id == leader)
            .unwrap()
            .metrics()
            .purged
            .unwrap();
        nodes.push(start_node(3, &voters, dirs[2].path(), bind(&voters[&3]).await, EVERY).await);
        let all: Vec<&TestNode> = nodes.iter().collect();
        assert_same_applied(&all, last).await;
        let late = nodes[2].metrics();
        assert!(
            late.snapshot
                .is_some_and(|s| s.index >= leader_purged.index),
            "node 3 snapshot {:?}, leader purged {leader_purged}",
            late.snapshot
        );
        assert!(snapshot_file(dirs[2].path()).exists());

        // A restarted follower starts from its snapshot: before replaying anything its
        // image is already at the snapshot's index.
        let follower_pos = nodes
            .iter()
            .position(|n| n.id != leader && n.id != 3)
            .unwrap();
        let follower_id = nodes[follower_pos].id;
        let stored: serde_json::Value = serde_json::from_slice(
            &std::fs::read(snapshot_file(dirs[follower_pos].path())).unwrap(),
        )
        .unwrap();
        let snapshot_index = stored["meta"]["last_log_id"]["index"].as_u64().unwrap();
        nodes.remove(follower_pos).stop().await;
        let image = Arc::new(RwLock::new(MetadataImage::default()));
        let quorum = Quorum::start(
            config(follower_id, &voters, dirs[follower_pos].path(), EVERY),
            image.clone(),
        )
        .await
        .unwrap();
        assert!(*quorum.applied().borrow() >= snapshot_index);
        assert!(image.read().applied_index >= snapshot_index);
        quorum.shutdown().await;
        let restarted = start_node(
            follower_id,
            &voters,
            dirs[follower_pos].path(),
            bind(&voters[&follower_id]).await,
            EVERY,
        )
        .await;
        nodes.push(restarted);
        let proposed = nodes[0].quorum.propose(command(99)).await.unwrap();
        let all: Vec<&TestNode> = nodes.iter().collect();
        assert_same_applied(&all, proposed.index).await;
        for node in nodes {
            node.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_voter_set_refuses_to_start() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (voters, bound) = listeners(&[1, 2, 3, 4]).await;
        // Nothing needs to answer: node 1 only has to form its quorum on disk.
        drop(bound);
        let first: BTreeMap<i32, String> = voters
            .iter()
            .filter(|(&id, _)| id != 4)
            .map(|(&id, a)| (id, a.clone()))
            .collect();
        let image = Arc::new(RwLock::new(MetadataImage::default()));
        let quorum = Quorum::start(config(1, &first, dir.path(), 1000), image.clone())
            .await
            .unwrap();
        quorum.shutdown().await;

        let second: BTreeMap<i32, String> = voters
            .iter()
            .filter(|(&id, _)| id != 3)
            .map(|(&id, a)| (id, a.clone()))
            .collect();
        let err = match Quorum::start(config(1, &second, dir.path(), 1000), image).await {
            Ok(quorum) => {
                quorum.shutdown().await;
                panic!("started with a different voter set");
            }
            Err(err) => err,
        };
        assert!(matches!(err, QuorumError::VoterSetMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("{1, 2, 3}"), "{message}");
        assert!(message.contains("{1, 2, 4}"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = Arc::new(RwLock::new(MetadataImage::default()));
    let voters = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
    let mut bad_timing = config(1, &voters, dir.path(), 1000);
    bad_timing.election_timeout_min_ms = 50;
    let bad_address = BTreeMap::from([(1, "not an address".to_string())]);
    let cases = [
        config(-1, &voters, dir.path(), 1000),
        config(1, &bad_address, dir.path(), 1000),
        config(1, &BTreeMap::new(), dir.path(), 1000),
        config(1, &voters, dir.path(), 0),
        bad_timing,
    ];
    for case in cases {
        match Quorum::start(case.clone(), image.clone()).await {
            Err(QuorumError::Config(_)) => {}
            Err(e) => panic!("{case:?}: unexpected error {e}"),
            Ok(q) => {
                q.shutdown().await;
                panic!("{case:?} started");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_learner_stops_receiving_the_log_until_added_again() {
    bounded(async {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let (voters, mut bound) = listeners(&[1]).await;
        let voter = start_node(1, &voters, dirs[0].path(), bound.remove(&1).unwrap(), 1000).await;
        assert_eq!(agreed_leader(&[&voter]).await, 1);
        let learner_listener = bind("127.0.0.1:0").await;
        let learner_addr = learner_listener.local_addr().unwrap().to_string();
        let learner = start_node(4, &voters, dirs[1].path(), learner_listener, 1000).await;

        voter
            .quorum
            .add_learner(4, learner_addr.clone())
            .await
            .unwrap();
        assert_eq!(voter.quorum.members(), BTreeSet::from([1, 4]));
        let first = voter.quorum.propose(command(1)).await.unwrap();
        assert!(learner.quorum.wait_applied(first.index, WAIT).await);

        voter.quorum.remove_learner(4).await.unwrap();
        assert_eq!(voter.quorum.members(), BTreeSet::from([1]));
        let (learners, membership_index) = voter.quorum.learners();
        assert!(learners.is_empty());
        assert!(membership_index > first.index);
        let second = voter.quorum.propose(command(2)).await.unwrap();
        assert!(
            !learner
                .quorum
                .wait_applied(second.index, Duration::from_millis(1500))
                .await,
            "a removed learner still receives the log"
        );
        // A voter is not a learner: removing it is refused.
        assert!(voter.quorum.remove_learner(1).await.is_err());

        // Registering again makes it a learner again, and it catches up.
        voter.quorum.add_learner(4, learner_addr).await.unwrap();
        assert!(learner.quorum.wait_applied(second.index, WAIT).await);
        learner.stop().await;
        voter.stop().await;
    })
    .await;
}
