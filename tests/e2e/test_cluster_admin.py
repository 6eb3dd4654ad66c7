"""Cluster-facing Kafka APIs the fault suite does not cover, each asserted by value
on shared clusters: preferred leader election (LeaderElectionCommand and
ElectLeaders), min.insync.replicas with acks=all / acks=1, OffsetForLeaderEpoch after a
leader change, ListPartitionReassignments during and after a reassignment, consumer
group coordinator failover, rack-aware placement (`broker.rack`), and the cluster view
(Metadata, DescribeCluster) from every node.

Two clusters, each shared by the tests of one class (class-scoped, so the first is
stopped before the second starts: 2 shared cores):

  TestThreeNodes  3 nodes, racks a/b/c, auto.leader.rebalance.enable=false
  TestFiveNodes   5 nodes, racks a/a/b/b/c. min.insync.replicas needs it: with three
                  combined broker+controller nodes, killing two also kills the metadata
                  quorum, so no ISR can shrink (Kafka leaves acks=all waiting, not
                  NOT_ENOUGH_REPLICAS). Racks with two brokers each also make rack-aware
                  placement observable (on a/b/c any RF=3 placement spans 3 racks).

Every test restarts what it stopped (and the fixture starts any node a failed test
left stopped), and each works on its own topics, so the order of tests does not matter.
Raw requests go to one chosen node (the encoders below: Metadata v7, DescribeCluster v0,
OffsetForLeaderEpoch v3, FindCoordinator v1, OffsetFetch v3, ElectLeaders v1,
Alter/ListPartitionReassignments v0, and kafka_wire's Produce v7).

    RILL_E2E_TARGET=kafka $RILL_CACHE/venv/bin/python -m pytest tests/e2e/test_cluster_admin.py -v
"""

from __future__ import annotations

import json
import os
import struct
import time

