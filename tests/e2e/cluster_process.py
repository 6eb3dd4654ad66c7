"""A multi-node cluster of broker processes on loopback for the cluster fault tests.

Node i (1..N) runs on IP 127.0.0.i with the same ports on every IP, from a properties
file in the format Rill's `rill-broker run --config FILE` reads:

    node.id=1
    process.roles=broker,controller
    controller.quorum.voters=1@127.0.0.1:P+1,2@127.0.0.2:P+1,3@127.0.0.3:P+1
    listeners=PLAINTEXT://127.0.0.1:P,CONTROLLER://127.0.0.1:P+1
    advertised.listeners=PLAINTEXT://127.0.0.1:P
    log.dirs=<tmp>/node1/data
    default.replication.factor=3
    min.insync.replicas=2

plus the test's extra properties (and, for Rill, `metrics.listen=127.0.0.i:P+5`: every
node needs its own /metrics address). P is chosen free on every node IP at start (the issue's
example uses 19092/19093; a fixed port would collide with a second run on the machine).
With RILL_E2E_TARGET=kafka the same cluster is real Apache Kafka (KRaft, combined
broker+controller) from the cached jars, with the properties Kafka needs on top and the
storage formatted with one cluster id.

With `proxied=True` the inter-node links go through a FaultProxy (fault_proxy.py) so a
test can cut a node off:
  * Rill: every inter-node (tonic) connection uses the CONTROLLER listener and is bound
    to the node's own IP, so one proxy route per node (voter `i@127.0.0.i:P+3` ->
    127.0.0.i:P+1) tells sources apart by source IP;
  * Kafka: a JVM's outgoing connections all come from 127.0.0.1, so each node gets its
    own voter ports (`j@127.0.0.j:P+10+i` in node i's file; source known by port), and
    replication uses a REPLICATION listener advertised behind a proxy route per node
    (P+4 -> P+2; source unknown, so isolating node n cuts replication INTO n, and the
    quorum links both ways). A KRaft leader hands its own controller endpoint to the
    voters, who then fetch from it; that is advertised behind a route too (P+6 -> P+1).

Environment: as broker_process.py (RILL_E2E_TARGET, RILL_BROKER_BIN, RILL_CACHE).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_process import _KAFKA_LOG4J2, _kafka_cluster_id, cache_dir, kafka_jars, kafka_version, rill_binary, target  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from kafka_wire import _compact_str, _uvarint, header_v2, metadata_request_v4, parse_metadata_v4  # noqa: E402

MAX_NODES = 5
START_TIMEOUT_S = 120.0  # N JVMs starting at once on 2 shared cores
RESTART_TIMEOUT_S = 60.0
TERM_TIMEOUT_S = 30.0
PORT_SPAN = 20

KAFKA_JVM = [
    "-Xms256m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]

# Properties a cluster config adds to what `rill-broker run` understood before clusters:
# a Rill that rejects one of them as unknown does not run as a cluster yet.
CLUSTER_PROPERTIES = ("node.id", "process.roles", "controller.quorum.voters", "min.insync.replicas",
                      "default.replication.factor")

# Kafka's cluster settings beyond the format; Rill gets none of these.
KAFKA_ONLY = {
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,REPLICATION:PLAINTEXT",
    "inter.broker.listener.name": "REPLICATION",
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    # fast failure detection, so the tests' bounds hold (Kafka defaults: 2 s / 9 s)
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
    "controller.quorum.election.timeout.ms": "1000",
    "controller.quorum.fetch.timeout.ms": "2000",
    "leader.imbalance.check.interval.seconds": "5",
    "log.flush.interval.messages": "1",
    "num.io.threads": "2",
    "num.network.threads": "2",
    "num.replica.fetchers": "1",
    "background.threads": "2",
}


class ClusterUnsupported(RuntimeError):
    """The broker binary does not accept a cluster configuration (yet)."""


def node_ip(node_id: int) -> str:
    return f"127.0.0.{node_id}"


def _bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


def pick_base_port(n: int, span: int = PORT_SPAN, tries: int = 200) -> int:
    """A base port P with P..P+span-1 free on every node IP, below the ephemeral range
    (so a client's outgoing connection cannot take one while the cluster is down)."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(20000, 32000 - span, span)
        if all(_bindable(node_ip(i), base + k) for i in range(1, n + 1) for k in range(span)):
            return base
    raise RuntimeError(f"no {span} free ports on 127.0.0.1..{n} after {tries} tries")


# ---- raw protocol probes ---------------------------------------------------------------


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _request(addr: tuple[str, int], payload: bytes, timeout: float = 3.0) -> bytes:
    with socket.create_connection(addr, timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(payload)) + payload)
        (n,) = struct.unpack(">i", _recv_exact(s, 4))
        return _recv_exact(s, n)


