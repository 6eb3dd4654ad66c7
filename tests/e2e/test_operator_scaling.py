"""Scaling a Cluster on the real control plane (issue 7): 3 -> 5 brokers rebalances
partitions and leaders onto the new brokers; a scale-down that a topic's replication
factor forbids is refused and changes nothing; 5 -> 3 drains brokers 3 and 4 before
their pods go. An acks=all producer and a consumer run throughout and the checker
proves no acknowledged record was lost or duplicated.

Same harness and helpers as test_operator.py; its own namespace and Cluster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
import sys

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_env import cluster_yaml, RillOnK8s, condition, finish_workload, install_operator, is_true  # noqa: E402

NS = "scaling"
CLUSTER = "grow"

pytestmark = [pytest.mark.rill_only, pytest.mark.k8s]

CLUSTER_YAML = cluster_yaml(NS, CLUSTER, config={"offsets.topic.num.partitions": "6"})


def reason_of(obj: dict | None, ctype: str) -> str | None:
    return (condition(obj, ctype) or {}).get("reason")


def assignment(env: RillOnK8s) -> dict:
    """Every partition (internal topics too) -> {replicas, leader}, and the brokers, read
    with librdkafka through the bootstrap Service."""
    return env.admin_json("""
md = a.list_topics(timeout=10)
print(json.dumps({
    "brokers": sorted(md.brokers),
    "partitions": {f"{t}-{p}": {"replicas": list(pm.replicas), "leader": pm.leader}
                   for t, tm in md.topics.items() for p, pm in tm.partitions.items()},
}))
""")


def counts(a: dict, brokers: range) -> tuple[dict[int, int], dict[int, int]]:
    replicas = {b: 0 for b in brokers}
    leaders = {b: 0 for b in brokers}
    for p in a["partitions"].values():
        for r in p["replicas"]:
            replicas[r] = replicas.get(r, 0) + 1
        leaders[p["leader"]] = leaders.get(p["leader"], 0) + 1
    return replicas, leaders


def start_workload(env: RillOnK8s, tmp_path: Path, stop: Path):
    return env.run_workload(tmp_path, "events", 12, count=100000, rate=100, stop_file=stop)


@pytest.fixture(scope="module")
def cluster(kube) -> RillOnK8s:
    install_operator(kube)
    kube.create_namespace(NS)
    env = RillOnK8s(kube, NS, CLUSTER)
    kube.apply(CLUSTER_YAML)
    env.wait_cluster_ready(timeout=120)
    env.apply_topic("events", 12)
    return env


def test_scale_up_3_to_5_rebalances_replicas_and_leaders(cluster, tmp_path):
    env = cluster
    kube = env.kube
    stop = tmp_path / "stop"
    workload = start_workload(env, tmp_path, stop)
    time.sleep(3)
    t0 = time.monotonic()
    kube.kubectl("scale", f"cluster/{CLUSTER}", "-n", NS, "--replicas", "5")
    reasons: list[str] = []
    progress: list[dict] = []

    def balanced():
        c = kube.get(f"cluster/{CLUSTER}", NS)
        st = c.get("status") or {}
        reason = reason_of(c, "Progressing")
        if reason and (not reasons or reasons[-1] != reason):
            reasons.append(reason)
        if st.get("rebalance") and st["rebalance"] not in progress:
            progress.append(st["rebalance"])
        if st.get("readyBrokers") != 5 or st.get("rebalance") or is_true(c, "Progressing"):
            return False
        # Settled: balanced as the brokers see it (a batch can come and go between polls).
        replicas, leaders = counts(assignment(env), range(5))
        return (max(replicas.values()) - min(replicas.values()) <= 1
                and max(leaders.values()) - min(leaders.values()) <= 1)

    try:
        kube.wait_for(balanced, timeout=150, interval=1, what="rebalanced onto 5 brokers")
    except Exception as e:
        st = (kube.get(f"cluster/{CLUSTER}", NS).get("status") or {})
        raise AssertionError(f"not rebalanced: Progressing reasons {reasons}, rebalance progress {progress}, "
                             f"last status {json.dumps(st)}") from e
    took = time.monotonic() - t0
    a = assignment(env)
    replicas, leaders = counts(a, range(5))
    stop.touch()
    run = finish_workload(workload)
    print(f"3 -> 5 took {took:.1f}s; reasons {reasons}; progress {progress}; "
          f"replicas {replicas}; leaders {leaders}; {len(run['acked'])} acked meanwhile")
    assert a["brokers"] == [0, 1, 2, 3, 4], a["brokers"]
    assert max(replicas.values()) - min(replicas.values()) <= 1, replicas
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
    assert all(len(set(p["replicas"])) == 3 for p in a["partitions"].values()), a
    for p in progress:
        assert 0 <= p["partitionsMoved"] <= p["partitionsToMove"], progress


def test_impossible_scale_down_is_refused_and_changes_nothing(cluster):
    env = cluster
    kube = env.kube
    env.apply_topic("wide", 1, rf=4)
    before = {n: p["metadata"]["uid"] for n, p in env.broker_pods().items()}
    kube.kubectl("scale", f"cluster/{CLUSTER}", "-n", NS, "--replicas", "3")
    c = kube.wait_for(lambda: (lambda c: c if reason_of(c, "Degraded") == "ScaleDownRefused" else None)(
        kube.get(f"cluster/{CLUSTER}", NS)), timeout=30, what="Degraded ScaleDownRefused")
    msg = condition(c, "Degraded")["message"]
    print(f"refusal: {msg}")
    assert "topic wide has replication factor 4" in msg, msg
    time.sleep(5)
    assert kube.get(f"statefulset/{CLUSTER}", NS)["spec"]["replicas"] == 5
    assert {n: p["metadata"]["uid"] for n, p in env.broker_pods().items()} == before
    a = assignment(env)
    assert len(a["partitions"]["wide-0"]["replicas"]) == 4, a["partitions"]["wide-0"]


def test_scale_down_5_to_3_drains_before_the_pods_go(cluster, tmp_path):
    env = cluster
    kube = env.kube
    stop = tmp_path / "stop"
    workload = start_workload(env, tmp_path, stop)
    time.sleep(2)
    t0 = time.monotonic()
    # The refusal clears as soon as the topic that forbade it is gone; the drain starts.
    kube.kubectl("delete", "topic", "wide", "-n", NS, "--timeout=60s")
    reasons: list[str] = []
    shrunk_with: dict | None = None

    def done():
        nonlocal shrunk_with
        c = kube.get(f"cluster/{CLUSTER}", NS)
        reason = reason_of(c, "Progressing")
        if reason and (not reasons or reasons[-1] != reason):
            reasons.append(reason)
        sts = kube.get(f"statefulset/{CLUSTER}", NS)
        if shrunk_with is None and sts["spec"]["replicas"] == 3:
            # Read right after the shrink was seen: the leaving brokers must be empty.
            shrunk_with = assignment(env)
        st = c.get("status") or {}
        return (shrunk_with is not None and sorted(env.broker_pods()) == [f"{CLUSTER}-{i}" for i in range(3)]
                and st.get("replicas") == 3 and not is_true(c, "Progressing") and not st.get("rebalance"))

    kube.wait_for(done, timeout=150, interval=1, what="drained and shrunk to 3 brokers")
    took = time.monotonic() - t0
    stop.touch()
    run = finish_workload(workload)
    on_leaving = {k: p for k, p in shrunk_with["partitions"].items()
                  if set(p["replicas"]) & {3, 4} or p["leader"] in (3, 4)}
    a = assignment(env)
    replicas, leaders = counts(a, range(3))
    print(f"5 -> 3 took {took:.1f}s; reasons {reasons}; replicas {replicas}; leaders {leaders}; "
          f"{len(run['acked'])} acked meanwhile")
    assert "Draining" in reasons, reasons
    assert not on_leaving, f"brokers 3, 4 still held partitions when the StatefulSet shrank: {on_leaving}"
    assert set(replicas) == {0, 1, 2}, replicas
    assert max(leaders.values()) - min(leaders.values()) <= 1, leaders
    assert "ScaleDownRefused" not in reasons[1:], f"refused mid-drain: {reasons}"
    assert not is_true(kube.get(f"cluster/{CLUSTER}", NS), "Degraded")
    # The removed brokers were unregistered: the quorum lists only the three left.
    kube.wait_for(lambda: sorted(env.describe_cluster()["brokers"]) == ["0", "1", "2"], timeout=30,
                  what="brokers 3 and 4 unregistered")
    # The claims are kept by default.
    for i in (3, 4):
        assert kube.get(f"pvc/data-{CLUSTER}-{i}", NS) is not None
