#!/usr/bin/env python3
"""Rill vs Apache Kafka as 3-broker clusters: replication factor 3, acks=all, on loopback.

Run it through `bash bench/cluster.sh` (installs the tools, then calls this file with the
e2e venv's Python, which has what tests/e2e/cluster_process.py imports). In order:

  1. builds Rill in release mode (cargo build --release -p rill-broker; CARGO_TARGET_DIR
     is honoured, RILL_BROKER_BIN picks another binary);
  2. compiles bench/java/RillBench.java (as bench/run.py does);
  3. starts a 3-node Rill cluster (`rill-broker run --config`, node i on 127.0.0.i) with
     tests/e2e/cluster_process.py, warms it up, runs the workloads, stops it; then the
     same for a 3-node Apache Kafka KRaft cluster (broker,controller combined);
  4. writes bench/results/<date>-cluster.md and .json.

Workloads (every topic: replication factor 3, min.insync.replicas=2, 1 KiB records,
acks=all, no compression; Kafka's own ProducerPerformance from the cached jars):

  c-p3-max        max throughput, 3 partitions (headline); then ConsumerPerformance
                  (and bench/java's group-less assign() consumer) of what was written
  c-p1-max        max throughput, 1 partition
  c-p3-fixed      fixed rate (--rate, default 2,000 records/s), linger.ms=0: latency

Per target: MB/s, records/s, p50/p99/p99.9 latency, the sum of the three brokers' peak
RSS (VmHWM) and CPU seconds (utime+stime), and the ratios Rill/Kafka. A report, not a
test: nothing is asserted on timings. Every loop is bounded by count and time, every
child has a timeout, and every broker started is stopped by PID in a finally block.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
_target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
if not _target_dir.is_absolute():
    _target_dir = REPO / _target_dir
os.environ.setdefault("RILL_BROKER_BIN", str(_target_dir / "release" / "rill-broker"))
sys.path.insert(0, str(BENCH))

import run as single  # noqa: E402  bench/run.py: tools, monitors and parsers, reused unchanged

bp = single.bp  # tests/e2e/broker_process.py
try:
    import cluster_process as cp  # noqa: E402  tests/e2e/cluster_process.py, reused unchanged
except ImportError as e:  # pytest or confluent_kafka missing: not the e2e venv
    sys.exit(f"bench/cluster.py needs the e2e venv (pytest, confluent-kafka): run `bash bench/cluster.sh` ({e})")

MB = single.MB
MiB = 1024 * 1024
LONG_MAX = single.LONG_MAX
log = single.log
med, spread, fmt, ratio = single.med, single.spread, single.fmt, single.ratio
N_NODES = 3
RF = 3
MIN_ISR = 2

# Both clusters: the same flush policy as bench/run.py's matrix (Kafka's default: the
# broker never fsyncs, the page cache decides; Rill's `run` default fsyncs every append),
# the same offsets topic size and no initial rebalance delay for ConsumerPerformance.
COMMON = {
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
}
RILL_EXTRA = {
    **COMMON,
    "log.flush.interval.messages": LONG_MAX,
    "log.flush.interval.ms": LONG_MAX,
}
# cluster_process.py tunes Kafka for fault tests (fast failure detection, small thread
# pools, fsync per append); a benchmark runs Kafka's stock values instead.
KAFKA_EXTRA = {
    **COMMON,
    "log.flush.interval.messages": LONG_MAX,  # Kafka's default; log.flush.interval.ms unset
    "num.io.threads": "8",
    "num.network.threads": "3",
    "num.replica.fetchers": "1",
    "background.threads": "10",
    "broker.heartbeat.interval.ms": "2000",
    "broker.session.timeout.ms": "9000",
    "controller.quorum.election.timeout.ms": "1000",
    "controller.quorum.fetch.timeout.ms": "2000",
    "leader.imbalance.check.interval.seconds": "300",
    # housekeeping between workloads, as bench/run.py: deleted topics' files go after 1 s
    "file.delete.delay.ms": "1000",
}


def kafka_jvm(heap: str) -> list[str]:
    """bench/run.py's stock kafka-server-start.sh flags, with the heap per node."""
    out = []
    for f in single.KAFKA_STOCK_JVM:
        if f.startswith("-Xms"):
            f = f"-Xms{heap}"
        elif f.startswith("-Xmx"):
            f = f"-Xmx{heap}"
        out.append(f)
    return out


class BenchCluster(cp.Cluster):
    """cluster_process.Cluster with Kafka's stock JVM flags instead of the small C1-only,
    serial-GC JVM the fault tests use."""

    def __init__(self, *a, heap: str = "1g", **kw):
        super().__init__(*a, **kw)
        self.jvm = kafka_jvm(heap)

    def command(self, i: int) -> list[str]:
        cmd = super().command(i)
        if self.kind == "kafka":
            n = len(cp.KAFKA_JVM)
            if cmd[1 : 1 + n] != cp.KAFKA_JVM:
                raise RuntimeError("cluster_process.py changed its Kafka command line; update bench/cluster.py")
            cmd = [cmd[0], *self.jvm, *cmd[1 + n :]]
        return cmd


def workloads(args) -> list[single.Workload]:
    W = single.Workload
    out = [W("c-p3-max", 1024, "all", 3, headline=True, consume=True)]
    if 1 in args.partitions_max:
        out.append(W("c-p1-max", 1024, "all", 1))
    if args.rate > 0:
        out.append(W("c-p3-fixed", 1024, "all", 3, rate=args.rate))
    return out


def cluster_cpu(mons: dict) -> float:
    return sum(m.cpu_seconds() for m in mons.values())


