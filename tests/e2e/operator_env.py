"""Helpers of the operator tests (test_operator*.py): one `RillOnK8s` per Cluster under
test, bound to the harness (`kube`, tests/e2e/k8s/). Clients run in the cluster's DNS
view (`kube.run_in_cluster` / `in_cluster_argv`), since brokers advertise pod DNS names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from checker import check

E2E = Path(__file__).resolve().parent
ROOT = E2E.parents[1]
OPERATOR_NS = "rill-system"
VENV_PY = str(Path(sys.executable))
_runs = iter(range(1, 100000))


def condition(obj: dict | None, ctype: str) -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def is_true(obj: dict | None, ctype: str) -> bool:
    c = condition(obj, ctype)
    return bool(c) and c.get("status") == "True"


def pod_ready(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and is_true(pod, "Ready")


def in_cluster_argv(kube, argv: list[str]) -> list[str]:
    """argv run as a pod sees the cluster (the harness's hosts file on /etc/hosts)."""
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
            str(kube.hosts_file), *argv]


def install_operator(kube) -> None:
    """CRDs applied server-side, then the chart installed (or kept, when an earlier module
    of the session installed it); its Deployment runs the operator as a pod.
    RILL_E2E_OPERATOR_LOG sets the chart's logLevel (RUST_LOG), e.g. "info,rill_operator=debug"."""
    kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    level = os.environ.get("RILL_E2E_OPERATOR_LOG", "info")
    kube.helm("upgrade", "--install", "rill", str(ROOT / "charts" / "rill"), "--namespace", OPERATOR_NS,
              "--create-namespace", "--set", "image.tag=dev", "--set", f"logLevel={level}",
              "--wait", "--timeout", "120s")


def cluster_yaml(namespace: str, name: str, replicas: int = 3, config: dict | None = None,
                 extra_spec: str = "") -> str:
    """A Cluster of `replicas` brokers, 3 voters, 1Gi each, min.insync.replicas=2 and
    short broker sessions (fast failover in tests), plus `config` and `extra_spec` lines."""
    props = {"min.insync.replicas": "2", "broker.session.timeout.ms": "4000",
             "broker.heartbeat.interval.ms": "1000", **(config or {})}
    lines = "".join(f'\n    {k}: "{v}"' for k, v in props.items())
    return f"""
apiVersion: rill.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: {replicas}
  controllers: 3
  storage:
    size: 1Gi{extra_spec}
  config:{lines}
"""


