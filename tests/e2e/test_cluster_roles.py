"""Node roles (`process.roles`): a cluster of two combined nodes, one controller-only
voter and one broker-only node. The broker-only node follows the metadata log as a Raft
learner (the active controller adds it when it registers), hosts and leads replicas, and
rejoins after a kill -9; the controller-only node votes but serves no Kafka clients.

Rill only: the test writes Rill's configs itself (Kafka would need its storage formatted
per role), so it does not run against RILL_E2E_TARGET=kafka.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker_process import free_port, rill_binary

pytestmark = [pytest.mark.cluster, pytest.mark.rill_only]

ROLES = {1: "broker,controller", 2: "broker,controller", 3: "controller", 4: "broker"}
VOTERS = (1, 2, 3)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # a node still starting: ask again
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Node:
    def __init__(self, workdir: Path, node_id: int, kafka_port: int, internal_port: int, metrics_port: int):
        self.id = node_id
        self.ip = f"127.0.0.{node_id}"
        self.dir = workdir / f"node{node_id}"
        self.dir.mkdir(parents=True)
        voters = ",".join(f"{v}@127.0.0.{v}:{internal_port}" for v in VOTERS)
        props = {
            "node.id": node_id,
            "process.roles": ROLES[node_id],
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.ip}:{kafka_port},CONTROLLER://{self.ip}:{internal_port}",
            "advertised.listeners": f"PLAINTEXT://{self.ip}:{kafka_port}",
            "log.dirs": self.dir / "data",
            "metrics.listen": f"{self.ip}:{metrics_port}",
            "default.replication.factor": 3,
            "min.insync.replicas": 2,
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 500,
        }
        self.config = self.dir / "server.properties"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.proc: subprocess.Popen | None = None

    def start(self):
        log = open(self.dir / "log", "ab")
        self.proc = subprocess.Popen([str(rill_binary()), "run", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def nodes(tmp_path):
    kafka_port, internal_port, metrics_port = free_port(), free_port(), free_port()
    made = {i: Node(tmp_path, i, kafka_port, internal_port, metrics_port) for i in ROLES}
    for n in made.values():
        n.start()
    try:
        yield made
    finally:
        for n in made.values():
            if n.proc and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(10)
        for n in made.values():
            tail = (n.dir / "log").read_bytes()[-3000:].decode(errors="replace")
            print(f"--- node {n.id} ({ROLES[n.id]}) log tail ---\n{tail}")


def test_broker_only_and_controller_only_nodes(nodes):
    port = Path(nodes[1].config).read_text().split("PLAINTEXT://127.0.0.1:")[1].split(",")[0]
    bootstrap = ",".join(f"127.0.0.{i}:{port}" for i in (1, 2, 4))
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def brokers():
        return sorted(admin.list_topics(timeout=5).brokers)

    # The brokers are 1, 2 and 4: the controller-only node serves no clients.
    assert wait_for(lambda: brokers() == [1, 2, 4], 60, "brokers 1, 2, 4") is True

    # Replicas land only on brokers, so broker-only node 4 is in every partition.
    admin.create_topics([NewTopic("roles", 3, 3)])["roles"].result(30)
    md = wait_for(lambda: admin.list_topics("roles", timeout=5).topics["roles"], 30, "topic metadata")
    for p in md.partitions.values():
        assert sorted(p.replicas) == [1, 2, 4], p.replicas
    assert 4 in {p.leader for p in md.partitions.values()}, "node 4 leads nothing"

    def produce(first: int, count: int) -> int:
        acked = []
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                             "enable.idempotence": True, "message.timeout.ms": 30000})
        for i in range(first, first + count):
            producer.produce("roles", value=b"r%d" % i,
                             on_delivery=lambda err, msg: acked.append(err is None))
        producer.flush(40)
        return sum(acked)

    assert produce(0, 300) == 300

    # Broker-only node 4 dies and comes back: it takes its id back, catches up from the
    # leaders and rejoins every ISR.
    nodes[4].kill9()
    assert produce(300, 300) == 300
    nodes[4].start()

    def all_isrs_full():
        md = admin.list_topics("roles", timeout=5).topics["roles"]
        return all(sorted(p.isrs) == [1, 2, 4] for p in md.partitions.values())

    wait_for(all_isrs_full, 60, "node 4 back in every ISR")

    # Everything acknowledged is there, once.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "roles-check",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition("roles", p, 0) for p in range(3)])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 600 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value())
    consumer.close()
    assert sorted(seen) == sorted(b"r%d" % i for i in range(600))

    # A controller-only node shuts down cleanly too.
    assert nodes[3].stop() == 0