ANSI = re.compile(r"\x1b\[[0-9;]*m")
FINDINGS = {
    "errors": re.compile(r"\bERROR\b|\bFATAL\b|panicked"),
    "warnings": re.compile(r"\bWARN\b"),
    "isr_changes": re.compile(r"Shrinking ISR|Expanding ISR|asking for an ISR change|ISR change refused"),
}


def log_offsets(c: cp.Cluster) -> dict:
    """Where each node's log ends now (findings are counted from here on)."""
    out = {}
    for i, nd in c.nodes.items():
        for p in sorted(nd.workdir.glob("node-*.log")):
            try:
                out[str(p)] = p.stat().st_size
            except OSError:
                pass
    return out


def node_log_findings(c: cp.Cluster, since: dict | None = None, limit: int = 3) -> dict:
    """Errors, warnings and ISR changes in each node's log, after `since` (byte offsets
    per log file; the lines before, e.g. Raft votes refused while the peers start, are
    counted apart as `*_at_start`)."""
    since = since or {}
    out = {}
    for i, nd in c.nodes.items():
        found = {k: [] for k in FINDINGS}
        at_start = {k: 0 for k in FINDINGS}
        for p in sorted(nd.workdir.glob("node-*.log")):
            try:
                data = p.read_bytes()
            except OSError:
                continue
            cut = since.get(str(p), 0)
            pos = 0
            for raw in data.split(b"\n"):
                line = ANSI.sub("", raw.decode(errors="replace")).strip()
                early = pos < cut
                pos += len(raw) + 1
                for k, pat in FINDINGS.items():
                    if pat.search(line):
                        if early:
                            at_start[k] += 1
                        else:
                            found[k].append(line[:300])
                        break
        out[i] = {**{k: len(v) for k, v in found.items()},
                  **{f"{k}_at_start": v for k, v in at_start.items()},
                  "examples": {k: v[:limit] for k, v in found.items() if v}}
    return out


