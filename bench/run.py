#!/usr/bin/env python3
"""Rill vs Apache Kafka, side by side on loopback, and against the machine's limits.

Run it through `bash bench/run.sh` (installs the tools, then calls this file with the
bench venv's Python). What it does, in order:

  1. builds Rill in release mode (cargo build --release -p rill-broker);
  2. compiles bench/java/RillBench.java (topic admin and a group-less consumer probe);
  3. measures the limits: sequential write bandwidth of the data disk (dd with
     conv=fdatasync, and a Python loop with fdatasync after every MiB) and loopback TCP;
  4. starts Rill, runs the matrix, stops it; starts Apache Kafka (single-node KRaft, the
     cached jars), runs the same matrix, stops it; then the same for the durability
     matrix (fsync after every append) with both;
  5. writes bench/results/<date>.md and <date>.png and refreshes bench/README.md.

Every workload is driven by Kafka's own tools from the same jars (ProducerPerformance,
ConsumerPerformance, EndToEndLatency), with the same client settings for both brokers.
Every loop is bounded by count and time; every child has a timeout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
os.environ.setdefault("RILL_BROKER_BIN", str(REPO / "target" / "release" / "rill-broker"))

import broker_process as bp  # noqa: E402  (tests/e2e/broker_process.py, reused as is)

LONG_MAX = "9223372036854775807"
MB = 1_000_000  # every MB in the report is 10^6 bytes
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Kafka's stock JVM settings: kafka-server-start.sh (heap) and kafka-run-class.sh
# (KAFKA_JVM_PERFORMANCE_OPTS). The e2e harness uses a small C1-only JVM to start fast;
# a benchmark must not handicap Kafka, so these replace it.
KAFKA_STOCK_JVM = [
    "-Xms1g",
    "-Xmx1g",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]
# Client tools: the heap kafka-producer-perf-test.sh / kafka-consumer-perf-test.sh set.
TOOL_JVM = ["-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]

FLUSH_NEVER = "never"  # Kafka's default: no fsync by the broker, the page cache decides
FLUSH_EVERY = "every"  # fsync after every append (log.flush.interval.messages=1)


def system_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (/proc/stat, every CPU)."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
        return (user + nice + system + irq + softirq + steal) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return float("nan")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# Brokers
# ---------------------------------------------------------------------------------------


def broker_settings(kind: str, flush: str) -> dict:
    """The same flush policy for both brokers, in each one's own property names."""
    if kind == "rill":
        if flush == FLUSH_NEVER:
            return {"log.flush.interval.messages": LONG_MAX, "log.flush.interval.ms": LONG_MAX}
        return {"log.flush.interval.messages": "1", "log.flush.interval.ms": LONG_MAX}
    s = {
        # deleted topics' files go after 1 s instead of 60 s (housekeeping between
        # workloads; no effect on the measured path)
        "file.delete.delay.ms": "1000",
    }
    if flush == FLUSH_NEVER:
        s["log.flush.interval.messages"] = LONG_MAX  # Kafka's default; flush.ms unset
    else:
        s["log.flush.interval.messages"] = "1"
    return s


class BenchBroker(bp.BrokerProcess):
    """BrokerProcess with Kafka's stock JVM flags instead of the e2e harness' small JVM."""

    def command(self) -> list[str]:
        cmd = super().command()
        if self.kind == "kafka":
            n = len(bp._KAFKA_JVM)
            if cmd[1 : 1 + n] != bp._KAFKA_JVM:
                raise RuntimeError("broker_process.py changed its Kafka command line; update bench/run.py")
            cmd = [cmd[0], *KAFKA_STOCK_JVM, *cmd[1 + n :]]
        return cmd


