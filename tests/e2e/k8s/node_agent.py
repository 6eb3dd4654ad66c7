"""The node agent: plays kubelet (plus kube-proxy/CoreDNS by a hosts file, plus a tiny
volume provisioner) for one Node of the test control plane. Runs as its own process:

    python -m k8s.node_agent --kubeconfig admin.kubeconfig --state-dir DIR \
        --hosts-file DIR/hosts --image-bin target/debug [--node-name rill-node-1]

What it does (see README.md in this folder):
  * registers the Node, renews its Lease and posts NodeReady, so nothing taints or evicts it;
  * runs every container of the pods bound to it as a real process inside
    `unshare --mount --propagation private`, with kubelet's mounts as bind mounts
    (configMap, secret, projected/service-account token, downwardAPI, emptyDir, PVC,
    hostPath, /etc/hosts) and kubelet's env ($(VAR) expansion, downward API);
  * pod IPs are 127.0.0.x (x >= 10; --pod-ip-prefix), stable per namespace/name across recreation;
  * readiness probes (tcpSocket, httpGet, exec), pod status, restartPolicy with backoff;
  * deletion: SIGTERM the process group, SIGKILL after the grace period, final delete
    with gracePeriodSeconds=0 and a UID precondition;
  * provisions PVs (hostPath, one dir per namespace/claim) for PVCs of class rill-local,
    grows them on a resize request, deletes Released ones;
  * writes the cluster hosts file IN PLACE (bind mounts pin its inode).
Container output goes to <state-dir>/logs/<ns>/<pod>/<container>.log (kept after the pod
is gone; every start and exit is marked by a `=== rill-node-agent:` line).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kubeapi import ApiError, KubeApi  # type: ignore
else:
    from .kubeapi import ApiError, KubeApi

log = logging.getLogger("node-agent")

STORAGE_CLASS = "rill-local"
PROVISIONER = "rill.dev/local"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
LEASE_RENEW_S = 10.0
STATUS_REPORT_S = 20.0
# image repository (tag/digest stripped) -> default entrypoint; anything else is ErrImagePull
IMAGES = {"rill/broker": ["rill-broker"], "rill/operator": ["rill-operator"], "busybox": ["sh"]}
CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}


def now_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def parse_quantity(q) -> float:
    m = re.fullmatch(r"([0-9.eE+-]+?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?", str(q).strip())
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2) or ""]


def expand(s: str, env: dict) -> str:
    """kubelet's $(VAR) expansion: known names are replaced, $$ is a literal $, the rest
    stays as written."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "$" and i + 1 < len(s):
            if s[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if s[i + 1] == "(":
                j = s.find(")", i + 2)
                if j != -1:
                    name = s[i + 2:j]
                    out.append(env[name] if name in env else s[i:j + 1])
                    i = j + 1
                    continue
        out.append(s[i])
        i += 1
    return "".join(out)


def image_repo(image: str) -> str:
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image


def image_entrypoint(image: str) -> list[str] | None:
    repo = image_repo(image)
    for known, entry in IMAGES.items():
        if repo == known or repo.endswith("/" + known):
            return entry
    return None


class NotReadyYet(Exception):
    """A pod cannot start yet (missing ConfigMap, unbound PVC, ...): retried."""


class Informer(threading.Thread):
    """List + watch one resource into a dict; re-lists whenever the watch breaks."""

    def __init__(self, api: KubeApi, path: str, wake: threading.Event, **params):
        super().__init__(daemon=True, name=f"informer {path}")
        self.api, self.path, self.wake, self.params = api, path, wake, params
        self.items: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()

    @staticmethod
    def key(o: dict) -> str:
        md = o["metadata"]
        return f"{md.get('namespace', '')}/{md['name']}"

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.items.values())

    def get(self, ns: str, name: str) -> dict | None:
        with self.lock:
            return self.items.get(f"{ns}/{name}")

    def run(self) -> None:
        while True:
            try:
                lst = self.api.get(self.path, **self.params)
                rv = lst["metadata"]["resourceVersion"]
                with self.lock:
                    self.items = {self.key(o): o for o in lst.get("items", [])}
                self.synced.set()
                self.wake.set()
                relist = False
                while not relist:
                    for ev in self.api.watch(self.path, rv, **self.params):
                        typ, obj = ev.get("type"), ev.get("object", {})
                        if typ == "ERROR":
                            log.info("watch %s: %s; re-listing", self.path, obj.get("message"))
                            relist = True
                            break
                        rv = obj["metadata"]["resourceVersion"]
                        if typ == "BOOKMARK":
                            continue
                        with self.lock:
                            if typ == "DELETED":
                                self.items.pop(self.key(obj), None)
                            else:
                                self.items[self.key(obj)] = obj
                        self.wake.set()
            except Exception as e:  # noqa: BLE001 - log, back off, re-list
                log.warning("informer %s: %s; re-listing in 1s", self.path, e)
                time.sleep(1)


