"""One consumer-group member as its own process, so a test can kill -9 it.

Prints JSON lines on stdout: {"assigned": [...]}, {"record": [partition, offset, value]},
{"committed": [partition, offset]}. Commits synchronously after every record, so what
it printed as committed is durable at the coordinator. Runs until SIGTERM (then closes
cleanly, leaving the group) or --max-seconds.

    python group_member.py BOOTSTRAP GROUP TOPIC [--instance-id ID] [--max-seconds N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("group")
    ap.add_argument("topic")
    ap.add_argument("--instance-id")
    ap.add_argument("--assignor", default="range")
    ap.add_argument("--max-seconds", type=float, default=120)
    a = ap.parse_args()
    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": a.assignor,
        **({"debug": os.environ["RDKAFKA_DEBUG"]} if os.environ.get("RDKAFKA_DEBUG") else {}),
    }
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    c = Consumer(conf)
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)

    def on_assign(consumer, partitions):
        if a.assignor == "cooperative-sticky":
            consumer.incremental_assign(partitions)
            say({"assigned": sorted(p.partition for p in consumer.assignment())})
        else:
            consumer.assign(partitions)
            say({"assigned": sorted(p.partition for p in partitions)})

    def on_revoke(consumer, partitions):
        if a.assignor == "cooperative-sticky":
            consumer.incremental_unassign(partitions)
            say({"assigned": sorted(p.partition for p in consumer.assignment())})
        else:
            say({"assigned": []})

    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    deadline = time.monotonic() + a.max_seconds
    while not stop and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        say({"record": [m.partition(), m.offset(), m.value().decode()]})
        c.commit(offsets=[TopicPartition(a.topic, m.partition(), m.offset() + 1)], asynchronous=False)
        say({"committed": [m.partition(), m.offset() + 1]})
    c.close()
    say({"closed": True})


if __name__ == "__main__":
    main()
