"""Log compaction (cleanup.policy=compact) seen through confluent-kafka.

The broker's background tick runs the cleaner; these tests only produce, wait (bounded)
and consume. Rill-only: the tiny segment.bytes used to get many segments quickly is below
Apache Kafka 4's minimum for that config.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError

from clients import admin, consume_range, create_topic, produce_all, producer, watermarks

pytestmark = pytest.mark.rill_only

COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "1024",
    # Rolls the last segment once writes stop, so everything becomes cleanable.
    "segment.ms": "500",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "100",
}
LIVE = [f"key-{i}" for i in range(3)]
DELETED = ["key-3", "key-4"]
ROUNDS = 20
WAIT_S = 30.0


def _produce_updates(bootstrap: str, topic: str) -> dict[str, tuple[int, bytes | None]]:
    """ROUNDS rounds of one update per key (one flush each, so batches stay small and
    span many segments), then a tombstone per DELETED key. Returns key -> (offset, value)
    of the last acknowledged write."""
    p = producer(bootstrap)
    last: dict[str, tuple[int, bytes | None]] = {}
    for r in range(ROUNDS):
        items = [
            {"key": k.encode(), "value": f"{k}-round-{r}-{'x' * 40}".encode()}
            for k in LIVE + DELETED
        ]
        for it, msg in zip(items, produce_all(p, topic, items)):
            last[it["key"].decode()] = (msg.offset(), it["value"])
    tombstones = [{"key": k.encode(), "value": None} for k in DELETED]
    for it, msg in zip(tombstones, produce_all(p, topic, tombstones)):
        last[it["key"].decode()] = (msg.offset(), None)
    return last


def _compacted_view(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    return [(r.offset, r.key, r.value) for r in consume_range(bootstrap, topic, timeout=20)]


def test_compaction_keeps_latest_value_per_key_at_its_offset(broker, topic):
    create_topic(broker.bootstrap, topic, config=COMPACTED)
    last = _produce_updates(broker.bootstrap, topic)
    total = ROUNDS * len(LIVE + DELETED) + len(DELETED)
    low, high = watermarks(broker.bootstrap, topic)
    assert (low, high) == (0, total)

    expected = sorted((off, k.encode(), v) for k, (off, v) in last.items() if k in LIVE)
    deadline = time.monotonic() + WAIT_S
    seen = None
    while time.monotonic() < deadline:
        seen = _compacted_view(broker.bootstrap, topic)
        if seen == expected:
            break
        time.sleep(0.5)
    assert seen == expected, f"after {WAIT_S}s: {len(seen or [])} records, first {(seen or [])[:8]}"

    # Offsets are kept: the log still spans [0, total) and a fetch from an offset that
    # compaction removed resumes at the next survivor.
    assert watermarks(broker.bootstrap, topic) == (0, total)
    middle = consume_range(broker.bootstrap, topic, start=1, timeout=20)
    assert [(r.offset, r.key, r.value) for r in middle] == expected
    after_first = consume_range(broker.bootstrap, topic, start=expected[0][0] + 1, timeout=20)
    assert [(r.offset, r.key, r.value) for r in after_first] == expected[1:]

    # New writes continue at the old end offset and are not compacted away.
    p = producer(broker.bootstrap)
    (msg,) = produce_all(p, topic, [{"key": b"key-0", "value": b"newest"}])
    assert msg.offset() == total


def test_keyless_record_on_compacted_topic_is_rejected(broker, topic):
    create_topic(broker.bootstrap, topic, config=COMPACTED)
    p = producer(broker.bootstrap, **{"message.timeout.ms": 10000, "retries": 0})
    errors = []

    def on_delivery(err, msg):
        errors.append(err)

    p.produce(topic, value=b"no key", on_delivery=on_delivery)
    assert p.flush(20) == 0
    assert len(errors) == 1 and errors[0] is not None, errors
    err = errors[0]
    # librdkafka calls Kafka's CORRUPT_MESSAGE (2) INVALID_MSG.
    assert err.code() == KafkaError.INVALID_MSG, str(err)
    assert watermarks(broker.bootstrap, topic) == (0, 0), "nothing written"

    # The same record with a key is accepted.
    (msg,) = produce_all(p, topic, [{"key": b"k", "value": b"with key"}])
    assert msg.offset() == 0


def test_compaction_configs_are_described_as_kafka_does(broker, topic):
    from confluent_kafka.admin import ConfigResource

    a = admin(broker.bootstrap)
    both = topic + "-both"
    create_topic(broker.bootstrap, topic, config=COMPACTED)
    create_topic(broker.bootstrap, both, config={"cleanup.policy": "delete,compact", "retention.ms": "60000"})
    for name, want in [
        (topic, {"cleanup.policy": "compact", "delete.retention.ms": "100", "min.cleanable.dirty.ratio": "0.01",
                 "min.compaction.lag.ms": "0"}),
        (both, {"cleanup.policy": "compact,delete", "delete.retention.ms": "86400000",
                "min.cleanable.dirty.ratio": "0.5"}),
    ]:
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        cfg = a.describe_configs([res], request_timeout=15)[res].result(timeout=30)
        assert {k: cfg[k].value for k in want} == want
    # A value Kafka rejects is rejected at creation.
    with pytest.raises(Exception) as ei:
        create_topic(broker.bootstrap, topic + "-bad", config={"cleanup.policy": "shrink"})
    assert "INVALID_CONFIG" in str(ei.value) or "cleanup.policy" in str(ei.value), str(ei.value)
