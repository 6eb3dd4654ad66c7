"""Start, stop, crash and restart a broker process on loopback for the e2e tests.

The broker under test is Rill (`rill-broker dev ...`) unless RILL_E2E_TARGET=kafka, in
which case the same interface starts a real single-node Apache Kafka (KRaft, combined
broker+controller) from the jars that tests/tools/install.sh cached, so every test can be
validated against the reference implementation.

Environment:
  RILL_BROKER_BIN   path of the rill-broker binary (default <repo>/target/debug/rill-broker)
  RILL_E2E_TARGET   "rill" (default) or "kafka"
  RILL_CACHE        tool cache (default ~/.cache/rill), see tests/tools/install.sh
  RILL_KAFKA_VERSION  version of the cached Kafka jars (default: tests/tools/versions.env)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def _versions() -> dict:
    out = {}
    for line in (REPO / "tests" / "tools" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


VERSIONS = _versions()


def target() -> str:
    t = os.environ.get("RILL_E2E_TARGET", "rill").strip().lower()
    if t not in ("rill", "kafka"):
        raise ValueError(f"RILL_E2E_TARGET must be rill or kafka, not {t!r}")
    return t


def cache_dir() -> Path:
    return Path(os.environ.get("RILL_CACHE") or Path.home() / ".cache" / "rill")


def kafka_version() -> str:
    return os.environ.get("RILL_KAFKA_VERSION") or VERSIONS["KAFKA_VERSION"]


def kafka_jars(kind: str) -> str:
    """Classpath of the cached Kafka jars; kind is 'clients' or 'server'."""
    d = cache_dir() / "kafka-jars" / kafka_version() / kind
    jars = sorted(d.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no jars in {d}: run tests/tools/install.sh")
    return os.pathsep.join(str(j) for j in jars)


def rill_binary() -> Path:
    """$RILL_BROKER_BIN, else what cargo built: $CARGO_TARGET_DIR or the repo's target/."""
    if os.environ.get("RILL_BROKER_BIN"):
        return Path(os.environ["RILL_BROKER_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "debug" / "rill-broker"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _metadata_has_broker(port: int) -> bool:
    """A raw Metadata v4 request (no topics) answered with at least one broker."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as s:
            s.settimeout(2.0)
            client = b"rill-e2e-probe"
            body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">i?", 0, False)
            s.sendall(struct.pack(">i", len(body)) + body)
            hdr = _recv_exact(s, 4)
            (n,) = struct.unpack(">i", hdr)
            resp = _recv_exact(s, n)
            # correlation_id, throttle_time_ms, brokers count
            _corr, _throttle, nbrokers = struct.unpack(">iii", resp[:12])
            return nbrokers > 0
    except (OSError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


_KAFKA_LOG4J2 = """\
Configuration:
  name: rill-e2e-kafka
  Appenders:
    Console:
      name: STDOUT
      target: SYSTEM_OUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.apache.kafka.controller
        level: WARN
      - name: org.apache.kafka.raft
        level: WARN
      - name: kafka.coordinator
        level: WARN
"""

_KAFKA_JVM = [
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]


class BrokerProcess:
    """One broker process (Rill or Apache Kafka) on 127.0.0.1 with its own data dir.

    `settings` are Kafka broker property names -> values; for Rill each is passed as
    `--set NAME=VALUE`, for Kafka written into server.properties.
    """

    def __init__(self, workdir: Path, settings: dict | None = None, kind: str | None = None):
        self.kind = kind or target()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.settings = {str(k): str(v) for k, v in (settings or {}).items()}
        self.port = free_port()
        self.metrics_port = free_port()
        self.controller_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path: Path | None = None
        self._log_file = None
        self._formatted = False

    # ---- addresses -------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def partition_dir(self, topic: str, partition: int = 0) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    # ---- lifecycle -------------------------------------------------------------------
    def command(self) -> list[str]:
        if self.kind == "rill":
            cmd = [
                str(rill_binary()),
                "dev",
                "--listen",
                self.bootstrap,
                "--data-dir",
                str(self.data_dir),
                "--metrics-listen",
                f"{HOST}:{self.metrics_port}",
            ]
            for k, v in self.settings.items():
                cmd += ["--set", f"{k}={v}"]
            return cmd
        return [
            "java",
            *_KAFKA_JVM,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
            "-cp",
            kafka_jars("server"),
            "kafka.Kafka",
            str(self.workdir / "server.properties"),
        ]

    def _kafka_prepare(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "auto.create.topics.enable": "true",
            "log.flush.interval.messages": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "delete.topic.enable": "true",
        }
        props.update(self.settings)
        (self.workdir / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in props.items())
        )
        (self.workdir / "log4j2.yaml").write_text(_KAFKA_LOG4J2)
        if self._formatted:
            return
        cluster_id = _kafka_cluster_id()
        out = subprocess.run(
            [
                "java",
                *_KAFKA_JVM,
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
                "-cp",
                kafka_jars("server"),
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                f"--cluster-id={cluster_id}",  # ids may start with '-'
                "-c",
                str(self.workdir / "server.properties"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{out.stdout}\n{out.stderr}")
        self._formatted = True

    def start(self) -> "BrokerProcess":
        assert self.proc is None, "already running"
        if self.kind == "rill":
            binary = rill_binary()
            if not binary.exists():
                raise RuntimeError(f"{binary} missing: cargo build -p rill-broker")
            self.data_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._kafka_prepare()
        self.starts += 1
        self.log_path = self.workdir / f"broker-{self.starts}.log"
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._close_log()
                self.proc = None
                raise RuntimeError(f"broker exited with {code} during start:\n{self.log_tail()}")
            if port_accepts(self.port) and (self.kind == "rill" or _metadata_has_broker(self.port)):
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"broker did not accept on {self.bootstrap} in {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; returns the exit code (the caller asserts on it)."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._close_log()
            self.proc = None
            raise AssertionError(f"broker did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        self._close_log()
        self.proc = None
        return code

    def clean_exit_codes(self) -> tuple[int, ...]:
        # A JVM killed by SIGTERM exits 143 after its shutdown hooks; Rill must exit 0.
        return (0,) if self.kind == "rill" else (0, 143)

    def stop_clean(self) -> None:
        code = self.stop()
        assert code in self.clean_exit_codes(), f"exit code {code} after SIGTERM:\n{self.log_tail()}"

    def kill(self) -> None:
        """kill -9: no shutdown path runs."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close_log()
        self.proc = None

    def restart(self) -> "BrokerProcess":
        if self.proc is not None:
            self.stop_clean()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, n: int = 60) -> str:
        parts = []
        for p in sorted(self.workdir.glob("broker-*.log")):
            lines = p.read_text(errors="replace").splitlines()
            parts.append(f"--- {p.name} (last {n} lines) ---\n" + "\n".join(lines[-n:]))
        return "\n".join(parts)


def _kafka_cluster_id() -> str:
    # A Kafka cluster id is a 16-byte UUID in URL-safe base64 without padding.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def newest_segment(partition_dir: Path) -> Path:
    logs = sorted(partition_dir.glob("*.log"))
    if not logs:
        raise AssertionError(f"no .log segment in {partition_dir}")
    return logs[-1]


def remove_clean_shutdown_markers(data_dir: Path) -> list[Path]:
    """Delete Rill's per-partition `.clean_shutdown` and Kafka's `.kafka_cleanshutdown`."""
    removed = []
    for name in (".clean_shutdown", ".kafka_cleanshutdown"):
        for p in list(data_dir.rglob(name)):
            p.unlink()
            removed.append(p)
    return removed


def which(tool: str) -> str | None:
    return shutil.which(tool)