class IpAllocator:
    """<prefix>.10, .11, ... (prefix 127.0.0 by default) one per namespace/pod name, kept
    in a file so a recreated pod (and a restarted agent) gets the same IP."""

    def __init__(self, path: Path, prefix: str):
        self.path = path
        self.prefix = prefix
        self.ips: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def ip_for(self, ns: str, name: str) -> str:
        key = f"{ns}/{name}"
        if key not in self.ips:
            used = set(self.ips.values())
            free = [ip for ip in (f"{self.prefix}.{n}" for n in range(10, 255)) if ip not in used]
            if not free:
                raise RuntimeError(f"no pod IP left in {self.prefix}.10-254")
            self.ips[key] = free[0]
            self.path.write_text(json.dumps(self.ips, indent=1))
        return self.ips[key]


class ProbeState:
    def __init__(self, spec: dict | None, max_period: float):
        self.spec = spec or {}
        self.ok = not spec  # no probe: ready when running
        self.successes = self.failures = 0
        self.next_at = 0.0
        self.max_period = max_period

    def reset(self, started: float) -> None:
        self.ok = not self.spec
        self.successes = self.failures = 0
        self.next_at = started + self.spec.get("initialDelaySeconds", 0)

    def period(self) -> float:
        return min(float(self.spec.get("periodSeconds", 10)), self.max_period)


class Container:
    def __init__(self, spec: dict, init: bool, max_probe_period: float):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.started_at: str | None = None
        self.started_mono = 0.0
        self.restart_count = 0
        self.backoff_until = 0.0
        self.backoff_s = 0.0
        self.waiting: tuple[str, str] | None = ("ContainerCreating", "")
        self.terminated: dict | None = None  # current state when it exited and stays down
        self.last_terminated: dict | None = None
        self.completed = False  # init container done / container done for good
        self.readiness = ProbeState(None if init else spec.get("readinessProbe"), max_probe_period)
        self.liveness = ProbeState(None if init else spec.get("livenessProbe"), max_probe_period)

    def status(self) -> dict:
        running = self.proc is not None and self.proc.poll() is None
        if running:
            state = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None:
            state = {"terminated": self.terminated}
        else:
            reason, msg = self.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": msg} if msg else {})}}
        st = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "rill-node-agent://" + image_repo(self.spec.get("image", "")),
            "ready": bool(running and self.readiness.ok and not self.init) or (self.init and self.completed),
            "started": running,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if running:
            st["containerID"] = f"rill://{self.proc.pid}"
        return st