class ProcMonitor:
    """Samples a process' RSS; reads VmHWM and CPU seconds from /proc."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid = pid
        self.interval = interval
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _status(self) -> dict:
        out = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            s = self._status()
            self.peak_rss_kb = max(self.peak_rss_kb, s.get("VmRSS", 0), s.get("VmHWM", 0))

    def cpu_seconds(self) -> float:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        except (OSError, ValueError, IndexError):
            return float("nan")

    def hwm_kb(self) -> int:
        s = self._status()
        self.peak_rss_kb = max(self.peak_rss_kb, s.get("VmHWM", 0), s.get("VmRSS", 0))
        return self.peak_rss_kb

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=2)


# ---------------------------------------------------------------------------------------
# Running a tool with a bound
# ---------------------------------------------------------------------------------------


@dataclass
class ToolResult:
    code: int | None  # None: killed at the timeout
    out: str
    wall: float
    cpu: float  # the tool's own CPU seconds (user + sys)


def run_tool(cmd: list[str], timeout: float, cwd: Path) -> ToolResult:
    """Runs one child with a hard timeout; returns its output and its rusage CPU time."""
    with tempfile.TemporaryFile(dir=cwd) as f:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
        code = None
        cpu = 0.0
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                code = os.waitstatus_to_exitcode(status)
                cpu = ru.ru_utime + ru.ru_stime
                break
            if time.monotonic() > deadline:
                p.kill()
                _, status, ru = os.wait4(p.pid, 0)
                cpu = ru.ru_utime + ru.ru_stime
                break
            time.sleep(0.02)
        p.returncode = code if code is not None else -9
        wall = time.monotonic() - t0
        f.seek(0)
        out = f.read().decode(errors="replace")
    return ToolResult(code, out, wall, cpu)


class Tools:
    def __init__(self, classes: Path, workdir: Path):
        self.cp = bp.kafka_jars("clients") + os.pathsep + str(classes)
        self.workdir = workdir

    def java(self, main: str, *args: str) -> list[str]:
        return ["java", *TOOL_JVM, "-cp", self.cp, main, *args]

    def admin(self, bootstrap: str, op: str, *names: str) -> None:
        r = run_tool(self.java("RillBench", op, bootstrap, *names), 90, self.workdir)
        if r.code != 0:
            raise RuntimeError(f"RillBench {op} {' '.join(names)} failed:\n{r.out[-3000:]}")


# ---------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    size: int
    acks: str
    partitions: int
    compression: str = "none"
    rate: int | None = None  # records/s for a fixed-rate latency run; None = max throughput
    flush: str = FLUSH_NEVER
    consume: bool = False  # consumer measurements on this topic after the produce runs
    e2e: bool = False  # an EndToEndLatency measurement with this record size and acks
    headline: bool = False

    @property
    def label(self) -> str:
        size = "1 KiB" if self.size == 1024 else f"{self.size} B"
        mode = f"fixed {self.rate:,} rec/s" if self.rate else "max"
        flush = ", fsync every append" if self.flush == FLUSH_EVERY else ""
        return f"{size} acks={self.acks} p={self.partitions} {self.compression} {mode}{flush}"


def matrix(quick: bool) -> list[Workload]:
    W = Workload
    if quick:
        return [
            W("p1k-a1-p1-none", 1024, "1", 1, headline=True, consume=True, e2e=True),
            W("p1k-a1-p1-lz4", 1024, "1", 1, "lz4"),
            W("lat1k-a1-p1", 1024, "1", 1, rate=5000),
            W("dur1k-a1-p1", 1024, "1", 1, flush=FLUSH_EVERY),
        ]
    return [
        # max throughput: the cross product would be 2 sizes x 2 acks x 2 partition counts
        # x 3 codecs = 24 workloads; this subset varies one factor at a time around the
        # 1 KiB and 100 B acks=1 p=1 uncompressed baselines.
        W("p1k-a1-p1-none", 1024, "1", 1, headline=True, consume=True, e2e=True),
        W("p1k-aall-p1-none", 1024, "all", 1),
        W("p1k-a1-p8-none", 1024, "1", 8, consume=True),
        W("p1k-a1-p1-lz4", 1024, "1", 1, "lz4"),
        W("p1k-a1-p1-zstd", 1024, "1", 1, "zstd"),
        W("p100-a1-p1-none", 100, "1", 1),
        W("p100-aall-p1-none", 100, "all", 1),
        W("p100-a1-p8-none", 100, "1", 8),
        W("p100-a1-p1-lz4", 100, "1", 1, "lz4"),
        W("p100-a1-p1-zstd", 100, "1", 1, "zstd"),
        # fixed-rate latency runs, well below both brokers' maximum
        W("lat1k-a1-p1", 1024, "1", 1, rate=5000),
        W("lat1k-aall-p1", 1024, "all", 1, rate=5000),
        W("lat100-a1-p1", 100, "1", 1, rate=20000),
        # durability: fsync after every append, both brokers
        W("dur1k-a1-p1", 1024, "1", 1, flush=FLUSH_EVERY),
        W("durlat1k-a1-p1", 1024, "1", 1, rate=1000, flush=FLUSH_EVERY),
    ]


PP_FINAL = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th"
)


def parse_producer_perf(out: str) -> dict | None:
    m = None
    for m in PP_FINAL.finditer(out):
        pass
    if m is None:
        return None
    return {
        "records": int(m.group(1)),
        "rps": float(m.group(2)),
        "avg_ms": float(m.group(4)),
        "max_ms": float(m.group(5)),
        "p50": float(m.group(6)),
        "p95": float(m.group(7)),
        "p99": float(m.group(8)),
        "p999": float(m.group(9)),
    }


MARKER = "=== rill-bench: measured run ==="


def measured_part(out: str) -> str:
    """The output of the measured (second) pass of `RillBench twice`."""
    return out.split(MARKER, 1)[1] if MARKER in out else ""


def first_error(out: str) -> str:
    for line in out.splitlines():
        if re.search(r"Exception|ERROR|Error:", line):
            return line.strip()[:300]
    lines = [l for l in out.splitlines() if l.strip()]
    return (lines[-1] if lines else "no output")[:300]


@dataclass
class Runner:
    args: argparse.Namespace
    tools: Tools
    workdir: Path
    deadline: float
    results: dict = field(default_factory=dict)  # [broker][workload] -> dict
    notes: list = field(default_factory=list)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def pp_args(self, b: BenchBroker, w: Workload, topic: str, n: int, rate: int | None) -> list[str]:
        # fixed-rate (latency) runs send each record at once (linger.ms=0, as
        # EndToEndLatency does); the producer default linger.ms=5 would hide the broker
        extra = ["linger.ms=0"] if rate else []
        return [
            "--topic", topic,
            "--num-records", str(n),
            "--record-size", str(w.size),
            "--throughput", str(rate) if rate else "-1",
            "--producer-props",
            f"bootstrap.servers={b.bootstrap}",
            f"acks={w.acks}",
            f"compression.type={w.compression}",
            "enable.idempotence=false",
            *extra,
        ]  # fmt: skip

    def producer_perf(self, b: BenchBroker, w: Workload, topic: str, warm_n: int, n: int, timeout: float) -> ToolResult:
        """ProducerPerformance twice in one JVM: a max-throughput warm-up pass of warm_n
        records (discarded), then the measured pass (n records, at w.rate if set)."""
        warm = self.pp_args(b, w, topic, warm_n, None)
        measured = self.pp_args(b, w, topic, n, w.rate)
        cmd = self.tools.java("RillBench", "twice", "producer", str(len(warm)), *warm, *measured)
        r = run_tool(cmd, timeout, self.workdir)
        return r

    def run_workload(self, b: BenchBroker, mon: ProcMonitor, w: Workload) -> dict:
        a = self.args
        res: dict = {"runs": [], "errors": []}
        topic = f"bench-{w.name}-{int(time.time() * 1000) % 10**9}"
        self.tools.admin(b.bootstrap, "create", f"{topic}:{w.partitions}")
        produced = 0
        try:
            # Max throughput: a calibration run (discarded) warms the broker (Kafka's JIT)
            # and measures the rate, so that a measured run lasts ~--secs. Fixed rate: the
            # earlier workloads and each run's own warm-up pass warm both sides.
            if w.rate:
                n = int(w.rate * a.secs)
                warm_n = min(max(20000, w.rate * 4), 64 * MB // w.size)
                timeout = a.secs * 4 + 90
            else:
                warm_bytes = (8 if w.flush == FLUSH_EVERY else 48) * MB
                if a.quick:
                    warm_bytes //= 2
                cal_n = max(2000, warm_bytes // w.size)
                r = self.producer_perf(b, w, topic, cal_n, cal_n, timeout=180)
                pp = parse_producer_perf(measured_part(r.out))
                if pp is None or r.code != 0:
                    res["errors"].append(f"calibration: exit {r.code}: {first_error(r.out)}")
                    return res
                produced += 2 * pp["records"]
                rate = pp["rps"]
                n = max(5000, min(int(rate * a.secs), int(4e9 // w.size), 50_000_000))
                warm_n = max(2000, min(int(rate * 1.5), n))
                timeout = a.secs * 8 + 90
            res["records_per_run"] = n
            cpu0 = mon.cpu_seconds()
            for i in range(a.runs):
                if self.time_left() < 0:
                    res["errors"].append(f"time budget spent after {i} runs")
                    break
                bcpu0, sys0 = mon.cpu_seconds(), system_busy_seconds()
                r = self.producer_perf(b, w, topic, warm_n, n, timeout)
                bcpu1, sys1 = mon.cpu_seconds(), system_busy_seconds()
                pp = parse_producer_perf(measured_part(r.out))
                if r.code is None:
                    res["errors"].append(f"run {i + 1}: killed after {timeout:.0f} s")
                    continue
                if pp is None or r.code != 0:
                    res["errors"].append(f"run {i + 1}: exit {r.code}: {first_error(r.out)}")
                    continue
                if re.search(r"Exception", r.out):
                    res["errors"].append(f"run {i + 1}: {first_error(r.out)}")
                produced += pp["records"] + warm_n
                pp["mbps"] = pp["rps"] * w.size / MB
                pp["wall_s"] = r.wall
                pp["client_cpu_s"] = r.cpu
                pp["broker_cpu_s"] = bcpu1 - bcpu0
                # CPU time of everything else on the machine during this run: noise
                pp["other_cpu_s"] = max(0.0, (sys1 - sys0) - r.cpu - (bcpu1 - bcpu0))
                res["runs"].append(pp)
                log(f"  {b.kind} {w.name} run {i + 1}: {pp['rps']:,.0f} rec/s {pp['mbps']:.1f} MB/s "
                    f"p50/p99/p99.9 {pp['p50']:.0f}/{pp['p99']:.0f}/{pp['p999']:.0f} ms "
                    f"(cpu s: client {r.cpu:.1f}, broker {bcpu1 - bcpu0:.1f}, others {pp['other_cpu_s']:.1f}; {r.wall:.1f} s)")
            res["broker_cpu_s"] = mon.cpu_seconds() - cpu0
            res["bytes_measured"] = sum(x["records"] for x in res["runs"]) * w.size
            if w.consume and produced:
                res["consume"] = self.consume(b, w, topic, produced)
            if w.e2e:
                res["e2e"] = self.end_to_end(b, w)
        finally:
            try:
                self.tools.admin(b.bootstrap, "delete", topic)
            except RuntimeError as e:
                res["errors"].append(f"delete topic: {str(e)[:300]}")
            os.sync()
        return res

    def consume(self, b: BenchBroker, w: Workload, topic: str, produced: int) -> dict:
        """ConsumerPerformance (subscribes with a group) and the group-less probe."""
        want = min(produced, self.args.consume_mb * MB // w.size)
        out: dict = {"records": want, "consumer_perf": [], "assigned": [], "errors": []}
        runs = max(1, min(self.args.runs, 3))
        for i in range(runs):

            def cp_args(group: str) -> list[str]:
                return [
                    "--bootstrap-server", b.bootstrap,
                    "--topic", topic,
                    "--messages", str(want),
                    "--timeout", "10000",
                    "--group", group,
                ]  # fmt: skip

            warm = cp_args(f"bench-warm-{i}")
            cmd = self.tools.java("RillBench", "twice", "consumer", str(len(warm)), *warm, *cp_args(f"bench-{i}"))
            r = run_tool(cmd, 120, self.workdir)
            parsed = parse_consumer_perf(measured_part(r.out))
            if r.code == 0 and parsed and parsed["nmsg"] >= want:
                out["consumer_perf"].append(parsed)
                log(f"  {b.kind} ConsumerPerformance: {parsed['fetch_mbps']:.1f} MB/s (fetch), "
                    f"{parsed['mbps']:.1f} MB/s overall, rebalance {parsed['rebalance_ms']} ms")
            else:
                err = f"ConsumerPerformance: exit {r.code}, " + (
                    f"{parsed['nmsg']} of {want} records" if parsed else first_error(r.out)
                )
                out["errors"].append(err)
                log(f"  {b.kind} {err}")
                break  # a broker without groups fails the same way every time
        for i in range(runs):
            r = run_tool(
                self.tools.java("RillBench", "consume", b.bootstrap, topic, str(w.partitions), str(want), "60000"),
                150,
                self.workdir,
            )
            m = re.search(r"records=(\d+) bytes=(\d+) elapsed_ms=([\d.]+) first_record_ms=([-\d.]+)", r.out)
            if r.code == 0 and m:
                recs, nbytes, el, first = int(m[1]), int(m[2]), float(m[3]), float(m[4])
                span = max(1e-3, (el - max(first, 0)) / 1000)
                res = {"records": recs, "bytes": nbytes, "elapsed_ms": el, "first_ms": first,
                       "mbps": nbytes / span / MB, "rps": recs / span}
                out["assigned"].append(res)
                log(f"  {b.kind} assigned consumer: {res['mbps']:.1f} MB/s {res['rps']:,.0f} rec/s")
            else:
                out["errors"].append(f"assigned consumer: exit {r.code}: {first_error(r.out)}")
                break
        return out

    def end_to_end(self, b: BenchBroker, w: Workload) -> dict:
        """Kafka's EndToEndLatency: one record at a time, produce then poll it back."""
        out: dict = {"runs": [], "errors": []}
        props = self.workdir / "e2e.properties"
        props.write_text("enable.idempotence=false\n")
        n = self.args.e2e_messages
        for i in range(max(1, min(self.args.runs, 3))):
            topic = f"bench-e2e-{int(time.time() * 1000) % 10**9}"
            try:
                self.tools.admin(b.bootstrap, "create", f"{topic}:1")
            except RuntimeError as e:
                out["errors"].append(str(e)[:300])
                break
            warm = [b.bootstrap, topic, str(max(200, n // 5)), w.acks, str(w.size), str(props)]
            measured = [b.bootstrap, topic, str(n), w.acks, str(w.size), str(props)]
            cmd = self.tools.java("RillBench", "twice", "e2e", str(len(warm)), *warm, *measured)
            r = run_tool(cmd, self.args.e2e_timeout, self.workdir)
            r.out = measured_part(r.out) or r.out
            avg = re.search(r"Avg latency: ([\d.]+) ms", r.out)
            pct = re.search(r"Percentiles: 50th = (\d+), 99th = (\d+), 99\.9th = (\d+)", r.out)
            try:
                self.tools.admin(b.bootstrap, "delete", topic)
            except RuntimeError:
                pass
            if r.code == 0 and avg and pct:
                res = {"avg_ms": float(avg[1]), "p50": float(pct[1]), "p99": float(pct[2]), "p999": float(pct[3])}
                out["runs"].append(res)
                log(f"  {b.kind} EndToEndLatency: avg {res['avg_ms']:.3f} ms p50/p99/p99.9 "
                    f"{res['p50']:.0f}/{res['p99']:.0f}/{res['p999']:.0f} ms")
            else:
                why = "killed at the timeout" if r.code is None else f"exit {r.code}"
                out["errors"].append(f"EndToEndLatency: {why}: {first_error(r.out)}")
                log(f"  {b.kind} {out['errors'][-1]}")
                break
        return out

    def warm_broker(self, b: BenchBroker, flush: str, info: dict) -> None:
        """Traffic before any measurement, so that no workload pays for a cold broker
        (Kafka's JIT): 1 KiB and 100 B records, uncompressed, lz4 and zstd. Discarded."""
        scale = 0.25 if (self.args.quick or flush == FLUSH_EVERY) else 1.0
        topic = "bench-broker-warmup"
        t0 = time.monotonic()
        self.tools.admin(b.bootstrap, "create", f"{topic}:1")
        passes = [
            (Workload("warm", 1024, "1", 1, "none"), int(150_000 * scale), Workload("warm", 1024, "1", 1, "zstd"), int(60_000 * scale)),
            (Workload("warm", 100, "1", 1, "lz4"), int(600_000 * scale), Workload("warm", 100, "1", 1, "none"), int(600_000 * scale)),
        ]
        for w1, n1, w2, n2 in passes:
            a1 = self.pp_args(b, w1, topic, n1, None)
            a2 = self.pp_args(b, w2, topic, n2, None)
            r = run_tool(self.tools.java("RillBench", "twice", "producer", str(len(a1)), *a1, *a2), 180, self.workdir)
            if r.code != 0:
                self.notes.append(f"{b.kind} warm-up traffic failed: {first_error(r.out)}")
        self.tools.admin(b.bootstrap, "delete", topic)
        os.sync()
        info["warmup_s"] = time.monotonic() - t0
        log(f"  {b.kind} warmed up in {info['warmup_s']:.0f} s")

    def run_broker(self, kind: str, flush: str, workloads: list[Workload]) -> None:
        if not workloads:
            return
        phase = f"{kind}/{flush}"
        wd = self.workdir / f"{kind}-{flush}"
        log(f"starting {kind} (flush policy: {flush})")
        b = BenchBroker(wd, settings=broker_settings(kind, flush), kind=kind)
        t0 = time.monotonic()
        b.start()
        start_s = time.monotonic() - t0
        mon = ProcMonitor(b.proc.pid)
        load0 = os.getloadavg()
        per = self.results.setdefault(kind, {})
        info = {"start_s": start_s, "pid": b.proc.pid, "command": b.command(), "loadavg_start": load0}
        try:
            self.warm_broker(b, flush, info)
            for w in workloads:
                if self.time_left() < 0:
                    per[w.name] = {"runs": [], "errors": ["skipped: time budget spent"]}
                    continue
                log(f" {kind}: {w.name} ({w.label})")
                try:
                    per[w.name] = self.run_workload(b, mon, w)
                except RuntimeError as e:
                    per[w.name] = {"runs": [], "errors": [str(e)[:500]]}
                    log(f"  failed: {str(e)[:300]}")
                if not b.running:
                    per[w.name]["errors"].append("broker died")
                    log(f"  {kind} died:\n{b.log_tail(30)}")
                    break
        finally:
            info["peak_rss_kb"] = mon.hwm_kb()
            info["cpu_s"] = mon.cpu_seconds()
            info["wall_s"] = time.monotonic() - t0
            info["loadavg_end"] = os.getloadavg()
            mon.stop()
            if b.running:
                try:
                    b.stop(timeout=30)
                except AssertionError as e:
                    self.notes.append(f"{kind} did not stop on SIGTERM: {str(e)[:200]}")
            self.results.setdefault("_brokers", {})[phase] = info
            log(f"stopped {kind}: peak RSS {info['peak_rss_kb'] / 1024:.1f} MiB, cpu {info['cpu_s']:.1f} s")
            if not self.args.keep:
                shutil.rmtree(wd, ignore_errors=True)


def parse_consumer_perf(out: str) -> dict | None:
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("start.time, end.time") and i + 1 < len(lines):
            names = [x.strip() for x in line.split(",")]
            vals = [x.strip() for x in lines[i + 1].split(",")]
            if len(vals) != len(names):
                return None
            d = dict(zip(names, vals))
            try:
                # ConsumerPerformance's MB is 2^20 bytes; convert to 10^6
                mib = 1024 * 1024 / MB
                return {
                    "nmsg": int(d["data.consumed.in.nMsg"]),
                    "mbps": float(d["MB.sec"]) * mib,
                    "rps": float(d["nMsg.sec"]),
                    "rebalance_ms": int(d.get("rebalance.time.ms", "0")),
                    "fetch_mbps": float(d.get("fetch.MB.sec", d["MB.sec"])) * mib,
                    "fetch_rps": float(d.get("fetch.nMsg.sec", d["nMsg.sec"])),
                }
            except (KeyError, ValueError):
                return None
    return None


# ---------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------


def disk_dd(dirpath: Path, mib: int, runs: int) -> dict:
    """dd bs=1M conv=fdatasync: buffered sequential write, one fdatasync at the end."""
    vals = []
    f = dirpath / "dd.bin"
    for _ in range(runs):
        t0 = time.monotonic()
        r = subprocess.run(
            ["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "conv=fdatasync"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        el = time.monotonic() - t0
        f.unlink(missing_ok=True)
        if r.returncode != 0:
            return {"error": r.stderr[-300:]}
        m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", r.stderr)
        vals.append(int(m[1]) / float(m[2]) / MB if m else mib * 1048576 / el / MB)
        os.sync()
    return summarize(vals)


def disk_sync_every_mib(dirpath: Path, mib: int, runs: int) -> dict:
    """Python: write 1 MiB, os.fdatasync, repeat (a flush after every 1 MiB append)."""
    buf = os.urandom(1 << 20)
    vals = []
    f = dirpath / "sync.bin"
    for _ in range(runs):
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            t0 = time.monotonic()
            for _ in range(mib):
                os.write(fd, buf)
                os.fdatasync(fd)
            vals.append(mib * (1 << 20) / (time.monotonic() - t0) / MB)
        finally:
            os.close(fd)
            f.unlink(missing_ok=True)
    return summarize(vals)


def loopback_tcp(seconds: float, runs: int) -> dict:
    """Two sockets on 127.0.0.1: sendall(1 MiB) in one thread, recv_into in another."""
    vals = []
    for _ in range(runs):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        got = [0, 0.0]

        def receiver():
            conn, _ = srv.accept()
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            t0 = time.monotonic()
            n = 0
            while True:
                k = conn.recv_into(view)
                if not k:
                    break
                n += k
            got[0], got[1] = n, time.monotonic() - t0
            conn.close()

        t = threading.Thread(target=receiver)
        t.start()
        c = socket.create_connection(("127.0.0.1", port))
        data = b"x" * (1 << 20)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            c.sendall(data)
        c.close()
        t.join(timeout=30)
        srv.close()
        vals.append(got[0] / got[1] / MB)
    return summarize(vals)


def summarize(vals: list[float]) -> dict:
    if not vals:
        return {}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals), "values": vals}


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def spread(runs: list[dict], key: str) -> str:
    vals = [r[key] for r in runs if r.get(key) is not None]
    if len(vals) < 2:
        return ""
    m = statistics.median(vals)
    return f" ±{(max(vals) - min(vals)) / 2 / m * 100:.0f}%" if m else ""


def fmt(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_report(ctx: dict) -> tuple[str, dict]:
    res = ctx["results"]
    R, K = res.get("rill", {}), res.get("kafka", {})
    wl: list[Workload] = ctx["workloads"]
    disk = ctx["limits"]["disk_dd"].get("median")
    head_w = next(w for w in wl if w.headline)
    hr = med(R.get(head_w.name, {}).get("runs", []), "mbps")
    hk = med(K.get(head_w.name, {}).get("runs", []), "mbps")
    head = ratio(hr, hk)
    lines = [f"produce throughput: {head:.2f}x Kafka" if head else "produce throughput: n/a (no Rill or no Kafka result for the headline)", ""]
    lines.append(f"# Rill vs Apache Kafka {bp.kafka_version()} — {ctx['date']}")
    lines.append("")
    lines.append(
        f"Rill `{ctx['git']}` on {ctx['machine']}. One broker at a time on 127.0.0.1; "
        f"{ctx['args'].runs} measured run(s) per workload, each in a client JVM warmed by a discarded pass; "
        "values are medians, ± is half the min–max range relative to the median. "
        "MB = 10^6 bytes of record payload."
    )
    lines.append("")

    # ---- targets
    tgt = targets(ctx)
    lines.append("## Targets")
    lines.append("")
    lines.append("| target | goal | measured | met |")
    lines.append("|---|---|---|---|")
    for name, goal, val, ok in tgt:
        lines.append(f"| {name} | {goal} | {val} | {'yes' if ok else ('no' if ok is not None else 'n/a')} |")
    lines.append("")

    # ---- produce table
    lines.append("## Produce (ProducerPerformance)")
    lines.append("")
    lines.append(
        "| workload | Rill MB/s | Kafka MB/s | Rill rec/s | Kafka rec/s | Rill p50/p99/p99.9 ms "
        "| Kafka p50/p99/p99.9 ms | Rill/Kafka | Rill % disk | Kafka % disk |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for w in wl:
        rr, kk = R.get(w.name, {}), K.get(w.name, {})
        rruns, kruns = rr.get("runs", []), kk.get("runs", [])
        rm, km = med(rruns, "mbps"), med(kruns, "mbps")
        if w.rate:
            # fixed rate: the throughput is the offered load; compare the p99 latency
            rat = ratio(med(rruns, "p99"), med(kruns, "p99"))
            rat_s = f"p99 {rat:.2f}x" if rat is not None else "n/a"
        else:
            rat = ratio(rm, km)
            rat_s = f"**{rat:.2f}x**" if rat is not None else "n/a"

        def lat(runs):
            if not runs:
                return "n/a"
            return f"{fmt(med(runs, 'p50'), 0)} / {fmt(med(runs, 'p99'), 0)} / {fmt(med(runs, 'p999'), 0)}"

        def pct(m):
            return f"{m / disk * 100:.0f}%" if (m is not None and disk and not w.rate) else "–"

        name = w.label + (" **(headline)**" if w.headline else "")
        lines.append(
            f"| {name} | {fmt(rm)}{spread(rruns, 'mbps')} | {fmt(km)}{spread(kruns, 'mbps')} "
            f"| {fmt(med(rruns, 'rps'), 0)} | {fmt(med(kruns, 'rps'), 0)} | {lat(rruns)} | {lat(kruns)} "
            f"| {rat_s} | {pct(rm)} | {pct(km)} |"
        )
        rows.append((w, rm, km, rruns, kruns))
    lines.append("")
    lines.append(
        "Latency is ProducerPerformance's send-to-acknowledgement time per record (whole "
        "milliseconds; the tool's resolution). In the max-throughput rows it is dominated "
        "by queueing in the producer's 32 MiB buffer; the fixed-rate rows are the latency "
        "comparison. For fixed-rate rows Rill/Kafka is the ratio of p99 latencies (lower "
        "is better); otherwise of MB/s (higher is better). % disk is payload MB/s over the "
        "measured disk limit below; without fsync the page cache absorbs writes, so it can "
        "exceed 100%."
    )
    lines.append("")
    cores = []
    for kind, side in (("Rill", R), ("Kafka", K)):
        hw = side.get(head_w.name, {})
        runs = hw.get("runs", [])
        if runs and hw.get("broker_cpu_s") is not None:
            wall = sum(x["wall_s"] for x in runs)
            client = sum(x["client_cpu_s"] for x in runs)
            cores.append(f"{kind}: client JVM {client / wall:.2f} cores, broker {hw['broker_cpu_s'] / wall:.2f} cores")
    if cores:
        lines.append(
            f"CPU during the headline runs (averaged over each tool process' life, warm-up pass "
            f"included; the machine has {os.cpu_count()}): " + "; ".join(cores) + ". When client plus "
            "broker approach the core count, the number is bounded by the machine, not the broker."
        )
        lines.append("")

    # ---- consume and e2e
    lines.append("## Consume and end-to-end")
    lines.append("")
    lines.append("| measurement | Rill | Kafka | Rill/Kafka |")
    lines.append("|---|---:|---:|---:|")
    for w in wl:
        for side_key, title in (("consumer_perf", "ConsumerPerformance (group subscribe)"),
                                ("assigned", "assign() consumer, no group (bench/java)")):
            if not w.consume:
                continue
            cells = []
            vals = []
            for side in (R, K):
                c = side.get(w.name, {}).get("consume", {})
                runs = c.get(side_key, [])
                key = "fetch_mbps" if side_key == "consumer_perf" else "mbps"
                v = med(runs, key)
                vals.append(v)
                if v is not None:
                    cells.append(f"{v:,.1f} MB/s, {med(runs, 'fetch_rps' if side_key == 'consumer_perf' else 'rps'):,.0f} rec/s")
                else:
                    errs = [e for e in c.get("errors", []) if e.startswith(side_key == "consumer_perf" and "ConsumerPerformance" or "assigned")]
                    why = "n/a (consumer groups not implemented yet, issue 4)" if (side is R and side_key == "consumer_perf") else "n/a"
                    cells.append(why + (f" — `{errs[0][:120]}`" if errs else ""))
            rt = ratio(*vals)
            lines.append(f"| {title}, {w.label.replace(' max', '')} topic | {cells[0]} | {cells[1]} | {f'{rt:.2f}x' if rt else '–'} |")
        if w.e2e:
            cells, vals = [], []
            for side in (R, K):
                e = side.get(w.name, {}).get("e2e", {})
                runs = e.get("runs", [])
                if runs:
                    vals.append(med(runs, "avg_ms"))
                    cells.append(f"avg {med(runs, 'avg_ms'):.3f} ms, p50/p99/p99.9 {fmt(med(runs, 'p50'), 0)}/{fmt(med(runs, 'p99'), 0)}/{fmt(med(runs, 'p999'), 0)} ms")
                else:
                    vals.append(None)
                    errs = e.get("errors", [])
                    why = "n/a (it commits offsets: needs the group coordinator, issue 4)" if side is R else "n/a"
                    cells.append(why + (f" — `{errs[0][:120]}`" if errs else ""))
            rt = ratio(*vals)
            lines.append(f"| EndToEndLatency {w.size} B acks={w.acks} ({ctx['args'].e2e_messages} records, one at a time) | {cells[0]} | {cells[1]} | {f'avg {rt:.2f}x' if rt else '–'} |")
    lines.append("")
    lines.append(
        "ConsumerPerformance: fetch MB/s (excludes the group join). The assign() consumer "
        "(bench/java/RillBench.java, same kafka-clients jar, consumer defaults) reads the "
        "whole topic from offset 0 with no group and no commits; MB/s from the first "
        "record to the last. Both read data the producer just wrote, so mostly from the "
        "page cache."
    )
    lines.append("")

    # ---- broker resources
    lines.append("## Broker resources")
    lines.append("")
    lines.append("| broker run | peak RSS (VmHWM) | CPU s (user+sys) | wall s | CPU s per GB produced | other processes' CPU during runs | load avg start → end |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for phase, info in ctx["results"].get("_brokers", {}).items():
        kind = phase.split("/")[0]
        side = res.get(kind, {})
        flush = phase.split("/")[1]
        gb = sum(v.get("bytes_measured", 0) for k, v in side.items()
                 if any(w.name == k and w.flush == flush for w in wl)) / 1e9
        cpu_m = sum(v.get("broker_cpu_s", 0) for k, v in side.items()
                    if any(w.name == k and w.flush == flush for w in wl))
        per_gb = f"{cpu_m / gb:.1f}" if gb else "–"
        runs_all = [x for k, v in side.items() if any(w.name == k and w.flush == flush for w in wl) for x in v.get("runs", [])]
        other = sum(x.get("other_cpu_s", 0) for x in runs_all)
        wall = sum(x.get("wall_s", 0) for x in runs_all)
        other_s = f"{other:.0f} s ({other / wall / (os.cpu_count() or 1) * 100:.0f}% of the machine)" if wall else "–"
        la0, la1 = info.get("loadavg_start", (0,)), info.get("loadavg_end", (0,))
        lines.append(
            f"| {kind}, flush {flush} | {info['peak_rss_kb'] / 1024:,.1f} MiB | {info['cpu_s']:,.1f} | {info['wall_s']:,.0f} "
            f"| {per_gb} | {other_s} | {la0[0]:.2f} → {la1[0]:.2f} |"
        )
    lines.append("")
    lines.append(
        "Peak RSS is the broker process' VmHWM over its whole run (for Kafka the java "
        "process, with its 1 GiB heap reserved by -Xms1g); CPU is utime+stime from "
        "/proc/<pid>/stat, all threads. CPU s per GB counts only the measured runs "
        "(broker CPU during them over payload bytes produced). Other processes' CPU is the "
        "machine's busy time (/proc/stat) during the measured runs minus the broker's and the "
        "client's: other engineers' builds and tests on a shared machine; high values mean "
        "noisy rows."
    )
    lines.append("")

    # ---- limits
    L = ctx["limits"]
    lines.append("## Machine limits")
    lines.append("")
    lines.append("| limit | median | min – max | how |")
    lines.append("|---|---:|---:|---|")
    for key, how in (
        ("disk_dd", f"`dd if=/dev/zero bs=1M count={ctx['args'].disk_mib} conv=fdatasync` into the data directory's file system (buffered writes, one fdatasync at the end)"),
        ("disk_sync_mib", f"Python: write 1 MiB then `os.fdatasync`, {ctx['args'].disk_mib // 4} times (a flush after every MiB)"),
        ("tcp", f"Python: one connection on 127.0.0.1, `sendall` 1 MiB in one thread, `recv_into` in another, {ctx['args'].tcp_secs:.0f} s"),
    ):
        v = L.get(key, {})
        if "median" in v:
            lines.append(f"| {key} | {v['median']:,.0f} MB/s | {v['min']:,.0f} – {v['max']:,.0f} | {how} |")
        else:
            lines.append(f"| {key} | n/a | | {how} {v.get('error', '')} |")
    lines.append("")

    # ---- settings
    lines.append("## Settings")
    lines.append("")
    for s in ctx["settings"]:
        lines.append(f"- {s}")
    lines.append("")
    prof = Path(ctx["args"].out) / f"{ctx['date']}-rill-profile.txt"
    if prof.exists():
        text = prof.read_text()
        lines.append("## Where the time goes (perf, one headline run against Rill)")
        lines.append("")
        lines.append(text.split("\n", 1)[0])
        lines.append("")
        for sec in ("whole machine, by thread name (self time)", "rill-broker only, by symbol (self time, % of rill-broker)"):
            if f"== {sec} ==" in text:
                body = text.split(f"== {sec} ==", 1)[1].split("\n== ", 1)[0].strip().splitlines()[:14]
                lines.append(f"{sec}:")
                lines.append("")
                lines.append("```")
                lines.extend(" ".join(l.split()[:4]) if "%" in l else l for l in body)
                lines.append("```")
                lines.append("")
        lines.append(
            "Thread names: `C1/C2 CompilerThre`, `java`, `kafka-producer-`, `GC Thread` are the "
            "ProducerPerformance JVM; `tokio-rt-worker` is Rill. Full listing: "
            f"[{prof.name}]({prof.name})."
        )
        lines.append("")
    if ctx["notes"]:
        lines.append("## Notes and failures")
        lines.append("")
        for n in ctx["notes"]:
            lines.append(f"- {n}")
        lines.append("")
    lines.append("## Commands")
    lines.append("")
    lines.append("```")
    for c in ctx["commands"]:
        lines.append(c)
    lines.append("```")
    lines.append("")
    lines.append(f"![chart]({ctx['date']}.png)")
    lines.append("")
    return "\n".join(lines), {"headline": head, "rows": rows, "targets": tgt}


def targets(ctx: dict) -> list[tuple]:
    res = ctx["results"]
    R, K = res.get("rill", {}), res.get("kafka", {})
    wl = ctx["workloads"]
    disk = ctx["limits"]["disk_dd"].get("median")
    head_w = next(w for w in wl if w.headline)
    hr = med(R.get(head_w.name, {}).get("runs", []), "mbps")
    hk = med(K.get(head_w.name, {}).get("runs", []), "mbps")
    out = []
    t = ratio(hr, hk)
    out.append(("produce throughput, 1 KiB acks=1 p=1", ">= 1.5x Kafka", f"{t:.2f}x" if t else "n/a", (t >= 1.5) if t else None))
    lat_w = next((w for w in wl if w.rate and w.size == 1024 and w.acks == "1" and w.flush == FLUSH_NEVER), None)
    if lat_w:
        rp = med(R.get(lat_w.name, {}).get("runs", []), "p99")
        kp = med(K.get(lat_w.name, {}).get("runs", []), "p99")
        r = ratio(rp, kp)
        val = f"{fmt(rp, 0)} ms vs {fmt(kp, 0)} ms" + (f" ({r:.2f}x)" if r is not None else "")
        ok = None if rp is None or kp is None else (rp <= kp / 2)
        out.append((f"p99 produce latency, {lat_w.label}", "<= 0.5x Kafka", val, ok))
    b = res.get("_brokers", {})
    rr, kr = b.get(f"rill/{FLUSH_NEVER}", {}).get("peak_rss_kb"), b.get(f"kafka/{FLUSH_NEVER}", {}).get("peak_rss_kb")
    r = ratio(rr, kr)
    out.append(("broker peak RSS", "<= 0.2x Kafka",
                f"{rr / 1024:.1f} MiB vs {kr / 1024:.1f} MiB ({r:.3f}x)" if r is not None else "n/a",
                (r <= 0.2) if r is not None else None))
    p = hr / disk if hr and disk else None
    out.append(("1 KiB acks=1 produce vs disk bandwidth", "> 70%", f"{p * 100:.0f}% ({hr:.0f} of {disk:.0f} MB/s)" if p else "n/a",
                (p > 0.7) if p else None))
    return out


def chart(ctx: dict, rows: list, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no chart: {e}"
    thr = [r for r in rows if not r[0].rate]
    lat = [r for r in rows if r[0].rate]
    fig, axes = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [len(thr) + 1, len(lat) + 2]})
    ax = axes[0]
    xs = range(len(thr))
    wdt = 0.38
    for off, idx, color, name in ((-wdt / 2, 3, "#d95f02", "Rill"), (wdt / 2, 4, "#1b9e77", f"Kafka {bp.kafka_version()}")):
        meds, lo, hi = [], [], []
        for r in thr:
            vals = [x["mbps"] for x in r[idx]]
            m = statistics.median(vals) if vals else 0
            meds.append(m)
            lo.append(m - min(vals) if vals else 0)
            hi.append(max(vals) - m if vals else 0)
        ax.bar([x + off for x in xs], meds, wdt, yerr=[lo, hi], capsize=3, label=name, color=color)
    tops = []
    for r in thr:
        vals = [x["mbps"] for x in r[3]] + [x["mbps"] for x in r[4]]
        tops.append(max(vals) if vals else 0)
    ymax = max(tops + [1]) * 1.18
    for x, r, top in zip(xs, thr, tops):
        rt = ratio(med(r[3], "mbps"), med(r[4], "mbps"))
        if rt is not None:
            ax.text(x, top + ymax * 0.01, f"{rt:.2f}x", ha="center", va="bottom", fontsize=8, fontweight="bold")
    disk = ctx["limits"]["disk_dd"].get("median")
    if disk and disk <= ymax:
        ax.axhline(disk, color="gray", linestyle="--", linewidth=1)
        ax.text(len(thr) - 0.5, disk, f" disk (dd fdatasync) {disk:.0f} MB/s", va="bottom", ha="right", fontsize=8, color="gray")
    elif disk:
        ax.text(0.99, 0.98, f"disk limit (dd conv=fdatasync) {disk:,.0f} MB/s: off the scale", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="gray")
    ax.set_ylim(0, ymax)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r[0].label.replace(" max", "").replace(", fsync every append", "\nfsync/append") for r in thr],
                       rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("produce MB/s (payload, median; bars = min–max)")
    ax.set_title("Max produce throughput (ProducerPerformance)")
    ax.legend(loc="upper left")
    ax = axes[1]
    labels, groups = [], []
    for r in lat:
        labels.append(r[0].label.replace("fixed ", "").replace(", fsync every append", "\nfsync/append"))
        groups.append(r)
    xs = range(len(groups))
    for off, idx, color, name in ((-wdt / 2, 3, "#d95f02", "Rill"), (wdt / 2, 4, "#1b9e77", "Kafka")):
        p99 = [med(g[idx], "p99") or 0 for g in groups]
        p50 = [med(g[idx], "p50") or 0 for g in groups]
        p999 = [med(g[idx], "p999") or 0 for g in groups]
        ax.bar([x + off for x in xs], p99, wdt, color=color, label=f"{name} p99 (tick: p50, top: p99.9)")
        ax.scatter([x + off for x in xs], p50, marker="_", s=200, color="black")
        ax.scatter([x + off for x in xs], p999, marker="v", s=25, color=color, edgecolors="black")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("symlog", linthresh=10)
    top = max([med(g[i], "p999") or 0 for g in groups for i in (3, 4)] + [10])
    ax.set_ylim(0, top * 2)
    ax.set_ylabel("latency ms (whole ms; log above 10)")
    ax.set_title("Fixed-rate produce latency")
    ax.legend(fontsize=8)
    head = ctx.get("headline")
    fig.suptitle(f"Rill vs Apache Kafka on loopback — {ctx['date']}"
                 + (f" — produce throughput {head:.2f}x Kafka" if head else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def update_readme(md_name: str, png_name: str, table: str) -> None:
    readme = BENCH / "README.md"
    if not readme.exists():
        return
    text = readme.read_text()
    start, end = "<!-- latest-results:start -->", "<!-- latest-results:end -->"
    if start not in text or end not in text:
        return
    block = (
        f"{start}\n_Latest: [results/{md_name}](results/{md_name}), written by `bash bench/run.sh`._\n\n"
        f"{table}\n\n![latest chart](results/{png_name})\n{end}"
    )
    pre, rest = text.split(start, 1)
    _, post = rest.split(end, 1)
    readme.write_text(pre + block + post)


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def busy_processes() -> list[str]:
    """Other engineers' builds and tests (cargo, rustc, pytest) that would skew timings."""
    me = os.getpid()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(r"(^|/)(cargo|rustc|pytest)\b|-m pytest|cargo-clippy", cmd):
            out.append(f"{p.name}: {cmd[:100]}")
    return out


def wait_idle(max_wait: float) -> list[str]:
    deadline = time.monotonic() + max_wait
    busy = busy_processes()
    while busy and time.monotonic() < deadline:
        log(f"machine busy ({len(busy)} build/test processes, e.g. {busy[0]}); waiting (at most {deadline - time.monotonic():.0f} s more)")
        time.sleep(15)
        busy = busy_processes()
    return busy


def data_root() -> Path:
    """A temp dir on the same file system as the repository (the data disk)."""
    explicit = os.environ.get("RILL_BENCH_DIR")
    if explicit:
        p = Path(explicit)
        p.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="rill-bench-", dir=p))
    repo_dev = os.stat(REPO).st_dev
    tmp = Path(tempfile.gettempdir())
    if os.stat(tmp).st_dev == repo_dev:
        return Path(tempfile.mkdtemp(prefix="rill-bench-", dir=tmp))
    d = BENCH / ".work"
    d.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="rill-bench-", dir=d))


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "broker", "Cargo.lock", "Cargo.toml"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def java_version() -> str:
    r = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    return (r.stderr.splitlines() or ["?"])[0]


def profile_rill(args, tools: Tools, workdir: Path, w: Workload, out_path: Path) -> str:
    """One headline run against Rill with `perf record -a` (cpu-clock, call graphs): where
    the machine's CPU goes (client JVM, broker, kernel), and inside Rill by symbol."""
    if not shutil.which("perf"):
        return "perf not installed"
    wd = workdir / "rill-profile"
    b = BenchBroker(wd, settings=broker_settings("rill", w.flush), kind="rill")
    b.start()
    pid = b.proc.pid
    perf_data = wd / "perf.data"
    runner = Runner(args, tools, workdir, time.monotonic() + 600)
    topic = "bench-profile"
    tools.admin(b.bootstrap, "create", f"{topic}:{w.partitions}")
    n = int((60 if args.quick else 300) * MB // w.size)
    warm_n = n // 3
    # the profile covers both passes of the tool's JVM, but perf starts after the JVM's
    # first second or so; the warm-up pass is a third of the measured one
    perf = subprocess.Popen(["perf", "record", "-a", "-e", "cpu-clock", "-F", "499", "-g", "-o", str(perf_data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pp = None
    try:
        r = runner.producer_perf(b, w, topic, warm_n, n, 240)
        pp = parse_producer_perf(measured_part(r.out))
    finally:
        perf.send_signal(signal.SIGINT)
        try:
            perf.wait(timeout=120)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait(timeout=10)
        if b.running:
            b.stop(timeout=30)
    if not perf_data.exists():
        return "perf record produced no data"
    rep = []
    for title, extra in (
        ("whole machine, by thread name (self time)", ["--no-children", "--sort", "comm"]),
        ("whole machine, by thread name and object (self time)", ["--no-children", "--sort", "comm,dso"]),
        ("rill-broker only, by symbol (self time, % of rill-broker)",
         ["--pid", str(pid), "--percentage", "relative", "--no-children", "--sort", "dso,symbol"]),
        ("rill-broker only, inclusive time by symbol (% of rill-broker)",
         ["--pid", str(pid), "--percentage", "relative", "--children", "--sort", "symbol"]),
    ):
        r = subprocess.run(["perf", "report", "-i", str(perf_data), "--stdio", "-g", "none", "--percent-limit", "0.8", *extra],
                           capture_output=True, text=True, timeout=600)
        body = "\n".join(l.rstrip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#"))
        rep.append(f"== {title} ==\n{body[:12000]}\n")
    header = (
        f"perf record -a -e cpu-clock -F 499 -g during one ProducerPerformance run against Rill "
        f"({w.label}; warm-up pass {warm_n} + measured pass {n} records"
        + (f"; measured {pp['rps']:,.0f} rec/s, {pp['rps'] * w.size / MB:.1f} MB/s under perf" if pp else "")
        + f"). rill-broker pid {pid}; the client is the java process.\n\n"
    )
    out_path.write_text(header + "\n".join(rep))
    if not args.keep:
        shutil.rmtree(wd, ignore_errors=True)
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke matrix: 4 workloads, 1 run, 3 s each")
    ap.add_argument("--runs", type=int, default=None, help="measured runs per workload (default 3; --quick 1)")
    ap.add_argument("--secs", type=float, default=None, help="target seconds per max-throughput run (default 5; --quick 3)")
    ap.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    ap.add_argument("--brokers", default="rill,kafka", help="which brokers to run (default rill,kafka)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--no-profile", action="store_true", help="skip the perf profile of Rill")
    ap.add_argument("--keep", action="store_true", help="keep broker data directories")
    ap.add_argument("--budget-min", type=float, default=30.0, help="stop starting workloads after this many minutes")
    ap.add_argument("--wait-idle", type=float, default=180.0, help="wait at most this many seconds for other builds/tests to finish")
    ap.add_argument("--disk-mib", type=int, default=None, help="MiB per dd run (default 2048; --quick 512)")
    ap.add_argument("--tcp-secs", type=float, default=3.0)
    ap.add_argument("--e2e-messages", type=int, default=None, help="records per EndToEndLatency run (default 3000)")
    ap.add_argument("--e2e-timeout", type=float, default=60.0)
    ap.add_argument("--consume-mb", type=int, default=None, help="MB read per consumer pass (default 400; --quick 100)")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--date", default=None, help="name of the results files (default today, YYYY-MM-DD)")
    ap.add_argument("--report-only", metavar="JSON", help="re-render .md/.png/README from a results .json; run nothing")
    args = ap.parse_args()
    if args.report_only:
        return report_only(Path(args.report_only))
    args.runs = args.runs or (1 if args.quick else 3)
    args.secs = args.secs or (3.0 if args.quick else 5.0)
    args.disk_mib = args.disk_mib or (512 if args.quick else 2048)
    args.e2e_messages = args.e2e_messages or (1000 if args.quick else 3000)
    args.consume_mb = args.consume_mb or (100 if args.quick else 400)
    t_start = time.monotonic()
    date = args.date or dt.date.today().isoformat()

    workloads = matrix(args.quick)
    if args.only:
        keep = set(args.only.split(","))
        workloads = [w for w in workloads if w.name in keep or w.headline]
    brokers = [b for b in args.brokers.split(",") if b]

    if not args.no_build:
        log("cargo build --release -p rill-broker")
        r = subprocess.run(["cargo", "build", "--release", "-p", "rill-broker"], cwd=REPO, timeout=1800)
        if r.returncode != 0:
            log("build failed")
            return 1
    if not bp.rill_binary().exists():
        log(f"{bp.rill_binary()} missing")
        return 1

    root = data_root()
    log(f"work dir {root}")
    classes = bp.cache_dir() / "bench-classes" / bp.kafka_version()
    classes.mkdir(parents=True, exist_ok=True)
    subprocess.run(["javac", "--release", "17", "-nowarn", "-d", str(classes), "-cp", bp.kafka_jars("clients"),
                    str(BENCH / "java" / "RillBench.java")], check=True, timeout=300)
    tools = Tools(classes, root)

    still_busy = wait_idle(args.wait_idle)
    notes = []
    if still_busy:
        notes.append(f"other builds/tests were running when the benchmark started ({len(still_busy)} processes, e.g. `{still_busy[0][:80]}`); numbers may be noisy")

    log("limits: disk (dd conv=fdatasync), disk (fdatasync per MiB), loopback TCP")
    limits = {
        "disk_dd": disk_dd(root, args.disk_mib, 3),
        "disk_sync_mib": disk_sync_every_mib(root, max(64, args.disk_mib // 4), 1),
        "tcp": loopback_tcp(args.tcp_secs, 3),
    }
    for k, v in limits.items():
        log(f"  {k}: {v.get('median', float('nan')):,.0f} MB/s {v.get('error', '')}")

    runner = Runner(args, tools, root, t_start + args.budget_min * 60)
    runner.notes = notes
    for flush in (FLUSH_NEVER, FLUSH_EVERY):
        ws = [w for w in workloads if w.flush == flush]
        for kind in brokers:
            runner.run_broker(kind, flush, ws)

    # what failed, in words
    for kind in brokers:
        for wname, r in runner.results.get(kind, {}).items():
            for e in r.get("errors", []):
                notes.append(f"{kind} {wname}: {e[:300]}")
            for e in r.get("consume", {}).get("errors", []):
                notes.append(f"{kind} {wname} consume: {e[:300]}")
            for e in r.get("e2e", {}).get("errors", []):
                notes.append(f"{kind} {wname} end-to-end: {e[:300]}")
    late_busy = busy_processes()
    if late_busy:
        notes.append(f"other builds/tests were running when the benchmark ended ({len(late_busy)} processes)")

    head_w = next(w for w in workloads if w.headline)
    rm = med(runner.results.get("rill", {}).get(head_w.name, {}).get("runs", []), "mbps")
    km = med(runner.results.get("kafka", {}).get(head_w.name, {}).get("runs", []), "mbps")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    prof_note = ""
    disk_mb = limits["disk_dd"].get("median")
    short = km is None or rm is None or rm < 1.5 * km or (disk_mb is not None and rm < 0.7 * disk_mb)
    if not args.no_profile and "rill" in brokers and short:
        log("Rill is short of a throughput target on the headline: profiling one run with perf")
        try:
            err = profile_rill(args, tools, root, head_w, out_dir / f"{date}-rill-profile.txt")
            prof_note = err or f"profile: [{date}-rill-profile.txt]({date}-rill-profile.txt)"
        except Exception as e:  # noqa: BLE001 - a failed profile must not lose the results
            prof_note = f"profile failed: {e}"
        notes.append(prof_note)

    total = time.monotonic() - t_start
    settings = [
        f"Apache Kafka {bp.kafka_version()} (kafka_2.13 broker and kafka-tools from Maven Central, cached by tests/tools/install.sh), "
        f"single-node KRaft (broker+controller in one JVM), JVM `{' '.join(KAFKA_STOCK_JVM)}` (the stock kafka-server-start.sh heap and GC flags); {java_version()}",
        "Rill: `target/release/rill-broker dev` (one tokio multi-thread runtime)",
        "flush policy (matrix): never fsync from the broker — Kafka's default (`log.flush.interval.messages` = Long.MAX, `log.flush.interval.ms` unset); "
        "Rill `--set log.flush.interval.messages=9223372036854775807 --set log.flush.interval.ms=9223372036854775807`",
        "flush policy (durability rows): fsync after every append — `log.flush.interval.messages=1` for both",
        "same data disk: both brokers' log dirs under " + str(root) + " (same file system as the repository); topics created with replication factor 1 and deleted after each workload; `sync` between workloads",
        "Kafka housekeeping: `file.delete.delay.ms=1000` (deleted topics' files go after 1 s, not 60 s); everything else as broker_process.py's single-node settings",
        "producer (both): ProducerPerformance defaults (batch.size 16384, linger.ms 5, buffer.memory 32 MiB) plus `acks`, `compression.type`, `enable.idempotence=false` "
        "(Rill has no InitProducerId yet); fixed-rate rows also `linger.ms=0`; random uppercase-letter payloads (the tool's --record-size); client JVMs `" + " ".join(TOOL_JVM) + "`",
        "before the first workload each broker gets ~350 MB of discarded warm-up traffic (1 KiB and 100 B records; none, lz4, zstd) so no workload pays for a cold JIT; "
        f"each workload: a fresh topic; for max throughput a discarded calibration run (warms the broker, measures the rate), then {args.runs} run(s) sized to last ~{args.secs:.0f} s; "
        "every tool run is a fresh JVM that first makes a discarded warm-up pass (`RillBench twice`: the tool's own entry point called twice), "
        "so the client's JIT compilation is not measured",
        "clients and broker share the machine's CPUs (2 cores here): the client JVM's CPU is part of every number",
        f"order: Rill then Kafka for the matrix, then Rill then Kafka for the durability rows; total wall time {total / 60:.1f} min",
    ]
    commands = commands_for(args, sys.argv[1:])
    saved = {"results": runner.results, "limits": limits, "notes": notes, "settings": settings,
             "commands": commands, "git": git_rev(), "machine": machine(), "wall_s": total, "args": vars(args)}
    (out_dir / f"{date}.json").write_text(json.dumps(saved, indent=1, default=str))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return write_outputs(date, out_dir, saved, workloads, args)


def write_outputs(date: str, out_dir: Path, saved: dict, workloads: list[Workload], args) -> int:
    """<date>.md, <date>.png and the README block, from the results (also re-rendered
    from <date>.json by --report-only)."""
    ctx = {
        "results": saved["results"], "workloads": workloads, "limits": saved["limits"], "date": date,
        "git": saved["git"], "machine": saved["machine"], "args": args, "settings": saved["settings"],
        "notes": saved["notes"], "commands": saved["commands"],
    }
    md, summary = build_report(ctx)
    ctx["headline"] = summary["headline"]
    md_path = out_dir / f"{date}.md"
    png_path = out_dir / f"{date}.png"
    md_path.write_text(md)
    err = chart(ctx, summary["rows"], png_path)
    if err:
        log(err)
    # the README shows the headline, the targets and the produce table
    table = md.split("## Consume and end-to-end")[0].split("\n", 2)[2]
    table = table.replace("# Rill vs Apache Kafka", "### Rill vs Apache Kafka", 1)
    table = table.replace("\n## ", "\n#### ")
    if out_dir.resolve() == (BENCH / "results").resolve():
        update_readme(md_path.name, png_path.name, md.splitlines()[0] + "\n\n" + table.strip())
    log(f"wrote {md_path} and {png_path} ({saved.get('wall_s', 0) / 60:.1f} min of benchmarking)")
    print(md.splitlines()[0])
    for name, goal, val, ok in summary["targets"]:
        print(f"  {name}: {val} (goal {goal}) {'MET' if ok else 'not met' if ok is not None else 'n/a'}")
    return 0


def commands_for(args, argv: list[str]) -> list[str]:
    return [
        "bash bench/run.sh" + (" " + " ".join(argv) if argv else ""),
        "# each tool below runs as `java -cp <kafka-tools + deps>:<bench classes> RillBench twice producer|consumer|e2e K <K warm-up args> <args>`",
        "java -cp <kafka-tools + deps> org.apache.kafka.tools.ProducerPerformance --topic T --num-records N --record-size S "
        "--throughput -1|RATE --producer-props bootstrap.servers=127.0.0.1:P acks=1|all compression.type=none|lz4|zstd enable.idempotence=false",
        "java ... org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:P --topic T --messages N --timeout 10000 --group G",
        "java ... org.apache.kafka.tools.EndToEndLatency 127.0.0.1:P T N 1 1024 e2e.properties   # enable.idempotence=false",
        "java ... RillBench consume 127.0.0.1:P T PARTITIONS N 60000   # bench/java/RillBench.java",
        f"dd if=/dev/zero of=<data dir>/dd.bin bs=1M count={args.disk_mib} conv=fdatasync",
    ]


def report_only(path: Path) -> int:
    saved = json.loads(path.read_text())
    a = argparse.Namespace(**saved["args"])
    names = set(saved["results"].get("rill", {})) | set(saved["results"].get("kafka", {}))
    workloads = [w for w in matrix(a.quick) if w.name in names]
    saved.setdefault("git", "unknown")
    saved.setdefault("machine", machine())
    saved.setdefault("commands", commands_for(a, []))
    date = path.name.removesuffix(".json")
    return write_outputs(date, path.parent, saved, workloads, a)


if __name__ == "__main__":
    sys.exit(main())
