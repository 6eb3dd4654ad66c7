"""`Kube`: a control plane (controlplane.py) plus one node agent process (node_agent.py),
and the helpers operator tests use against them. See README.md in this folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .controlplane import ControlPlane, stop_pid, tail
from .kubeapi import KubeApi

E2E_DIR = Path(__file__).resolve().parents[1]
REPO = E2E_DIR.parents[1]
NODE_NAME = "rill-node-1"
AGENT_START_TIMEOUT_S = 30.0

STORAGE_CLASS_YAML = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: rill-local
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rill.dev/local
allowVolumeExpansion: true
volumeBindingMode: Immediate
reclaimPolicy: Delete
"""


def default_image_bin() -> Path:
    """Where `rill/broker:*` and `rill/operator:*` images come from: $RILL_IMAGE_BIN, else
    the directory of $RILL_BROKER_BIN, else $CARGO_TARGET_DIR/debug, else target/debug."""
    if os.environ.get("RILL_IMAGE_BIN"):
        return Path(os.environ["RILL_IMAGE_BIN"])
    if os.environ.get("RILL_BROKER_BIN"):
        return Path(os.environ["RILL_BROKER_BIN"]).parent
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug"
    return REPO / "target" / "debug"


def take_pod_network(timeout: float = 5.0) -> tuple[str, object]:
    """A pod IP prefix no other harness on this machine uses: 127.0.0 when free, else
    127.0.1, ... (an flock per prefix, held until the returned file is closed), so two
    test sessions side by side do not both put a broker on 127.0.0.10:9092."""
    for slot in range(0, 64):
        f = open(Path(tempfile.gettempdir()) / f"rill-k8s-podnet-{slot}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f"127.0.{slot}", f
        except OSError:
            f.close()
    raise RuntimeError("all 64 pod networks 127.0.0-63.x are held by other test sessions")


def unavailable_reason() -> str | None:
    """Why the harness cannot run here (it then skips), or None."""
    if os.geteuid() != 0:
        return "the k8s harness runs pod processes in mount namespaces: needs root"
    if shutil.which("unshare") is None:
        return "the k8s harness needs unshare(1) (util-linux)"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare --mount does not work here: {r.stderr.strip()}"
    return None


class WaitTimeout(AssertionError):
    pass


class Kube:
    def __init__(self, workdir: Path, image_bin: Path | None = None):
        self.workdir = Path(workdir)
        self.image_bin = Path(image_bin or default_image_bin())
        self.cp = ControlPlane(self.workdir / "controlplane")
        self.agent_dir = self.workdir / "node-agent"
        self.hosts_file = self.workdir / "hosts"
        self.agent_log = self.workdir / "node-agent.log"
        self.agent: subprocess.Popen | None = None
        self.agent_rc: int | None = None
        self.pod_ip_prefix = ""
        self._podnet_lock = None
        self.api: KubeApi | None = None
        self.timings: dict[str, float] = {}

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    @property
    def bin_dir(self) -> Path:
        return self.cp.bin_dir

    @property
    def server(self) -> str:
        return self.cp.server

    def start(self) -> "Kube":
        t0 = time.monotonic()
        self.pod_ip_prefix, self._podnet_lock = take_pod_network()
        self.cp.start()
        self.timings["control_plane_s"] = self.cp.start_seconds
        self.api = KubeApi.from_kubeconfig(self.kubeconfig)
        self.apply(STORAGE_CLASS_YAML)
        self.start_agent()
        # the node lifecycle controller may taint a new node not-ready until it sees the
        # agent's Ready condition; tests start once the node is schedulable
        self.wait_for(lambda: not (self.api.get(f"/api/v1/nodes/{NODE_NAME}")["spec"].get("taints")),
                      timeout=30, what=f"node {NODE_NAME} without taints")
        self.timings["agent_s"] = time.monotonic() - t0 - self.cp.start_seconds
        # pods in "default" need its ServiceAccount, made by the controller-manager
        self.wait_for(lambda: self.api.get_or_none("/api/v1/namespaces/default/serviceaccounts/default"),
                      timeout=30, what="serviceaccount default/default")
        self.timings["total_s"] = time.monotonic() - t0
        return self

    def start_agent(self) -> None:
        self.agent_dir.mkdir(parents=True, exist_ok=True)
        ready = self.agent_dir / "ready"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(E2E_DIR), PYTHONUNBUFFERED="1")
        with open(self.agent_log, "ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "k8s.node_agent", "--kubeconfig", str(self.kubeconfig),
                 "--state-dir", str(self.agent_dir), "--hosts-file", str(self.hosts_file),
                 "--image-bin", str(self.image_bin), "--node-name", NODE_NAME, "--ready-file", str(ready),
                 "--pod-ip-prefix", self.pod_ip_prefix],
                cwd=E2E_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        while not ready.exists():
            if self.agent.poll() is not None:
                raise RuntimeError(f"node agent exited with {self.agent.returncode}:\n{tail(self.agent_log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node agent not ready in {AGENT_START_TIMEOUT_S}s:\n{tail(self.agent_log)}")
            time.sleep(0.1)

    def stop_agent(self) -> int | None:
        """SIGTERM the agent (it stops its pods' processes), SIGKILL after 20 s."""
        if self.agent is None:
            return None
        self.agent_rc = stop_pid(self.agent, timeout=20)
        self.agent = None
        return self.agent_rc

    def stop(self) -> None:
        try:
            self.stop_agent()
        finally:
            self.cp.stop()
            if self._podnet_lock is not None:
                self._podnet_lock.close()
                self._podnet_lock = None

    def check_alive(self) -> None:
        self.cp.check_alive()
        if self.agent is None or self.agent.poll() is not None:
            raise RuntimeError(f"node agent is not running:\n{tail(self.agent_log)}")

    # ---- helpers for tests ----------------------------------------------------------

    def _env(self) -> dict:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                    PATH=f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                           input=input, capture_output=True, text=True, timeout=timeout, env=self._env())
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bin_dir / "helm"), "--kubeconfig", str(self.kubeconfig), *args],
                           capture_output=True, text=True, timeout=timeout, env=self._env())
        if check and r.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def apply(self, yaml_text: str, namespace: str | None = None, server_side: bool = False) -> str:
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        if server_side:
            args.append("--server-side")
        return self.kubectl(*args, input=yaml_text).stdout

    def get(self, resource: str, namespace: str | None = None) -> dict | None:
        """`kubectl get RESOURCE -o json` as a dict (None if it does not exist)."""
        args = ["get", resource, "-o", "json"] + (["-n", namespace] if namespace else [])
        r = self.kubectl(*args, check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr:
                return None
            raise AssertionError(f"kubectl get {resource}: {r.stderr}")
        return json.loads(r.stdout)

    def jsonpath(self, resource: str, path: str, namespace: str | None = None) -> str | None:
        args = ["get", resource, "-o", f"jsonpath={path}"] + (["-n", namespace] if namespace else [])
        r = self.kubectl(*args, check=False)
        return r.stdout if r.returncode == 0 else None

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.25,
                 what: str = "condition") -> Any:
        """Calls predicate until it returns something truthy (returned); an exception in it
        counts as "not yet". Fails with the cluster's state after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            if time.monotonic() > deadline:
                raise WaitTimeout(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n"
                                  + self.diagnostics())
            self.check_alive()
            time.sleep(interval)

    def wait_jsonpath(self, resource: str, path: str, expected: str, namespace: str | None = None,
                      timeout: float = 60) -> str:
        """Waits until `kubectl get RESOURCE -o jsonpath=PATH` prints `expected`."""
        return self.wait_for(lambda: self.jsonpath(resource, path, namespace) == expected and expected,
                             timeout=timeout, what=f"{resource} {path} == {expected!r}")

    def create_namespace(self, name: str) -> str:
        self.kubectl("create", "namespace", name)
        self.wait_for(lambda: self.api.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                      timeout=30, what=f"serviceaccount {name}/default")
        return name

    def run_in_cluster(self, argv: list[str], timeout: float = 30, input: str | bytes | None = None,
                       check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
        """Runs a client command as a pod would see the cluster: /etc/hosts is the agent's
        cluster hosts file (pod and Service DNS names), in a private mount namespace."""
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
                            str(self.hosts_file), *argv],
                           input=input, capture_output=True, timeout=timeout, env=env,
                           text=not isinstance(input, bytes))
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def hosts(self) -> dict[str, list[str]]:
        """The cluster hosts file as name -> IPs."""
        out: dict[str, list[str]] = {}
        for line in self.hosts_file.read_text().splitlines():
            parts = line.split()
            for name in parts[1:]:
                out.setdefault(name, []).append(parts[0])
        return out

    def pod_log_path(self, namespace: str, pod: str, container: str | None = None) -> Path:
        d = self.agent_dir / "logs" / namespace / pod
        if container is None:
            logs = sorted(d.glob("*.log"))
            if len(logs) != 1:
                raise AssertionError(f"pod {namespace}/{pod}: name the container, logs: {[p.name for p in logs]}")
            return logs[0]
        return d / f"{container}.log"

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """Everything the pod's container wrote, over all its incarnations (same name), with
        `=== rill-node-agent: ...` lines marking each start, signal and exit."""
        p = self.pod_log_path(namespace, pod, container)
        return p.read_text(errors="replace") if p.exists() else ""

    def diagnostics(self) -> str:
        parts = []
        for args in (["get", "nodes,pods,pvc,pv,svc,endpointslices", "-A", "-o", "wide"],
                     ["get", "events", "-A", "--sort-by=.lastTimestamp"]):
            try:
                r = self.kubectl(*args, check=False, timeout=20)
                parts.append(f"$ kubectl {' '.join(args)}\n{r.stdout}{r.stderr}")
            except Exception as e:  # noqa: BLE001
                parts.append(f"kubectl {args}: {e}")
        parts.append(f"--- tail of {self.agent_log}:\n{tail(self.agent_log, 40)}")
        return "\n".join(parts)
