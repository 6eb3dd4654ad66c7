"""The Kubernetes test harness (tests/e2e/k8s) works: a real control plane, and the node
agent runs pods as real processes with kubelet's mounts, env, probes, status, restarts,
graceful deletion, volumes and cluster DNS. No operator involved."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.k8s, pytest.mark.rill_only]

BROKERS = """
apiVersion: v1
kind: Service
metadata: {name: web-brokers}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: web}
  ports: [{name: kafka, port: 9092}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data:
  note.txt: "mounted from a ConfigMap\\n"
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web-brokers
  replicas: 2
  podManagementPolicy: Parallel
  updateStrategy: {type: OnDelete}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 20
      containers:
      - name: broker
        image: rill/broker:dev
        command: ["rill-broker"]
        args: ["dev", "--listen", "$(POD_IP):9092", "--data-dir", "/var/lib/rill/data",
               "--metrics-listen", "$(POD_IP):9644"]
        env:
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: POD_INDEX, valueFrom: {fieldRef: {fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}}}
        ports: [{name: kafka, containerPort: 9092}, {name: metrics, containerPort: 9644}]
        readinessProbe: {tcpSocket: {port: kafka}, periodSeconds: 1, failureThreshold: 1}
        volumeMounts:
        - {name: data, mountPath: /var/lib/rill}
        - {name: config, mountPath: /etc/rill}
      volumes:
      - {name: config, configMap: {name: web-config}}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def pod_ready(kube, ns: str, name: str, uid_not: str | None = None) -> dict | None:
    pod = kube.get(f"pod/{name}", ns)
    if not pod or (uid_not and pod["metadata"]["uid"] == uid_not):
        return None
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod if conds.get("Ready") == "True" else None


def kcat(kube, *args: str, stdin: str = "") -> str:
    assert shutil.which("kcat"), "kcat missing: run tests/tools/install.sh"
    r = kube.run_in_cluster(["kcat", *args], input=stdin, timeout=40)
    assert r.returncode == 0, f"kcat {args} exited {r.returncode}: {r.stderr}"
    return r.stdout


