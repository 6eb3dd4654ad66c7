"""Day-2 operations on a real control plane (issue 7): rolling restarts that keep every
partition at or above min.insync.replicas, the restart annotation, a broker that does not
come back, a pod lost under load. Each runs a producer (acks=all, idempotent,
min.insync.replicas=2) and a consumer throughout, and the checker proves afterwards that
nothing acknowledged was lost, duplicated or reordered.

One Cluster `ops` of 3 brokers (all voters) in namespace `day2`; the tests run in file
order and each leaves the cluster Ready.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_env import (  # noqa: E402
    cluster_yaml, RillOnK8s, condition, finish_isr_watch, finish_workload, install_operator, is_true, pod_ready,
)

NS = "day2"
CLUSTER = "ops"
TOPIC = "events"
PARTITIONS = 6

pytestmark = [pytest.mark.rill_only, pytest.mark.k8s]

CLUSTER_YAML = cluster_yaml(NS, CLUSTER)


@pytest.fixture(scope="module")
def ops(kube) -> RillOnK8s:
    install_operator(kube)
    kube.create_namespace(NS)
    env = RillOnK8s(kube, NS, CLUSTER)
    kube.apply(CLUSTER_YAML)
    env.wait_cluster_ready()
    env.apply_topic(TOPIC, PARTITIONS)
    return env


def uids(env: RillOnK8s) -> dict[str, str]:
    return {n: p["metadata"]["uid"] for n, p in env.broker_pods().items()}


def watch_roll(env: RillOnK8s, before: dict[str, str], timeout: float = 240) -> tuple[list[str], int, float]:
    """Polls until every pod was replaced and the Cluster is Ready again; returns the
    order the pods were replaced in, the most pods not ready at once, and the time."""
    t0 = time.monotonic()
    order: list[str] = []
    most_down = 0
    while time.monotonic() - t0 < timeout:
        pods = env.broker_pods()
        most_down = max(most_down, len(before) - sum(1 for p in pods.values() if pod_ready(p)))
        for n, p in sorted(pods.items()):
            if p["metadata"]["uid"] != before.get(n) and n not in order:
                order.append(n)
        if len(order) == len(before) and all(pod_ready(p) for p in pods.values()) \
                and is_true(env.get_cluster(), "Ready"):
            return order, most_down, time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(f"roll not done in {timeout}s: replaced {order}\n" + env.kube.diagnostics())


def rolled_under_load(env: RillOnK8s, tmp_path: Path, change) -> tuple[list[str], dict, dict, float]:
    """Runs `change()` with a workload and an ISR watch running; waits for the roll."""
    before = uids(env)
    stop = tmp_path / "stop"
    workload = env.run_workload(tmp_path, TOPIC, PARTITIONS, count=100000, rate=100, stop_file=stop)
    isr = env.watch_isr(tmp_path, TOPIC, stop)
    time.sleep(3)
    change()
    try:
        order, most_down, took = watch_roll(env, before)
    finally:
        stop.touch()
    run = finish_workload(workload)
    watched = finish_isr_watch(isr)
    assert most_down <= 1, f"{most_down} brokers were down at once"
    print(f"roll took {took:.1f}s, order {order}, {len(run['acked'])} acked, min ISR {watched['min_isr']} "
          f"over {watched['samples']} samples, client errors {sorted({e['code'] for e in run['errors']})}")
    return order, run, watched, took


def test_config_roll_keeps_every_partition_at_min_insync_and_the_controller_last(ops, tmp_path):
    controller = ops.describe_cluster()["controller"]
    order, run, watched, _ = rolled_under_load(
        ops, tmp_path, lambda: ops.patch_cluster({"config": {"log.retention.check.interval.ms": "60000"}}))
    assert watched["samples"] > 10, watched
    assert watched["min_isr"] >= 2, f"ISR fell to {watched['min_isr']}: {watched['lowest']}"
    assert len(order) == 3
    assert order[-1] == f"{CLUSTER}-{controller}", f"active controller {controller} not last: {order}"
    assert len(run["acked"]) > 0


def test_the_restart_annotation_rolls_every_broker(ops, tmp_path):
    order, _run, watched, _ = rolled_under_load(
        ops, tmp_path, lambda: ops.kube.kubectl("annotate", "cluster", CLUSTER, "-n", NS, "--overwrite",
                                                 f"rill.dev/restart={time.time():.0f}"))
    assert sorted(order) == [f"{CLUSTER}-0", f"{CLUSTER}-1", f"{CLUSTER}-2"]
    assert watched["min_isr"] >= 2, watched


def test_a_broker_that_does_not_come_back_stops_the_roll(ops):
    kube = ops.kube
    before = uids(ops)
    # A value the broker refuses at start: the first restarted broker cannot come back.
    ops.patch_cluster({"config": {"num.partitions": "many"}})

    def degraded():
        c = condition(ops.get_cluster(), "Degraded")
        return c if c and c["status"] == "True" and c["reason"] == "BrokerFailing" else None

    cond = kube.wait_for(degraded, timeout=120, what="Degraded BrokerFailing")
    print(f"Degraded: {cond['message']}")
    now = uids(ops)
    replaced = [n for n in before if now.get(n) != before[n]]
    assert len(replaced) == 1, f"the roll went on past a broken broker: {replaced}"
    assert replaced[0] in cond["message"], cond
    time.sleep(8)  # and it stays stopped
    assert [n for n in before if uids(ops).get(n) != before[n]] == replaced
    assert "num.partitions" in kube.pod_log(NS, replaced[0])

    # Fixed: the broken broker is replaced first and the cluster recovers; the others
    # kept the template they run, so nothing else restarts.
    kube.kubectl("patch", "cluster", CLUSTER, "-n", NS, "--type=json",
                 "-p", '[{"op": "remove", "path": "/spec/config/num.partitions"}]')
    ops.wait_cluster_ready(timeout=120)
    assert not is_true(ops.get_cluster(), "Degraded")
    after = uids(ops)
    assert [n for n in before if after[n] != before[n]] == replaced


def test_a_pod_deleted_under_load_returns_and_catches_up(ops, tmp_path):
    kube = ops.kube
    stop = tmp_path / "stop"
    workload = ops.run_workload(tmp_path, TOPIC, PARTITIONS, count=100000, rate=100, stop_file=stop)
    time.sleep(4)
    victim = f"{CLUSTER}-1"
    old = kube.get(f"pod/{victim}", NS)["metadata"]["uid"]
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
    kube.wait_for(lambda: (lambda p: p and p["metadata"]["uid"] != old and pod_ready(p))(
        kube.get(f"pod/{victim}", NS)), timeout=120, what=f"{victim} back")
    back = time.monotonic() - t0
    # Caught up: back in the ISR of every partition it holds.
    kube.wait_for(lambda: all(1 in isr for isr in ops.describe_topic(TOPIC)["isr"].values()),
                  timeout=60, interval=1, what="broker 1 back in every ISR")
    in_sync = time.monotonic() - t0
    time.sleep(2)
    stop.touch()
    run = finish_workload(workload)
    print(f"{victim} Ready {back:.1f}s after delete, in every ISR after {in_sync:.1f}s; "
          f"{len(run['acked'])} acked, client errors {sorted({e['code'] for e in run['errors']})}")


def test_storage_growth_expands_every_claim_without_restarting_a_broker(ops, tmp_path):
    kube = ops.kube
    before = uids(ops)
    sts_uid = kube.get(f"statefulset/{CLUSTER}", NS)["metadata"]["uid"]
    stop = tmp_path / "stop"
    workload = ops.run_workload(tmp_path, TOPIC, PARTITIONS, count=100000, rate=100, stop_file=stop)
    time.sleep(3)
    t0 = time.monotonic()
    ops.patch_cluster({"storage": {"size": "2Gi"}})

    def grown():
        claims = [kube.get(f"pvc/data-{CLUSTER}-{i}", NS) for i in range(3)]
        sts = kube.get(f"statefulset/{CLUSTER}", NS)
        return (all(c["status"].get("capacity", {}).get("storage") == "2Gi" for c in claims)
                and sts is not None and sts["metadata"]["uid"] != sts_uid
                and sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
                and is_true(ops.get_cluster(), "Ready"))

    kube.wait_for(grown, timeout=120, what="claims grown and the StatefulSet replaced")
    took = time.monotonic() - t0
    time.sleep(2)
    stop.touch()
    run = finish_workload(workload)
    assert uids(ops) == before, "a broker restarted for a storage change"
    assert not is_true(ops.get_cluster(), "Degraded")
    # Shrinking back is refused by the apiserver.
    r = kube.kubectl("patch", "cluster", CLUSTER, "-n", NS, "--type=merge",
                     "-p", '{"spec":{"storage":{"size":"1Gi"}}}', check=False)
    assert r.returncode != 0 and "may not shrink" in r.stderr, r.stderr
    print(f"storage 1Gi -> 2Gi in {took:.1f}s with no restart; {len(run['acked'])} acked, "
          f"client errors {sorted({e['code'] for e in run['errors']})}")
