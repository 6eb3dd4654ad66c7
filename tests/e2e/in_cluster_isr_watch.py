"""Samples the ISR of every partition of a topic until a stop file appears, from inside
the test cluster's DNS view, for operator tests that must prove a roll never took a
partition below min.insync.replicas.

    python in_cluster_isr_watch.py --bootstrap B --topic T --stop-file STOP --out OUT.json

Writes {"samples": N, "min_isr": M, "lowest": [[t, partition, isr], ...]} where lowest
lists the samples that hit the minimum (at most 20). Metadata errors while a broker
restarts are skipped, not counted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--stop-file", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "topic.metadata.refresh.interval.ms": 500})
    samples, lowest, min_isr = 0, [], None
    t0 = time.monotonic()
    while not args.stop_file.exists() and time.monotonic() - t0 < args.max_seconds:
        try:
            md = admin.list_topics(args.topic, timeout=5)
        except Exception:  # noqa: BLE001 - a restarting broker; try again
            time.sleep(0.2)
            continue
        t = md.topics.get(args.topic)
        if t is not None and t.error is None and t.partitions:
            samples += 1
            for p, pm in t.partitions.items():
                n = len(pm.isrs)
                if min_isr is None or n < min_isr:
                    min_isr, lowest = n, []
                if n == min_isr and len(lowest) < 20:
                    lowest.append([round(time.monotonic() - t0, 2), p, list(pm.isrs)])
        time.sleep(0.25)
    args.out.write_text(json.dumps({"samples": samples, "min_isr": min_isr, "lowest": lowest}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
