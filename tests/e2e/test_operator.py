"""The operator on a real Kubernetes control plane (tests/e2e/k8s/): the chart installs
it, a Cluster becomes three broker pods that real Kafka clients use through the
bootstrap Service, Topics create and change topics, a config change rolls the pods one
at a time, and a deleted pod comes back with its data.

The operator itself runs as a pod of the chart's Deployment (the node agent runs it as
a process with its ServiceAccount's token), so its RBAC is the chart's, for real.
Everything runs in one module-scoped control plane; the tests run in file order.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_env import (  # noqa: E402
    cluster_yaml, OPERATOR_NS, ROOT, RillOnK8s, condition, finish_workload, install_operator, is_true, pod_ready,
)

NS = "kafka"
CLUSTER = "demo"
BOOTSTRAP = f"{CLUSTER}-bootstrap.{NS}.svc:9092"

pytestmark = [pytest.mark.rill_only, pytest.mark.k8s]

CLUSTER_YAML = cluster_yaml(NS, CLUSTER, extra_spec="\n  rack:\n    topologyKey: topology.kubernetes.io/zone")


@pytest.fixture(scope="module")
def rill(kube) -> RillOnK8s:
    """The chart installed, then a 3-broker Cluster, Ready."""
    install_operator(kube)
    kube.create_namespace(NS)
    env = RillOnK8s(kube, NS, CLUSTER)
    kube.apply(CLUSTER_YAML)
    print(f"Cluster {CLUSTER} Ready {env.wait_cluster_ready():.1f}s after kubectl apply")
    return env


# ---- tests ------------------------------------------------------------------------------

def test_crds_apply_server_side_and_chart_passes_lint_and_server_dry_run(kube):
    r = kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    assert "clusters.rill.dev serverside-applied" in r.stdout, r.stdout
    assert "topics.rill.dev serverside-applied" in r.stdout, r.stdout
    for crd in ("clusters.rill.dev", "topics.rill.dev"):
        kube.wait_jsonpath(f"crd/{crd}", '{.status.conditions[?(@.type=="Established")].status}', "True")
    lint = kube.helm("lint", str(ROOT / "charts" / "rill"))
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout, lint.stdout
    for values in ([], ["--set", "watchNamespace=default"]):
        rendered = kube.helm("template", "rill", str(ROOT / "charts" / "rill"), "--namespace", "default",
                             "--include-crds", *values).stdout
        r = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
        assert "deployment.apps/rill created (server dry run)" in r.stdout, r.stdout
        assert "customresourcedefinition.apiextensions.k8s.io/clusters.rill.dev" in r.stdout, r.stdout


def test_cluster_becomes_ready_with_its_objects(rill):
    kube = rill.kube
    c = kube.get(f"cluster/{CLUSTER}", NS)
    st = c["status"]
    assert st["readyBrokers"] == 3 and st["replicas"] == 3, st
    assert st["bootstrap"] == BOOTSTRAP, st
    assert st["observedGeneration"] == c["metadata"]["generation"], st
    assert st.get("clusterId"), f"no clusterId in {st}"
    assert not is_true(c, "Degraded"), st

    # kubectl's printer columns: NAME READY BROKERS BOOTSTRAP AGE
    table = kube.kubectl("get", "clusters", "-n", NS).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "BROKERS", "BOOTSTRAP"], table
    assert table[1].split()[:4] == [CLUSTER, "3", "3", BOOTSTRAP], table

    sts = kube.get(f"statefulset/{CLUSTER}", NS)
    assert sts["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert sts["spec"]["serviceName"] == f"{CLUSTER}-brokers"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    owner = sts["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Cluster", CLUSTER, True)
    assert kube.get(f"pdb/{CLUSTER}", NS)["spec"]["maxUnavailable"] == 1
    assert kube.get(f"service/{CLUSTER}-brokers", NS)["spec"]["clusterIP"] == "None"
    assert "server.properties" in kube.get(f"configmap/{CLUSTER}-config", NS)["data"]

    pods = rill.broker_pods()
    assert sorted(pods) == [f"{CLUSTER}-0", f"{CLUSTER}-1", f"{CLUSTER}-2"]
    ips = {p["status"]["podIP"] for p in pods.values()}
    assert len(ips) == 3 and all(ip.startswith(kube.pod_ip_prefix) for ip in ips), ips
    for i in range(3):
        pvc = kube.get(f"pvc/data-{CLUSTER}-{i}", NS)
        assert pvc["status"]["phase"] == "Bound", pvc["status"]

    # broker.rack is the node's zone: the pod got its label at binding, the downward
    # API handed it to the broker.
    zone = kube.get("nodes")["items"][0]["metadata"]["labels"]["topology.kubernetes.io/zone"]
    racks = rill.describe_cluster()["brokers"]
    assert racks == {"0": zone, "1": zone, "2": zone}, racks

    # The brokers found each other by their pod DNS names: one cluster of three.
    out = kube.run_in_cluster(["kcat", "-L", "-b", BOOTSTRAP, "-m", "10"], timeout=30, check=True).stdout
    assert "3 brokers:" in out, out
    for i in range(3):
        assert f"{CLUSTER}-{i}.{CLUSTER}-brokers.{NS}.svc.cluster.local:9092" in out, out


def test_topic_is_created_and_carries_records_exactly_once(rill, tmp_path):
    kube = rill.kube
    kube.apply(rill.topic_yaml("orders", 3, config={"retention.ms": "3600000"}))
    kube.wait_for(lambda: is_true(kube.get("topic/orders", NS), "Ready"), timeout=60, what="Topic orders Ready")
    st = kube.get("topic/orders", NS)["status"]
    assert st["partitions"] == 3 and st["replicationFactor"] == 3, st
    assert len(st["topicId"]) == 36, st  # a UUID
    d = rill.describe_topic("orders")
    assert sorted(d["partitions"]) == ["0", "1", "2"], d
    assert all(len(set(r)) == 3 for r in d["partitions"].values()), d
    assert d["configs"].get("retention.ms") == "3600000", d

    run = finish_workload(rill.run_workload(tmp_path, "orders", 3, count=600, rate=300))
    assert len(run["acked"]) == 600


def test_topic_changes_apply_and_drift_is_corrected(rill):
    kube = rill.kube
    kube.apply(rill.topic_yaml("orders", 5, config={"retention.ms": "7200000", "cleanup.policy": "delete"}))
    kube.wait_for(lambda: (kube.get("topic/orders", NS)["status"].get("partitions") == 5
                           and is_true(kube.get("topic/orders", NS), "Ready")),
                  timeout=60, what="orders grown to 5 partitions")
    d = rill.describe_topic("orders")
    assert sorted(d["partitions"]) == ["0", "1", "2", "3", "4"], d
    assert d["configs"].get("retention.ms") == "7200000", d

    # Out of band: someone alters the topic with an admin client. The spec wins.
    rill.admin_python("""