import pytest
from broker_process import target
from cluster_process import Cluster, ClusterUnsupported, _request, kafka_tool, node_ip
from kafka_wire import (
    Reader,
    _compact_str,
    _str,
    _uvarint,
    header_v1,
    header_v2,
    parse_produce_v7,
    produce_request_v7,
    record_batch,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

RILL = target() == "rill"
SESSION_TIMEOUT_MS = 4000
EXTRA = {
    # the preferred-leader test proves ElectLeaders, not the periodic rebalance
    "auto.leader.rebalance.enable": "false",
    "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
    "broker.heartbeat.interval.ms": "500",
    "group.initial.rebalance.delay.ms": "0",  # as the harness gives Kafka
}
RACKS3 = {1: "a", 2: "b", 3: "c"}
RACKS5 = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c"}
REJOIN_S = 45.0
FAILOVER_S = 30.0

ERR_NONE = 0
ERR_NOT_LEADER_OR_FOLLOWER = 6
ERR_NOT_ENOUGH_REPLICAS = 19
ERR_FENCED_LEADER_EPOCH = 74
ERR_UNKNOWN_LEADER_EPOCH = 75
ERR_ELECTION_NOT_NEEDED = 84

API_METADATA = 3
API_OFFSET_FETCH = 9
API_FIND_COORDINATOR = 10
API_OFFSET_FOR_LEADER_EPOCH = 23
API_ELECT_LEADERS = 43
API_ALTER_PARTITION_REASSIGNMENTS = 45
API_LIST_PARTITION_REASSIGNMENTS = 46
API_DESCRIBE_CLUSTER = 60

REASSIGN_TOOL = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
ELECTION_TOOL = "org.apache.kafka.tools.LeaderElectionCommand"


# ---- raw protocol: the few requests the tests send, to one chosen node -------------------


class FlexReader(Reader):
    """kafka_wire.Reader plus the compact (flexible-version) types."""

    def uvarint(self) -> int:
        shift = out = 0
        while True:
            b = self.d[self.i]
            self.i += 1
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7

    def compact_str(self) -> str | None:
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.d[self.i:self.i + n].decode()
        self.i += n
        return s

    def compact_len(self) -> int:
        """Element count of a compact array (-1 for null)."""
        return self.uvarint() - 1

    def compact_ints(self) -> list[int]:
        return [self.take(">i") for _ in range(max(self.compact_len(), 0))]

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.i += self.uvarint()


def _call(c: Cluster, node: int, api: int, version: int, body: bytes, flexible: bool,
          timeout: float = 10.0) -> FlexReader:
    """One request to node `node`; a reader positioned after the response header."""
    corr = 4242
    header = (header_v2 if flexible else header_v1)(api, version, corr)
    r = FlexReader(_request(c.kafka_addr(node), header + body, timeout))
    assert r.take(">i") == corr
    if flexible:
        r.skip_tags()
    return r


def metadata_v7(c: Cluster, node: int, topics: list[str] | None) -> dict:
    """Metadata v7 (racks and leader epochs) as node `node` answers it."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(_str(t) for t in topics)
    r = _call(c, node, API_METADATA, 7, body + b"\x00", flexible=False)
    r.take(">i")  # throttle
    brokers = {}
    for _ in range(r.take(">i")):
        bid = r.take(">i")
        host = r.string()
        port = r.take(">i")
        brokers[bid] = (host, port, r.string())
    cluster_id = r.string()
    controller = r.take(">i")
    out_topics = {}
    for _ in range(r.take(">i")):
        err = r.take(">h")
        name = r.string()
        r.take(">?")
        parts = {}
        for _ in range(r.take(">i")):
            perr, idx, leader, epoch = r.take(">hiii")
            replicas = [r.take(">i") for _ in range(r.take(">i"))]
            isr = [r.take(">i") for _ in range(r.take(">i"))]
            _offline = [r.take(">i") for _ in range(r.take(">i"))]
            parts[idx] = {"error": perr, "leader": leader, "epoch": epoch, "replicas": replicas, "isr": isr}
        out_topics[name] = {"error": err, "partitions": parts}
    return {"brokers": brokers, "cluster_id": cluster_id, "controller": controller, "topics": out_topics}


def partition_v7(c: Cluster, node: int, topic: str, partition: int = 0) -> dict:
    t = metadata_v7(c, node, [topic])["topics"][topic]
    assert t["error"] == 0, f"metadata for {topic} from node {node}: error {t['error']}"
    return t["partitions"][partition]


def describe_cluster(c: Cluster, node: int) -> dict:
    """DescribeCluster v0 (flexible) as node `node` answers it."""
    r = _call(c, node, API_DESCRIBE_CLUSTER, 0, b"\x00" + b"\x00", flexible=True)
    r.take(">i")  # throttle
    err = r.take(">h")
    msg = r.compact_str()
    cluster_id = r.compact_str()
    controller = r.take(">i")
    brokers = {}
    for _ in range(r.compact_len()):
        bid = r.take(">i")
        host = r.compact_str()
        port = r.take(">i")
        rack = r.compact_str()
        r.skip_tags()
        brokers[bid] = (host, port, rack)
    return {"error": err, "message": msg, "cluster_id": cluster_id, "controller": controller, "brokers": brokers}


def offset_for_leader_epoch(c: Cluster, node: int, topic: str, partition: int, leader_epoch: int,
                            current_leader_epoch: int = -1) -> dict:
    """OffsetForLeaderEpoch v3 from a client (replica id -1): where `leader_epoch` ended
    in node `node`'s log. -> {"error", "leader_epoch", "end_offset"}"""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + _str(topic)
    body += struct.pack(">i", 1) + struct.pack(">iii", partition, current_leader_epoch, leader_epoch)
    r = _call(c, node, API_OFFSET_FOR_LEADER_EPOCH, 3, body, flexible=False)
    r.take(">i")  # throttle
    assert r.take(">i") == 1
    assert r.string() == topic
    assert r.take(">i") == 1
    err, idx, epoch, end = r.take(">hiiq")
    assert idx == partition
    return {"error": err, "leader_epoch": epoch, "end_offset": end}


def find_coordinator(c: Cluster, node: int, group: str) -> tuple[int, int]:
    """FindCoordinator v1 for a group -> (error, coordinator node id)."""
    r = _call(c, node, API_FIND_COORDINATOR, 1, _str(group) + b"\x00", flexible=False)
    r.take(">i")  # throttle
    err = r.take(">h")
    r.string()  # message
    return err, r.take(">i")


def elect_leaders(c: Cluster, node: int, topic: str, partitions: list[int], preferred: bool = True) -> dict:
    """ElectLeaders v1 -> {partition: error code}."""
    body = struct.pack(">b", 0 if preferred else 1) + struct.pack(">i", 1) + _str(topic)
    body += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    body += struct.pack(">i", 20000)
    r = _call(c, node, API_ELECT_LEADERS, 1, body, flexible=False, timeout=25)
    r.take(">i")  # throttle
    top = r.take(">h")
    assert top == 0, f"ElectLeaders top-level error {top}"
    out = {}
    for _ in range(r.take(">i")):
        assert r.string() == topic
        for _ in range(r.take(">i")):
            pid, perr = r.take(">ih")
            r.string()
            out[pid] = perr
    return out


def alter_reassignments(c: Cluster, node: int, topic: str, moves: dict[int, list[int] | None]) -> dict:
    """AlterPartitionReassignments v0: {partition: target replicas (None cancels)} ->
    (top-level error, {partition: error code})."""
    parts = b""
    for p, replicas in moves.items():
        parts += struct.pack(">i", p)
        if replicas is None:
            parts += _uvarint(0)
        else:
            parts += _uvarint(len(replicas) + 1) + b"".join(struct.pack(">i", b) for b in replicas)
        parts += b"\x00"
    body = struct.pack(">i", 20000) + _uvarint(2) + _compact_str(topic) + _uvarint(len(moves) + 1) + parts
    body += b"\x00" + b"\x00"
    r = _call(c, node, API_ALTER_PARTITION_REASSIGNMENTS, 0, body, flexible=True, timeout=25)
    r.take(">i")  # throttle
    top = r.take(">h")
    msg = r.compact_str()
    out = {}
    for _ in range(r.compact_len()):
        assert r.compact_str() == topic
        for _ in range(r.compact_len()):
            pid = r.take(">i")
            perr = r.take(">h")
            pmsg = r.compact_str()
            r.skip_tags()
            out[pid] = (perr, pmsg)
        r.skip_tags()
    return {"error": top, "message": msg, "partitions": out}


def list_reassignments(c: Cluster, node: int) -> dict:
    """ListPartitionReassignments v0 for all partitions -> {"error", "message",
    "reassignments": {(topic, p): (replicas, adding, removing)}}."""
    body = struct.pack(">i", 10000) + _uvarint(0) + b"\x00"  # null topics: every partition
    r = _call(c, node, API_LIST_PARTITION_REASSIGNMENTS, 0, body, flexible=True)
    r.take(">i")  # throttle
    err = r.take(">h")
    msg = r.compact_str()
    out = {}
    for _ in range(max(r.compact_len(), 0)):
        name = r.compact_str()
        for _ in range(r.compact_len()):
            pid = r.take(">i")
            out[(name, pid)] = (r.compact_ints(), r.compact_ints(), r.compact_ints())
            r.skip_tags()
        r.skip_tags()
    return {"error": err, "message": msg, "reassignments": out}


def offset_fetch(c: Cluster, node: int, group: str, topic: str, partitions: list[int]) -> tuple[int, dict]:
    """OffsetFetch v3 -> (top-level error, {partition: committed offset}); a partition
    error is returned as the top-level one when that is 0."""
    body = _str(group) + struct.pack(">i", 1) + _str(topic)
    body += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    r = _call(c, node, API_OFFSET_FETCH, 3, body, flexible=False)
    r.take(">i")  # throttle
    offsets, perr = {}, 0
    for _ in range(r.take(">i")):
        r.string()
        for _ in range(r.take(">i")):
            pid, off = r.take(">iq")
            r.string()  # metadata
            perr = perr or r.take(">h")
            offsets[pid] = off
    return (r.take(">h") or perr), offsets


def committed_retrying(consumer, partitions, timeout: float = 20.0):
    """Consumer.committed(), again while librdkafka hands back a retriable coordinator
    error (the Java client retries those by itself)."""
    from confluent_kafka import KafkaError, KafkaException

    retriable = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                 KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.committed(partitions, timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as e:
            if e.args[0].code() not in retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def produce(c: Cluster, node: int, topic: str, partition: int, values: list[bytes], acks: int) -> tuple[int, int]:
    """Produce v7 of one uncompressed batch to node `node` -> (error code, base offset)."""
    batch = record_batch([(None, v) for v in values], int(time.time() * 1000))
    r = _request(c.kafka_addr(node), produce_request_v7(4243, topic, partition, batch, acks=acks), timeout=15)
    resp = parse_produce_v7(r)
    assert resp["correlation_id"] == 4243
    return resp[(topic, partition)]


def java_string_hash(s: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    for unit in struct.unpack(f"<{len(s.encode('utf-16-le')) // 2}H", s.encode("utf-16-le")):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition_for(group: str, partitions: int) -> int:
    """Kafka's Utils.abs(groupId.hashCode) % offsets.topic.num.partitions."""
    h = java_string_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


# ---- clusters ------------------------------------------------------------------------------


class RackCluster(Cluster):
    """A Cluster whose node i also gets `broker.rack=racks[i]`."""

    def __init__(self, workdir, racks: dict[int, str], **kw):
        super().__init__(workdir, n=len(racks), **kw)
        self.racks = dict(racks)

    def properties(self, i: int) -> dict:
        props = super().properties(i)
        props["broker.rack"] = self.racks[i]
        return props


def _shared_cluster(tmp_path_factory, request, racks: dict[int, str], name: str):
    if RILL and os.environ.get("RILL_E2E_CLUSTER", "").strip() == "0":
        pytest.skip("RILL_E2E_CLUSTER=0: cluster tests against Rill turned off")
    c = RackCluster(tmp_path_factory.mktemp(name), racks, extra=EXTRA)
    t0 = time.monotonic()
    try:
        c.start()
    except ClusterUnsupported as e:
        c.stop_all()
        pytest.skip(str(e))
    except BaseException:
        print(c.describe())
        print(c.logs_tail(80))
        c.stop_all()
        raise
    print(f"{c.kind} cluster of {c.n} ready in {time.monotonic() - t0:.1f}s")
    yield c
    c.stop_all()


@pytest.fixture(scope="class")
def cluster3(tmp_path_factory, request):
    yield from _shared_cluster(tmp_path_factory, request, RACKS3, "admin3")


@pytest.fixture(scope="class")
def cluster5(tmp_path_factory, request):
    yield from _shared_cluster(tmp_path_factory, request, RACKS5, "admin5")


def start_again(c: Cluster, ids: list[int], timeout: float = 60.0) -> None:
    """Start stopped nodes together and wait until each lists every broker
    (Cluster.restart waits for one node at a time, and a node does not list a broker
    that is still down)."""
    for i in ids:
        c._spawn(i)
        c.note(f"restart node {i}")
    c.wait_ready(timeout, ids=ids)
    c.note(f"nodes {ids} ready")


def _healthy(c: Cluster, request):
    """Per test: every node runs before the test; on failure, the logs; afterwards a
    node a failed test left stopped is started again, so the next test starts whole."""
    if stopped := [i for i, nd in c.nodes.items() if not nd.running]:
        start_again(c, stopped)
    failed_before = request.session.testsfailed
    t0 = time.monotonic()
    c.note(f"--- {request.node.name}")
    first = len(c.events) - 1
    yield c
    print(f"{request.node.name}: {time.monotonic() - t0:.1f}s")
    print("\n".join(f"  +{t - t0:6.2f}s {what}" for t, what in c.events[first:]))
    if request.session.testsfailed > failed_before:
        print(c.describe())
        print("timeline:\n" + c.timeline())
        print(c.logs_tail(80))
    if stopped := [i for i, nd in c.nodes.items() if not nd.running]:
        start_again(c, stopped)


@pytest.fixture
def c3(cluster3, request):
    yield from _healthy(cluster3, request)


@pytest.fixture
def c5(cluster5, request):
    yield from _healthy(cluster5, request)


def wait_in_isr(c: Cluster, topic: str, partition: int, want: list[int], timeout: float = REJOIN_S) -> None:
    c.wait_for(lambda: c.isr_of(topic, partition) == sorted(want), timeout,
               f"{topic}-{partition}: ISR {sorted(want)}")


# ---- three nodes ---------------------------------------------------------------------------


class TestThreeNodes:

    def test_metadata_and_describe_cluster_agree_on_every_node(self, c3):
        """Metadata from each node lists the 3 brokers (id, host, port, rack) and, for every
        partition of a topic, the same leader, leader epoch, replicas and ISR; DescribeCluster
        names the same brokers and cluster id. The controller: Rill answers its active
        controller (the Raft leader) in both, the same from every node. Kafka in KRaft mode
        answers a random live broker as "controller" in Metadata and DescribeCluster (the
        quorum is not the brokers' business), so there only the DescribeQuorum leader, which
        every Kafka node forwards to the quorum, is compared across nodes."""
        c = c3
        topic = "admin-metadata"
        c.create_topic(topic, 3)
        want_brokers = {i: (node_ip(i), c.kafka_port, RACKS3[i]) for i in c.nodes}

        def views():
            return {i: metadata_v7(c, i, [topic]) for i in c.nodes}

        def agree():
            v = views()
            parts = [v[i]["topics"][topic]["partitions"] for i in c.nodes]
            return v if all(p == parts[0] for p in parts) else None

        v = c.wait_for(agree, 15, "every node's metadata for the topic agrees")
        cluster_ids = {md["cluster_id"] for md in v.values()}
        assert len(cluster_ids) == 1 and None not in cluster_ids, cluster_ids
        for i, md in v.items():
            assert md["brokers"] == want_brokers, f"node {i}: {md['brokers']}"
            t = md["topics"][topic]
            assert t["error"] == 0 and sorted(t["partitions"]) == [0, 1, 2]
            for p, part in t["partitions"].items():
                assert part["error"] == 0
                assert sorted(part["replicas"]) == [1, 2, 3], part
                assert sorted(part["isr"]) == [1, 2, 3], part
                assert part["leader"] in part["replicas"] and part["epoch"] >= 0, part
        # no metadata-only answer: the leaders really lead (a produce with acks=all works)
        for p, part in v[1]["topics"][topic]["partitions"].items():
            assert produce(c, part["leader"], topic, p, [b"x"], acks=-1) == (ERR_NONE, 0)

        described = {i: describe_cluster(c, i) for i in c.nodes}
        for i, d in described.items():
            assert d["error"] == 0, d
            assert d["cluster_id"] == next(iter(cluster_ids)), (i, d)
            assert d["brokers"] == want_brokers, (i, d)
            assert d["controller"] in c.nodes, (i, d)
        if RILL:
            ctrl = {d["controller"] for d in described.values()} | {md["controller"] for md in v.values()}
            assert len(ctrl) == 1, f"controller ids from DescribeCluster and Metadata differ by node: {ctrl}"
            assert ctrl == {c.controller_id()}
        else:
            from cluster_process import describe_quorum_leader

            leaders = {i: describe_quorum_leader(c.kafka_addr(i)) for i in c.nodes}
            assert len(set(leaders.values())) == 1 and leaders[1] in c.nodes, leaders

    def test_rack_aware_placement_and_racks_reported(self, c3):
        """broker.rack a/b/c: Metadata and DescribeCluster report each broker's rack, from
        every node; a topic with RF=3 and 6 partitions has every partition on 3 racks, and
        its preferred leaders (first replicas) are spread 2/2/2, as Kafka's placer does."""
        c = c3
        topic = "admin-racks"
        for i in c.nodes:
            assert {b: r for b, (_h, _p, r) in metadata_v7(c, i, [])["brokers"].items()} == RACKS3
            assert {b: r for b, (_h, _p, r) in describe_cluster(c, i)["brokers"].items()} == RACKS3
        c.create_topic(topic, 6, rf=3)
        parts = metadata_v7(c, 1, [topic])["topics"][topic]["partitions"]
        assert sorted(parts) == list(range(6))
        for p, part in parts.items():
            assert len(part["replicas"]) == 3
            assert {RACKS3[b] for b in part["replicas"]} == {"a", "b", "c"}, (p, part)
        first = [parts[p]["replicas"][0] for p in range(6)]
        assert sorted(first.count(b) for b in c.nodes) == [2, 2, 2], f"preferred leaders {first}"
        assert sorted(parts[p]["leader"] for p in range(6)) == sorted(first), "leaders are the preferred ones"

    def test_preferred_leader_election(self, c3, tmp_path):
        """Partition 0 on [1,2,3]: SIGTERM broker 1 (leadership moves), restart it, wait
        until it is back in the ISR; with auto.leader.rebalance.enable=false it stays a
        follower. Kafka's LeaderElectionCommand --election-type preferred makes it the
        leader again, as every node then reports; a second (raw) preferred election of
        the partition answers ELECTION_NOT_NEEDED (84)."""
        c = c3
        topic = "admin-preferred"
        c.create_topic(topic, replica_assignment=[[1, 2, 3]])
        assert c.leader_of(topic, 0) == 1
        epoch0 = partition_v7(c, 1, topic)["epoch"]

        code = c.terminate(1)
        assert code in c.clean_exit_codes(), f"node 1 exited {code} on SIGTERM"
        c.wait_for(lambda: c.leader_of(topic, 0) in (2, 3), FAILOVER_S, "a leader other than 1")
        c.restart(1)
        wait_in_isr(c, topic, 0, [1, 2, 3])
        time.sleep(1.0)  # no rebalance comes along by itself
        before = partition_v7(c, 2, topic)
        assert before["leader"] in (2, 3), f"leader went back to 1 without an election: {before}"
        assert before["epoch"] > epoch0
        assert before["replicas"] == [1, 2, 3]

        out = kafka_tool(ELECTION_TOOL, "--bootstrap-server", c.bootstrap, "--election-type", "preferred",
                         "--topic", topic, "--partition", "0")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"Successfully completed leader election (PREFERRED) for partitions {topic}-0" in out.stdout, \
            out.stdout + out.stderr
        c.wait_for(lambda: all(partition_v7(c, i, topic)["leader"] == 1 for i in c.nodes), 15,
                   "every node reports leader 1")
        after = partition_v7(c, 1, topic)
        assert after["epoch"] > before["epoch"], (before, after)
        assert after["replicas"] == [1, 2, 3] and sorted(after["isr"]) == [1, 2, 3]
        # the new leader takes writes
        assert produce(c, 1, topic, 0, [b"after-election"], acks=-1)[0] == ERR_NONE
        assert elect_leaders(c, 2, topic, [0]) == {0: ERR_ELECTION_NOT_NEEDED}

    def test_offset_for_leader_epoch_after_leader_change(self, c3):
        """10 records at epoch E0 on leader L; kill -9 L; 5 records at the new leader's
        epoch E1. OffsetForLeaderEpoch (v3, client) to the new leader: for E0 it answers
        (E0, 10), the offset where E1 started; for E1 (E1, 15), the log end; for an epoch
        above any it knows (-1, -1); with a stale current_leader_epoch FENCED_LEADER_EPOCH
        (74), with a future one UNKNOWN_LEADER_EPOCH (75); a follower answers
        NOT_LEADER_OR_FOLLOWER (6)."""
        c = c3
        topic = "admin-epochs"
        c.create_topic(topic, 1)
        old = partition_v7(c, 1, topic)
        leader, e0 = old["leader"], old["epoch"]
        assert produce(c, leader, topic, 0, [b"e0-%d" % i for i in range(10)], acks=-1) == (ERR_NONE, 0)
        ans = offset_for_leader_epoch(c, leader, topic, 0, e0, current_leader_epoch=e0)
        assert ans == {"error": 0, "leader_epoch": e0, "end_offset": 10}, ans

        witness = next(i for i in c.nodes if i != leader)
        c.kill9(leader)
        c.wait_for(lambda: partition_v7(c, witness, topic)["leader"] not in (-1, leader), FAILOVER_S,
                   "a new leader")
        new = partition_v7(c, witness, topic)
        successor, e1 = new["leader"], new["epoch"]
        assert e1 > e0, (old, new)

        def produced():
            err, base = produce(c, successor, topic, 0, [b"e1-%d" % i for i in range(5)], acks=1)
            return (err, base) if err == ERR_NONE else None

        assert c.wait_for(produced, 15, "the new leader takes a write") == (ERR_NONE, 10)
        ans = offset_for_leader_epoch(c, successor, topic, 0, e0, current_leader_epoch=e1)
        assert ans == {"error": 0, "leader_epoch": e0, "end_offset": 10}, \
            f"E0={e0} E1={e1}: the previous epoch must end where the new one started: {ans}"
        ans = offset_for_leader_epoch(c, successor, topic, 0, e1, current_leader_epoch=e1)
        assert ans == {"error": 0, "leader_epoch": e1, "end_offset": 15}, ans
        ans = offset_for_leader_epoch(c, successor, topic, 0, e1, current_leader_epoch=e0)
        assert ans["error"] == ERR_FENCED_LEADER_EPOCH, ans
        ans = offset_for_leader_epoch(c, successor, topic, 0, e1, current_leader_epoch=e1 + 1)
        assert ans["error"] == ERR_UNKNOWN_LEADER_EPOCH, ans
        ans = offset_for_leader_epoch(c, successor, topic, 0, e1 + 5)  # an epoch not seen yet
        assert ans == {"error": 0, "leader_epoch": -1, "end_offset": -1}, ans
        follower = next(i for i in c.nodes if i not in (leader, successor))
        c.wait_for(lambda: partition_v7(c, follower, topic)["leader"] == successor, 15,
                   "the follower knows the new leader")
        ans = offset_for_leader_epoch(c, follower, topic, 0, e0, current_leader_epoch=e1)
        assert ans["error"] == ERR_NOT_LEADER_OR_FOLLOWER, ans

        c.restart(leader)
        wait_in_isr(c, topic, 0, [1, 2, 3])

    def test_list_partition_reassignments_in_flight_and_after(self, c3, tmp_path):
        """No reassignment: ListPartitionReassignments is empty. Partition 0 on [1,2] with
        20 records moves to [2,3] while broker 3 is down (kill -9), so it cannot finish:
        the list shows it (replicas [2,3,1], adding [3], removing [1]), Metadata the
        union, and ReassignPartitionsCommand --verify 'still in progress'. Broker 3 comes
        back, catches up, the move completes: the list is empty, the replicas and ISR are
        [2,3], --verify says completed, every record is there."""
        c = c3
        topic = "admin-reassign"
        c.create_topic(topic, replica_assignment=[[1, 2]])
        assert c.replicas_of(topic, 0) == [1, 2]
        assert produce(c, c.leader_of(topic, 0), topic, 0, [b"r-%d" % i for i in range(20)], acks=-1) == (0, 0)
        empty = list_reassignments(c, 1)
        assert empty["error"] == 0 and empty["reassignments"] == {}, empty

        c.kill9(3)
        res = alter_reassignments(c, 1, topic, {0: [2, 3]})
        assert res["error"] == 0 and {p: e for p, (e, _m) in res["partitions"].items()} == {0: 0}, res
        ongoing = (topic, 0)
        want = ([2, 3, 1], [3], [1])
        for i in (1, 2):
            got = c.wait_for(lambda: list_reassignments(c, i)["reassignments"], 10, f"node {i} lists the move")
            assert got == {ongoing: want}, f"node {i}: {got}"
        md = partition_v7(c, 1, topic)
        assert md["replicas"] == [2, 3, 1] and 3 not in md["isr"], md
        plan = tmp_path / "reassign.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "replicas": [2, 3], "log_dirs": ["any", "any"]}]}))
        live = c.live_bootstrap()
        verify = kafka_tool(REASSIGN_TOOL, "--bootstrap-server", live, "--reassignment-json-file", str(plan),
                            "--verify", "--preserve-throttles")
        assert f"Reassignment of partition {topic}-0 is still in progress" in verify.stdout, \
            verify.stdout + verify.stderr

        c.restart(3)
        c.wait_for(lambda: c.replicas_of(topic, 0) == [2, 3] and c.isr_of(topic, 0) == [2, 3], REJOIN_S,
                   "partition 0 on [2,3] with a full ISR")
        for i in c.nodes:
            c.wait_for(lambda: list_reassignments(c, i)["reassignments"] == {}, 10,
                       f"node {i}: no reassignment left")
        verify = kafka_tool(REASSIGN_TOOL, "--bootstrap-server", c.bootstrap, "--reassignment-json-file",
                            str(plan), "--verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert f"Reassignment of partition {topic}-0 is completed" in verify.stdout, verify.stdout
        lead = c.leader_of(topic, 0)
        assert lead in (2, 3)
        assert produce(c, lead, topic, 0, [b"after-move"], acks=-1) == (ERR_NONE, 20)

    def test_reassignment_error_codes(self, c3):
        """AlterPartitionReassignments answers per partition: a reorder [1,2] -> [2,1]
        is accepted (0) and completes at once (no data to move; the leader stays);
        cancelling when nothing is in flight NO_REASSIGNMENT_IN_PROGRESS (85); an
        unknown topic UNKNOWN_TOPIC_OR_PARTITION (3); an unregistered broker
        INVALID_REPLICA_ASSIGNMENT (39), which changes nothing."""
        c = c3
        topic = "admin-reassign-codes"
        c.create_topic(topic, replica_assignment=[[1, 2]])
        lead = c.leader_of(topic, 0)

        def codes(res):
            assert res["error"] == 0, res
            return {p: e for p, (e, _m) in res["partitions"].items()}

        assert codes(alter_reassignments(c, 2, topic, {0: [2, 1]})) == {0: 0}
        c.wait_for(lambda: all(c.replicas_of(topic, 0, via=i) == [2, 1] for i in c.nodes), 10,
                   "every node reports replicas [2,1]")
        assert list_reassignments(c, 1)["reassignments"] == {}
        assert c.leader_of(topic, 0) == lead, "a reorder moves no leadership"
        assert codes(alter_reassignments(c, 1, topic, {0: None})) == {0: 85}
        assert codes(alter_reassignments(c, 1, "admin-no-such-topic", {0: [1, 2]})) == {0: 3}
        assert codes(alter_reassignments(c, 1, topic, {0: [1, 9]})) == {0: 39}
        assert list_reassignments(c, 1)["reassignments"] == {}
        assert c.replicas_of(topic, 0) == [2, 1]

    def test_successful_answers_carry_null_error_messages(self, c3):
        """Where there is no error, Kafka leaves the nullable error messages null:
        DescribeCluster, ListPartitionReassignments, AlterPartitionReassignments (top
        level and an accepted partition)."""
        c = c3
        topic = "admin-null-messages"
        c.create_topic(topic, replica_assignment=[[1, 2]])
        assert describe_cluster(c, 1)["message"] is None
        assert list_reassignments(c, 1)["message"] is None
        res = alter_reassignments(c, 1, topic, {0: [2, 1]})
        assert res == {"error": 0, "message": None, "partitions": {0: (0, None)}}, res

    def test_group_coordinator_failover_resumes_at_committed_offsets(self, c3):
        """A confluent-kafka consumer in group G reads part of 3 partitions, commits
        (synchronously) and leaves. The coordinator (FindCoordinator, asked of every node)
        is the leader of __consumer_offsets partition abs(hash(G)) % partitions, Java's
        String.hashCode; it answers OffsetFetch with the commits, the other nodes
        NOT_COORDINATOR (16). It is killed (-9); once the coordinator FindCoordinator
        names then serves the commits, a new consumer in G resumes at exactly the
        committed offsets: nothing before them again, nothing after them skipped."""
        from confluent_kafka import Consumer, TopicPartition

        c = c3
        topic, group = "admin-group", "admin-failover-group"
        per_part, first_batch = 30, 12
        c.create_topic(topic, 3)
        for p in range(3):
            lead = c.leader_of(topic, p)
            assert produce(c, lead, topic, p, [b"%d-%d" % (p, i) for i in range(per_part)], acks=-1) == (0, 0)

        conf = {"bootstrap.servers": c.bootstrap, "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "fetch.wait.max.ms": 100,
                "topic.metadata.refresh.interval.ms": 2000}
        c.note("records produced")
        a = Consumer(conf)
        got: dict[int, list[int]] = {p: [] for p in range(3)}
        try:
            a.subscribe([topic])
            deadline = time.monotonic() + 30
            while min(len(v) for v in got.values()) < first_batch and time.monotonic() < deadline:
                m = a.poll(0.5)
                if m is None or m.error() is not None:
                    continue
                if len(got[m.partition()]) < first_batch:
                    got[m.partition()].append(m.offset())
            assert all(v == list(range(first_batch)) for v in got.values()), got
            commits = [TopicPartition(topic, p, first_batch) for p in range(3)]
            done = a.commit(offsets=commits, asynchronous=False)
            assert all(tp.error is None for tp in done), done
        finally:
            a.close()

        c.note("consumer A committed and closed")
        coords = {}
        for i in c.nodes:
            err, node = c.wait_for(lambda: (r := find_coordinator(c, i, group))[0] == 0 and r, 15,
                                   f"node {i} answers FindCoordinator")
            coords[i] = node
        assert len(set(coords.values())) == 1, coords
        coordinator = coords[1]
        offsets_md = metadata_v7(c, 1, ["__consumer_offsets"])["topics"]["__consumer_offsets"]
        n_offsets = len(offsets_md["partitions"])
        gp = offsets_partition_for(group, n_offsets)
        assert offsets_md["partitions"][gp]["leader"] == coordinator, \
            f"coordinator {coordinator} is not the leader of __consumer_offsets-{gp}: {offsets_md['partitions'][gp]}"

        want = {p: first_batch for p in range(3)}
        assert offset_fetch(c, coordinator, group, topic, [0, 1, 2]) == (0, want)
        for i in c.nodes:
            if i != coordinator:
                assert offset_fetch(c, i, group, topic, [0, 1, 2])[0] == 16, f"node {i} is not the coordinator"

        c.kill9(coordinator)
        t_kill = time.monotonic()
        witness = next(i for i in c.nodes if i != coordinator)

        def served():
            """The coordinator FindCoordinator names now answers the commits. A new
            coordinator answers NOT_COORDINATOR (16) or COORDINATOR_LOAD_IN_PROGRESS (14)
            first, and then, in Kafka 4.1 as in Rill, briefly 'no commit' (-1) until its
            high watermark covers the commit records: a consumer starting then would
            reset; so the consumer starts once the commits are served."""
            err, node = find_coordinator(c, witness, group)
            if err or node in (-1, coordinator):
                return None
            return node if offset_fetch(c, node, group, topic, [0, 1, 2]) == (0, want) else None

        successor = c.wait_for(served, FAILOVER_S, "a new coordinator serving the committed offsets")
        print(f"coordinator {coordinator} -> {successor} serving the commits {time.monotonic() - t_kill:.2f}s"
              " after the kill")
        c.note("commits served by the new coordinator")
        b = Consumer({**conf, "bootstrap.servers": c.live_bootstrap()})
        resumed: dict[int, list[int]] = {p: [] for p in range(3)}
        try:
            committed = committed_retrying(b, [TopicPartition(topic, p) for p in range(3)])
            assert {tp.partition: tp.offset for tp in committed} == want, committed
            b.subscribe([topic])
            deadline = time.monotonic() + 40
            while sum(len(v) for v in resumed.values()) < 3 * (per_part - first_batch) \
                    and time.monotonic() < deadline:
                m = b.poll(0.5)
                if m is None or m.error() is not None:
                    continue
                resumed[m.partition()].append(m.offset())
                assert m.value() == b"%d-%d" % (m.partition(), m.offset())
        finally:
            b.close()
        c.note("consumer B done")
        for p in range(3):
            assert resumed[p] == list(range(first_batch, per_part)), \
                f"partition {p}: resumed at {resumed[p][:3]}..., {len(resumed[p])} records"

        c.restart(coordinator)


# ---- five nodes ----------------------------------------------------------------------------


class TestFiveNodes:

    def test_rack_aware_placement_spreads_over_racks(self, c5):
        """Racks a,a,b,b,c: a topic with RF=3 and 6 partitions has every partition on all
        three racks (so broker 5, alone in rack c, in every partition), and RF=2 puts every
        partition on two racks. Metadata and DescribeCluster report the racks."""
        c = c5
        for i in (1, 5):
            assert {b: r for b, (_h, _p, r) in metadata_v7(c, i, [])["brokers"].items()} == RACKS5
            assert {b: r for b, (_h, _p, r) in describe_cluster(c, i)["brokers"].items()} == RACKS5
        c.create_topic("admin-racks3", 6, rf=3)
        c.create_topic("admin-racks2", 6, rf=2)
        for topic, rf in (("admin-racks3", 3), ("admin-racks2", 2)):
            parts = metadata_v7(c, 1, [topic])["topics"][topic]["partitions"]
            assert sorted(parts) == list(range(6))
            for p, part in parts.items():
                assert len(set(part["replicas"])) == rf, (topic, p, part)
                racks = [RACKS5[b] for b in part["replicas"]]
                assert len(set(racks)) == rf, f"{topic}-{p} on {part['replicas']} = racks {racks}"

    def test_min_insync_replicas_refuses_acks_all(self, c5):
        """RF=3 on [1,2,3], min.insync.replicas=2. Brokers 2 and 3 are killed (-9); nodes
        1,4,5 keep the quorum, so the ISR shrinks to [1]. Then Produce acks=all answers
        NOT_ENOUGH_REPLICAS (19) and writes nothing; acks=1 is appended at the next
        offset. Both come back: acks=all is accepted again."""
        c = c5
        topic = "admin-min-isr"
        c.create_topic(topic, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "2"})
        assert c.leader_of(topic, 0) == 1
        assert produce(c, 1, topic, 0, [b"ok-%d" % i for i in range(5)], acks=-1) == (ERR_NONE, 0)

        c.kill9(2)
        c.kill9(3)
        c.wait_for(lambda: c.isr_of(topic, 0, via=1) == [1], FAILOVER_S, "the ISR shrinks to [1]")
        assert c.leader_of(topic, 0, via=1) == 1
        assert produce(c, 1, topic, 0, [b"refused"], acks=-1) == (ERR_NOT_ENOUGH_REPLICAS, -1)
        assert produce(c, 1, topic, 0, [b"refused"], acks=-1) == (ERR_NOT_ENOUGH_REPLICAS, -1)
        assert produce(c, 1, topic, 0, [b"acks1"], acks=1) == (ERR_NONE, 5), "acks=1 goes on at offset 5"

        start_again(c, [2, 3])
        wait_in_isr(c, topic, 0, [1, 2, 3])
        assert produce(c, 1, topic, 0, [b"again"], acks=-1) == (ERR_NONE, 6)
