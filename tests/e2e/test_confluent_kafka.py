"""confluent-kafka (librdkafka): produce with every codec and acks=1/0, consume with
assign() (no consumer group), and the admin API."""

from __future__ import annotations

import time

import confluent_kafka
import pytest
from clients import CODECS, admin, consume_range, consumer, create_topic, produce_all, producer, watermarks
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

N = 200


def key_of(i: int) -> bytes | None:
    return None if i % 10 == 3 else f"k{i}".encode()


def value_of(codec: str, i: int) -> bytes:
    # Binary, all 256 byte values appear; sizes 0..~2 KB; compressible runs.
    return bytes((i * 31 + j) % 256 for j in range(i % 17)) + codec.encode() * (i % 40) + bytes([i % 256]) * (i * 7 % 500)


def headers_of(i: int) -> list:
    h = [("seq", str(i).encode()), ("bin", bytes([0, 255, i % 256]))]
    if i % 5 == 0:
        h.append(("null", None))
    if i % 7 == 0:
        h.append(("seq", b"dup"))  # repeated header names keep their order
    return h


def items(codec: str, base_ts: int, n: int = N) -> list[dict]:
    return [
        {"partition": 0, "key": key_of(i), "value": value_of(codec, i), "headers": headers_of(i), "timestamp": base_ts + i}
        for i in range(n)
    ]


def assert_records(recs, codec: str, base_ts: int, n: int = N, first: int = 0) -> None:
    assert [r.offset for r in recs] == list(range(first, first + n))
    for r in recs:
        i = r.offset
        assert r.key == key_of(i), i
        assert r.value == value_of(codec, i), i
        assert list(r.headers) == headers_of(i), i
        assert r.timestamp == base_ts + i, i


@pytest.mark.parametrize("acks", [1, 0])
@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume(broker, topic, codec, acks):
    create_topic(broker.bootstrap, topic)
    base_ts = int(time.time() * 1000) - 3_600_000
    p = producer(broker.bootstrap, **{"compression.type": codec, "acks": acks, "batch.num.messages": 37})
    msgs = produce_all(p, topic, items(codec, base_ts))
    if acks == 1:
        assert [m.offset() for m in msgs] == list(range(N))
        assert all(m.partition() == 0 and m.error() is None for m in msgs)
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=N)
    assert_records(recs, codec, base_ts)
    assert watermarks(broker.bootstrap, topic) == (0, N)
    # A fetch from the middle of a (possibly compressed) batch starts at the asked offset.
    recs = consume_range(broker.bootstrap, topic, 0, 123, count=N - 123)
    assert_records(recs, codec, base_ts, n=N - 123, first=123)


def test_consume_at_end_waits_then_gets_new_records(broker, topic):
    create_topic(broker.bootstrap, topic)
    base_ts = int(time.time() * 1000)
    p = producer(broker.bootstrap, acks=1)
    produce_all(p, topic, items("none", base_ts, n=5))
    c = consumer(broker.bootstrap, **{"enable.partition.eof": False})
    try:
        c.assign([TopicPartition(topic, 0, 5)])
        assert c.poll(1.0) is None  # nothing past the end
        produce_all(p, topic, [{"partition": 0, "value": b"late", "timestamp": base_ts}])
        deadline = time.monotonic() + 15
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
        assert msg is not None and msg.error() is None, msg and msg.error()
        assert (msg.offset(), msg.value()) == (5, b"late")
    finally:
        c.close()


def _describe_topic_configs(a, topic: str) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return a.describe_configs([res], request_timeout=15)[res].result(timeout=30)