res = ConfigResource(ConfigResource.Type.TOPIC, "orders",
                     incremental_configs=[ConfigEntry("retention.ms", "1000",
                                                      incremental_operation=AlterConfigOpType.SET)])
a.incremental_alter_configs([res])[res].result(timeout=10)
""")
    assert rill.describe_topic("orders")["configs"]["retention.ms"] == "1000"
    kube.wait_for(lambda: rill.describe_topic("orders")["configs"].get("retention.ms") == "7200000",
                  timeout=90, interval=2, what="drifted retention.ms restored by the operator")
    ready = kube.wait_for(lambda: (lambda c: c if c and c["reason"] == "DriftCorrected" else None)(
        condition(kube.get("topic/orders", NS), "Ready")), timeout=15, what="drift reported")
    assert ready["status"] == "True" and "retention.ms" in ready["message"], ready

    # Fewer partitions is refused by the apiserver (CEL), before any reconcile.
    r = kube.kubectl("apply", "-f", "-", input=rill.topic_yaml("orders", 2), check=False)
    assert r.returncode != 0 and "partitions" in r.stderr, r.stderr


def test_a_replication_factor_the_cluster_cannot_hold_is_reported(rill):
    kube = rill.kube
    kube.apply(rill.topic_yaml("too-wide", 1, rf=5))
    ready = kube.wait_for(lambda: condition(kube.get("topic/too-wide", NS), "Ready"), timeout=60,
                          what="too-wide reconciled")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidReplicationFactor"), ready
    assert rill.describe_topic("too-wide") == {}
    kube.kubectl("delete", "topic", "too-wide", "-n", NS, "--timeout=30s")


def test_storage_shrink_is_refused_by_the_apiserver(rill):
    r = rill.kube.kubectl("patch", "cluster", CLUSTER, "-n", NS, "--type=merge",
                        "-p", '{"spec":{"storage":{"size":"512Mi"}}}', check=False)
    assert r.returncode != 0 and "may not shrink" in r.stderr, r.stderr


def test_config_change_rolls_brokers_one_at_a_time(rill, tmp_path):
    kube = rill.kube
    before = {n: p["metadata"]["uid"] for n, p in rill.broker_pods().items()}
    stop = tmp_path / "stop"
    workload = rill.run_workload(tmp_path, "orders", 5, count=100000, rate=100, stop_file=stop)
    time.sleep(3)
    kube.kubectl("patch", "cluster", CLUSTER, "-n", NS, "--type=merge",
                 "-p", '{"spec":{"config":{"log.retention.check.interval.ms":"60000"}}}')
    t0 = time.monotonic()
    most_not_ready = 0
    restarted_order: list[str] = []
    deadline = t0 + 300
    while time.monotonic() < deadline:
        pods = rill.broker_pods()
        not_ready = 3 - sum(1 for p in pods.values() if pod_ready(p))
        most_not_ready = max(most_not_ready, not_ready)
        for n, p in pods.items():
            if p["metadata"]["uid"] != before.get(n) and n not in restarted_order:
                restarted_order.append(n)
        c = kube.get(f"cluster/{CLUSTER}", NS)
        if len(restarted_order) == 3 and not_ready == 0 and is_true(c, "Ready"):
            break
        time.sleep(0.25)
    took = time.monotonic() - t0
    stop.touch()
    run = finish_workload(workload)
    print(f"roll of 3 brokers took {took:.1f}s, order {restarted_order}, "
          f"{len(run['acked'])} acked meanwhile, client errors {sorted({e['code'] for e in run['errors']})}")
    assert len(restarted_order) == 3, f"only {restarted_order} restarted in {took:.0f}s"
    assert most_not_ready <= 1, f"{most_not_ready} brokers were down at once"
    props = kube.get(f"configmap/{CLUSTER}-config", NS)["data"]["server.properties"]
    assert "log.retention.check.interval.ms=60000" in props


def test_deleted_pod_comes_back_with_its_data(rill, tmp_path):
    kube = rill.kube
    pod = f"{CLUSTER}-1"
    old = kube.get(f"pod/{pod}", NS)
    pvc = kube.get(f"pvc/data-{pod}", NS)
    pv = kube.get(f"pv/{pvc['spec']['volumeName']}")
    data_dir = Path(pv["spec"]["hostPath"]["path"]) / "data"
    before = sorted(p.name for p in data_dir.iterdir() if p.name.startswith("orders-"))
    assert before, f"no orders partitions in {data_dir}"
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", pod, "-n", NS, "--wait=false")
    kube.wait_for(lambda: (lambda p: p and p["metadata"]["uid"] != old["metadata"]["uid"] and pod_ready(p))(
        kube.get(f"pod/{pod}", NS)), timeout=120, what=f"{pod} back and Ready")
    print(f"{pod} back and Ready {time.monotonic() - t0:.1f}s after delete")
    again = kube.get(f"pvc/data-{pod}", NS)
    assert again["metadata"]["uid"] == pvc["metadata"]["uid"], "the pod got a new claim"
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith("orders-")) == before
    log = kube.pod_log(NS, pod)
    assert "SIGTERM" in log, log[-2000:]
    kube.wait_for(lambda: is_true(kube.get(f"cluster/{CLUSTER}", NS), "Ready"), timeout=60, what="Cluster Ready")
    # Everything produced earlier is still there, read through the returned cluster.
    finish_workload(rill.run_workload(tmp_path, "orders", 5, count=100, rate=200))


def test_deleting_a_topic_deletes_it_and_its_finalizer_clears(rill):
    kube = rill.kube
    kube.kubectl("delete", "topic", "orders", "-n", NS, "--timeout=60s")
    assert kube.get("topic/orders", NS) is None
    kube.wait_for(lambda: rill.describe_topic("orders") == {}, timeout=30, what="orders gone from the brokers")

    # A Topic whose Cluster does not exist is reported, and still deletable.
    kube.apply(rill.topic_yaml("orphan", 1).replace(f"name: {CLUSTER}", "name: no-such-cluster"))
    kube.wait_for(lambda: condition(kube.get("topic/orphan", NS), "Ready") is not None
                  and not is_true(kube.get("topic/orphan", NS), "Ready"), timeout=60,
                  what="orphan Topic reported not Ready")
    kube.kubectl("delete", "topic", "orphan", "-n", NS, "--timeout=30s")
    assert kube.get("topic/orphan", NS) is None


def test_an_unmanaged_topic_is_left_alone(rill):
    kube = rill.kube
    kube.apply(rill.topic_yaml("audit", 2, config={"retention.ms": "600000"}))
    kube.wait_for(lambda: is_true(kube.get("topic/audit", NS), "Ready"), timeout=60, what="Topic audit Ready")
    kube.kubectl("annotate", "topic", "audit", "-n", NS, "rill.dev/managed=false")
    kube.apply(rill.topic_yaml("audit", 4, config={"retention.ms": "1000"}).replace(
        "  namespace: kafka\n", "  namespace: kafka\n  annotations:\n    rill.dev/managed: \"false\"\n"))
    kube.wait_for(lambda: (condition(kube.get("topic/audit", NS), "Ready") or {}).get("reason") == "Unmanaged",
                  timeout=30, what="audit reported Unmanaged")
    d = rill.describe_topic("audit")
    assert sorted(d["partitions"]) == ["0", "1"] and d["configs"]["retention.ms"] == "600000", d
    # Deleting an unmanaged Topic leaves the Kafka topic in place.
    kube.kubectl("delete", "topic", "audit", "-n", NS, "--timeout=30s")
    assert sorted(rill.describe_topic("audit")["partitions"]) == ["0", "1"]


def operator_pods(kube) -> dict[str, dict]:
    pods = kube.get("pods", OPERATOR_NS)["items"]
    return {p["metadata"]["name"]: p for p in pods
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "rill-operator"
            and not p["metadata"].get("deletionTimestamp")}


def operator_metrics(pod: dict) -> dict[str, float]:
    """The operator's /metrics, series -> value (read from the pod IP on loopback)."""
    text = urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_two_operator_replicas_share_one_lease_and_fail_over(rill):
    kube = rill.kube
    kube.apply(rill.topic_yaml("before-failover", 1))
    kube.wait_for(lambda: is_true(kube.get("topic/before-failover", NS), "Ready"), timeout=60,
                  what="Topic before-failover Ready")
    kube.kubectl("scale", "deployment", "rill", "-n", OPERATOR_NS, "--replicas", "2")
    kube.wait_for(lambda: len(operator_pods(kube)) == 2 and all(pod_ready(p) for p in operator_pods(kube).values()),
                  timeout=60, what="two operator pods Ready")
    holder = kube.wait_for(lambda: kube.jsonpath("lease/rill-operator", "{.spec.holderIdentity}", OPERATOR_NS),
                           timeout=30, what="a Lease holder")
    pods = operator_pods(kube)
    assert holder in pods, (holder, list(pods))
    (other,) = [n for n in pods if n != holder]
    leader_metrics = operator_metrics(pods[holder])
    assert leader_metrics["rill_operator_leader"] == 1
    assert leader_metrics['rill_operator_reconciles_total{controller="cluster"}'] >= 1
    assert leader_metrics['rill_operator_reconciles_total{controller="topic"}'] >= 1
    assert operator_metrics(pods[other])["rill_operator_leader"] == 0

    # The leader goes away: it releases the Lease on SIGTERM and a live replica takes
    # over (the one waiting, or the Deployment's replacement if it starts first).
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", holder, "-n", OPERATOR_NS, "--wait=false")

    def new_holder():
        h = kube.jsonpath("lease/rill-operator", "{.spec.holderIdentity}", OPERATOR_NS)
        return h if h and h != holder and h in operator_pods(kube) else None

    successor = kube.wait_for(new_holder, timeout=60, what="a live replica holds the Lease")
    print(f"Lease moved from {holder} to {successor} {time.monotonic() - t0:.1f}s after the delete")
    assert "released the leader Lease" in kube.pod_log(OPERATOR_NS, holder)
    # The new leader reconciles: a new Topic becomes Ready.
    kube.apply(rill.topic_yaml("after-failover", 1))
    kube.wait_for(lambda: is_true(kube.get("topic/after-failover", NS), "Ready"), timeout=60,
                  what="Topic reconciled by the new leader")
    live = operator_pods(kube)
    assert operator_metrics(live[successor])["rill_operator_leader"] == 1
    assert [n for n in live if n != successor and operator_metrics(live[n])["rill_operator_leader"] != 0] == []
    kube.kubectl("scale", "deployment", "rill", "-n", OPERATOR_NS, "--replicas", "1")
