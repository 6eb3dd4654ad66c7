"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, built by tests/tools/k8s/build.sh.

Everything lives in one temp dir (`workdir`): certificates made with openssl (a CA, the
apiserver's serving certificate for 127.0.0.1 / localhost / kubernetes.default.svc, an
admin client certificate in group system:masters, the service-account signing key pair),
etcd's data, the admin kubeconfig and one log file per component. Ports are free ports on
127.0.0.1. `start()` is bounded (START_TIMEOUT_S) and shows the tails of the logs when a
component fails; `stop()` stops each process by its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BUILD_SH = REPO / "tests" / "tools" / "k8s" / "build.sh"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SERVICE_CIDR = "10.96.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Every on-by-default controller (statefulset, endpointslice, garbage collector, PV binder
# and expander, serviceaccount, namespace, ...) minus those that need a cloud or node CIDRs.
CONTROLLERS = ",".join([
    "*",
    "-cloud-node-lifecycle-controller",
    "-service-lb-controller",
    "-node-route-controller",
    "-node-ipam-controller",
])


def k8s_bin_dir() -> Path:
    out = subprocess.run(["bash", str(BUILD_SH), "--print-bin"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<{e}>"


def stop_pid(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the process (by its PID), SIGKILL when it outlives `timeout`."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(5)
    except ProcessLookupError:
        return proc.wait(5)


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr}")


def make_pki(d: Path) -> None:
    """CA, apiserver serving cert, admin client cert, SA key pair (EC P-256: fast)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", "/CN=rill-test-ca", cwd=d)
    leafs = {
        "apiserver": ("/CN=kube-apiserver",
                      "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                      "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"),
        "admin": ("/O=system:masters/CN=rill-test-admin", "extendedKeyUsage=clientAuth"),
    }
    for name, (subj, ext) in leafs.items():
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30",
                 "-subj", subj, "-CA", "ca.crt", "-CAkey", "ca.key", "-addext", ext,
                 "-addext", "basicConstraints=critical,CA:FALSE", cwd=d)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


class ControlPlane:
    def __init__(self, workdir: Path, bin_dir: Path | None = None):
        self.workdir = Path(workdir)
        self.bin_dir = Path(bin_dir) if bin_dir else k8s_bin_dir()
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.procs: dict[str, subprocess.Popen] = {}
        self.apiserver_port = 0
        self.start_seconds = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def _spawn(self, name: str, args: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True)
        log.close()

    def _failure(self, what: str) -> RuntimeError:
        parts = [what]
        for name, p in self.procs.items():
            state = "running" if p.poll() is None else f"exited {p.returncode}"
            parts.append(f"--- {name} ({state}), tail of {self.logs / (name + '.log')}:\n{tail(self.logs / (name + '.log'))}")
        return RuntimeError("\n".join(parts))

    def _wait_https(self, name: str, port: int, path: str, deadline: float, ctx: ssl.SSLContext) -> None:
        last = ""
        while time.monotonic() < deadline:
            p = self.procs[name]
            if p.poll() is not None:
                raise self._failure(f"{name} exited with {p.returncode} during start")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last = str(e)
            time.sleep(0.2)
        raise self._failure(f"{name} not healthy on :{port}{path} within {START_TIMEOUT_S}s (last: {last})")

    def write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: rill-test
  cluster:
    server: {self.server}
    certificate-authority: {self.pki / 'ca.crt'}
users:
- name: admin
  user:
    client-certificate: {self.pki / 'admin.crt'}
    client-key: {self.pki / 'admin.key'}
contexts:
- name: rill-test
  context:
    cluster: rill-test
    user: admin
current-context: rill-test
""")

    def start(self) -> "ControlPlane":
        t0 = time.monotonic()
        deadline = t0 + START_TIMEOUT_S
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
            if not (self.bin_dir / b).is_file():
                raise RuntimeError(f"{self.bin_dir / b} missing: run bash tests/tools/k8s/build.sh")
        make_pki(self.pki)
        pki = self.pki
        etcd_client, etcd_peer = free_port(), free_port()
        self.apiserver_port = free_port()
        kcm_port, sched_port = free_port(), free_port()
        self.write_kubeconfig()

        self._spawn("etcd", [
            "--name", "rill-test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"rill-test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._spawn("kube-apiserver", [
            "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.apiserver_port),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", SA_ISSUER,
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--allow-privileged=true", "--profiling=false",
            "--cert-dir", str(self.workdir / "apiserver-certs"),
        ])
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._wait_https("kube-apiserver", self.apiserver_port, "/readyz", deadline, ctx)

        self._spawn("kube-controller-manager", [
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(kcm_port),
            "--cert-dir", str(self.workdir / "kcm-certs"),
            "--leader-elect=false", "--use-service-account-credentials",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"),
            "--cluster-signing-key-file", str(pki / "ca.key"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--controllers", CONTROLLERS,
            # the admission plugin taints every new node not-ready; this loop lifts it
            "--node-monitor-period", "1s",
        ])
        self._spawn("kube-scheduler", [
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(sched_port),
            "--cert-dir", str(self.workdir / "sched-certs"),
            "--leader-elect=false",
        ])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait_https("kube-controller-manager", kcm_port, "/healthz", deadline, insecure)
        self._wait_https("kube-scheduler", sched_port, "/healthz", deadline, insecure)
        self.start_seconds = time.monotonic() - t0
        return self

    def check_alive(self) -> None:
        dead = [n for n, p in self.procs.items() if p.poll() is not None]
        if dead:
            raise self._failure(f"control plane component(s) died: {', '.join(dead)}")

    def stop(self) -> None:
        # reverse start order: clients of the apiserver first, etcd last
        for name in reversed(list(self.procs)):
            stop_pid(self.procs[name])