def test_node_is_registered_ready_with_capacity_and_lease(kube):
    node = kube.get("node/rill-node-1")
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True"
    assert node["status"]["allocatable"]["cpu"] == "64"
    assert node["status"]["allocatable"]["memory"] == "256Gi"
    assert node["status"]["allocatable"]["pods"] == "110"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "rill-node-1"
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-a"
    assert not node["spec"].get("taints"), node["spec"].get("taints")
    lease = kube.get("lease/rill-node-1", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "rill-node-1"
    sc = kube.get("storageclass/rill-local")
    assert sc["provisioner"] == "rill.dev/local" and sc["allowVolumeExpansion"] is True
    assert kube.timings["control_plane_s"] < 60
    assert kube.helm("list", "-A").returncode == 0


def test_statefulset_brokers_run_with_stable_ips_volumes_and_dns(kube, k8s_namespace):
    ns = k8s_namespace
    kube.apply(BROKERS, namespace=ns)
    t0 = time.monotonic()
    pods = {n: kube.wait_for(lambda n=n: pod_ready(kube, ns, n), timeout=60, what=f"{n} Ready")
            for n in ("web-0", "web-1")}
    ready_s = time.monotonic() - t0
    print(f"2 broker pods Ready {ready_s:.1f}s after apply")
    ips = {n: p["status"]["podIP"] for n, p in pods.items()}
    for n, ip in ips.items():
        # 127.0.0.x unless another harness session on the machine holds that prefix
        assert ip.startswith(kube.pod_ip_prefix + ".") and int(ip.rsplit(".", 1)[1]) >= 10, ip
        assert re.fullmatch(r"127\.0\.\d+\.\d+", ip), ip
        assert pods[n]["status"]["hostIP"] == "127.0.0.1"
        assert pods[n]["status"]["phase"] == "Running"
        cs = pods[n]["status"]["containerStatuses"][0]
        assert cs["ready"] is True and cs["started"] is True and "running" in cs["state"]
    assert ips["web-0"] != ips["web-1"]

    # PVCs from the volumeClaimTemplate bound to PVs of the agent's provisioner
    pvcs = {n: kube.get(f"pvc/data-{n}", ns) for n in ("web-0", "web-1")}
    for n, pvc in pvcs.items():
        assert pvc["status"]["phase"] == "Bound", pvc["status"]
        assert pvc["spec"]["storageClassName"] == "rill-local"
        assert pvc["status"]["capacity"]["storage"] == "1Gi"

    # pod DNS names (headless Service) and the Service name -> pod IPs in the hosts file
    hosts = kube.hosts()
    assert hosts[f"web-0.web-brokers.{ns}.svc.cluster.local"] == [ips["web-0"]]
    assert hosts[f"web-1.web-brokers.{ns}.svc"] == [ips["web-1"]]
    kube.wait_for(lambda: sorted(kube.hosts().get(f"web-brokers.{ns}.svc", [])) == sorted(ips.values()),
                  timeout=20, what="headless service name -> both pods")

    # what the broker process sees: env, expanded args, its mount namespace
    for n, idx in (("web-0", "0"), ("web-1", "1")):
        pid = int(pods[n]["status"]["containerStatuses"][0]["containerID"].removeprefix("rill://"))
        proc = Path(f"/proc/{pid}")
        env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode().split("\0") if "=" in kv)
        assert env["POD_INDEX"] == idx and env["POD_IP"] == ips[n]
        assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
        assert env["KUBERNETES_SERVICE_PORT"] == kube.server.rsplit(":", 1)[1]
        argv = (proc / "cmdline").read_bytes().decode().split("\0")
        assert argv[:4] == ["rill-broker", "dev", "--listen", f"{ips[n]}:9092"], argv
        # /proc/PID/root shows the process's own mounts: the ConfigMap and its own PVC
        assert (proc / "root/etc/rill/note.txt").read_text() == "mounted from a ConfigMap\n"
        assert (proc / "root/var/lib/rill/data").is_dir()
        assert f"{n}.web-brokers.{ns}.svc.cluster.local" in (proc / "root/etc/hosts").read_text()
    assert not Path("/etc/rill/note.txt").exists(), "a pod's mount leaked to the host"

    host = f"web-0.web-brokers.{ns}.svc.cluster.local"
    kcat(kube, "-P", "-b", f"{host}:9092", "-t", "survivor", "-p", "0", stdin="kept-across-restart\n")
    out = kcat(kube, "-C", "-b", f"{host}:9092", "-t", "survivor", "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.splitlines() == ["kept-across-restart"]

    # delete web-0: SIGTERM, clean exit, recreated with the same IP and the same volume
    old_uid = pods["web-0"]["metadata"]["uid"]
    t1 = time.monotonic()
    kube.kubectl("delete", "pod", "web-0", "-n", ns, "--wait=false")
    new = kube.wait_for(lambda: pod_ready(kube, ns, "web-0", uid_not=old_uid), timeout=60,
                        what="web-0 recreated and Ready")
    print(f"web-0 back and Ready {time.monotonic() - t1:.1f}s after delete")
    assert new["status"]["podIP"] == ips["web-0"]
    assert kube.get("pvc/data-web-0", ns)["spec"]["volumeName"] == pvcs["web-0"]["spec"]["volumeName"]
    log = kube.pod_log(ns, "web-0", "broker")
    first_run = log.split(f"pod uid {old_uid} container broker SIGTERM", 1)
    assert len(first_run) == 2, log[-3000:]
    assert "SIGTERM: shutting down" in first_run[1], log[-3000:]
    assert f"pod uid {old_uid} container broker exited with code 0" in first_run[1], log[-3000:]
    assert "SIGKILL" not in log

    out = kcat(kube, "-C", "-b", f"{host}:9092", "-t", "survivor", "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.splitlines() == ["kept-across-restart"], "the record did not survive the pod's recreation"


def test_pod_env_downward_api_configmap_and_service_account_mounts(kube, k8s_namespace):
    ns = k8s_namespace
    script = ("echo name=$(POD_NAME) ns=$POD_NS sa=$SA label=$APP cpu=$CPU; "
              "echo 'literal=$$(NOT_EXPANDED) unknown=$(NO_SUCH_VAR)'; "
              "cat /etc/rill-test/app/note.txt; cat /etc/rill-test/app-items/renamed; "
              "echo sa-ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); "
              "grep -c 'BEGIN CERTIFICATE' /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; "
              "cut -d. -f1 /var/run/secrets/kubernetes.io/serviceaccount/token | head -c 3; echo; "
              "grep -c svc.cluster.local /etc/hosts >/dev/null && echo hosts=cluster; "
              "echo scratch > /etc/rill-test/scratch/x && echo emptydir=ok; "
              # the token authenticates against the apiserver, over TLS checked with ca.crt
              "curl -sS --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt "
              "-H \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" "
              "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$POD_NS/pods "
              "| grep -o 'system:serviceaccount:[a-z0-9:-]*' | head -1")
    kube.apply(f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{note.txt: "the note\\n", other: "the other key\\n"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: env-pod, labels: {{app: envtest}}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {json.dumps(script)}]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: SA, valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    - {{name: CPU, valueFrom: {{resourceFieldRef: {{resource: limits.cpu}}}}}}
    resources: {{limits: {{cpu: "2"}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/rill-test/app}}
    - {{name: items, mountPath: /etc/rill-test/app-items}}
    - {{name: scratch, mountPath: /etc/rill-test/scratch}}
  volumes:
  - {{name: cfg, configMap: {{name: app-config}}}}
  - {{name: items, configMap: {{name: app-config, items: [{{key: other, path: renamed}}]}}}}
  - {{name: scratch, emptyDir: {{}}}}
""", namespace=ns)
    kube.wait_jsonpath("pod/env-pod", "{.status.phase}", "Succeeded", ns, timeout=30)
    out = [line for line in kube.pod_log(ns, "env-pod", "main").splitlines() if not line.startswith("===")]
    assert out == [
        f"name=env-pod ns={ns} sa=default label=envtest cpu=2",
        "literal=$(NOT_EXPANDED) unknown=$(NO_SUCH_VAR)",
        "the note",
        "the other key",
        f"sa-ns={ns}",
        "1",
        "eyJ",  # a JWT from the TokenRequest API
        "hosts=cluster",
        "emptydir=ok",
        f"system:serviceaccount:{ns}:default",  # authenticated (and forbidden: no RBAC)
    ]
    st = kube.get("pod/env-pod", ns)["status"]["containerStatuses"][0]
    assert st["state"]["terminated"]["exitCode"] == 0


def test_service_name_resolves_only_to_ready_endpoints(kube, k8s_namespace, tmp_path):
    ns = k8s_namespace
    pods = []
    for name in ("svc-a", "svc-b"):
        pods.append(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: svctest}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sleep", "600"]
    readinessProbe:
      exec: {{command: ["test", "-f", "{tmp_path / name}"]}}
      periodSeconds: 1
      failureThreshold: 1
""")
    kube.apply("---".join(pods) + """
---
apiVersion: v1
kind: Service
metadata: {name: ready-only}
spec:
  selector: {app: svctest}
  ports: [{port: 9092}]
""", namespace=ns)
    (tmp_path / "svc-a").touch()
    a = kube.wait_for(lambda: pod_ready(kube, ns, "svc-a"), timeout=30, what="svc-a Ready")
    b_ip = kube.wait_for(lambda: kube.jsonpath("pod/svc-b", "{.status.podIP}", ns), what="svc-b IP")
    a_ip = a["status"]["podIP"]
    name = f"ready-only.{ns}.svc.cluster.local"
    kube.wait_for(lambda: kube.hosts().get(name) == [a_ip], timeout=20, what=f"{name} -> svc-a only")
    assert kube.hosts()[f"ready-only.{ns}.svc"] == [a_ip]
    assert kube.hosts()[f"ready-only.{ns}"] == [a_ip]
    (tmp_path / "svc-b").touch()
    kube.wait_for(lambda: sorted(kube.hosts().get(name, [])) == sorted([a_ip, b_ip]), timeout=20,
                  what=f"{name} -> both pods")
    (tmp_path / "svc-a").unlink()
    kube.wait_for(lambda: kube.hosts().get(name) == [b_ip], timeout=20, what=f"{name} -> svc-b only")
    r = kube.run_in_cluster(["getent", "hosts", name], timeout=10)
    assert r.stdout.split()[0] == b_ip, r.stdout


def test_restart_backoff_probes_unknown_image_and_pvc_resize(kube, k8s_namespace):
    ns = k8s_namespace
    kube.apply("""
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo crashing; exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-image}
spec:
  containers:
  - {name: main, image: nginx:1.27}
---
apiVersion: v1
kind: Pod
metadata: {name: http-ready}
spec:
  automountServiceAccountToken: false
  containers:
  - name: main
    image: busybox
    command: ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
    livenessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1, initialDelaySeconds: 10, failureThreshold: 5}
---
apiVersion: v1
kind: Pod
metadata: {name: http-dead}
spec:
  containers:
  - name: main
    image: busybox
    command: ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    livenessProbe: {httpGet: {path: /no-such-page, port: 8080}, periodSeconds: 1, failureThreshold: 2}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: grow}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
""", namespace=ns)

    def restarted_twice():
        st = kube.get("pod/crasher", ns)["status"]["containerStatuses"][0]
        return st if st["restartCount"] >= 2 else None

    st = kube.wait_for(restarted_twice, timeout=30, what="crasher restarted twice")
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert kube.pod_log(ns, "crasher", "main").count("crashing") >= 3

    ready = kube.wait_for(lambda: pod_ready(kube, ns, "http-ready"), timeout=30, what="http-ready Ready (httpGet)")
    cs = ready["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 0
    root = Path(f"/proc/{cs['containerID'].removeprefix('rill://')}/root")
    assert not (root / "var/run/secrets/kubernetes.io/serviceaccount/token").exists()  # automount off
    kube.wait_for(lambda: kube.jsonpath("pod/http-dead", "{.status.containerStatuses[0].restartCount}", ns) == "1",
                  timeout=30, what="http-dead restarted by its failing liveness probe")
    assert "liveness probe failed" in kube.pod_log(ns, "http-dead", "main")
    assert kube.jsonpath("pod/http-ready", "{.status.containerStatuses[0].restartCount}", ns) == "0"

    kube.wait_jsonpath("pod/no-image", "{.status.containerStatuses[0].state.waiting.reason}", "ErrImagePull", ns,
                       timeout=20)
    assert kube.jsonpath("pod/no-image", "{.status.phase}", ns) == "Pending"

    kube.wait_jsonpath("pvc/grow", "{.status.phase}", "Bound", ns, timeout=20)
    assert kube.jsonpath("pvc/grow", "{.spec.storageClassName}", ns) == "rill-local"  # the default class
    kube.kubectl("patch", "pvc", "grow", "-n", ns, "-p", '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}')
    kube.wait_jsonpath("pvc/grow", "{.status.capacity.storage}", "2Gi", ns, timeout=20)
    pv = kube.jsonpath("pvc/grow", "{.spec.volumeName}", ns)
    assert kube.jsonpath(f"pv/{pv}", "{.spec.capacity.storage}") == "2Gi"


def test_agent_restart_stops_and_resumes_its_pods(kube, k8s_namespace):
    ns = k8s_namespace
    kube.apply("""
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  containers:
  - {name: main, image: busybox, command: ["sleep", "600"]}
""", namespace=ns)
    pod = kube.wait_for(lambda: pod_ready(kube, ns, "sleeper"), timeout=30, what="sleeper Ready")
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("rill://"))
    assert Path(f"/proc/{pid}").exists()
    assert kube.stop_agent() == 0, "the agent did not exit 0 on SIGTERM"
    assert not Path(f"/proc/{pid}").exists(), "the agent left its pod's process running"
    kube.start_agent()

    def restarted():
        p = pod_ready(kube, ns, "sleeper")
        return p if p and p["status"]["containerStatuses"][0]["containerID"] != f"rill://{pid}" else None

    again = kube.wait_for(restarted, timeout=30, what="sleeper running again under the new agent")
    assert again["status"]["podIP"] == pod["status"]["podIP"]
    assert again["metadata"]["uid"] == pod["metadata"]["uid"]
