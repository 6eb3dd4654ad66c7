"""Shared client helpers (confluent-kafka) for the e2e tests. Every wait is bounded."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple  # ((name, bytes|None), ...)
    timestamp: int


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def wait_topic_ready(bootstrap: str, topic: str, partitions: int = 1, timeout: float = 20.0) -> None:
    """Until metadata shows every partition of `topic` with a leader."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md = a.list_topics(topic=topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and len(t.partitions) >= partitions and all(
                p.leader >= 0 for p in t.partitions.values()
            ):
                return
            last = t and (t.error, {k: v.leader for k, v in t.partitions.items()})
        except KafkaException as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not ready in {timeout}s: {last}")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None) -> None:
    a = admin(bootstrap)
    fut = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=15,
        request_timeout=15,
    )[topic]
    fut.result(timeout=30)
    wait_topic_ready(bootstrap, topic, partitions)


def producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,  # most tests need no idempotence; test_idempotence.py turns it on
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "request.timeout.ms": 15000,
    }
    base.update(conf)
    return Producer(base)


def produce_all(p: Producer, topic: str, items: list[dict], timeout: float = 60.0) -> list:
    """Produce items (kwargs for Producer.produce) and return the delivered Messages in
    item order; asserts every delivery succeeded."""
    delivered: dict[int, object] = {}
    errors = []

    def cb_for(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                delivered[i] = msg

        return cb

    for i, it in enumerate(items):
        deadline = time.monotonic() + timeout
        while True:
            try:
                p.produce(topic, on_delivery=cb_for(i), **it)
                break
            except BufferError:
                assert time.monotonic() < deadline, "producer queue full for too long"
                p.poll(0.1)
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages not delivered in {timeout}s"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(delivered) == len(items)
    return [delivered[i] for i in range(len(items))]


def consumer(bootstrap: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        # A group.id is mandatory for librdkafka's consumer, but no group API is used:
        # partitions are assign()ed with explicit offsets and nothing is committed.
        "group.id": "rill-e2e-nogroup",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "check.crcs": True,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    return Consumer(base)


def consume_range(
    bootstrap: str, topic: str, partition: int = 0, start: int = OFFSET_BEGINNING, count: int | None = None,
    timeout: float = 30.0, **conf
) -> list[Rec]:
    """assign() + read until `count` records (or, with count=None, until partition EOF)."""
    c = consumer(bootstrap, **conf)
    out: list[Rec] = []
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if count is not None and len(out) >= count:
                break
            msg = c.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if count is None:
                        return out
                    continue
                raise AssertionError(f"consume error: {err}")
            out.append(
                Rec(
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    tuple(msg.headers() or ()),
                    msg.timestamp()[1],
                )
            )
        if count is not None:
            assert len(out) >= count, f"got {len(out)} of {count} records in {timeout}s"
            return out[:count]
        raise AssertionError(f"no partition EOF in {timeout}s after {len(out)} records")
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()