def test_admin_topics_and_configs(broker, topic):
    a = admin(broker.bootstrap)
    configs = {"retention.ms": "3600000", "max.message.bytes": "200000", "cleanup.policy": "delete"}
    fut = a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1, config=configs)],
                          operation_timeout=15, request_timeout=15)[topic]
    assert fut.result(timeout=30) is None
    create_topic_again = a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                         request_timeout=15)[topic]
    with pytest.raises(KafkaException) as ei:
        create_topic_again.result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    from clients import wait_topic_ready

    wait_topic_ready(broker.bootstrap, topic, 3)
    md = a.list_topics(timeout=10)
    assert topic in md.topics
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]
    assert [b.port for b in md.brokers.values()] == [broker.port]

    cfg = _describe_topic_configs(a, topic)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not cfg["retention.ms"].is_default
    assert cfg["max.message.bytes"].value == "200000"
    assert cfg["cleanup.policy"].value == "delete"
    # Defaults are listed too, with Kafka's default values.
    for name, value in {"compression.type": "producer", "message.timestamp.type": "CreateTime",
                        "min.insync.replicas": "1"}.items():
        assert name in cfg, f"{name} missing from DescribeConfigs"
        assert cfg[name].value == value, (name, cfg[name].value)
        assert cfg[name].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    for name in ("segment.bytes", "retention.bytes", "flush.messages", "segment.ms"):
        assert name in cfg, f"{name} missing from DescribeConfigs"
        assert cfg[name].value is not None and cfg[name].value != ""

    # IncrementalAlterConfigs: SET one, DELETE another (back to default).
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    assert a.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=30) is None
    deadline = time.monotonic() + 15
    while True:
        cfg = _describe_topic_configs(a, topic)
        if cfg["retention.ms"].value == "7200000" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert cfg["retention.ms"].value == "7200000"
    assert cfg["max.message.bytes"].value == "1048588"
    assert cfg["max.message.bytes"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["cleanup.policy"].value == "delete"

    # CreatePartitions 3 -> 5; the new partitions take writes.
    f = a.create_partitions([NewPartitions(topic, 5)], request_timeout=15)[topic]
    assert f.result(timeout=30) is None
    wait_topic_ready(broker.bootstrap, topic, 5)
    assert sorted(a.list_topics(topic=topic, timeout=10).topics[topic].partitions) == [0, 1, 2, 3, 4]
    p = producer(broker.bootstrap, acks=1)
    (m,) = produce_all(p, topic, [{"partition": 4, "value": b"p4"}])
    assert (m.partition(), m.offset()) == (4, 0)
    assert [r.value for r in consume_range(broker.bootstrap, topic, 4, 0, count=1)] == [b"p4"]

    # DeleteTopics.
    assert a.delete_topics([topic], operation_timeout=15, request_timeout=15)[topic].result(timeout=30) is None
    deadline = time.monotonic() + 20
    while topic in a.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.3)
    assert topic not in a.list_topics(timeout=10).topics


def test_offsets_for_times_and_watermarks(broker, topic):
    create_topic(broker.bootstrap, topic)
    base_ts = int(time.time() * 1000) - 600_000
    n = 20
    p = producer(broker.bootstrap, acks=1, **{"linger.ms": 0})
    for i in range(n):  # one record per request so several batches exist
        produce_all(p, topic, [{"partition": 0, "value": f"v{i}".encode(), "timestamp": base_ts + i * 1000}])
    assert watermarks(broker.bootstrap, topic) == (0, n)

    c = consumer(broker.bootstrap)
    try:
        def oft(ts):
            (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None
            return tp.offset

        assert oft(base_ts - 5000) == 0
        assert oft(base_ts) == 0
        assert oft(base_ts + 5500) == 6  # first record with timestamp >= ts
        assert oft(base_ts + 19_000) == 19
        assert oft(base_ts + 19_001) == -1  # none: end
    finally:
        c.close()

    a = admin(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    for spec, want in [(OffsetSpec.earliest(), 0), (OffsetSpec.latest(), n),
                       (OffsetSpec.for_timestamp(base_ts + 10_000), 10)]:
        res = a.list_offsets({tp: spec}, request_timeout=15)[tp].result(timeout=30)
        assert res.offset == want, (spec, res.offset)


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_offsets_for_times_inside_a_compressed_batch(broker, topic, codec):
    create_topic(broker.bootstrap, topic)
    base_ts = int(time.time() * 1000) - 600_000
    n = 20
    # One request, one compressed batch holding all 20 records.
    p = producer(broker.bootstrap, acks=1, **{"linger.ms": 1000, "compression.type": codec})
    produce_all(p, topic, [{"partition": 0, "value": f"v{i}".encode(), "timestamp": base_ts + i * 1000} for i in range(n)])
    assert watermarks(broker.bootstrap, topic) == (0, n)
    if broker.kind == "rill":
        # The point of the test: the records share one batch on disk.
        from broker_process import newest_segment

        data = newest_segment(broker.partition_dir(topic)).read_bytes()
        assert int.from_bytes(data[8:12], "big") + 12 == len(data), "expected exactly one batch"
    c = consumer(broker.bootstrap)
    try:
        for ts, want in [(base_ts, 0), (base_ts + 5500, 6), (base_ts + 19_000, 19), (base_ts + 19_001, -1)]:
            (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None
            assert tp.offset == want, (ts - base_ts, tp.offset)
    finally:
        c.close()


def test_delete_records_moves_low_watermark(broker, topic):
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks=1)
    produce_all(p, topic, [{"partition": 0, "value": f"r{i}".encode()} for i in range(30)])
    assert watermarks(broker.bootstrap, topic) == (0, 30)
    a = admin(broker.bootstrap)
    tp = TopicPartition(topic, 0, 10)
    res = a.delete_records([tp], request_timeout=15)[tp].result(timeout=30)
    assert res.low_watermark == 10
    assert watermarks(broker.bootstrap, topic) == (10, 30)
    recs = consume_range(broker.bootstrap, topic, 0, confluent_kafka.OFFSET_BEGINNING, count=20)
    assert [(r.offset, r.value) for r in recs] == [(i, f"r{i}".encode()) for i in range(10, 30)]
    # Reading below the log start offset is OFFSET_OUT_OF_RANGE.
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 3)])
        deadline = time.monotonic() + 15
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                err = m.error()
            elif m is not None and m.error() is None:
                raise AssertionError(f"read offset {m.offset()} below the log start offset")
        assert err is not None and err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE), err
    finally:
        c.close()


