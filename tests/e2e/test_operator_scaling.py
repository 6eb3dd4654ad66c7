"""Scaling a Cluster on the real control plane (issue 7): 3 -> 5 brokers rebalances
partitions and leaders onto the new brokers; a scale-down that a topic's replication
factor forbids is refused and changes nothing; 5 -> 3 drains brokers 3 and 4 before
their pods go. An acks=all producer and a consumer run throughout and the checker
proves no acknowledged record was lost or duplicated.

Same harness and helpers as test_operator.py; its own namespace and Cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checker import check  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NS = "scaling"
OPERATOR_NS = "rill-system"
CLUSTER = "grow"
BOOTSTRAP = f"{CLUSTER}-bootstrap.{NS}.svc:9092"
VENV_PY = str(Path(sys.executable))

pytestmark = [pytest.mark.rill_only, pytest.mark.k8s]

CLUSTER_YAML = f"""
apiVersion: rill.dev/v1alpha1
kind: Cluster
metadata:
  name: {CLUSTER}
  namespace: {NS}
spec:
  replicas: 3
  controllers: 3
  storage:
    size: 1Gi
  config:
    min.insync.replicas: "2"
    offsets.topic.num.partitions: "6"
    broker.session.timeout.ms: "4000"
    broker.heartbeat.interval.ms: "1000"
"""


def topic_yaml(name: str, partitions: int, rf: int) -> str:
    return f"""
apiVersion: rill.dev/v1alpha1
kind: Topic
metadata:
  name: {name}
  namespace: {NS}
spec:
  clusterRef:
    name: {CLUSTER}
  partitions: {partitions}
  replicationFactor: {rf}
"""


def condition(obj: dict | None, ctype: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return {}


def is_true(obj: dict | None, ctype: str) -> bool:
    return condition(obj, ctype).get("status") == "True"


def broker_pods(kube) -> dict[str, dict]:
    pods = kube.get("pods", NS)
    return {p["metadata"]["name"]: p for p in pods["items"]
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == CLUSTER}


def in_cluster_argv(kube, argv: list[str]) -> list[str]:
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
            str(kube.hosts_file), *argv]


def assignment(kube) -> dict:
    """Every partition (internal topics too) -> {replicas, leader}, and the brokers, read
    with librdkafka through the bootstrap Service."""
    code = f"""
