//! The admin client and the Topic reconciler against a real `rill-broker dev` process
//! on loopback. Build the broker first (`cargo build -p rill-broker`); the binary is
//! found through `RILL_BROKER_BIN`, `$CARGO_TARGET_DIR/debug/rill-broker`, or next to
//! this test's own target directory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use rill_operator::kafka_admin::{
    AdminClient, AdminConfig, AdminError, ReassignmentTarget, TopicMetadata, Unregistered,
};
use rill_operator::topic::{self, Action, SpecStatus, TopicProblem, TopicSpecView};

const BROKER_ID: i32 = 1;

/// A `rill-broker dev` process, killed by its PID when dropped (also when a test fails).
struct DevBroker {
    child: Child,
    addr: String,
    metrics_addr: String,
    data: tempfile::TempDir,
}

impl DevBroker {
    async fn start() -> DevBroker {
        let data = tempfile::tempdir().expect("temp dir");
        let ports = free_ports("127.0.0.1", 2);
        let addr = format!("127.0.0.1:{}", ports[0]);
        let metrics_addr = format!("127.0.0.1:{}", ports[1]);
        let child = spawn(&addr, &metrics_addr, &data);
        let mut broker = DevBroker {
            child,
            addr,
            metrics_addr,
            data,
        };
        broker.wait_until_serving().await;
        broker
    }

    /// Kills the process and starts a new one on the same port and data.
    async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.addr, &self.metrics_addr, &self.data);
        self.wait_until_serving().await;
    }

    fn bootstrap(&self) -> Vec<String> {
        vec![self.addr.clone()]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("broker.log")).unwrap_or_default()
    }

    /// Until the broker answers Metadata, bounded.
    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rill-broker exited with {status}:\n{}", self.log());
            }
            if AdminClient::connect(&self.bootstrap(), quick_config())
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rill-broker did not serve on {} within 30 s:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn admin(&self) -> AdminClient {
        AdminClient::connect(&self.bootstrap(), test_config())
            .await
            .expect("admin client connects")
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(addr: &str, metrics_addr: &str, data: &tempfile::TempDir) -> Child {
    let bin = broker_binary();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.path().join("broker.log"))
        .expect("log file");
    Command::new(&bin)
        .arg("dev")
        .arg("--listen")
        .arg(addr)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--metrics-listen")
        .arg(metrics_addr)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

fn broker_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("RILL_BROKER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "RILL_BROKER_BIN={} is not a file",
            bin.display()
        );
        return bin;
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug/rill-broker"));
    }
    // target/debug/deps/kafka_admin-<hash> -> target/debug/rill-broker
    if let Ok(exe) = std::env::current_exe() {
        if let Some(debug) = exe.parent().and_then(|deps| deps.parent()) {
            candidates.push(debug.join("rill-broker"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "rill-broker binary not found (looked at {candidates:?}); \
                 run `cargo build -p rill-broker` or set RILL_BROKER_BIN"
            )
        })
}

/// `n` distinct ports free on `ip`, below the kernel's ephemeral range (from 32768) so
/// that no outgoing connection of a parallel test takes one before the broker binds it.
fn free_ports(ip: &str, n: usize) -> Vec<u16> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    let start = 20_000 + seed % 12_000;
    // Held until all are found, so the `n` are distinct.
    let mut held = Vec::new();
    for offset in 0..12_000 {
        let port = (20_000 + (start - 20_000 + offset) % 12_000) as u16;
        if let Ok(listener) = TcpListener::bind((ip, port)) {
            held.push((port, listener));
            if held.len() == n {
                return held.into_iter().map(|(port, _)| port).collect();
            }
        }
    }
    panic!("no {n} free ports on {ip} in 20000..32000");
}

fn free_port() -> u16 {
    free_ports("127.0.0.1", 1)[0]
}

fn test_config() -> AdminConfig {
    AdminConfig {
        request_timeout: Duration::from_secs(10),
        ..AdminConfig::default()
    }
}