class ClusterRunner:
    def __init__(self, args, tools: single.Tools, root: Path):
        self.args = args
        self.tools = tools
        self.root = root
        # bench/run.py's Runner: producer_perf (RillBench twice producer) and consume
        # (ConsumerPerformance twice + RillBench consume); it only needs .bootstrap/.kind
        self.r = single.Runner(args, tools, root, time.monotonic() + 3600)
        self.results: dict = {}
        self.clusters: dict = {}
        self.notes: list[str] = []
        self.example_cmds: dict = {}

    def time_left(self) -> float:
        return self.r.time_left()

    # ---- topics ------------------------------------------------------------------------
    def create(self, c: cp.Cluster, topic: str, partitions: int) -> dict:
        c.create_topic(topic, partitions=partitions, rf=RF, timeout=60)
        return {p: c.leader_of(topic, p) for p in range(partitions)}

    def delete(self, c: cp.Cluster, topic: str) -> str | None:
        try:
            admin = c.admin()
            admin.delete_topics([topic], operation_timeout=30, request_timeout=30)[topic].result(timeout=45)
            return None
        except Exception as e:  # noqa: BLE001 - reported, never fatal
            return f"delete topic {topic}: {str(e)[:200]}"

    # ---- warm-up -----------------------------------------------------------------------
    def warm(self, c: cp.Cluster, b, info: dict) -> None:
        """Discarded acks=all traffic before any measurement, the same rule for both:
        passes of about --warm-pass-secs each (a fresh client JVM, RillBench twice)
        until the rate stops rising (within 10% of the pass before) or --warm-secs is
        spent. Kafka's three JVMs spend their first minutes in the C2 compiler; a
        fixed small warm-up measured a cold Kafka at a fifth of its warm rate."""
        a = self.args
        t0 = time.monotonic()
        topic = "cbench-warmup"
        self.create(c, topic, 3)
        w = single.Workload("warm", 1024, "all", 3)
        rates: list[float] = []
        sent = 0
        n = 10_000  # first pass: 2 x 10 MB, to measure the rate
        for k in range(a.warm_max_passes):
            left = a.warm_secs - (time.monotonic() - t0)
            if left <= 0:
                break
            r = self.r.producer_perf(b, w, topic, n, n, timeout=max(60.0, left * 2 + 60))
            pp = single.parse_producer_perf(single.measured_part(r.out))
            if r.code != 0 or pp is None:
                self.notes.append(f"{c.kind} warm-up pass {k + 1} failed: exit {r.code}: {single.first_error(r.out)}")
                break
            sent += 2 * n
            rates.append(pp["rps"])
            if len(rates) >= 3 and rates[-1] <= rates[-2] * 1.10:
                break
            n = max(5000, int(pp["rps"] * min(a.warm_pass_secs, max(1.0, left)) / 2))
        info["warmup_rates"] = rates
        err = self.delete(c, topic)
        if err:
            self.notes.append(f"{c.kind} warm-up: {err}")
        os.sync()
        info["warmup_s"] = time.monotonic() - t0
        info["warmup_records"] = sent
        log(f"  {c.kind} warmed up in {info['warmup_s']:.0f} s ({sent:,} records of 1 KiB, acks=all, 3 partitions; "
            f"pass rates {', '.join(f'{x:,.0f}' for x in rates)} rec/s)")

    # ---- one workload ------------------------------------------------------------------
    def run_workload(self, c: cp.Cluster, mons: dict, b, w: single.Workload) -> dict:
        a = self.args
        res: dict = {"runs": [], "errors": []}
        topic = f"cbench-{w.name}-{int(time.time() * 1000) % 10**9}"
        res["leaders"] = self.create(c, topic, w.partitions)
        log(f"  {c.kind} {topic}: leaders {res['leaders']}")
        produced = 0
        try:
            if w.rate:
                n = int(w.rate * a.fixed_secs)
                warm_n = min(max(20000, w.rate * 4), 64 * MB // w.size)
                timeout = a.fixed_secs * 4 + 120
            else:
                cal_n = max(2000, int(a.cal_mb * MB) // w.size)
                r = self.r.producer_perf(b, w, topic, cal_n, cal_n, timeout=300)
                pp = single.parse_producer_perf(single.measured_part(r.out))
                if pp is None or r.code != 0:
                    res["errors"].append(f"calibration: exit {r.code}: {single.first_error(r.out)}")
                    return res
                produced += 2 * pp["records"]
                res["calibration_rps"] = pp["rps"]
                n = max(5000, min(int(pp["rps"] * a.secs), 50_000_000))
                warm_n = max(2000, min(int(pp["rps"] * 1.5), n))
                timeout = a.secs * 8 + 120
            res["records_per_run"] = n
            res["warm_records_per_run"] = warm_n
            cpu0 = cluster_cpu(mons)
            for i in range(a.runs):
                if self.time_left() < 0:
                    res["errors"].append(f"time budget spent after {i} runs")
                    break
                per0 = {k: m.cpu_seconds() for k, m in mons.items()}
                sys0 = single.system_busy_seconds()
                warm = self.r.pp_args(b, w, topic, warm_n, None)
                measured = self.r.pp_args(b, w, topic, n, w.rate)
                self.example_cmds.setdefault(w.name, self.tools.java("RillBench", "twice", "producer", str(len(warm)), *warm, *measured))
                r = self.r.producer_perf(b, w, topic, warm_n, n, timeout)
                per1 = {k: m.cpu_seconds() for k, m in mons.items()}
                sys1 = single.system_busy_seconds()
                pp = single.parse_producer_perf(single.measured_part(r.out))
                if r.code is None:
                    res["errors"].append(f"run {i + 1}: killed after {timeout:.0f} s")
                    continue
                if pp is None or r.code != 0:
                    res["errors"].append(f"run {i + 1}: exit {r.code}: {single.first_error(r.out)}")
                    continue
                exc = [ln.strip()[:200] for ln in r.out.splitlines() if re.search(r"Exception|WARN|ERROR", ln)]
                if exc:
                    res["errors"].append(f"run {i + 1}: {len(exc)} warning/exception line(s), e.g. {exc[0]}")
                produced += pp["records"] + warm_n
                bcpu = sum(per1[k] - per0[k] for k in mons)
                pp["mbps"] = pp["rps"] * w.size / MB
                pp["wall_s"] = r.wall
                pp["client_cpu_s"] = r.cpu
                pp["broker_cpu_s"] = bcpu
                pp["broker_cpu_s_per_node"] = {k: per1[k] - per0[k] for k in mons}
                pp["other_cpu_s"] = max(0.0, (sys1 - sys0) - r.cpu - bcpu)
                res["runs"].append(pp)
                log(f"  {c.kind} {w.name} run {i + 1}: {pp['rps']:,.0f} rec/s {pp['mbps']:.1f} MB/s "
                    f"p50/p99/p99.9 {pp['p50']:.0f}/{pp['p99']:.0f}/{pp['p999']:.0f} ms "
                    f"(cpu s: client {r.cpu:.1f}, brokers {bcpu:.1f}, others {pp['other_cpu_s']:.1f}; {r.wall:.1f} s)")
            res["broker_cpu_s"] = cluster_cpu(mons) - cpu0
            res["bytes_measured"] = sum(x["records"] for x in res["runs"]) * w.size
            try:
                res["isr_after"] = {p: c.isr_of(topic, p) for p in range(w.partitions)}
                res["leaders_after"] = {p: c.leader_of(topic, p) for p in range(w.partitions)}
            except (OSError, ConnectionError) as e:
                res["errors"].append(f"metadata after the runs: {e}")
            if w.consume and produced and self.time_left() > 0:
                res["consume"] = self.r.consume(b, w, topic, produced)
                self.example_cmds.setdefault("consume", [
                    "java", *single.TOOL_JVM, "-cp", "<kafka-tools + deps>:<bench classes>", "RillBench", "twice", "consumer", "10",
                    "--bootstrap-server", c.bootstrap, "--topic", topic, "--messages", str(res["consume"]["records"]),
                    "--timeout", "10000", "--group", "bench-warm-0", "<the same with --group bench-0>"])
        finally:
            err = self.delete(c, topic)
            if err:
                res["errors"].append(err)
            os.sync()
        return res

    # ---- one cluster -------------------------------------------------------------------
    def run_target(self, kind: str, wls: list[single.Workload], share_s: float) -> None:
        a = self.args
        self.r.deadline = time.monotonic() + share_s
        wd = self.root / f"{kind}-cluster"
        extra = RILL_EXTRA if kind == "rill" else KAFKA_EXTRA
        c = BenchCluster(wd, n=N_NODES, extra=extra, kind=kind, rf=RF, heap=a.kafka_heap)
        per = self.results.setdefault(kind, {})
        info: dict = {"base_port": c.base, "bootstrap": c.bootstrap, "budget_s": share_s}
        self.clusters[kind] = info
        mons: dict = {}
        ready_logs: dict = {}
        t0 = time.monotonic()
        log(f"starting a {N_NODES}-node {kind} cluster in {wd} (bootstrap {c.bootstrap})")
        try:
            c.start(timeout=a.start_timeout)
            info["start_s"] = time.monotonic() - t0
            mons = {i: single.ProcMonitor(nd.proc.pid) for i, nd in c.nodes.items()}
            info["pids"] = {i: nd.proc.pid for i, nd in c.nodes.items()}
            info["commands"] = {i: c.command(i) for i in c.nodes}
            info["config_node1"] = (c.nodes[1].config_path).read_text()
            info["loadavg_start"] = os.getloadavg()
            info["cpu_after_start_s"] = cluster_cpu(mons)
            ready_logs = log_offsets(c)
            log(f"  {kind} cluster ready in {info['start_s']:.1f} s")
            b = SimpleNamespace(bootstrap=c.bootstrap, kind=kind)
            self.warm(c, b, info)
            for w in wls:
                if self.time_left() < 0:
                    per[w.name] = {"runs": [], "errors": ["skipped: time budget spent"]}
                    continue
                busy = single.busy_processes()
                if busy and a.wait_row_idle > 0:
                    t_w = time.monotonic()
                    busy = single.wait_idle(min(a.wait_row_idle, max(0.0, self.time_left())))
                    info.setdefault("waited_idle_s", {})[w.name] = time.monotonic() - t_w
                    if busy:
                        self.notes.append(f"{kind} {w.name}: other builds/tests still running after waiting "
                                          f"{time.monotonic() - t_w:.0f} s ({len(busy)} processes); this row may be noisy")
                log(f" {kind}: {w.name} ({w.label})")
                try:
                    per[w.name] = self.run_workload(c, mons, b, w)
                except (RuntimeError, AssertionError, OSError) as e:
                    per[w.name] = {"runs": [], "errors": [str(e)[:500]]}
                    log(f"  failed: {str(e)[:300]}")
                dead = [i for i, nd in c.nodes.items() if not nd.running]
                if dead:
                    per[w.name].setdefault("errors", []).append(f"node(s) {dead} died")
                    log(f"  {kind} node(s) {dead} died:\n{c.logs_tail(30)}")
                    break
        except Exception as e:  # noqa: BLE001 - record and go on to the next target
            info["error"] = f"{type(e).__name__}: {str(e)[:1500]}"
            self.notes.append(f"{kind} cluster: {info['error'][:400]}")
            log(f"  {kind} cluster failed: {info['error'][:600]}")
        finally:
            # read the counters before anything is stopped
            info["peak_rss_kb_per_node"] = {i: m.hwm_kb() for i, m in mons.items()}
            info["cpu_s_per_node"] = {i: m.cpu_seconds() for i, m in mons.items()}
            info["peak_rss_kb_sum"] = sum(info["peak_rss_kb_per_node"].values())
            info["cpu_s_sum"] = sum(info["cpu_s_per_node"].values())
            info["wall_s"] = time.monotonic() - t0
            info["loadavg_end"] = os.getloadavg()
            for m in mons.values():
                m.stop()
            try:
                info["log_findings"] = node_log_findings(c, ready_logs)
            except OSError:
                pass
            c.stop_all(grace=a.stop_grace)  # by PID; SIGKILL what is left after the grace
            info["exit_codes"] = {i: nd.exit_codes for i, nd in c.nodes.items()}
            if info["peak_rss_kb_sum"]:
                log(f"stopped the {kind} cluster: peak RSS sum {info['peak_rss_kb_sum'] / 1024:.1f} MiB, "
                    f"cpu {info['cpu_s_sum']:.1f} s, {info['wall_s']:.0f} s")
            if not a.keep:
                shutil.rmtree(wd, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def _lat(runs: list[dict]) -> str:
    if not runs:
        return "n/a"
    return f"{fmt(med(runs, 'p50'), 0)} / {fmt(med(runs, 'p99'), 0)} / {fmt(med(runs, 'p999'), 0)}"


def _x(v: float | None, nd: int = 2) -> str:
    return f"{v:.{nd}f}x" if v is not None else "n/a"


def cpu_per_gb(side: dict, wls: list[single.Workload]) -> float | None:
    """Brokers' CPU seconds (sum of the three) per GB of payload produced, over the
    measured runs of the max-throughput rows (each run's warm-up pass counted too)."""
    cpu = gb = 0.0
    for w in wls:
        if w.rate:
            continue
        r = side.get(w.name, {})
        for x in r.get("runs", []):
            cpu += x["broker_cpu_s"]
            gb += (x["records"] + r.get("warm_records_per_run", 0)) * w.size / 1e9
    return cpu / gb if gb else None


def build_report(saved: dict, wls: list[single.Workload]) -> str:
    res, cl, a = saved["results"], saved["clusters"], SimpleNamespace(**saved["args"])
    R, K = res.get("rill", {}), res.get("kafka", {})
    cr, ck = cl.get("rill", {}), cl.get("kafka", {})
    head_w = next(w for w in wls if w.headline)
    hr, hk = med(R.get(head_w.name, {}).get("runs", []), "mbps"), med(K.get(head_w.name, {}).get("runs", []), "mbps")
    head = ratio(hr, hk)
    L = []
    L.append(f"3-broker RF=3 acks=all produce throughput (1 KiB, 3 partitions, max): {head:.2f}x Kafka" if head
             else "3-broker RF=3 acks=all produce throughput: n/a (no Rill or no Kafka result)")
    L.append("")
    L.append(f"# Rill vs Apache Kafka {saved['kafka_version']}: 3-broker clusters, replication factor 3, acks=all — {saved['date']}")
    L.append("")
    L.append(
        f"Rill `{saved['git']}` on {saved['machine']}. Three brokers of one system at a time, node i on 127.0.0.i "
        f"(loopback), every node `broker,controller`; Rill first, then Kafka, in the same run "
        f"({saved['wall_s'] / 60:.1f} min). Every topic: replication factor {RF}, min.insync.replicas={MIN_ISR}, "
        f"1 KiB records, acks=all, no compression. {a.runs} measured run(s) per row, each in a client JVM warmed by "
        "a discarded pass; medians, ± is half the min–max range relative to the median. MB = 10^6 bytes of payload "
        "(counted once, not per replica)."
    )
    L.append("")
    L.append("## Produce (ProducerPerformance, acks=all)")
    L.append("")
    L.append("| workload | Rill MB/s | Kafka MB/s | Rill rec/s | Kafka rec/s | Rill p50/p99/p99.9 ms | Kafka p50/p99/p99.9 ms | Rill/Kafka |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for w in wls:
        rr, kk = R.get(w.name, {}).get("runs", []), K.get(w.name, {}).get("runs", [])
        rm, km = med(rr, "mbps"), med(kk, "mbps")
        if w.rate:
            rat = ratio(med(rr, "p99"), med(kk, "p99"))
            rat_s = f"p99 {_x(rat)}" + (f", p50 {_x(ratio(med(rr, 'p50'), med(kk, 'p50')))}" if med(kk, "p50") else "")
        else:
            rat_s = f"**{_x(ratio(rm, km))}**"
        name = f"{w.label}, RF=3" + (" **(headline)**" if w.headline else "")
        L.append(f"| {name} | {fmt(rm)}{spread(rr, 'mbps')} | {fmt(km)}{spread(kk, 'mbps')} | {fmt(med(rr, 'rps'), 0)} "
                 f"| {fmt(med(kk, 'rps'), 0)} | {_lat(rr)} | {_lat(kk)} | {rat_s} |")
    L.append("")
    L.append(
        "Latency is ProducerPerformance's send-to-acknowledgement time per record in whole milliseconds; with "
        "acks=all the acknowledgement waits until every in-sync replica has the batch. In the max rows it is "
        "dominated by queueing in the producer's 32 MiB buffer; the fixed-rate row (`linger.ms=0`) is the "
        "latency comparison. Rill/Kafka: MB/s for max rows (higher is better), p99 (and p50) latency for the "
        "fixed-rate row (lower is better; a 0 ms median gives no p50 ratio)."
    )
    L.append("")
    cores = []
    for kind, side in (("Rill", R), ("Kafka", K)):
        runs = side.get(head_w.name, {}).get("runs", [])
        if runs:
            wall = sum(x["wall_s"] for x in runs)
            cores.append(f"{kind}: client JVM {sum(x['client_cpu_s'] for x in runs) / wall:.2f} cores, "
                         f"3 brokers {sum(x['broker_cpu_s'] for x in runs) / wall:.2f} cores, "
                         f"other processes {sum(x['other_cpu_s'] for x in runs) / wall:.2f} cores")
    noise = []
    for kind, side in (("Rill", R), ("Kafka", K)):
        runs = [x for w in wls for x in side.get(w.name, {}).get("runs", [])]
        if runs:
            wall = sum(x["wall_s"] for x in runs)
            noise.append(f"{kind} {sum(x['other_cpu_s'] for x in runs) / wall:.2f} cores "
                         f"(max {max(x['other_cpu_s'] / x['wall_s'] for x in runs):.2f} in one run)")
    if noise:
        L.append("Other processes on the machine during the measured runs (all rows; /proc/stat busy time minus the client "
                 "and the brokers): " + ", ".join(noise) + ".")
        L.append("")
    if cores:
        L.append(f"CPU during the headline runs (averaged over each tool process' life, warm-up pass included; the "
                 f"machine has {saved.get('cpus', os.cpu_count())}): " + "; ".join(cores) + ". Client plus brokers at "
                 "the core count means the row is bounded by the machine, not by either broker.")
        L.append("")

    # ---- consume
    L.append("## Consume (what the headline row wrote)")
    L.append("")
    L.append("| measurement | Rill | Kafka | Rill/Kafka |")
    L.append("|---|---:|---:|---:|")
    for w in wls:
        if not w.consume:
            continue
        for key, title, mkey, rkey in (("consumer_perf", "ConsumerPerformance (group subscribe), fetch rate", "fetch_mbps", "fetch_rps"),
                                       ("assigned", "assign() consumer, no group (bench/java RillBench consume)", "mbps", "rps")):
            cells, vals = [], []
            for side in (R, K):
                c = side.get(w.name, {}).get("consume", {})
                runs = c.get(key, [])
                v = med(runs, mkey)
                vals.append(v)
                if v is not None:
                    cells.append(f"{v:,.1f} MB/s{spread(runs, mkey)}, {med(runs, rkey):,.0f} rec/s")
                else:
                    errs = [e for e in c.get("errors", []) if e.startswith("ConsumerPerformance" if key == "consumer_perf" else "assigned")]
                    cells.append("n/a" + (f" — `{errs[0][:120]}`" if errs else ""))
            recs = R.get(w.name, {}).get("consume", {}).get("records") or K.get(w.name, {}).get("consume", {}).get("records")
            L.append(f"| {title}, {w.label.replace(' max', '')} topic, {fmt(recs, 0)} records | {cells[0]} | {cells[1]} | {_x(ratio(*vals))} |")
    rb = [med(s.get(head_w.name, {}).get("consume", {}).get("consumer_perf", []), "rebalance_ms") for s in (R, K)]
    L.append("")
    L.append(f"ConsumerPerformance's fetch rate excludes joining the group (rebalance: Rill {fmt(rb[0], 0)} ms, "
             f"Kafka {fmt(rb[1], 0)} ms, median). Consumers read from the partition leaders.")
    L.append("")

    # ---- brokers
    L.append("## Brokers: memory and CPU (sum of the three nodes)")
    L.append("")
    L.append("| | Rill | Kafka | Rill/Kafka |")
    L.append("|---|---:|---:|---:|")

    def row(title, rv, kv, unit_fmt, nd=3):
        L.append(f"| {title} | {unit_fmt(rv)} | {unit_fmt(kv)} | {_x(ratio(rv, kv), nd)} |")

    mib = lambda v: f"{v / 1024:,.1f} MiB" if v else "n/a"  # noqa: E731
    sec = lambda v: f"{v:,.1f} s" if v is not None else "n/a"  # noqa: E731
    row("peak RSS, sum of the 3 brokers (VmHWM)", cr.get("peak_rss_kb_sum"), ck.get("peak_rss_kb_sum"), mib)
    per_node = lambda d: " / ".join(f"{v / 1024:,.0f}" for _, v in sorted(d.get("peak_rss_kb_per_node", {}).items())) or "n/a"  # noqa: E731
    L.append(f"| peak RSS per node 1 / 2 / 3, MiB | {per_node(cr)} | {per_node(ck)} | |")
    row("CPU seconds, 3 brokers, whole session (start, warm-up — as long as each needs, see below —, every row, consume)", cr.get("cpu_s_sum"), ck.get("cpu_s_sum"), sec)
    hr_cpu = R.get(head_w.name, {}).get("runs", [])
    hk_cpu = K.get(head_w.name, {}).get("runs", [])
    row(f"CPU seconds, 3 brokers, per headline run (median; {fmt(med(hr_cpu, 'records'), 0)} / {fmt(med(hk_cpu, 'records'), 0)} records + warm-up pass)",
        med(hr_cpu, "broker_cpu_s"), med(hk_cpu, "broker_cpu_s"), sec)
    row("CPU seconds of the 3 brokers per GB produced (max rows, measured runs with their warm-up passes)",
        cpu_per_gb(R, wls), cpu_per_gb(K, wls), sec)
    row("cluster start (spawn to every node listing 3 brokers)", cr.get("start_s"), ck.get("start_s"), sec)
    wu = lambda i: (f"{i['warmup_s']:.0f} s, pass rates " + " → ".join(f"{x / 1000:,.1f}k" for x in i.get("warmup_rates", [])) + " rec/s"  # noqa: E731
                    if i.get("warmup_s") is not None else "n/a")
    L.append(f"| warm-up before the rows (discarded) | {wu(cr)} | {wu(ck)} | |")
    L.append("")
    L.append("Peak RSS is each broker process' VmHWM from /proc/PID/status at the end of its session (for Kafka the "
             f"java process; with `-Xms{a.kafka_heap}` G1 grows its RSS towards the heap as it runs). CPU is "
             "utime+stime from /proc/PID/stat.")
    L.append("")

    # ---- replication state
    L.append("## Replication state")
    L.append("")
    L.append("| workload | Rill leaders (partition: node) | Rill ISR after the runs | Kafka leaders | Kafka ISR after the runs |")
    L.append("|---|---|---|---|---|")
    fmt_map = lambda d: ", ".join(f"{p}: {v}" for p, v in sorted((int(k), v) for k, v in (d or {}).items())) or "n/a"  # noqa: E731
    for w in wls:
        r_, k_ = R.get(w.name, {}), K.get(w.name, {})
        L.append(f"| {w.name} | {fmt_map(r_.get('leaders'))} | {fmt_map(r_.get('isr_after'))} | {fmt_map(k_.get('leaders'))} | {fmt_map(k_.get('isr_after'))} |")
    L.append("")
    L.append("Node logs after the cluster was ready (ERROR/FATAL/panic, WARN, ISR changes: Kafka `Shrinking ISR`/`Expanding ISR`, "
             "Rill `asking for an ISR change`/`ISR change refused`), per node; in brackets, the same before the cluster was ready:")
    L.append("")
    for kind, info in (("Rill", cr), ("Kafka", ck)):
        f = info.get("log_findings", {})
        parts = []
        for i, v in sorted(f.items(), key=lambda kv: int(kv[0])):
            parts.append(f"node {i}: {v['errors']} errors ({v['errors_at_start']}), {v['warnings']} warnings ({v['warnings_at_start']}), "
                         f"{v['isr_changes']} ISR changes ({v['isr_changes_at_start']})")
        L.append(f"- {kind}: " + ("; ".join(parts) or "n/a"))
        for i, v in sorted(f.items(), key=lambda kv: int(kv[0])):
            for k, exs in v.get("examples", {}).items():
                for ex in exs[:2]:
                    L.append(f"  - node {i} {k}: `{ex[:220]}`")
    L.append("")

    # ---- settings
    L.append("## Settings")
    L.append("")
    for s in saved["settings"]:
        L.append(f"- {s}")
    L.append("")
    for kind, info in (("Rill", cr), ("Kafka", ck)):
        if info.get("config_node1"):
            L.append(f"{kind} node 1 `server.properties` (nodes 2 and 3 differ only in node.id, addresses and log.dirs):")
            L.append("")
            L.append("```properties")
            L.append(info["config_node1"].rstrip())
            L.append("```")
            L.append("")
        if info.get("commands"):
            cmd = info["commands"].get("1") or info["commands"].get(1)
            L.append(f"{kind} node 1 command: `{' '.join(_short_cp(cmd))}`" + (" (classpath: the cached kafka_2.13 jars and their dependencies)" if kind == "Kafka" else ""))
            L.append("")

    # ---- notes
    L.append("## Notes and failures")
    L.append("")
    notes = list(saved["notes"])
    for kind, side in (("rill", R), ("kafka", K)):
        for wname, r in side.items():
            for e in r.get("errors", []):
                notes.append(f"{kind} {wname}: {e[:300]}")
            for e in r.get("consume", {}).get("errors", []):
                notes.append(f"{kind} {wname} consume: {e[:300]}")
    for n in notes or ["none"]:
        L.append(f"- {n}")
    L.append("")

    # ---- commands
    L.append("## Commands")
    L.append("")
    L.append("```")
    for cmd in saved["commands"]:
        L.append(cmd)
    L.append("```")
    L.append("")
    return "\n".join(L)


def _short_cp(cmd: list[str]) -> list[str]:
    out, skip = [], False
    for x in cmd:
        if skip:
            out.append("<classpath>")
            skip = False
            continue
        out.append(x)
        skip = x in ("-cp", "-classpath")
    return out


def commands_for(saved: dict) -> list[str]:
    argv = saved["args"].get("argv") or []
    out = []
    if saved.get("build_cmd"):
        out.append(saved["build_cmd"])
    out.append("bash bench/cluster.sh" + (" " + " ".join(argv) if argv else ""))
    if saved.get("python"):
        out.append(f"# ran as: {saved['python']} bench/cluster.py" + (" " + " ".join(argv) if argv else "")
                   + "   (what bench/cluster.sh execs after tests/tools/install.sh)")
    out.append(f"# rill-broker: {saved.get('rill_binary', '?')}")
    out.append("# the tool commands below are those of the first target's session (its bootstrap and topics); the other's differ only in those")
    out.append("# every tool runs as `java -Xmx512m -cp <kafka-tools + deps>:<bench classes> RillBench twice producer|consumer K "
               "<K warm-up args> <measured args>` (the tool's own entry point, called twice in one JVM; only the second pass is reported)")
    for name, cmd in saved.get("example_cmds", {}).items():
        out.append(f"# {name}")
        out.append(" ".join(_short_cp([str(x) for x in cmd])))
    out.append("java ... RillBench consume <bootstrap> <topic> 3 <records> 60000   # group-less assign() consumer, bench/java/RillBench.java")
    return out


def write_outputs(saved: dict, out_dir: Path) -> Path:
    a = SimpleNamespace(**saved["args"])
    wls = workloads(a)
    saved["commands"] = commands_for(saved)
    md = build_report(saved, wls)
    md_path = out_dir / f"{saved['date']}-cluster.md"
    md_path.write_text(md)
    log(f"wrote {md_path}")
    print(md.splitlines()[0])
    return md_path


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def kill_children() -> list[int]:
    """SIGKILL this process' own remaining children (a tool JVM left by an interrupted
    run), each by PID. The brokers are stopped before, by the cluster harness."""
    me, killed = os.getpid(), []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            try:
                os.kill(int(p.name), signal.SIGKILL)
                killed.append(int(p.name))
            except OSError:
                pass
    return killed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="measured runs per row (default 3)")
    ap.add_argument("--secs", type=float, default=5.0, help="target seconds per max-throughput run (default 5)")
    ap.add_argument("--fixed-secs", type=float, default=10.0, help="seconds per fixed-rate run (default 10)")
    ap.add_argument("--rate", type=int, default=2000, help="records/s of the fixed-rate row (default 2000; 0: no such row)")
    ap.add_argument("--partitions-max", default="3,1", help="partition counts of the max rows; 3 is always run (default 3,1)")
    ap.add_argument("--targets", default="rill,kafka", help="which clusters, in order (default rill,kafka)")
    ap.add_argument("--kafka-heap", default="1g", help="-Xms/-Xmx of each Kafka node (default 1g, the stock kafka-server-start.sh heap)")
    ap.add_argument("--warm-secs", type=float, default=150.0, help="at most this many seconds of discarded warm-up traffic per cluster (default 150)")
    ap.add_argument("--warm-pass-secs", type=float, default=20.0, help="seconds of traffic per warm-up pass (default 20)")
    ap.add_argument("--warm-max-passes", type=int, default=8)
    ap.add_argument("--cal-mb", type=float, default=48.0, help="MB of each max row's discarded calibration run (default 48)")
    ap.add_argument("--consume-mb", type=int, default=300, help="MB read per consumer pass (default 300)")
    ap.add_argument("--budget-min", type=float, default=20.0, help="stop starting runs after this many minutes, split between the targets")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--stop-grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL at the end of a session")
    ap.add_argument("--wait-idle", type=float, default=180.0, help="wait at most this many seconds for other builds/tests to finish")
    ap.add_argument("--wait-row-idle", type=float, default=30.0, help="before each row, wait at most this many seconds for other builds/tests (default 30)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--keep", action="store_true", help="keep the clusters' directories")
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--date", default=None, help="results are <date>-cluster.md/.json (default today)")
    ap.add_argument("--report-only", metavar="JSON", help="re-render the .md from a results .json; run nothing")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text())
        write_outputs(saved, Path(args.report_only).parent)
        return 0
    args.partitions_max = sorted({3, *(int(x) for x in args.partitions_max.split(",") if x.strip())}, reverse=True)
    args.quick = False  # read by bench/run.py's Runner
    args.e2e_messages = 0
    args.argv = sys.argv[1:]
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in ("rill", "kafka"):
            ap.error(f"unknown target {t}")
    date = args.date or dt.date.today().isoformat()
    t_start = time.monotonic()

    # a SIGTERM ends the run through the finally blocks (brokers stopped by PID)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if not args.no_build and "rill" in targets:
        log("cargo build --release -p rill-broker")
        r = subprocess.run(["cargo", "build", "--release", "-p", "rill-broker"], cwd=REPO, timeout=3600)
        if r.returncode != 0:
            log("build failed")
            return 1
    if "rill" in targets and not bp.rill_binary().exists():
        log(f"{bp.rill_binary()} missing (cargo build --release -p rill-broker, or RILL_BROKER_BIN)")
        return 1

    root = single.data_root()
    log(f"work dir {root}; rill-broker {bp.rill_binary()}")
    classes = bp.cache_dir() / "bench-classes" / bp.kafka_version()
    classes.mkdir(parents=True, exist_ok=True)
    subprocess.run(["javac", "--release", "17", "-nowarn", "-d", str(classes), "-cp", bp.kafka_jars("clients"),
                    str(BENCH / "java" / "RillBench.java")], check=True, timeout=300)
    tools = single.Tools(classes, root)

    notes = []
    busy = single.wait_idle(args.wait_idle)
    if busy:
        notes.append(f"other builds/tests were running when the benchmark started ({len(busy)} processes, e.g. `{busy[0][:80]}`); numbers may be noisy")

    runner = ClusterRunner(args, tools, root)
    runner.notes = notes
    wls = workloads(args)
    try:
        for k, kind in enumerate(targets):
            left = args.budget_min * 60 - (time.monotonic() - t_start)
            share = max(60.0, left / (len(targets) - k))
            runner.run_target(kind, wls, share)
    finally:
        left = kill_children()
        if left:
            runner.notes.append(f"killed {len(left)} leftover child process(es) of the benchmark: {left}")
        late = single.busy_processes()
        if late:
            runner.notes.append(f"other builds/tests were running when the benchmark ended ({len(late)} processes)")
        total = time.monotonic() - t_start
        settings = [
            f"Apache Kafka {bp.kafka_version()} (kafka_2.13 broker and kafka-tools, cached by tests/tools/install.sh): 3 KRaft nodes, "
            f"each `process.roles=broker,controller` in one JVM, JVM `{' '.join(kafka_jvm(args.kafka_heap))}` per node "
            f"(bench/run.py's stock kafka-server-start.sh flags; heap {args.kafka_heap} per node, {N_NODES} nodes); {single.java_version()}",
            f"Rill: `{bp.rill_binary().name} run --config server.properties` (release build), 3 nodes, every node broker,controller (Raft metadata quorum)",
            "both started by tests/e2e/cluster_process.py (`Cluster`, unchanged; bench/cluster.py only swaps the fault tests' small C1-only "
            "Kafka JVM for the stock flags and passes the properties below): node i listens on 127.0.0.i, ports chosen free; Kafka's storage "
            "formatted with one cluster id",
            f"default.replication.factor={RF}, min.insync.replicas={MIN_ISR}; topics created with replication factor {RF} "
            "(confluent-kafka AdminClient, waited on until every partition has a leader and a full ISR on every node), deleted after each row",
            "flush policy, both: the broker never fsyncs, the page cache decides (Kafka's default; Rill "
            f"`log.flush.interval.messages={LONG_MAX}` and `log.flush.interval.ms={LONG_MAX}`, because `run` fsyncs every append by default). "
            "Durability comes from the three copies (acks=all, min.insync.replicas=2), as in a default Kafka deployment",
            "Kafka: the fault tests' tuning in cluster_process.py is set back to Kafka's defaults (num.io.threads=8, num.network.threads=3, "
            "background.threads=10, num.replica.fetchers=1, broker.heartbeat.interval.ms=2000, broker.session.timeout.ms=9000, "
            "leader.imbalance.check.interval.seconds=300, log.flush.interval.messages=Long.MAX); file.delete.delay.ms=1000 (housekeeping)",
            "both: offsets.topic.num.partitions=3, group.initial.rebalance.delay.ms=0; Rill's replication settings are its defaults "
            "(replica.fetch.wait.max.ms 500, replica.fetch.max.bytes 1 MiB, replica.lag.time.max.ms 30000, as Kafka's)",
            "producer (both): ProducerPerformance defaults (batch.size 16384, linger.ms 5, buffer.memory 32 MiB) plus `acks=all`, "
            "`compression.type=none`, `enable.idempotence=false` (as bench/run.py, so both run the same producer path); fixed-rate row "
            f"also `linger.ms=0`; bootstrap = all three nodes; client JVMs `{' '.join(single.TOOL_JVM)}`",
            f"method: per cluster, discarded acks=all warm-up traffic first (1 KiB, 3 partitions): passes of ~{args.warm_pass_secs:.0f} s, each a fresh client JVM, "
            f"until the rate stops rising (at least 3 passes, the last within 10% of the one before) or {args.warm_secs:.0f} s are spent; each max row: a fresh topic, a discarded "
            f"{args.cal_mb:.0f} MB calibration run that sizes the measured runs to ~{args.secs:.0f} s, then {args.runs} run(s); the fixed-rate "
            f"row: {args.runs} run(s) of {args.fixed_secs:.0f} s at {args.rate:,} records/s; every tool run is a fresh JVM with a discarded warm-up pass",
            "one machine: the client JVM and all three brokers share its CPUs; one cluster runs at a time (Rill, then Kafka); data dirs under "
            f"{root} (the repository's file system)",
            f"budget {args.budget_min:.0f} min split between the targets; total wall time {total / 60:.1f} min",
        ]
        saved = {
            "date": date, "results": runner.results, "clusters": runner.clusters, "notes": runner.notes,
            "settings": settings, "example_cmds": runner.example_cmds, "git": single.git_rev(), "machine": single.machine(),
            "cpus": os.cpu_count(), "kafka_version": bp.kafka_version(), "java": single.java_version(), "wall_s": total,
            "rill_binary": str(bp.rill_binary()), "args": vars(args), "python": sys.executable,
            "build_cmd": ((f"CARGO_TARGET_DIR={os.environ['CARGO_TARGET_DIR']} " if os.environ.get("CARGO_TARGET_DIR") else "")
                          + "cargo build --release -p rill-broker" + ("   # run before, hence --no-build" if args.no_build else "")),
        }
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        saved["commands"] = commands_for(saved)
        (out_dir / f"{date}-cluster.json").write_text(json.dumps(saved, indent=1, default=str))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    write_outputs(saved, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