@pytest.mark.broker_settings(**{"num.partitions": 3})
def test_auto_create_uses_num_partitions(broker, topic):
    import kafka_wire as w
    from clients import wait_topic_ready

    w.metadata(broker.port, [topic], auto_create=True)  # asks for auto-creation
    wait_topic_ready(broker.bootstrap, topic, 3)
    md = w.metadata(broker.port, [topic])
    assert md["topics"][topic]["error"] == 0
    assert sorted(md["topics"][topic]["partitions"]) == [0, 1, 2]


@pytest.mark.broker_settings(**{"auto.create.topics.enable": "false"})
def test_auto_create_disabled(broker, topic):
    import kafka_wire as w

    for _ in range(3):
        md = w.metadata(broker.port, [topic], auto_create=True)
        assert md["topics"][topic]["error"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
        time.sleep(0.3)
    assert topic not in admin(broker.bootstrap).list_topics(timeout=10).topics
    errs = []
    p = producer(broker.bootstrap, acks=1, **{"message.timeout.ms": 3000})
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: errs.append(err))
    p.flush(10)
    assert len(p) == 0
    assert len(errs) == 1 and errs[0] is not None, errs  # not delivered: no such topic
    assert topic not in admin(broker.bootstrap).list_topics(timeout=10).topics


def test_authorized_operations_without_an_authorizer(broker, topic):
    """KIP-430: without an authorizer Kafka reports every operation of the resource type
    as allowed (librdkafka's 0081 checks them); DescribeTopics (Metadata v8+),
    DescribeCluster and DescribeConsumerGroups alike."""
    from confluent_kafka import ConsumerGroupState, TopicCollection
    from confluent_kafka.admin import AclOperation

    create_topic(broker.bootstrap, topic)
    a = admin(broker.bootstrap)
    (desc,) = a.describe_topics(TopicCollection([topic]), include_authorized_operations=True,
                                request_timeout=15).values()
    assert {op.name for op in desc.result(timeout=30).authorized_operations} == {
        "READ", "WRITE", "CREATE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
    # Not asked for: none reported.
    (plain,) = a.describe_topics(TopicCollection([topic]), request_timeout=15).values()
    assert plain.result(timeout=30).authorized_operations is None

    cluster = a.describe_cluster(include_authorized_operations=True, request_timeout=15).result(timeout=30)
    assert {op.name for op in cluster.authorized_operations} == {
        "CREATE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "ALTER", "DESCRIBE"}

    group = f"{topic}-g"
    c = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                                  "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.2)
        assert c.assignment(), "the consumer never joined"
        (gdesc,) = a.describe_consumer_groups([group], include_authorized_operations=True,
                                              request_timeout=15).values()
        g = gdesc.result(timeout=30)
        assert g.state == ConsumerGroupState.STABLE
        assert {op.name for op in g.authorized_operations} == {
            "READ", "DESCRIBE", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
        assert AclOperation.READ in g.authorized_operations
    finally:
        c.close()
