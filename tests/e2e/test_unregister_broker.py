"""UnregisterBroker (API 64) with Apache Kafka's own tool, `kafka-cluster.sh unregister`
(org.apache.kafka.tools.ClusterTool): an operator removes a drained broker-only node for
good after a scale-down. Three voters (combined broker+controller) and broker-only node
4 (in Rill a Raft learner of the metadata quorum).

- test_a_stopped_broker_is_unregistered_for_good: node 4 stops (SIGTERM), is
  unregistered, and is gone from Metadata and DescribeCluster on every node; a partition
  that still lists it keeps it as an offline replica (as Kafka does: drain first); the
  quorum still commits (a topic is created); unregistering it again is
  BROKER_ID_NOT_REGISTERED. Rill only, in the same test: a voter is refused with
  INVALID_REQUEST (Kafka unregisters a combined node's broker registration instead, so
  against Kafka the cluster would lose a live broker), and the active controller drops
  node 4 from the Raft learners (its log says so).
- test_a_live_broker_registers_again (Rill only): node 4 is unregistered while it runs;
  its next heartbeat is answered "not registered", it registers again with a new
  broker epoch, the controller adds it back as a learner and it rejoins the ISR. Kafka's
  broker does not re-register (BrokerLifecycleManager only logs the heartbeat error and
  retries with its old epoch), so the test does not run against Kafka.

    RILL_BROKER_BIN=target/debug/rill-broker $RILL_CACHE/venv/bin/pytest -v tests/e2e/test_unregister_broker.py
    RILL_E2E_TARGET=kafka $RILL_CACHE/venv/bin/pytest -v tests/e2e/test_unregister_broker.py
"""

from __future__ import annotations

import re
import time

import pytest
from broker_process import target
from cluster_process import Cluster, kafka_tool

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

RILL = target() == "rill"
BROKER_ONLY = 4
EXTRA = {
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "500",
    "auto.leader.rebalance.enable": "false",
}


def unregister(cluster: Cluster, broker_id: int, via: int = 1):
    """kafka-cluster.sh unregister --bootstrap-server NODE --id BROKER_ID."""
    return kafka_tool("org.apache.kafka.tools.ClusterTool", "unregister",
                      "--bootstrap-server", cluster.bootstrap_of(via), "--id", str(broker_id), timeout=90)


def metadata_brokers(cluster: Cluster, via: int) -> list[int]:
    return sorted(b[0] for b in cluster.metadata(via=via)["brokers"])


def described_brokers(cluster: Cluster, via: int) -> list[int]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_of(via)})  # referenced until result()
    return sorted(n.id for n in admin.describe_cluster(request_timeout=10).result(timeout=15).nodes)


def plain_log(cluster: Cluster, i: int) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", cluster.nodes[i].log_text())


def start(cluster_factory) -> Cluster:
    c = cluster_factory(n=4, extra=EXTRA, broker_only=(BROKER_ONLY,))
    # replicas on the broker-only node, one of them led by it
    c.create_topic("on-four", replica_assignment=[[BROKER_ONLY, 1, 2], [1, 2, BROKER_ONLY]])
    return c


def test_a_stopped_broker_is_unregistered_for_good(cluster_factory):
    c = start(cluster_factory)
    voters = c.voter_ids
    assert c.leader_of("on-four", 0) == BROKER_ONLY

    assert c.terminate(BROKER_ONLY) in c.clean_exit_codes()
    # Fenced once its controlled shutdown is done (or its session ran out); still listed.
    c.wait_for(lambda: c.leader_of("on-four", 0) in (1, 2), 30, "partition 0 led by a voter")

    done = unregister(c, BROKER_ONLY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Broker {BROKER_ONLY} is no longer registered." in done.stdout

    for i in voters:
        c.wait_for(lambda: metadata_brokers(c, i) == voters, 15, f"Metadata from node {i} without node 4")
        assert described_brokers(c, i) == voters, f"DescribeCluster from node {i}"

    # Partitions are the operator's to move: node 4 stays an (offline) replica.
    for p in (0, 1):
        part = c.partition("on-four", p)
        assert sorted(part["replicas"]) == [1, 2, BROKER_ONLY], part
        assert BROKER_ONLY not in part["isr"], part
        assert part["leader"] in (1, 2), part

    # The quorum still commits without the gone node.
    c.create_topic("after-unregister", partitions=2, rf=3)
    assert all(sorted(c.replicas_of("after-unregister", p)) == voters for p in (0, 1))

    again = unregister(c, BROKER_ONLY, via=2)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "BrokerIdNotRegisteredException" in again.stderr, again.stderr

    if RILL:
        voter = unregister(c, 3)
        assert voter.returncode == 1, voter.stdout + voter.stderr
        assert "InvalidRequestException" in voter.stderr, voter.stderr
        assert metadata_brokers(c, 1) == voters
        # The active controller dropped node 4 from the Raft learners: its attempts to
        # replicate the metadata log to the gone node stop.
        removed = "removing an unregistered broker-only node from the learners broker=4"
        leader = c.wait_for(lambda: next((i for i in voters if removed in plain_log(c, i)), None),
                            10, "learner 4 removed")
        failures = plain_log(c, leader).count("error replication to target=4")
        time.sleep(3)  # ten Raft heartbeat intervals
        assert plain_log(c, leader).count("error replication to target=4") == failures


@pytest.mark.rill_only
def test_a_live_broker_registers_again(cluster_factory):
    c = start(cluster_factory)
    voters = c.voter_ids

    done = unregister(c, BROKER_ONLY, via=2)
    assert done.returncode == 0, done.stdout + done.stderr

    # The next heartbeat brings it back under a new broker epoch; the controller makes
    # it a learner again, so it follows the metadata log, is unfenced, and catches up.
    c.wait_for(lambda: c.nodes[BROKER_ONLY].log_text().count("registered with the controller") >= 2,
               20, "node 4 registered again")
    for i in [*voters, BROKER_ONLY]:
        c.wait_for(lambda: metadata_brokers(c, i) == [*voters, BROKER_ONLY], 30, f"node 4 listed by node {i}")
    c.wait_for(lambda: all(sorted(c.isr_of("on-four", p)) == [1, 2, BROKER_ONLY] for p in (0, 1)),
               60, "node 4 back in the ISR of its partitions")
    # It still serves: a topic created now places and replicates replicas on it.
    c.create_topic("after-return", replica_assignment=[[BROKER_ONLY, 1, 3]])
    assert c.leader_of("after-return", 0, via=BROKER_ONLY) == BROKER_ONLY