import json
from confluent_kafka.admin import AdminClient
md = AdminClient({{"bootstrap.servers": "{BOOTSTRAP}"}}).list_topics(timeout=10)
print(json.dumps({{
    "brokers": sorted(md.brokers),
    "partitions": {{f"{{t}}-{{p}}": {{"replicas": list(pm.replicas), "leader": pm.leader}}
                   for t, tm in md.topics.items() for p, pm in tm.partitions.items()}},
}}))
"""
    r = kube.run_in_cluster([VENV_PY, "-c", code], timeout=30)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def counts(a: dict, brokers: range) -> tuple[dict[int, int], dict[int, int]]:
    replicas = {b: 0 for b in brokers}
    leaders = {b: 0 for b in brokers}
    for p in a["partitions"].values():
        for r in p["replicas"]:
            replicas[r] = replicas.get(r, 0) + 1
        leaders[p["leader"]] = leaders.get(p["leader"], 0) + 1
    return replicas, leaders


_runs = iter(range(100, 1000))


def run_workload(kube, tmp_path: Path, topic: str, partitions: int, stop_file: Path) -> subprocess.Popen:
    run_id = next(_runs)
    out = tmp_path / f"run-{topic}-{run_id}.json"
    argv = [VENV_PY, str(Path(__file__).with_name("in_cluster_workload.py")), "--bootstrap", BOOTSTRAP,
            "--topic", topic, "--partitions", str(partitions), "--count", "100000", "--rate", "100",
            "--out", str(out), "--max-seconds", "240", "--producer-id", str(run_id),
            "--stop-file", str(stop_file)]
    p = subprocess.Popen(in_cluster_argv(kube, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.out_path = out  # type: ignore[attr-defined]
    return p


def finish_workload(p: subprocess.Popen, stop_file: Path) -> dict:
    stop_file.touch()
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, f"workload failed ({p.returncode}):\n{stdout}\n{stderr[-3000:]}"
    run = json.loads(p.out_path.read_text())  # type: ignore[attr-defined]
    verdict = check(run["acked"], run["seen"], run["log"], run["attempted"])
    print(f"workload: {stdout.strip()}\nchecker: {verdict}; "
          f"client errors {sorted({e['code'] for e in run['errors']})}")
    assert verdict.ok, f"checker: {verdict}"
    fatal = [e for e in run["errors"] if e["kind"] != "retriable"]
    assert not fatal, f"non-retriable client errors: {fatal[:5]}"
    return run


@pytest.fixture(scope="module")
def cluster(kube):
    kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kube.helm("upgrade", "--install", "rill", str(ROOT / "charts" / "rill"), "--namespace", OPERATOR_NS,
              "--create-namespace", "--set", "image.tag=dev", "--wait", "--timeout", "120s")
    kube.create_namespace(NS)
    kube.apply(CLUSTER_YAML)
    kube.wait_for(lambda: is_true(kube.get(f"cluster/{CLUSTER}", NS), "Ready"), timeout=120,
                  what=f"Cluster {CLUSTER} Ready")
    kube.apply(topic_yaml("events", 12, 3))
    kube.wait_for(lambda: is_true(kube.get("topic/events", NS), "Ready"), timeout=60, what="Topic events Ready")
    return kube


def test_scale_up_3_to_5_rebalances_replicas_and_leaders(cluster, tmp_path):
    kube = cluster
    stop = tmp_path / "stop"
    workload = run_workload(kube, tmp_path, "events", 12, stop)
    time.sleep(3)
    t0 = time.monotonic()
    kube.kubectl("scale", f"cluster/{CLUSTER}", "-n", NS, "--replicas", "5")
    reasons: list[str] = []
    progress: list[dict] = []

    def balanced():
        c = kube.get(f"cluster/{CLUSTER}", NS)
        st = c.get("status") or {}
        reason = condition(c, "Progressing").get("reason")
        if reason and (not reasons or reasons[-1] != reason):
            reasons.append(reason)
        if st.get("rebalance") and st["rebalance"] not in progress:
            progress.append(st["rebalance"])
        if st.get("readyBrokers") != 5 or st.get("rebalance") or is_true(c, "Progressing"):
            return False
        # Settled: balanced as the brokers see it (a batch can come and go between polls).
        replicas, leaders = counts(assignment(kube), range(5))
        return (max(replicas.values()) - min(replicas.values()) <= 1
                and max(leaders.values()) - min(leaders.values()) <= 1)

    kube.wait_for(balanced, timeout=150, interval=1, what="rebalanced onto 5 brokers")
    took = time.monotonic() - t0
    a = assignment(kube)
    replicas, leaders = counts(a, range(5))
    run = finish_workload(workload, stop)
    print(f"3 -> 5 took {took:.1f}s; reasons {reasons}; progress {progress}; "
          f"replicas {replicas}; leaders {leaders}; {len(run['acked'])} acked meanwhile")
    assert a["brokers"] == [0, 1, 2, 3, 4], a["brokers"]
    assert max(replicas.values()) - min(replicas.values()) <= 1, replicas
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
    assert all(len(set(p["replicas"])) == 3 for p in a["partitions"].values()), a
    for p in progress:
        assert 0 <= p["partitionsMoved"] <= p["partitionsToMove"], progress


def test_impossible_scale_down_is_refused_and_changes_nothing(cluster):
    kube = cluster
    kube.apply(topic_yaml("wide", 1, 4))
    kube.wait_for(lambda: is_true(kube.get("topic/wide", NS), "Ready"), timeout=60, what="Topic wide Ready")
    before = {n: p["metadata"]["uid"] for n, p in broker_pods(kube).items()}
    kube.kubectl("scale", f"cluster/{CLUSTER}", "-n", NS, "--replicas", "3")
    c = kube.wait_for(lambda: (lambda c: c if condition(c, "Degraded").get("reason") == "ScaleDownRefused" else None)(
        kube.get(f"cluster/{CLUSTER}", NS)), timeout=30, what="Degraded ScaleDownRefused")
    msg = condition(c, "Degraded")["message"]
    print(f"refusal: {msg}")
    assert "topic wide has replication factor 4" in msg, msg
    time.sleep(5)
    assert kube.get(f"statefulset/{CLUSTER}", NS)["spec"]["replicas"] == 5
    assert {n: p["metadata"]["uid"] for n, p in broker_pods(kube).items()} == before
    a = assignment(kube)
    assert len(a["partitions"]["wide-0"]["replicas"]) == 4, a["partitions"]["wide-0"]


def test_scale_down_5_to_3_drains_before_the_pods_go(cluster, tmp_path):
    kube = cluster
    stop = tmp_path / "stop"
    workload = run_workload(kube, tmp_path, "events", 12, stop)
    time.sleep(2)
    t0 = time.monotonic()
    # The refusal clears as soon as the topic that forbade it is gone; the drain starts.
    kube.kubectl("delete", "topic", "wide", "-n", NS, "--timeout=60s")
    reasons: list[str] = []
    shrunk_with: dict | None = None

    def done():
        nonlocal shrunk_with
        c = kube.get(f"cluster/{CLUSTER}", NS)
        reason = condition(c, "Progressing").get("reason")
        if reason and (not reasons or reasons[-1] != reason):
            reasons.append(reason)
        sts = kube.get(f"statefulset/{CLUSTER}", NS)
        if shrunk_with is None and sts["spec"]["replicas"] == 3:
            # Read right after the shrink was seen: the leaving brokers must be empty.
            shrunk_with = assignment(kube)
        st = c.get("status") or {}
        return (shrunk_with is not None and sorted(broker_pods(kube)) == [f"{CLUSTER}-{i}" for i in range(3)]
                and st.get("replicas") == 3 and not is_true(c, "Progressing") and not st.get("rebalance"))

    kube.wait_for(done, timeout=150, interval=1, what="drained and shrunk to 3 brokers")
    took = time.monotonic() - t0
    run = finish_workload(workload, stop)
    on_leaving = {k: p for k, p in shrunk_with["partitions"].items()
                  if set(p["replicas"]) & {3, 4} or p["leader"] in (3, 4)}
    a = assignment(kube)
    replicas, leaders = counts(a, range(3))
    print(f"5 -> 3 took {took:.1f}s; reasons {reasons}; replicas {replicas}; leaders {leaders}; "
          f"{len(run['acked'])} acked meanwhile")
    assert "Draining" in reasons, reasons
    assert not on_leaving, f"brokers 3, 4 still held partitions when the StatefulSet shrank: {on_leaving}"
    assert set(replicas) == {0, 1, 2}, replicas
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
    assert "ScaleDownRefused" not in reasons[1:], f"refused mid-drain: {reasons}"
    assert not is_true(kube.get(f"cluster/{CLUSTER}", NS), "Degraded")
    # The claims are kept by default.
    for i in (3, 4):
        assert kube.get(f"pvc/data-{CLUSTER}-{i}", NS) is not None