def raw_metadata(addr: tuple[str, int], topics: list[str] | None = None, timeout: float = 3.0) -> dict:
    """Metadata v4 from one specific node (not whichever node a client library picks)."""
    return parse_metadata_v4(_request(addr, metadata_request_v4(7, topics), timeout))


API_DESCRIBE_QUORUM = 55


def _read_uvarint(d: bytes, i: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        b = d[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def describe_quorum_leader(addr: tuple[str, int], timeout: float = 3.0) -> int:
    """The Raft leader of __cluster_metadata (the active controller) from DescribeQuorum
    v0 sent to a broker, which forwards it to the controllers. -1 when none/error."""
    body = (_uvarint(2) + _compact_str("__cluster_metadata") + _uvarint(2) + struct.pack(">i", 0)
            + b"\x00" + b"\x00" + b"\x00")
    resp = _request(addr, header_v2(API_DESCRIBE_QUORUM, 0, 11) + body, timeout)
    i = 4  # correlation id
    ntags, i = _read_uvarint(resp, i)
    assert ntags == 0, "tagged fields in the DescribeQuorum response header"
    (err,) = struct.unpack_from(">h", resp, i)
    i += 2
    if err:
        return -1
    ntopics, i = _read_uvarint(resp, i)
    if ntopics < 2:
        return -1
    nlen, i = _read_uvarint(resp, i)
    i += nlen - 1
    nparts, i = _read_uvarint(resp, i)
    if nparts < 2:
        return -1
    _pidx, perr, leader = struct.unpack_from(">ihi", resp, i)
    return -1 if perr else leader


# ---- Java tools (Kafka's own admin commands, for both targets) ----------------------------


def kafka_tool(main: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a Kafka command-line tool class from the cached client jars."""
    cp = kafka_jars("clients")
    return subprocess.run(
        ["java", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData",
         "-cp", cp, main, *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


# ---- nodes ----------------------------------------------------------------------------------


@dataclass
class Node:
    """One broker process of the cluster and its files."""

    id: int
    workdir: Path
    proc: subprocess.Popen | None = None
    paused: bool = False
    starts: int = 0
    exit_codes: list = field(default_factory=list)
    _log_file: object = None

    @property
    def ip(self) -> str:
        return node_ip(self.id)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        parts = []
        for p in sorted(self.workdir.glob("node-*.log")):
            parts.append(f"--- node {self.id} {p.name} ---\n" + p.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, n: int = 80) -> str:
        parts = []
        for p in sorted(self.workdir.glob("node-*.log")):
            lines = p.read_text(errors="replace").splitlines()
            parts.append(f"--- node {self.id} {p.name} (last {n} of {len(lines)} lines) ---\n"
                         + "\n".join(lines[-n:]))
        return "\n".join(parts)

    def _reap(self) -> int:
        code = self.proc.wait(timeout=15)
        self.exit_codes.append(code)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.proc = None
        self.paused = False
        return code


class Cluster:
    """N broker processes (Rill or Kafka), node ids 1..N on 127.0.0.1..N."""

    def __init__(self, workdir: Path, n: int = 3, extra: dict | None = None, proxied: bool = False,
                 kind: str | None = None, rf: int | None = None, broker_only: tuple[int, ...] = ()):
        if not 1 <= n <= MAX_NODES:
            raise ValueError(f"1..{MAX_NODES} nodes, not {n}")
        if broker_only and proxied:
            raise ValueError("broker-only nodes are not supported behind the proxy")
        # process.roles=broker: not in controller.quorum.voters (a Raft learner in Rill)
        self.broker_only = tuple(broker_only)
        self.kind = kind or target()
        self.workdir = Path(workdir)
        self.n = n
        self.extra = {str(k): str(v) for k, v in (extra or {}).items()}
        self.rf = rf or min(3, n)
        self.base = pick_base_port(n)
        self.nodes = {i: Node(i, self.workdir / f"node{i}") for i in range(1, n + 1)}
        self.proxy: FaultProxy | None = None
        self.proxied = proxied
        self.cluster_id = _kafka_cluster_id()
        self.events: list[tuple[float, str]] = []  # (monotonic, what) for the report

    # ---- addresses -----------------------------------------------------------------
    @property
    def kafka_port(self) -> int:
        return self.base

    @property
    def controller_port(self) -> int:
        return self.base + 1

    @property
    def replication_port(self) -> int:
        return self.base + 2

    @property
    def metrics_port(self) -> int:
        return self.base + 5

    def kafka_addr(self, i: int) -> tuple[str, int]:
        return (node_ip(i), self.kafka_port)

    def bootstrap_of(self, i: int) -> str:
        return f"{node_ip(i)}:{self.kafka_port}"

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_of(i) for i in self.nodes)

    def live_bootstrap(self) -> str:
        """Only the nodes that can answer now (a client given a dead or paused
        bootstrap address waits on it)."""
        return ",".join(self.bootstrap_of(i) for i in self.live_ids()) or self.bootstrap

    def live_ids(self) -> list[int]:
        return [i for i, nd in self.nodes.items() if nd.running and not nd.paused]

    def _voters_for(self, i: int) -> str:
        """controller.quorum.voters as node i sees it (see the module docstring)."""
        def addr(j: int) -> int:
            if not self.proxied:
                return self.controller_port
            if self.kind == "rill":
                return self.base + 3
            return self.controller_port if j == i else self.base + 10 + i
        return ",".join(f"{j}@{node_ip(j)}:{addr(j)}" for j in self.voter_ids)

    @property
    def voter_ids(self) -> list[int]:
        return [j for j in self.nodes if j not in self.broker_only]

    # ---- configuration -------------------------------------------------------------
    def properties(self, i: int) -> dict:
        """The node's properties in the issue's format, then the test's extras; for
        Kafka, what Kafka needs besides."""
        ip = node_ip(i)
        props = {
            "node.id": str(i),
            "process.roles": "broker,controller",
            "controller.quorum.voters": self._voters_for(i),
            "listeners": f"PLAINTEXT://{ip}:{self.kafka_port},CONTROLLER://{ip}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{ip}:{self.kafka_port}",
            "log.dirs": str(self.nodes[i].data_dir),
            "default.replication.factor": str(self.rf),
            "min.insync.replicas": str(min(2, self.rf)),
        }
        if i in self.broker_only:
            props["process.roles"] = "broker"
            if self.kind == "kafka":
                # a Kafka broker-only node has no CONTROLLER listener (Rill's replicates over it)
                props["listeners"] = f"PLAINTEXT://{ip}:{self.kafka_port}"
        if self.kind == "rill":
            # Rill-only: each node its own /metrics address (the default is shared)
            props["metrics.listen"] = f"{ip}:{self.metrics_port}"
        if self.kind == "kafka":
            repl_adv = self.base + 4 if self.proxied else self.replication_port
            props["listeners"] += f",REPLICATION://{ip}:{self.replication_port}"
            props["advertised.listeners"] += f",REPLICATION://{ip}:{repl_adv}"
            if self.proxied:
                # KRaft leaders send their own controller endpoint to the voters, which
                # then fetch from it: advertise it behind the proxy too
                props["advertised.listeners"] += f",CONTROLLER://{ip}:{self.base + 6}"
            props.update(KAFKA_ONLY)
            for name in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                         "share.coordinator.state.topic.replication.factor"):
                props[name] = str(self.rf)
            for name in ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr"):
                props[name] = str(min(2, self.rf))
        props.update(self.extra)
        return props

    def write_configs(self) -> None:
        for i, nd in self.nodes.items():
            nd.workdir.mkdir(parents=True, exist_ok=True)
            nd.data_dir.mkdir(parents=True, exist_ok=True)
            nd.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties(i).items()))
            if self.kind == "kafka":
                (nd.workdir / "log4j2.yaml").write_text(_KAFKA_LOG4J2)

    def _setup_proxy(self) -> None:
        if not self.proxied:
            return
        if self.kind == "rill":
            self.proxy = FaultProxy(source_ips={node_ip(i): i for i in self.nodes})
            for j in self.nodes:
                self.proxy.add_route((node_ip(j), self.base + 3), (node_ip(j), self.controller_port), dest=j)
            return
        self.proxy = FaultProxy()
        for j in self.nodes:
            for i in self.nodes:
                if i != j:
                    self.proxy.add_route((node_ip(j), self.base + 10 + i), (node_ip(j), self.controller_port),
                                         dest=j, source=i)
            self.proxy.add_route((node_ip(j), self.base + 4), (node_ip(j), self.replication_port), dest=j)
            self.proxy.add_route((node_ip(j), self.base + 6), (node_ip(j), self.controller_port), dest=j)

    def _kafka_format(self) -> None:
        """Format every node's storage with one cluster id (in parallel: a JVM each)."""
        procs = {}
        for i, nd in self.nodes.items():
            procs[i] = subprocess.Popen(
                ["java", *KAFKA_JVM, f"-Dlog4j2.configurationFile={nd.workdir / 'log4j2.yaml'}",
                 "-cp", kafka_jars("server"), "kafka.tools.StorageTool", "format", "--ignore-formatted",
                 f"--cluster-id={self.cluster_id}", "-c", str(nd.config_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        for i, p in procs.items():
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                raise RuntimeError(f"kafka storage format of node {i} failed:\n{out}")

    # ---- lifecycle -----------------------------------------------------------------
    def command(self, i: int) -> list[str]:
        nd = self.nodes[i]
        if self.kind == "rill":
            return [str(rill_binary()), "run", "--config", str(nd.config_path)]
        return ["java", *KAFKA_JVM, f"-Dlog4j2.configurationFile={nd.workdir / 'log4j2.yaml'}",
                "-cp", kafka_jars("server"), "kafka.Kafka", str(nd.config_path)]

    def start(self, timeout: float = START_TIMEOUT_S) -> "Cluster":
        """Write configs, start every node, wait until every node answers Metadata
        listing all N brokers."""
        if self.kind == "rill" and not rill_binary().exists():
            raise RuntimeError(f"{rill_binary()} missing: cargo build -p rill-broker")
        self.write_configs()
        self._setup_proxy()
        if self.kind == "kafka":
            self._kafka_format()
        for i in self.nodes:
            self._spawn(i)
        self.wait_ready(timeout)
        self.note("cluster ready")
        return self

    def _spawn(self, i: int) -> None:
        nd = self.nodes[i]
        assert nd.proc is None, f"node {i} already running"
        nd.starts += 1
        nd._log_file = open(nd.workdir / f"node-{nd.starts}.log", "wb")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        nd.proc = subprocess.Popen(self.command(i), stdin=subprocess.DEVNULL, stdout=nd._log_file,
                                   stderr=subprocess.STDOUT, cwd=nd.workdir, env=env, start_new_session=True)

    def _check_alive(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.proc is not None and nd.proc.poll() is not None:
            code = nd._reap()
            tail = nd.log_tail()
            if self.kind == "rill" and code == 2:
                m = re.search(r"unknown config (\S+)", tail)
                if m and m.group(1) in CLUSTER_PROPERTIES:
                    raise ClusterUnsupported(f"rill-broker rejects {m.group(1)}: it does not run as a cluster yet")
            raise RuntimeError(f"node {i} exited with {code}:\n{tail}")

    def node_ready(self, i: int) -> bool:
        """The node accepts Kafka connections and its Metadata lists all N brokers."""
        self._check_alive(i)
        try:
            md = raw_metadata(self.kafka_addr(i), timeout=2.0)
        except (OSError, struct.error, IndexError):
            return False
        return sorted(b[0] for b in md["brokers"]) == sorted(self.nodes)

    def wait_ready(self, timeout: float = START_TIMEOUT_S, ids: list[int] | None = None) -> None:
        ids = ids or list(self.nodes)
        pending = set(ids)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending if not self.node_ready(i)}
            if pending:
                time.sleep(0.3)
        if pending:
            raise AssertionError(f"nodes {sorted(pending)} not ready in {timeout}s:\n{self.logs_tail()}")

    def kill9(self, i: int) -> None:
        """kill -9: nothing of the node's shutdown path runs."""
        nd = self.nodes[i]
        assert nd.proc is not None, f"node {i} not running"
        nd.proc.send_signal(signal.SIGKILL)
        nd._reap()
        self.note(f"kill -9 node {i}")

    def terminate(self, i: int, timeout: float = TERM_TIMEOUT_S) -> int:
        """SIGTERM and wait; the exit code (the caller asserts on it)."""
        nd = self.nodes[i]
        assert nd.proc is not None, f"node {i} not running"
        if nd.paused:
            self.resume(i)
        self.note(f"SIGTERM node {i}")
        nd.proc.send_signal(signal.SIGTERM)
        try:
            nd.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            nd.proc.send_signal(signal.SIGKILL)
            nd._reap()
            raise AssertionError(f"node {i} did not exit within {timeout}s of SIGTERM:\n{nd.log_tail()}")
        code = nd._reap()
        self.note(f"node {i} exited {code}")
        return code

    def clean_exit_codes(self) -> tuple[int, ...]:
        # A JVM ended by SIGTERM exits 143 after its shutdown hooks; Rill must exit 0.
        return (0,) if self.kind == "rill" else (0, 143)

    def pause(self, i: int) -> None:
        nd = self.nodes[i]
        assert nd.running and not nd.paused
        nd.proc.send_signal(signal.SIGSTOP)
        nd.paused = True
        self.note(f"SIGSTOP node {i}")

    def resume(self, i: int) -> None:
        nd = self.nodes[i]
        assert nd.proc is not None and nd.paused
        nd.proc.send_signal(signal.SIGCONT)
        nd.paused = False
        self.note(f"SIGCONT node {i}")

    def restart(self, i: int, timeout: float = RESTART_TIMEOUT_S) -> None:
        """Start node i again on its data dir (stopping it first if it runs) and wait
        until it is registered again."""
        if self.nodes[i].running:
            code = self.terminate(i)
            assert code in self.clean_exit_codes(), f"node {i} exited {code} on SIGTERM"
        self._spawn(i)
        self.note(f"restart node {i}")
        self.wait_ready(timeout, ids=[i])
        self.note(f"node {i} ready")

    def stop_all(self, grace: float = 0.0) -> None:
        """Teardown. With grace > 0: SIGTERM every node at once and SIGKILL what is
        left after `grace` seconds. The default is SIGKILL at once: a clean shutdown is
        what test_sigterm_broker_then_restart_catches_up judges, and a cluster stopping
        as a whole spends seconds on controlled shutdowns nobody checks."""
        if self.proxy is not None:
            self.proxy.heal()
        live = [nd for nd in self.nodes.values() if nd.proc is not None]
        for nd in live:
            nd.proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            if nd.paused:
                nd.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + grace
        for nd in live:
            try:
                nd.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                nd.proc.send_signal(signal.SIGKILL)
            nd._reap()
        if self.proxy is not None:
            self.proxy.stop()

    # ---- faults through the proxy --------------------------------------------------
    def isolate(self, i: int) -> None:
        assert self.proxy is not None, "Cluster(proxied=True) to cut links"
        self.proxy.isolate(i)
        self.note(f"isolate node {i}")

    def heal(self) -> None:
        assert self.proxy is not None
        self.proxy.heal()
        self.note("heal")

    # ---- what the cluster says -----------------------------------------------------
    def metadata(self, topics: list[str] | None = None, via: int | None = None) -> dict:
        """Metadata from `via`, or from the first live node that answers."""
        ids = [via] if via is not None else self.live_ids()
        last = None
        for i in ids:
            try:
                md = raw_metadata(self.kafka_addr(i), topics)
                md["via"] = i
                return md
            except (OSError, struct.error, IndexError) as e:
                last = e
        raise ConnectionError(f"no node answered Metadata (tried {ids}): {last}")

    def partition(self, topic: str, partition: int, via: int | None = None) -> dict:
        md = self.metadata([topic], via)
        t = md["topics"].get(topic)
        if t is None or t["error"] or partition not in t["partitions"]:
            return {"error": t and t["error"], "leader": -1, "replicas": [], "isr": []}
        return t["partitions"][partition]

    def leader_of(self, topic: str, partition: int = 0, via: int | None = None) -> int:
        return self.partition(topic, partition, via)["leader"]

    def isr_of(self, topic: str, partition: int = 0, via: int | None = None) -> list[int]:
        return sorted(self.partition(topic, partition, via)["isr"])

    def replicas_of(self, topic: str, partition: int = 0, via: int | None = None) -> list[int]:
        return list(self.partition(topic, partition, via)["replicas"])

    def controller_id(self, via: int | None = None) -> int:
        """The active controller: the Raft leader DescribeQuorum reports (Kafka answers
        Metadata/DescribeCluster with a random broker as 'controller' in KRaft mode),
        asked of `via` or of the first live node that answers. Falls back to
        DescribeCluster's controller where DescribeQuorum gets no answer."""
        for i in [via] if via is not None else self.live_ids():
            try:
                leader = describe_quorum_leader(self.kafka_addr(i))
                if leader >= 0:
                    return leader
            except (OSError, struct.error, IndexError, AssertionError):
                continue
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        servers = self.bootstrap_of(via) if via is not None else self.live_bootstrap()
        admin = AdminClient({"bootstrap.servers": servers})  # referenced until result()
        try:
            ctrl = admin.describe_cluster(request_timeout=5).result(timeout=10).controller
        except KafkaException:
            return -1  # none known right now (e.g. just killed); callers poll
        return ctrl.id if ctrl is not None else -1

    def wait_for(self, predicate, timeout: float, what: str = "condition", interval: float = 0.25):
        """Poll `predicate` until it returns something truthy (returned); connection
        errors count as 'not yet'. Raises AssertionError with the last value."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, struct.error, IndexError) as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
            time.sleep(interval)

    # ---- topics --------------------------------------------------------------------
    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.live_bootstrap(), "socket.timeout.ms": 10000})

    def create_topic(self, name: str, partitions: int = 3, rf: int | None = None, config: dict | None = None,
                     replica_assignment: list[list[int]] | None = None, timeout: float = 30.0) -> None:
        """Create a topic and wait until every partition has a leader and a full ISR
        as seen by every live node."""
        from confluent_kafka.admin import NewTopic

        if replica_assignment is not None:
            # librdkafka wants the partition count with an assignment, and no factor
            partitions, rf = len(replica_assignment), len(replica_assignment[0])
            nt = NewTopic(name, num_partitions=partitions, replica_assignment=replica_assignment,
                          config=config or {})
        else:
            nt = NewTopic(name, num_partitions=partitions, replication_factor=rf or self.rf, config=config or {})
        admin = self.admin()  # kept referenced: a collected client fails its futures
        admin.create_topics([nt], operation_timeout=20, request_timeout=20)[name].result(timeout=timeout)
        want = rf or self.rf
        self.wait_for(lambda: all(self._partitions_full(name, partitions, want, via=i) for i in self.live_ids()),
                      timeout, f"topic {name}: leaders and full ISR on every node")

    def _partitions_full(self, topic: str, partitions: int, rf: int, via: int) -> bool:
        t = self.metadata([topic], via)["topics"].get(topic)
        if t is None or t["error"] or len(t["partitions"]) != partitions:
            return False
        return all(p["leader"] >= 0 and len(p["isr"]) == rf for p in t["partitions"].values())

    # ---- reporting -----------------------------------------------------------------
    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def timeline(self) -> str:
        if not self.events:
            return ""
        t0 = self.events[0][0]
        return "\n".join(f"  +{t - t0:7.2f}s {w}" for t, w in self.events)

    def logs_tail(self, n: int = 60) -> str:
        return "\n".join(nd.log_tail(n) for nd in self.nodes.values())

    def describe(self) -> str:
        lines = [f"{self.kind} cluster of {self.n} in {self.workdir} (base port {self.base},"
                 f" proxied={self.proxied}); bootstrap {self.bootstrap}"]
        for i, nd in self.nodes.items():
            state = "paused" if nd.paused else ("running" if nd.running else "stopped")
            lines.append(f"  node {i}: {state}, starts={nd.starts}, exit codes={nd.exit_codes}")
        return "\n".join(lines)


@pytest.fixture
def cluster_factory(tmp_path, request):
    """make(n=3, extra=None, proxied=False, start=True, broker_only=()) -> Cluster. Every cluster made
    is torn down (processes by PID, the proxy) whatever the test's outcome; when the
    test failed, each node's log tail and the cluster's timeline are printed.

    Against Rill the test is skipped when rill-broker rejects the cluster properties
    as unknown (a build without cluster support), or with RILL_E2E_CLUSTER=0."""
    made: list[Cluster] = []
    failed_before = request.session.testsfailed
    if target() == "rill" and os.environ.get("RILL_E2E_CLUSTER", "").strip() == "0":
        pytest.skip("RILL_E2E_CLUSTER=0: cluster tests against Rill turned off")

    def make(n: int = 3, extra: dict | None = None, proxied: bool = False, start: bool = True,
             name: str | None = None, broker_only: tuple[int, ...] = ()) -> Cluster:
        c = Cluster(tmp_path / (name or f"cluster{len(made)}"), n=n, extra=extra, proxied=proxied,
                    broker_only=broker_only)
        made.append(c)
        if start:
            try:
                c.start()
            except ClusterUnsupported as e:
                pytest.skip(str(e))
        return c

    yield make
    failed = request.session.testsfailed > failed_before
    for c in made:
        if failed:
            print(c.describe())
            print("timeline:\n" + c.timeline())
            print(c.logs_tail(80))
        c.stop_all()
