"""kafka-python (pure Python client): produce with every codec, consume with assign/seek
(no group), admin create/delete topics and CreateTopics error codes."""

from __future__ import annotations

import time

import kafka.errors as Errors
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

N = 120
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def key_of(i: int) -> bytes | None:
    return None if i % 9 == 4 else f"kp-{i}".encode()


def value_of(codec, i: int) -> bytes:
    return (str(codec).encode() + b":" + bytes((i + j) % 256 for j in range(i % 50))) * (1 + i % 5)


def headers_of(i: int) -> list:
    return [("i", str(i).encode()), ("b", bytes([i % 256, 0, 1]))]


def make_producer(broker, **kw) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        enable_idempotence=False,  # issue 4
        linger_ms=5,
        request_timeout_ms=15000,
        max_block_ms=20000,
        **kw,
    )


def read_back(broker, topic: str, start: int, count: int, timeout: float = 30.0) -> list:
    c = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        consumer_timeout_ms=1000,
        check_crcs=True,
    )
    tp = TopicPartition(topic, 0)
    out = []
    try:
        c.assign([tp])
        c.seek(tp, start)
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        assert len(out) >= count, f"got {len(out)} of {count} in {timeout}s"
        return out[:count]
    finally:
        c.close()


def create(admin: KafkaAdminClient, topic: str, partitions: int = 1) -> None:
    res = admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}},
                              timeout_ms=15000, wait_for_metadata=True)
    assert [(t["name"], t["error_code"]) for t in res["topics"]] == [(topic, 0)]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: str(c).lower())
def test_produce_consume(broker, topic, codec):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        create(admin, topic)
    finally:
        admin.close()
    base_ts = int(time.time() * 1000) - 1_800_000
    p = make_producer(broker, compression_type=codec, acks=1)
    try:
        futs = [
            p.send(topic, value=value_of(codec, i), key=key_of(i), headers=headers_of(i), partition=0,
                   timestamp_ms=base_ts + i)
            for i in range(N)
        ]
        p.flush(timeout=30)
        offsets = [f.get(timeout=30).offset for f in futs]
    finally:
        p.close(timeout=10)
    assert offsets == list(range(N))

    recs = read_back(broker, topic, 0, N)
    assert [r.offset for r in recs] == list(range(N))
    for r in recs:
        i = r.offset
        assert r.key == key_of(i)
        assert r.value == value_of(codec, i)
        assert list(r.headers) == headers_of(i)
        assert r.timestamp == base_ts + i

    tail = read_back(broker, topic, 77, N - 77)
    assert [(r.offset, r.value) for r in tail] == [(i, value_of(codec, i)) for i in range(77, N)]


def test_admin_create_delete_and_errors(broker, topic):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        good = topic + "-good"
        bad_name = "bad topic!name"
        zero = topic + "-zero"
        negative = topic + "-neg"
        res = admin.create_topics(
            {
                good: {"num_partitions": 2, "replication_factor": 1},
                bad_name: {"num_partitions": 1, "replication_factor": 1},
                zero: {"num_partitions": 0, "replication_factor": 1},
                negative: {"num_partitions": -3, "replication_factor": 1},
            },
            timeout_ms=15000,
            raise_errors=False,
        )
        codes = {t["name"]: t["error_code"] for t in res["topics"]}
        assert codes == {
            good: 0,
            bad_name: Errors.InvalidTopicError.errno,  # 17 INVALID_TOPIC_EXCEPTION
            zero: Errors.InvalidPartitionsError.errno,  # 37 INVALID_PARTITIONS
            negative: Errors.InvalidPartitionsError.errno,
        }
        with pytest.raises(Errors.InvalidTopicError):
            admin.create_topics({"a/b": {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=15000)
        with pytest.raises(Errors.InvalidTopicError):
            admin.create_topics({"x" * 250: {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=15000)
        with pytest.raises(Errors.InvalidPartitionsError):
            admin.create_topics({zero: {"num_partitions": 0, "replication_factor": 1}}, timeout_ms=15000)
        with pytest.raises(Errors.TopicAlreadyExistsError):
            admin.create_topics({good: {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=15000)

        admin.wait_for_topics([good], timeout_ms=15000)
        assert good in admin.list_topics()
        assert bad_name not in admin.list_topics() and zero not in admin.list_topics()
        (desc,) = admin.describe_topics([good])
        assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1]

        # The new topic takes writes on both partitions.
        p = make_producer(broker, acks=1)
        try:
            md = [p.send(good, value=b"x%d" % part, partition=part).get(timeout=30) for part in (0, 1)]
        finally:
            p.close(timeout=10)
        assert [(m.partition, m.offset) for m in md] == [(0, 0), (1, 0)]

        res = admin.delete_topics([good], timeout_ms=15000)
        deadline = time.monotonic() + 20
        while good in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert good not in admin.list_topics()
        with pytest.raises(Errors.UnknownTopicOrPartitionError):
            admin.delete_topics([good], timeout_ms=15000)
    finally:
        admin.close()