class PodRunner:
    def __init__(self, agent: "Agent", pod: dict):
        self.agent = agent
        self.pod = pod
        md = pod["metadata"]
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.dir = agent.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.log_dir = agent.state_dir / "logs" / self.ns / self.name
        self.ip = agent.ips.ip_for(self.ns, self.name)
        mp = agent.max_probe_period
        self.init_containers = [Container(c, True, mp) for c in pod["spec"].get("initContainers", [])]
        self.containers = [Container(c, False, mp) for c in pod["spec"]["containers"]]
        self.volumes: dict[str, Path] | None = None
        self.prepare_error = ""
        self.start_time = now_time()
        self.conditions: dict[str, tuple[str, str]] = {}
        self.last_status: dict | None = None
        self.term_deadline: float | None = None
        self.finished = False  # the final delete is done (or the pod is gone)
        self.phase = "Pending"

    # ---- lifecycle ------------------------------------------------------------------

    def all_containers(self) -> list[Container]:
        return self.init_containers + self.containers

    def running(self) -> list[Container]:
        return [c for c in self.all_containers() if c.proc is not None and c.proc.poll() is None]

    def step(self) -> None:
        if self.pod["metadata"].get("deletionTimestamp"):
            self.terminate()
            return
        if self.phase in ("Succeeded", "Failed"):
            return
        if self.volumes is None:
            try:
                self.volumes = self.prepare_volumes()
                self.prepare_error = ""
            except NotReadyYet as e:
                if str(e) != self.prepare_error:
                    log.info("pod %s/%s waits: %s", self.ns, self.name, e)
                self.prepare_error = str(e)
                self.write_status()
                return
        pending_init = [c for c in self.init_containers if not c.completed]
        if pending_init:
            self.drive(pending_init[0])
        else:
            for c in self.containers:
                self.drive(c)
        self.write_status()

    def drive(self, c: Container) -> None:
        restart_policy = self.pod["spec"].get("restartPolicy", "Always")
        if c.proc is not None and c.proc.poll() is not None:
            code = c.proc.returncode
            c.proc = None
            reason = "Completed" if code == 0 else "Error"
            exit_code = code if code >= 0 else 128 - code
            c.last_terminated = {"exitCode": exit_code, "reason": reason, "startedAt": c.started_at,
                                 "finishedAt": now_time()}
            if code < 0:
                c.last_terminated["signal"] = -code
            self.append_log(c, f"exited with code {exit_code}")
            restart = restart_policy == "Always" and not c.init or (restart_policy != "Never" and code != 0)
            if not restart:
                c.terminated, c.last_terminated = c.last_terminated, None
                c.completed = True
                if code != 0 and restart_policy == "Never":
                    self.phase = "Failed"
                return
            c.backoff_s = min(max(c.backoff_s * 2, 1.0), self.agent.max_backoff)
            c.backoff_until = time.monotonic() + c.backoff_s
            c.waiting = ("CrashLoopBackOff", f"back-off {c.backoff_s:g}s restarting failed container={c.name} "
                                             f"pod={self.name}_{self.ns}({self.uid})")
            c.restart_count += 1
        if c.proc is None and not c.completed:
            if time.monotonic() < c.backoff_until:
                return
            try:
                self.start_container(c)
            except Exception as e:  # noqa: BLE001 - reported in the container status, retried
                log.exception("pod %s/%s container %s: start failed", self.ns, self.name, c.name)
                c.waiting = ("CreateContainerError", str(e))
                c.backoff_until = time.monotonic() + 2
        if c.proc is not None and c.proc.poll() is None and not c.init:
            self.probe(c)
            if time.monotonic() - c.started_mono > 10:
                c.backoff_s = 0.0  # ran long enough: the next crash starts the backoff afresh

    def start_container(self, c: Container) -> None:
        entry = image_entrypoint(c.spec.get("image", ""))
        if entry is None:
            c.waiting = ("ErrImagePull", f"rill-node-agent knows only the images {sorted(IMAGES)}, "
                                         f"not {c.spec.get('image')!r}")
            return
        try:
            env = self.container_env(c.spec)
        except NotReadyYet as e:
            c.waiting = ("CreateContainerConfigError", str(e))
            return
        argv = [expand(a, env) for a in (c.spec.get("command") or entry)] + \
               [expand(a, env) for a in c.spec.get("args", [])]
        if shutil.which(argv[0], path=env["PATH"]) is None:
            c.waiting = ("RunContainerError", f"exec: {argv[0]!r}: executable file not found in $PATH")
            return
        mounts = self.container_mounts(c.spec)
        lines = ["set -e"]
        for src, dst, ro in mounts:
            if src.is_dir():
                Path(dst).mkdir(parents=True, exist_ok=True)
            else:
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
                if not Path(dst).exists():
                    Path(dst).touch()
            lines.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        lines.append('exec "$@"')
        cwd = c.spec.get("workingDir")
        if cwd:
            Path(cwd).mkdir(parents=True, exist_ok=True)
        else:
            cwd = str(self.dir / "cwd" / c.name)
            Path(cwd).mkdir(parents=True, exist_ok=True)
        self.append_log(c, f"starting (restart {c.restart_count}) ip {self.ip}: {shlex.join(argv)}")
        with open(self.log_path(c), "ab") as out:
            c.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines),
                 "rill-container", *argv],
                env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        log.info("pod %s/%s container %s started, pid %d", self.ns, self.name, c.name, c.proc.pid)
        c.started_at = now_time()
        c.started_mono = time.monotonic()
        c.waiting = None
        c.terminated = None
        c.readiness.reset(c.started_mono)
        c.liveness.reset(c.started_mono)

    def log_path(self, c: Container) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{c.name}.log"

    def append_log(self, c: Container, msg: str) -> None:
        with open(self.log_path(c), "a") as f:
            f.write(f"=== rill-node-agent: {now_micro()} pod uid {self.uid} container {c.name} {msg}\n")

    def probe(self, c: Container) -> None:
        t = time.monotonic()
        for kind, ps in (("readiness", c.readiness), ("liveness", c.liveness)):
            if not ps.spec or t < ps.next_at:
                continue
            ps.next_at = t + ps.period()
            ok = self.run_probe(ps.spec, c.spec)
            if ok:
                ps.successes, ps.failures = ps.successes + 1, 0
                if ps.successes >= ps.spec.get("successThreshold", 1):
                    ps.ok = True
            else:
                ps.failures, ps.successes = ps.failures + 1, 0
                if ps.failures >= ps.spec.get("failureThreshold", 3):
                    ps.ok = False
                    if kind == "liveness" and c.proc is not None:
                        self.append_log(c, "liveness probe failed: killing")
                        self.signal_container(c, signal.SIGTERM)

    def resolve_port(self, port, cspec: dict) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in cspec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown named port {port}")

    def run_probe(self, spec: dict, cspec: dict) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "tcpSocket" in spec:
                ts = spec["tcpSocket"]
                with socket.create_connection((ts.get("host") or self.ip, self.resolve_port(ts["port"], cspec)),
                                              timeout=timeout):
                    return True
            if "httpGet" in spec:
                hg = spec["httpGet"]
                conn = http.client.HTTPConnection(hg.get("host") or self.ip, self.resolve_port(hg["port"], cspec),
                                                  timeout=timeout)
                try:
                    headers = {h["name"]: h["value"] for h in hg.get("httpHeaders", [])}
                    conn.request("GET", hg.get("path", "/"), headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "exec" in spec:
                env = self.container_env(cspec)
                r = subprocess.run(spec["exec"]["command"], env=env, capture_output=True, timeout=timeout)
                return r.returncode == 0
            return True  # grpc: not supported, count as passing
        except Exception:  # noqa: BLE001 - any failure is a failed probe
            return False

    def signal_container(self, c: Container, sig: int) -> None:
        if c.proc is not None and c.proc.poll() is None:
            try:
                os.killpg(c.proc.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """Graceful stop for a pod being deleted, then the final delete."""
        if self.finished:
            return
        if self.term_deadline is None:
            md = self.pod["metadata"]
            grace = md.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            self.term_deadline = time.monotonic() + float(grace)
            for c in self.running():
                self.append_log(c, f"SIGTERM (pod deleted, grace {grace}s)")
                self.signal_container(c, signal.SIGTERM)
        if self.running() and time.monotonic() >= self.term_deadline:
            for c in self.running():
                self.append_log(c, "SIGKILL (grace period over)")
                self.signal_container(c, signal.SIGKILL)
        if self.running():
            return
        for c in self.all_containers():
            if c.proc is not None:
                code = c.proc.returncode
                self.append_log(c, f"exited with code {code if code >= 0 else 128 - code}")
                c.proc = None
        try:
            self.agent.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}", {
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}})
            log.info("pod %s/%s (%s) deleted", self.ns, self.name, self.uid)
        except ApiError as e:
            if e.status not in (404, 409):
                raise
        self.finished = True
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill_now(self, grace: float) -> None:
        """Pod vanished from the API or the agent stops: stop its processes (bounded)."""
        for c in self.running():
            self.signal_container(c, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        for c in self.running():
            self.signal_container(c, signal.SIGKILL)
        for c in self.all_containers():
            if c.proc is not None:
                try:
                    c.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                self.append_log(c, f"exited with code {c.proc.returncode} (agent stop)")
                c.proc = None

    # ---- env and volumes ------------------------------------------------------------

    def field(self, path: str) -> str:
        md, spec = self.pod["metadata"], self.pod["spec"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return md.get(m.group(1), {}).get(m.group(2), "")
        values = {
            "metadata.name": md["name"], "metadata.namespace": md["namespace"], "metadata.uid": md["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1",
            "status.podIP": self.ip, "status.podIPs": self.ip,
        }
        if path not in values:
            raise NotReadyYet(f"unsupported fieldRef {path}")
        return values[path]

    def resource_field(self, ref: dict, cspec: dict) -> str:
        cname = ref.get("containerName")
        if cname:
            cspec = next((c for c in self.pod["spec"]["containers"] if c["name"] == cname), cspec)
        kind, _, res = ref["resource"].partition(".")
        val = cspec.get("resources", {}).get(kind, {}).get(res)
        if val is None:
            val = CAPACITY.get(res, "0") if kind == "limits" else "0"
        divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API defaults it to "0"
        return str(int(math.ceil(parse_quantity(val) / divisor)))

    def object_key(self, kind: str, ref: dict) -> str | None:
        """The value of ConfigMap/Secret key ref, None if optional and missing."""
        obj = self.agent.get_namespaced(kind, self.ns, ref["name"])
        data = (obj or {}).get("data", {})
        if obj is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise NotReadyYet(f"{kind} {self.ns}/{ref['name']} key {ref['key']} not found")
        v = data[ref["key"]]
        return base64.b64decode(v).decode(errors="replace") if kind == "secrets" else v

    def container_env(self, cspec: dict) -> dict:
        port = str(self.agent.apiserver_port)
        env = {
            "PATH": f"{self.agent.image_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }
        for src in cspec.get("envFrom", []):
            kind, ref = ("configmaps", src["configMapRef"]) if "configMapRef" in src else ("secrets", src["secretRef"])
            obj = self.agent.get_namespaced(kind, self.ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise NotReadyYet(f"{kind} {self.ns}/{ref['name']} not found")
            for k, v in obj.get("data", {}).items():
                env[src.get("prefix", "") + k] = base64.b64decode(v).decode() if kind == "secrets" else v
        for e in cspec.get("env", []):
            if "valueFrom" not in e:
                env[e["name"]] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                v = self.field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                v = self.resource_field(vf["resourceFieldRef"], cspec)
            elif "configMapKeyRef" in vf:
                v = self.object_key("configmaps", vf["configMapKeyRef"])
            elif "secretKeyRef" in vf:
                v = self.object_key("secrets", vf["secretKeyRef"])
            else:
                raise NotReadyYet(f"unsupported env source {vf}")
            if v is not None:
                env[e["name"]] = v
        return env

    def write_files(self, d: Path, data: dict, items: list | None, binary: bool) -> None:
        d.mkdir(parents=True, exist_ok=True)
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, rel in pairs:
            if key not in data:
                continue
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(base64.b64decode(data[key]) if binary else data[key].encode())

    def object_files(self, kind: str, src: dict, d: Path, name_key: str) -> None:
        name = src[name_key]
        obj = self.agent.get_namespaced(kind, self.ns, name)
        if obj is None:
            if src.get("optional"):
                d.mkdir(parents=True, exist_ok=True)
                return
            raise NotReadyYet(f"{kind} {self.ns}/{name} not found")
        self.write_files(d, obj.get("data", {}), src.get("items"), kind == "secrets")
        if kind == "configmaps":
            self.write_files(d, obj.get("binaryData", {}), src.get("items"), True)

    def token(self, sa: str, src: dict) -> str:
        spec = {"expirationSeconds": max(int(src.get("expirationSeconds", 3600)), 3600),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid}}
        if src.get("audience"):
            spec["audiences"] = [src["audience"]]
        try:
            r = self.agent.api.post(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        except ApiError as e:
            raise NotReadyYet(f"token for serviceaccount {self.ns}/{sa}: {e}") from None
        return r["status"]["token"]

    def prepare_volumes(self) -> dict[str, Path]:
        vols: dict[str, Path] = {}
        sa = self.pod["spec"].get("serviceAccountName", "default")
        for v in self.pod["spec"].get("volumes", []):
            d = self.dir / "volumes" / v["name"]
            if "configMap" in v:
                self.object_files("configmaps", v["configMap"], d, "name")
            elif "secret" in v:
                self.object_files("secrets", v["secret"], d, "secretName")
            elif "emptyDir" in v:
                d.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in v:
                d = Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") in ("DirectoryOrCreate", "", None):
                    d.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in v:
                d = self.agent.claim_dir(self.ns, v["persistentVolumeClaim"]["claimName"])
            elif "projected" in v:
                d.mkdir(parents=True, exist_ok=True)
                for src in v["projected"].get("sources", []):
                    if "serviceAccountToken" in src:
                        p = d / src["serviceAccountToken"]["path"]
                        p.write_text(self.token(sa, src["serviceAccountToken"]))
                    elif "configMap" in src:
                        self.object_files("configmaps", src["configMap"], d, "name")
                    elif "secret" in src:
                        self.object_files("secrets", src["secret"], d, "name")
                    elif "downwardAPI" in src:
                        self.downward_files(src["downwardAPI"], d)
            elif "downwardAPI" in v:
                self.downward_files(v["downwardAPI"], d)
            else:
                raise NotReadyYet(f"volume {v['name']}: unsupported source {sorted(v)}")
            vols[v["name"]] = d
        return vols

    def downward_files(self, src: dict, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        for item in src.get("items", []):
            p = d / item["path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            if "fieldRef" in item:
                fp = item["fieldRef"]["fieldPath"]
                if fp in ("metadata.labels", "metadata.annotations"):
                    kv = self.pod["metadata"].get(fp.split(".")[1], {})
                    p.write_text("\n".join(f'{k}="{v}"' for k, v in sorted(kv.items())))
                else:
                    p.write_text(self.field(fp))
            elif "resourceFieldRef" in item:
                p.write_text(self.resource_field(item["resourceFieldRef"], self.pod["spec"]["containers"][0]))

    def container_mounts(self, cspec: dict) -> list[tuple[Path, str, bool]]:
        mounts = []
        targets = set()
        for m in cspec.get("volumeMounts", []):
            src = self.volumes[m["name"]]
            if m.get("subPath"):
                src = src / m["subPath"]
                if not src.exists():
                    src.mkdir(parents=True)
            mounts.append((src, m["mountPath"], bool(m.get("readOnly"))))
            targets.add(m["mountPath"].rstrip("/"))
        if "/etc/hosts" not in targets:
            mounts.append((self.agent.hosts_file, "/etc/hosts", False))
        # parents before children, so a nested mount lands on top of its parent's
        mounts.sort(key=lambda m: m[1].rstrip("/").count("/"))
        return mounts

    # ---- status ---------------------------------------------------------------------

    def set_condition(self, typ: str, ok: bool, reason: str = "") -> dict:
        status = "True" if ok else "False"
        prev = self.conditions.get(typ)
        if prev is None or prev[0] != status:
            self.conditions[typ] = (status, now_time())
        c = {"type": typ, "status": status, "lastProbeTime": None, "lastTransitionTime": self.conditions[typ][1]}
        if reason and not ok:
            c["reason"] = reason
        return c

    def write_status(self) -> None:
        if self.prepare_error:
            for c in self.all_containers():
                c.waiting = ("ContainerCreating", self.prepare_error)
        init_done = all(c.completed for c in self.init_containers)
        main = [c.status() for c in self.containers]
        all_ready = init_done and all(s["ready"] for s in main)
        if self.phase not in ("Succeeded", "Failed"):
            if all(c.completed for c in self.containers) and self.containers:
                codes = [c.terminated.get("exitCode", 1) for c in self.containers if c.terminated]
                self.phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
            elif init_done and any(s["started"] or s["restartCount"] > 0 for s in main):
                self.phase = "Running"
        status = {
            "phase": self.phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": [
                self.set_condition("PodReadyToStartContainers", self.volumes is not None),
                self.set_condition("Initialized", init_done, "ContainersNotInitialized"),
                self.set_condition("ContainersReady", all_ready, "ContainersNotReady"),
                self.set_condition("Ready", all_ready, "ContainersNotReady"),
                self.set_condition("PodScheduled", True),
            ],
            "containerStatuses": main,
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if status == self.last_status:
            return
        try:
            self.agent.api.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", {"status": status})
            self.last_status = status
        except ApiError as e:
            if e.status != 404:
                raise


class Agent:
    def __init__(self, args):
        self.api = KubeApi.from_kubeconfig(args.kubeconfig)
        self.apiserver_port = int(self.api.server.rsplit(":", 1)[1])
        self.node = args.node_name
        self.zone = args.zone
        self.state_dir = Path(args.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.hosts_file = Path(args.hosts_file)
        self.image_bin = str(Path(args.image_bin).resolve())
        self.max_backoff = args.max_backoff
        self.max_probe_period = args.max_probe_period
        self.ready_file = Path(args.ready_file) if args.ready_file else None
        self.ips = IpAllocator(self.state_dir / "pod-ips.json", args.pod_ip_prefix)
        self.runners: dict[str, PodRunner] = {}
        self.provisioned: set[str] = set()
        self.wake = threading.Event()
        self.stopping = False
        self.lease_at = self.status_at = 0.0
        self.hosts_text = None
        if not self.hosts_file.exists():
            self.hosts_file.write_text("127.0.0.1 localhost\n")
        w = self.wake
        self.pods = Informer(self.api, "/api/v1/pods", w, fieldSelector=f"spec.nodeName={self.node}")
        self.services = Informer(self.api, "/api/v1/services", w)
        self.pvcs = Informer(self.api, "/api/v1/persistentvolumeclaims", w)
        self.pvs = Informer(self.api, "/api/v1/persistentvolumes", w)
        self.informers = [self.pods, self.services, self.pvcs, self.pvs]

    def get_namespaced(self, kind: str, ns: str, name: str) -> dict | None:
        try:
            return self.api.get_or_none(f"/api/v1/namespaces/{ns}/{kind}/{name}")
        except (ApiError, OSError) as e:
            raise NotReadyYet(f"get {kind} {ns}/{name}: {e}") from None

    # ---- node -----------------------------------------------------------------------

    def node_status(self) -> dict:
        t = now_time()
        conds = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                 ("PIDPressure", "False", "KubeletHasSufficientPID"),
                 ("Ready", "True", "KubeletReady")]
        return {
            "capacity": CAPACITY, "allocatable": CAPACITY,
            "conditions": [{"type": typ, "status": s, "reason": r, "message": "rill node agent",
                            "lastHeartbeatTime": t, "lastTransitionTime": self.started_time}
                           for typ, s, r in conds],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": "rill", "systemUUID": "rill", "bootID": "rill", "kernelVersion": os.uname().release,
                         "osImage": "rill node agent", "containerRuntimeVersion": "rill://0", "kubeletVersion": "v1.36.3",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }

    def register_node(self) -> None:
        self.started_time = now_time()
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": {
                    "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": self.zone, "topology.kubernetes.io/region": "local",
                    "node.kubernetes.io/instance-type": "rill-test"}},
                "spec": {}, "status": self.node_status()}
        try:
            self.api.post("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            self.api.patch(f"/api/v1/nodes/{self.node}", {"metadata": body["metadata"]})
        self.heartbeat(force=True)

    def heartbeat(self, force: bool = False) -> None:
        t = time.monotonic()
        if force or t - self.lease_at >= LEASE_RENEW_S:
            path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
            try:
                self.api.patch(path, {"spec": {"holderIdentity": self.node, "renewTime": now_micro()}})
            except ApiError as e:
                if e.status != 404:
                    raise
                self.api.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now_micro()}})
            self.lease_at = t
        if force or t - self.status_at >= STATUS_REPORT_S:
            self.api.patch(f"/api/v1/nodes/{self.node}/status", {"status": self.node_status()})
            self.status_at = t

    # ---- pods -----------------------------------------------------------------------

    def sync_pods(self) -> None:
        seen = set()
        for pod in self.pods.snapshot():
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            r = self.runners.get(uid)
            if r is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") \
                        and not pod["metadata"].get("deletionTimestamp"):
                    continue  # finished before this agent started
                r = self.runners[uid] = PodRunner(self, pod)
                log.info("pod %s/%s (%s) assigned, ip %s", r.ns, r.name, uid, r.ip)
            r.pod = pod
            try:
                r.step()
            except Exception as e:  # noqa: BLE001 - one pod's trouble must not stop the others
                log.exception("pod %s/%s: %s", r.ns, r.name, e)
        for uid in list(self.runners):
            r = self.runners[uid]
            if uid not in seen:
                if not r.finished:
                    log.info("pod %s/%s (%s) gone from the API: stopping it", r.ns, r.name, uid)
                    r.kill_now(grace=min(10.0, float(r.pod["spec"].get("terminationGracePeriodSeconds", 30) or 0)))
                    shutil.rmtree(r.dir, ignore_errors=True)
                del self.runners[uid]

    # ---- storage --------------------------------------------------------------------

    def claim_dir(self, ns: str, claim: str) -> Path:
        pvc = self.pvcs.get(ns, claim)
        if pvc is None or pvc.get("status", {}).get("phase") != "Bound":
            raise NotReadyYet(f"persistentvolumeclaim {ns}/{claim} is not bound")
        pv = self.pvs.get("", pvc["spec"]["volumeName"])
        if pv is not None and "hostPath" in pv["spec"]:
            d = Path(pv["spec"]["hostPath"]["path"])
        else:
            d = self.state_dir / "volumes" / ns / claim
        d.mkdir(parents=True, exist_ok=True)
        return d

    def sync_storage(self) -> None:
        pvs = {pv["metadata"]["name"]: pv for pv in self.pvs.snapshot()}
        for pvc in self.pvcs.snapshot():
            md, spec, st = pvc["metadata"], pvc["spec"], pvc.get("status", {})
            if spec.get("storageClassName") != STORAGE_CLASS or md.get("deletionTimestamp"):
                continue
            request = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
            pv_name = f"pvc-{md['uid']}"
            if not spec.get("volumeName") and pv_name not in pvs:
                if pv_name in self.provisioned:
                    continue  # created; the informer has not seen it yet
                d = self.state_dir / "volumes" / md["namespace"] / md["name"]
                d.mkdir(parents=True, exist_ok=True)
                self.provisioned.add(pv_name)
                self.api.post("/api/v1/persistentvolumes", {
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {
                        "capacity": {"storage": request},
                        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": STORAGE_CLASS,
                        "volumeMode": spec.get("volumeMode", "Filesystem"),
                        "hostPath": {"path": str(d), "type": "DirectoryOrCreate"},
                        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                                     "name": md["name"], "uid": md["uid"]},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.node]}]}]}},
                    }})
                log.info("provisioned %s for %s/%s (%s)", pv_name, md["namespace"], md["name"], request)
            elif st.get("phase") == "Bound":
                capacity = st.get("capacity", {}).get("storage", request)
                if parse_quantity(request) > parse_quantity(capacity):
                    self.api.patch(f"/api/v1/persistentvolumes/{spec['volumeName']}",
                                   {"spec": {"capacity": {"storage": request}}})
                    self.api.patch(f"/api/v1/namespaces/{md['namespace']}/persistentvolumeclaims/{md['name']}/status",
                                   {"status": {"capacity": {"storage": request}, "conditions": None,
                                               "allocatedResourceStatuses": None}})
                    log.info("resized %s/%s to %s", md["namespace"], md["name"], request)
        for pv in pvs.values():
            ann = pv["metadata"].get("annotations", {})
            if ann.get("pv.kubernetes.io/provisioned-by") == PROVISIONER and pv.get("status", {}).get("phase") == "Released" \
                    and not pv["metadata"].get("deletionTimestamp"):
                self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                path = pv["spec"].get("hostPath", {}).get("path", "")
                if path.startswith(str(self.state_dir)):
                    shutil.rmtree(path, ignore_errors=True)
                log.info("deleted released %s", pv["metadata"]["name"])

    # ---- DNS ------------------------------------------------------------------------

    def hosts_content(self) -> str:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
                 "127.0.0.1 kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local"]
        for r in sorted(self.runners.values(), key=lambda r: (r.ns, r.name)):
            spec = r.pod["spec"]
            if spec.get("hostname") and spec.get("subdomain") and not r.finished:
                base = f"{spec['hostname']}.{spec['subdomain']}.{r.ns}.svc"
                lines.append(f"{r.ip} {base}.cluster.local {base}")
        # Service -> the IPs of its ready pods. Computed here from the selector, because
        # the apiserver refuses loopback addresses in EndpointSlices (the endpointslice
        # controller runs, but its writes fail with "may not be in the loopback range").
        pods = [r.pod for r in self.runners.values() if not r.finished]
        for svc in sorted(self.services.snapshot(), key=Informer.key):
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            selector = svc["spec"].get("selector")
            if not selector or svc["spec"].get("type") == "ExternalName":
                continue
            any_ready = svc["spec"].get("publishNotReadyAddresses", False)
            ips = set()
            for pod in pods:
                md, st = pod["metadata"], pod.get("status", {})
                if md["namespace"] != ns or not st.get("podIP"):
                    continue
                labels = md.get("labels", {})
                if any(labels.get(k) != v for k, v in selector.items()):
                    continue
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
                if any_ready or (ready and not md.get("deletionTimestamp")):
                    ips.add(st["podIP"])
            for ip in sorted(ips):
                lines.append(f"{ip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}")
        return "\n".join(lines) + "\n"

    def write_hosts(self) -> None:
        text = self.hosts_content()
        if text != self.hosts_text:
            # in place (same inode): the containers' /etc/hosts bind mounts point at it
            with open(self.hosts_file, "r+") as f:
                f.seek(0)
                f.write(text)
                f.truncate()
            self.hosts_text = text

    # ---- main loop ------------------------------------------------------------------

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.register_node()
                break
            except (ApiError, OSError) as e:
                if time.monotonic() > deadline:
                    raise
                log.warning("registering node %s: %s; retrying", self.node, e)
                time.sleep(1)
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            if not inf.synced.wait(60):
                raise RuntimeError(f"informer {inf.path} did not sync in 60s")
        log.info("node %s registered, informers synced", self.node)
        if self.ready_file:
            self.ready_file.write_text(str(os.getpid()))
        while not self.stopping:
            self.wake.wait(0.25)
            self.wake.clear()
            for step in (self.heartbeat, self.sync_pods, self.sync_storage, self.write_hosts):
                if self.stopping:
                    break
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - log and retry on the next round
                    log.warning("%s: %s", step.__name__, e)
        log.info("stopping: terminating %d pod(s)", len(self.runners))
        for r in self.runners.values():
            r.kill_now(grace=5.0)
        log.info("stopped")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--hosts-file", required=True)
    p.add_argument("--image-bin", default=os.environ.get("RILL_IMAGE_BIN", ""))
    p.add_argument("--node-name", default="rill-node-1")
    p.add_argument("--zone", default="zone-a")
    p.add_argument("--max-backoff", type=float, default=10.0, help="cap of the restart backoff, seconds")
    p.add_argument("--max-probe-period", type=float, default=2.0, help="cap of a probe's periodSeconds")
    p.add_argument("--pod-ip-prefix", default="127.0.0", help="pod IPs are PREFIX.10, PREFIX.11, ...")
    p.add_argument("--ready-file", help="written (with the PID) once the node is registered")
    args = p.parse_args(argv)
    if not args.image_bin:
        p.error("--image-bin (or RILL_IMAGE_BIN) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    agent = Agent(args)

    def on_term(signum, frame):
        agent.stopping = True
        agent.wake.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
