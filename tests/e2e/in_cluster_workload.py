"""A producer and a consumer run from inside the test cluster's DNS view, for operator
tests: the brokers advertise pod DNS names that only resolve there.

    python in_cluster_workload.py --bootstrap demo-bootstrap.ns.svc:9092 --topic t \
        --partitions 3 --count 2000 --rate 100 --stop-file STOP --out RUN.json

Produces `p<ID>-<seq>` values (idempotent, acks=all) at `rate` per second until `count`
are sent or STOP exists, consumes every partition meanwhile, then reads every partition
to its high watermark and writes the run as checker.py reads it (acked, attempted, seen,
log, errors). Prints one JSON summary line. Exits 0 unless the run itself broke.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import ConsumerWorkload, ProducerWorkload, read_log, save_run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--producer-id", type=int, default=0,
                    help="values are p<ID>-<seq>: one id per run on a shared topic")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--stop-file", type=Path)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    # librdkafka's idempotence log (PID, drains, epoch bumps), next to the run: it is what
    # explains a duplicate should the checker find one.
    eos_log = logging.getLogger("producer-eos")
    eos_log.addHandler(logging.FileHandler(args.out.with_suffix(".producer.log")))
    eos_log.setLevel(logging.DEBUG)
    producer = ProducerWorkload(args.bootstrap, args.topic, args.partitions, producer_id=args.producer_id,
                                count=args.count, rate=args.rate, debug="eos", logger=eos_log).start()
    consumer = ConsumerWorkload(args.bootstrap, args.topic, args.partitions).start()
    deadline = time.monotonic() + args.max_seconds
    while not producer.done.is_set() and time.monotonic() < deadline:
        if args.stop_file is not None and args.stop_file.exists():
            producer.stop()
        time.sleep(0.2)
    producer.stop()
    producer.join(timeout=90)
    # Let the consumer read up to what was acknowledged before it stops.
    wait_until = time.monotonic() + 20
    while consumer.count() < producer.acked_count() and time.monotonic() < wait_until:
        time.sleep(0.2)
    consumer.stop_and_join()
    log, marks = read_log(args.bootstrap, args.topic, args.partitions, timeout=60)
    save_run(args.out, [producer], consumer, log,
             {"marks": {str(p): list(m) for p, m in marks.items()}})
    print(json.dumps({"acked": producer.acked_count(), "attempted": len(producer.attempted),
                      "seen": consumer.count(), "log": len(log),
                      "errors": producer.error_summary()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