fn quick_config() -> AdminConfig {
    AdminConfig {
        request_timeout: Duration::from_secs(2),
        max_attempts: 1,
        ..AdminConfig::default()
    }
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn kafka_code(result: Result<impl std::fmt::Debug, AdminError>) -> ResponseError {
    match result {
        Err(AdminError::Kafka { error, .. }) => error.error,
        other => panic!("expected a Kafka error code, got {other:?}"),
    }
}

/// Waits (bounded) until `topic` shows with a leader for every partition: brokers learn
/// a new topic a little after the controller, and its partitions may briefly answer
/// LEADER_NOT_AVAILABLE.
async fn described_with_leaders(admin: &mut AdminClient, topic: &str) -> TopicMetadata {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let described = admin.describe_topic(topic).await.expect("Metadata");
        if let Some(t) = &described {
            if t.partitions
                .iter()
                .all(|p| p.error.is_none() && p.leader >= 0)
            {
                return t.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic} has no leaders after 10 s: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until no broker we ask still lists `topic`.
async fn gone(admin: &mut AdminClient, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .describe_topic(topic)
        .await
        .expect("Metadata")
        .is_some()
    {
        assert!(Instant::now() < deadline, "{topic} still listed after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn no_reachable_bootstrap_address_is_a_clear_error() {
    let addr = format!("127.0.0.1:{}", free_port());
    let result = AdminClient::connect(std::slice::from_ref(&addr), quick_config()).await;
    match result {
        Err(AdminError::NoBrokerReachable { tried, .. }) => assert_eq!(tried, vec![addr]),
        Err(other) => panic!("expected NoBrokerReachable, got {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test]
async fn admin_calls_against_a_dev_broker() {
    let broker = DevBroker::start().await;
    let mut admin = broker.admin().await;

    // Cluster: one broker, which is also the controller.
    let cluster = admin.describe_cluster().await.expect("DescribeCluster");
    assert_eq!(cluster.controller_id, BROKER_ID);
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].node_id, BROKER_ID);
    assert_eq!(cluster.brokers[0].address(), broker.addr);
    assert!(!cluster.brokers[0].is_fenced);
    assert!(!cluster.cluster_id.is_empty());
    assert_eq!(admin.controller_id(), BROKER_ID);
    assert_eq!(admin.brokers().get(&BROKER_ID), Some(&broker.addr));

    // CreateTopics, with a topic config.
    let created = admin
        .create_topic("payments", 3, 1, &configs(&[("retention.ms", "3600000")]))
        .await
        .expect("CreateTopics");
    assert_eq!(created.partitions, 3);
    assert_eq!(created.replication_factor, 1);
    let id = created
        .topic_id
        .expect("CreateTopics v7 returns the topic id");

    // Metadata: id, partitions, replicas, ISR, leader; no auto-creation on lookups.
    let meta = admin.metadata(None).await.expect("Metadata");
    assert_eq!(
        meta.cluster_id.as_deref(),
        Some(cluster.cluster_id.as_str())
    );
    assert_eq!(meta.controller_id, BROKER_ID);
    assert_eq!(
        meta.brokers.iter().map(|b| b.address()).collect::<Vec<_>>(),
        vec![broker.addr.clone()]
    );
    let t = described_with_leaders(&mut admin, "payments").await;
    assert_eq!(meta.topic("payments").map(|t| t.topic_id), Some(Some(id)));
    assert_eq!(t.topic_id, Some(id));
    assert!(!t.is_internal);
    assert_eq!(t.replication_factor(), 1);
    assert_eq!(
        t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for p in &t.partitions {
        assert_eq!(p.leader, BROKER_ID, "{p:?}");
        assert_eq!(p.replicas, vec![BROKER_ID]);
        assert_eq!(p.isr, vec![BROKER_ID]);
        assert!(p.offline_replicas.is_empty());
        assert_eq!(p.error, None);
    }
    assert_eq!(
        admin
            .describe_topic("no-such-topic")
            .await
            .expect("Metadata"),
        None
    );
    assert_eq!(
        admin
            .describe_topic("no-such-topic")
            .await
            .expect("Metadata"),
        None,
        "lookups must not auto-create"
    );

    // A second create of the same name.
    assert_eq!(
        kafka_code(admin.create_topic("payments", 3, 1, &BTreeMap::new()).await),
        ResponseError::TopicAlreadyExists
    );

    // DescribeConfigs: only what is set on the topic.
    assert_eq!(
        admin
            .describe_topic_configs("payments")
            .await
            .expect("DescribeConfigs"),
        configs(&[("retention.ms", "3600000")])
    );
    assert_eq!(
        kafka_code(admin.describe_topic_configs("no-such-topic").await),
        ResponseError::UnknownTopicOrPartition
    );

    // IncrementalAlterConfigs: SET one, DELETE another, leave the rest.
    admin
        .incremental_alter_topic_configs(
            "payments",
            &configs(&[("segment.bytes", "1048576"), ("cleanup.policy", "compact")]),
            &names(&["retention.ms"]),
        )
        .await
        .expect("IncrementalAlterConfigs");
    assert_eq!(
        admin
            .describe_topic_configs("payments")
            .await
            .expect("DescribeConfigs"),
        configs(&[("cleanup.policy", "compact"), ("segment.bytes", "1048576")])
    );
    let invalid = admin
        .incremental_alter_topic_configs(
            "payments",
            &configs(&[("retention.ms", "forever")]),
            &BTreeSet::new(),
        )
        .await;
    assert_eq!(kafka_code(invalid), ResponseError::InvalidConfig);

    // CreatePartitions: grow to a total; shrinking is the broker's INVALID_PARTITIONS.
    admin
        .create_partitions("payments", 5)
        .await
        .expect("CreatePartitions");
    let t = described_with_leaders(&mut admin, "payments").await;
    assert_eq!(t.partitions.len(), 5);
    assert_eq!(t.topic_id, Some(id), "growing keeps the topic id");
    let shrink = admin.create_partitions("payments", 2).await;
    let error = shrink.as_ref().err().and_then(|e| e.kafka()).cloned();
    assert_eq!(kafka_code(shrink), ResponseError::InvalidPartitions);
    assert_eq!(
        error.map(|e| e.name()).as_deref(),
        Some("INVALID_PARTITIONS")
    );

    // Reassignments: a one-broker cluster can only move a partition onto itself.
    admin
        .alter_partition_reassignments(&[ReassignmentTarget {
            topic: "payments".into(),
            partition: 0,
            replicas: Some(vec![BROKER_ID]),
        }])
        .await
        .expect("AlterPartitionReassignments onto the same broker");
    assert_eq!(
        admin
            .list_partition_reassignments(None)
            .await
            .expect("ListPartitionReassignments"),
        vec![]
    );
    let filter = BTreeMap::from([("payments".to_string(), vec![0, 1])]);
    assert_eq!(
        admin
            .list_partition_reassignments(Some(&filter))
            .await
            .expect("ListPartitionReassignments"),
        vec![]
    );
    let to_unknown = admin
        .alter_partition_reassignments(&[ReassignmentTarget {
            topic: "payments".into(),
            partition: 1,
            replicas: Some(vec![2]),
        }])
        .await;
    let message = to_unknown
        .as_ref()
        .err()
        .and_then(|e| e.kafka())
        .and_then(|e| e.message.clone());
    assert_eq!(
        kafka_code(to_unknown),
        ResponseError::InvalidReplicaAssignment
    );
    assert_eq!(
        message.as_deref(),
        Some("payments-1: broker 2 is not registered")
    );
    let cancel = admin
        .alter_partition_reassignments(&[ReassignmentTarget {
            topic: "payments".into(),
            partition: 0,
            replicas: None,
        }])
        .await;
    assert_eq!(kafka_code(cancel), ResponseError::NoReassignmentInProgress);

    // The broker restarts under the client: the broken connection is dropped and the
    // call retried on a new one.
    let mut broker = broker;
    broker.restart().await;
    let t = admin
        .describe_topic("payments")
        .await
        .expect("Metadata after a restart")
        .expect("the topic survives a restart");
    assert_eq!(t.topic_id, Some(id));
    assert_eq!(t.partitions.len(), 5);

    // DeleteTopics; deleting again names the missing topic.
    admin.delete_topic("payments").await.expect("DeleteTopics");
    assert_eq!(
        admin.describe_topic("payments").await.expect("Metadata"),
        None
    );
    assert_eq!(
        kafka_code(admin.delete_topic("payments").await),
        ResponseError::UnknownTopicOrPartition
    );
}

fn spec(partitions: i32, replication_factor: i16, config: &[(&str, &str)]) -> TopicSpecView {
    TopicSpecView {
        name: "orders".into(),
        partitions,
        replication_factor,
        config: configs(config),
    }
}

#[tokio::test]
async fn topic_reconcile_end_to_end() {
    let broker = DevBroker::start().await;

    // Create from a spec, through the entry point that connects by itself.
    let s = spec(2, 1, &[("retention.ms", "3600000")]);
    let outcome = topic::reconcile(&broker.bootstrap(), test_config(), &s, SpecStatus::Changed)
        .await
        .expect("reconcile creates");
    let id = outcome.topic_id.expect("a topic id after creation");
    assert_eq!(outcome.partitions, 2);
    assert_eq!(outcome.replication_factor, 1);
    assert_eq!(
        outcome.applied,
        vec![Action::Create {
            partitions: 2,
            replication_factor: 1,
            configs: configs(&[("retention.ms", "3600000")]),
        }]
    );
    assert!(outcome.problems.is_empty());
    assert!(outcome.ready());
    assert!(!outcome.drift_was_corrected());

    let mut admin = broker.admin().await;
    let observed = topic::observe(&mut admin, "orders")
        .await
        .expect("observe")
        .expect("exists");
    assert_eq!(observed.id, Some(id));
    assert_eq!(observed.partitions, 2);
    assert_eq!(observed.configs, configs(&[("retention.ms", "3600000")]));

    // Applied again: nothing to do.
    let outcome = topic::reconcile_with(&mut admin, &s, SpecStatus::Applied)
        .await
        .expect("reconcile");
    assert_eq!(outcome.applied, vec![]);
    assert_eq!(outcome.topic_id, Some(id));
    assert!(outcome.ready());

    // More partitions.
    let s = spec(4, 1, &[("retention.ms", "3600000")]);
    let outcome = topic::reconcile_with(&mut admin, &s, SpecStatus::Changed)
        .await
        .expect("reconcile");
    assert_eq!(outcome.applied, vec![Action::CreatePartitions { total: 4 }]);
    assert_eq!(outcome.partitions, 4);
    assert_eq!(outcome.topic_id, Some(id));
    assert!(outcome.ready());

    // A config edit in the spec: set one, change one; not drift.
    let s = spec(
        4,
        1,
        &[("retention.ms", "7200000"), ("cleanup.policy", "compact")],
    );
    let outcome = topic::reconcile_with(&mut admin, &s, SpecStatus::Changed)
        .await
        .expect("reconcile");
    assert_eq!(
        outcome.applied,
        vec![Action::AlterConfigs {
            set: configs(&[("cleanup.policy", "compact"), ("retention.ms", "7200000")]),
            delete: BTreeSet::new(),
        }]
    );
    assert!(!outcome.drift_was_corrected());
    assert_eq!(
        admin
            .describe_topic_configs("orders")
            .await
            .expect("DescribeConfigs"),
        s.config
    );

    // Drift: someone alters the topic behind the operator's back.
    admin
        .incremental_alter_topic_configs(
            "orders",
            &configs(&[("retention.ms", "1000"), ("max.message.bytes", "2048")]),
            &names(&["cleanup.policy"]),
        )
        .await
        .expect("out-of-band alter");
    let outcome = topic::reconcile_with(&mut admin, &s, SpecStatus::Applied)
        .await
        .expect("reconcile");
    assert_eq!(
        outcome.drift_corrected,
        names(&["cleanup.policy", "max.message.bytes", "retention.ms"])
    );
    assert!(outcome.drift_was_corrected());
    assert!(outcome.ready());
    assert_eq!(
        admin
            .describe_topic_configs("orders")
            .await
            .expect("DescribeConfigs"),
        s.config,
        "the spec wins"
    );

    // Fewer partitions: refused, with the reason; the topic keeps 4.
    let smaller = spec(
        3,
        1,
        &[("retention.ms", "7200000"), ("cleanup.policy", "compact")],
    );
    let outcome = topic::reconcile_with(&mut admin, &smaller, SpecStatus::Changed)
        .await
        .expect("reconcile");
    assert!(!outcome.ready());
    assert_eq!(outcome.partitions, 4);
    assert_eq!(outcome.applied, vec![]);
    assert_eq!(
        outcome.error_reason(),
        Some(TopicProblem {
            reason: "PartitionDecreaseRefused".into(),
            message: "partitions cannot be reduced from 4 to 3".into(),
        })
    );

    // A different replication factor: refused too.
    let outcome = topic::reconcile_with(
        &mut admin,
        &spec(
            4,
            3,
            &[("retention.ms", "7200000"), ("cleanup.policy", "compact")],
        ),
        SpecStatus::Changed,
    )
    .await
    .expect("reconcile");
    assert_eq!(
        outcome.error_reason(),
        Some(TopicProblem {
            reason: "ReplicationFactorChangeRefused".into(),
            message: "replication factor change needs reassignment, not supported yet".into(),
        })
    );
    assert_eq!(outcome.replication_factor, 1);

    // A value the broker rejects is a problem in the outcome, not a transient error.
    let outcome = topic::reconcile_with(
        &mut admin,
        &spec(4, 1, &[("retention.ms", "forever")]),
        SpecStatus::Changed,
    )
    .await
    .expect("reconcile");
    let problem = outcome.error_reason().expect("a problem");
    assert_eq!(problem.reason, "InvalidConfig");
    assert!(
        problem.message.starts_with("INVALID_CONFIG (40)"),
        "{problem:?}"
    );
    assert!(!outcome.drift_was_corrected());
    assert_eq!(outcome.applied, vec![]);
    assert_eq!(outcome.topic_id, Some(id));

    // Delete, and delete again: both succeed.
    topic::delete(&mut admin, "orders").await.expect("delete");
    assert_eq!(
        topic::observe(&mut admin, "orders").await.expect("observe"),
        None
    );
    topic::delete(&mut admin, "orders")
        .await
        .expect("deleting a missing topic is done");

    // A replication factor larger than the cluster: the broker's reason, no topic.
    let outcome = topic::reconcile_with(&mut admin, &spec(1, 3, &[]), SpecStatus::Changed)
        .await
        .expect("reconcile");
    assert_eq!(outcome.topic_id, None);
    assert_eq!(
        outcome
            .problems
            .iter()
            .map(|p| p.reason.as_str())
            .collect::<Vec<_>>(),
        vec!["InvalidReplicationFactor"]
    );
}

/// Three `rill-broker run` nodes (broker and controller each) on 127.0.0.1..3, every
/// process killed by its PID when dropped.
struct RillCluster {
    children: Vec<Child>,
    bootstrap: Vec<String>,
    data: tempfile::TempDir,
}

impl RillCluster {
    async fn start(nodes: i32) -> RillCluster {
        let bin = broker_binary();
        let data = tempfile::tempdir().expect("temp dir");
        let ip = |i: i32| format!("127.0.0.{i}");
        let ports: Vec<(i32, u16, u16, u16)> = (1..=nodes)
            .map(|i| {
                let p = free_ports(&ip(i), 3);
                (i, p[0], p[1], p[2])
            })
            .collect();
        let voters = ports
            .iter()
            .map(|(i, _, controller, _)| format!("{i}@{}:{controller}", ip(*i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = RillCluster {
            children: Vec::new(),
            bootstrap: ports
                .iter()
                .map(|(i, kafka, _, _)| format!("{}:{kafka}", ip(*i)))
                .collect(),
            data,
        };
        for (i, kafka, controller, metrics) in &ports {
            let dir = cluster.data.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let properties = format!(
                "node.id={i}\n\
                 process.roles=broker,controller\n\
                 controller.quorum.voters={voters}\n\
                 listeners=PLAINTEXT://{h}:{kafka},CONTROLLER://{h}:{controller}\n\
                 advertised.listeners=PLAINTEXT://{h}:{kafka}\n\
                 metrics.listen={h}:{metrics}\n\
                 log.dirs={data}\n\
                 default.replication.factor=1\n\
                 broker.heartbeat.interval.ms=500\n",
                h = ip(*i),
                data = dir.join("data").display(),
            );
            let config = dir.join("server.properties");
            std::fs::write(&config, properties).expect("server.properties");
            let log = std::fs::File::create(dir.join("broker.log")).expect("log file");
            let child = Command::new(&bin)
                .arg("run")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            cluster.children.push(child);
        }
        cluster.wait_for_brokers(nodes as usize).await;
        cluster
    }

    fn logs(&self) -> String {
        (1..=self.children.len())
            .map(|i| {
                let path = self.data.path().join(format!("node{i}/broker.log"));
                format!(
                    "--- node {i}\n{}",
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Until every node is registered, unfenced and a controller is known, bounded.
    async fn wait_for_brokers(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("a rill-broker exited with {status}:\n{}", self.logs());
                }
            }
            if let Ok(mut admin) = AdminClient::connect(&self.bootstrap, quick_config()).await {
                if let Ok(c) = admin.describe_cluster().await {
                    if c.controller_id > 0 && c.brokers.iter().filter(|b| !b.is_fenced).count() == n
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not come up within 60 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for RillCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn controller_routing_and_reassignments_on_a_three_node_cluster() {
    let cluster = RillCluster::start(3).await;
    let mut admin = AdminClient::connect(&cluster.bootstrap, test_config())
        .await
        .expect("admin client connects");

    let described = admin.describe_cluster().await.expect("DescribeCluster");
    assert_eq!(
        described
            .brokers
            .iter()
            .map(|b| b.node_id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!((1..=3).contains(&described.controller_id));
    assert_eq!(admin.brokers().len(), 3);
    assert_eq!(
        admin.brokers().values().cloned().collect::<Vec<_>>(),
        cluster.bootstrap
    );

    // A replicated topic through the reconciler: RF 3, every replica in sync.
    let spec = TopicSpecView {
        name: "replicated".into(),
        partitions: 3,
        replication_factor: 3,
        config: configs(&[("min.insync.replicas", "2")]),
    };
    let outcome = topic::reconcile_with(&mut admin, &spec, SpecStatus::Changed)
        .await
        .expect("reconcile");
    assert!(outcome.ready(), "{outcome:?}");
    assert_eq!(outcome.partitions, 3);
    assert_eq!(outcome.replication_factor, 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = described_with_leaders(&mut admin, "replicated").await;
        let in_sync = t.partitions.iter().all(|p| {
            let mut isr = p.isr.clone();
            isr.sort_unstable();
            isr == vec![1, 2, 3] && p.replicas.len() == 3 && p.replicas.contains(&p.leader)
        });
        if in_sync {
            break;
        }
        assert!(Instant::now() < deadline, "ISR never reached 3: {t:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Move a single-replica partition to another broker and watch it finish.
    admin
        .create_topic("moving", 1, 1, &BTreeMap::new())
        .await
        .expect("CreateTopics");
    let before = described_with_leaders(&mut admin, "moving").await;
    let from = before.partitions[0].replicas.clone();
    assert_eq!(from.len(), 1);
    let to = if from[0] == 3 { 1 } else { from[0] + 1 };
    admin
        .alter_partition_reassignments(&[ReassignmentTarget {
            topic: "moving".into(),
            partition: 0,
            replicas: Some(vec![to]),
        }])
        .await
        .expect("AlterPartitionReassignments");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ongoing = admin
            .list_partition_reassignments(None)
            .await
            .expect("ListPartitionReassignments");
        // While it runs, Kafka's order: the target first, then the replica leaving.
        for r in &ongoing {
            assert_eq!(r.topic, "moving");
            assert_eq!(r.partition, 0);
            assert_eq!(r.replicas, vec![to, from[0]]);
            assert_eq!(r.adding_replicas, vec![to]);
            assert_eq!(r.removing_replicas, from);
        }
        let now = described_with_leaders(&mut admin, "moving").await;
        if ongoing.is_empty() && now.partitions[0].replicas == vec![to] {
            assert_eq!(now.partitions[0].leader, to);
            assert_eq!(now.partitions[0].isr, vec![to]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reassignment did not finish: {ongoing:?} {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing to cancel any more.
    let cancel = admin
        .alter_partition_reassignments(&[ReassignmentTarget {
            topic: "moving".into(),
            partition: 0,
            replicas: None,
        }])
        .await;
    assert_eq!(kafka_code(cancel), ResponseError::NoReassignmentInProgress);

    // A reorder-only reassignment moves no data; ElectLeaders (preferred) then makes
    // the new first replica the leader, and a partition already led by its first
    // replica is not an error (ELECTION_NOT_NEEDED).
    let p0 = described_with_leaders(&mut admin, "replicated")
        .await
        .partitions[0]
        .clone();
    let mut reordered = p0.replicas.clone();
    reordered.retain(|r| *r != p0.leader);
    reordered.push(p0.leader);
    admin
        .alter_partition_reassignments(&[ReassignmentTarget {
            topic: "replicated".into(),
            partition: 0,
            replicas: Some(reordered.clone()),
        }])
        .await
        .expect("reorder");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let results = admin
            .elect_leaders(&[("replicated".to_string(), 0), ("replicated".to_string(), 1)])
            .await
            .expect("ElectLeaders");
        let now = described_with_leaders(&mut admin, "replicated")
            .await
            .partitions[0]
            .clone();
        if now.replicas == reordered && now.leader == reordered[0] {
            assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "preferred leader not elected: {now:?} {results:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = admin.all_metadata().await.expect("Metadata");
    assert_eq!(all.assignments()[&("replicated".to_string(), 0)], reordered);

    // A broker id nobody registered: done either way; brokers without the API yet say so.
    let unregistered = admin.unregister_broker(99).await.expect("UnregisterBroker");
    assert!(
        matches!(
            unregistered,
            Unregistered::NotRegistered | Unregistered::Unsupported
        ),
        "{unregistered:?}"
    );

    topic::delete(&mut admin, "moving").await.expect("delete");
    topic::delete(&mut admin, "replicated")
        .await
        .expect("delete");
    gone(&mut admin, "moving").await;
    gone(&mut admin, "replicated").await;
}