class RillOnK8s:
    def __init__(self, kube, namespace: str, cluster: str):
        self.kube = kube
        self.ns = namespace
        self.cluster = cluster
        self.bootstrap = f"{cluster}-bootstrap.{namespace}.svc:9092"

    # ---- Kubernetes side -------------------------------------------------------------
    def get_cluster(self) -> dict | None:
        return self.kube.get(f"cluster/{self.cluster}", self.ns)

    def wait_cluster_ready(self, timeout: float = 180) -> float:
        t0 = time.monotonic()
        self.kube.wait_for(lambda: is_true(self.get_cluster(), "Ready"), timeout=timeout,
                           what=f"Cluster {self.cluster} Ready")
        return time.monotonic() - t0

    def patch_cluster(self, spec: dict) -> None:
        self.kube.kubectl("patch", "cluster", self.cluster, "-n", self.ns, "--type=merge",
                          "-p", json.dumps({"spec": spec}))

    def broker_pods(self) -> dict[str, dict]:
        pods = self.kube.get("pods", self.ns)
        return {p["metadata"]["name"]: p for p in pods["items"]
                if p["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == self.cluster}

    def topic_yaml(self, name: str, partitions: int, rf: int = 3, config: dict | None = None,
                   cluster: str | None = None) -> str:
        cfg = "".join(f'\n    {k}: "{v}"' for k, v in (config or {}).items())
        return f"""
apiVersion: rill.dev/v1alpha1
kind: Topic
metadata:
  name: {name}
  namespace: {self.ns}
spec:
  clusterRef:
    name: {cluster or self.cluster}
  partitions: {partitions}
  replicationFactor: {rf}
  config:{cfg if cfg else " {}"}
"""

    def apply_topic(self, name: str, partitions: int, rf: int = 3, config: dict | None = None) -> dict:
        self.kube.apply(self.topic_yaml(name, partitions, rf, config))
        self.kube.wait_for(lambda: is_true(self.kube.get(f"topic/{name}", self.ns), "Ready"), timeout=60,
                           what=f"Topic {name} Ready")
        return self.kube.get(f"topic/{name}", self.ns)

    # ---- Kafka side (in the cluster's DNS view) ----------------------------------------
    def python(self, code: str, timeout: float = 60) -> str:
        r = self.kube.run_in_cluster([VENV_PY, "-c", code], timeout=timeout)
        assert r.returncode == 0, f"in-cluster python failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def admin_python(self, code: str, timeout: float = 60) -> str:
        """`code` with `a`, a confluent-kafka AdminClient on the bootstrap Service, and
        json, sys, ConfigResource, ConfigEntry, AlterConfigOpType imported."""
        return self.python(f"""
import json, sys
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigEntry, AlterConfigOpType
a = AdminClient({{"bootstrap.servers": "{self.bootstrap}"}})
""" + code, timeout)

    def admin_json(self, code: str):
        """The JSON that `code` prints last."""
        return json.loads(self.admin_python(code).strip().splitlines()[-1])

    def describe_topic(self, topic: str) -> dict:
        """Partitions (with replicas and ISR) and the topic's own configs; {} when the
        topic does not exist."""
        return self.admin_json(f"""
md = a.list_topics(timeout=10)
t = md.topics.get("{topic}")
if t is None or t.error is not None:
    print(json.dumps({{}})); sys.exit(0)
res = ConfigResource(ConfigResource.Type.TOPIC, "{topic}")
cfg = a.describe_configs([res])[res].result(timeout=10)
print(json.dumps({{
    "partitions": {{str(p): list(pm.replicas) for p, pm in t.partitions.items()}},
    "isr": {{str(p): list(pm.isrs) for p, pm in t.partitions.items()}},
    "configs": {{k: v.value for k, v in cfg.items() if v.source == 1}},
}}))
""")

    def describe_cluster(self) -> dict:
        """{"controller": id, "brokers": {id: rack}} from DescribeCluster."""
        return self.admin_json("""
d = a.describe_cluster().result(timeout=10)
print(json.dumps({"controller": d.controller.id if d.controller else None,
                  "brokers": {str(n.id): n.rack for n in d.nodes}}))
""")

    def run_workload(self, tmp_path: Path, topic: str, partitions: int, count: int, rate: float,
                     stop_file: Path | None = None) -> subprocess.Popen:
        """The producer and consumer of in_cluster_workload.py in the background; each run
        has its own producer id, so runs on one topic never share a value."""
        run_id = next(_runs)
        out = tmp_path / f"run-{topic}-{run_id}.json"
        argv = [VENV_PY, str(E2E / "in_cluster_workload.py"), "--bootstrap", self.bootstrap,
                "--topic", topic, "--partitions", str(partitions), "--count", str(count), "--rate", str(rate),
                "--out", str(out), "--max-seconds", "240", "--producer-id", str(run_id)]
        if stop_file is not None:
            argv += ["--stop-file", str(stop_file)]
        p = subprocess.Popen(in_cluster_argv(self.kube, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        p.out_path = out  # type: ignore[attr-defined]
        return p

    def watch_isr(self, tmp_path: Path, topic: str, stop_file: Path) -> subprocess.Popen:
        """in_cluster_isr_watch.py in the background, until stop_file exists."""
        out = tmp_path / f"isr-{topic}-{next(_runs)}.json"
        argv = [VENV_PY, str(E2E / "in_cluster_isr_watch.py"), "--bootstrap", self.bootstrap, "--topic", topic,
                "--stop-file", str(stop_file), "--out", str(out)]
        p = subprocess.Popen(in_cluster_argv(self.kube, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        p.out_path = out  # type: ignore[attr-defined]
        return p


def finish_workload(p: subprocess.Popen, timeout: float = 200) -> dict:
    """Waits for a run_workload process and proves its run with the checker: nothing
    acknowledged lost, duplicated, moved or reordered; only retriable client errors."""
    stdout, stderr = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"workload failed ({p.returncode}):\n{stdout}\n{stderr[-3000:]}"
    run = json.loads(p.out_path.read_text())  # type: ignore[attr-defined]
    verdict = check(run["acked"], run["seen"], run["log"], run["attempted"])
    print(f"workload: {stdout.strip()}\nchecker: {verdict}")
    if not verdict.ok:
        log = p.out_path.with_suffix(".producer.log")  # type: ignore[attr-defined]
        if log.exists():
            print(f"tail of the producer's idempotence log {log}:\n" + "\n".join(log.read_text().splitlines()[-80:]))
    assert verdict.ok, f"checker: {verdict}"
    fatal = [e for e in run["errors"] if e["kind"] != "retriable"]
    assert not fatal, f"non-retriable client errors: {fatal[:5]}"
    return run


def finish_isr_watch(p: subprocess.Popen, timeout: float = 30) -> dict:
    stdout, stderr = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"ISR watch failed ({p.returncode}):\n{stdout}\n{stderr[-3000:]}"
    return json.loads(p.out_path.read_text())  # type: ignore[attr-defined]
