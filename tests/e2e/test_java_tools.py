"""Apache Kafka's Java client and tools (kafka-clients / kafka-tools jars cached by
tests/tools/install.sh): a small kafka-clients program per codec, the console producer
and consumer, and TopicCommand (kafka-topics.sh)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time

import pytest
from broker_process import cache_dir, kafka_jars, kafka_version
from clients import CODECS, create_topic

N = 100

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")


def classpath() -> str:
    classes = cache_dir() / "java-classes" / kafka_version()
    return os.pathsep.join([str(classes), kafka_jars("clients")])


def java(main: str, *args: str, stdin: bytes | None = None, timeout: float = 90.0, check: bool = True):
    p = subprocess.run(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
         "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath(), main, *args],
        input=stdin if stdin is not None else b"",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )
    if check:
        assert p.returncode == 0, (
            f"{main} {' '.join(args)} exited {p.returncode}\n--- stdout\n{p.stdout.decode(errors='replace')[-3000:]}"
            f"\n--- stderr\n{p.stderr.decode(errors='replace')[-3000:]}"
        )
    return p


def value_of(codec: str, i: int) -> bytes:
    """Same as RillJavaClient.valueOf."""
    s = f"java-{codec}-{i}-" + "".join(chr(ord("a") + (i + j) % 26) for j in range((i % 7) * 20 + 10))
    return s.encode()


@pytest.mark.parametrize("codec", CODECS)
def test_java_client_codec(broker, topic, codec):
    create_topic(broker.bootstrap, topic)
    ts_base = int(time.time() * 1000) - 60_000
    out = java("RillJavaClient", "produce", broker.bootstrap, topic, "0", str(N), codec, "1", str(ts_base))
    acks = [line.split() for line in out.stdout.decode().splitlines() if line.startswith("ack ")]
    assert [(int(o), int(i)) for _, o, i in acks] == [(i, i) for i in range(N)]

    out = java("RillJavaClient", "consume", broker.bootstrap, topic, "0", "0", str(N), "30000")
    recs = [line.split(" ") for line in out.stdout.decode().splitlines() if line.startswith("rec ")]
    assert len(recs) == N
    for i, (_, off, ts, k, v, h) in enumerate(recs):
        assert int(off) == i
        assert int(ts) == ts_base + i
        assert base64.b64decode(k) == f"k-{i}".encode()
        assert base64.b64decode(v) == value_of(codec, i)
        name, hv = h.split("=", 1)
        assert (name, base64.b64decode(hv)) == ("h", f"hv-{i}".encode())

    # Seek into the middle.
    out = java("RillJavaClient", "consume", broker.bootstrap, topic, "0", "61", str(N - 61), "30000")
    offs = [int(line.split(" ")[1]) for line in out.stdout.decode().splitlines() if line.startswith("rec ")]
    assert offs == list(range(61, N))


def test_console_producer_consumer(broker, topic):
    create_topic(broker.bootstrap, topic)
    n = 40
    lines = "".join(f"hk:hv{i},n:x\tkey{i}\tvalue {i} é\n" for i in range(n)).encode()
    java(
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server", broker.bootstrap, "--topic", topic,
        "--compression-codec", "zstd",
        "--property", "parse.key=true", "--property", "parse.headers=true",
        "--producer-property", "acks=1", "--producer-property", "enable.idempotence=false",
        "--timeout", "50",  # linger.ms; not --sync, which lingers a second per record
        stdin=lines,
    )
    out = java(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server", broker.bootstrap, "--topic", topic, "--partition", "0", "--offset", "earliest",
        "--max-messages", str(n), "--timeout-ms", "30000",
        "--consumer-property", "enable.auto.commit=false",
        "--property", "print.offset=true", "--property", "print.key=true", "--property", "print.headers=true",
        "--property", "print.partition=true",
    )
    got = out.stdout.decode().splitlines()
    assert got == [f"Partition:0\tOffset:{i}\thk:hv{i},n:x\tkey{i}\tvalue {i} é" for i in range(n)], out.stderr.decode()[-2000:]


def topics_cmd(broker, *args: str) -> str:
    return java("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", broker.bootstrap, *args).stdout.decode()


def test_topic_command(broker, topic):
    out = topics_cmd(broker, "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1",
                     "--config", "retention.ms=4321000", "--config", "segment.bytes=1048576")
    assert f"Created topic {topic}." in out
    deadline = time.monotonic() + 15
    while True:
        desc = topics_cmd(broker, "--describe", "--topic", topic)
        parts = re.findall(rf"Topic: {re.escape(topic)}\s+Partition: (\d+)\s+Leader: (-?\d+)\s+Replicas: (\S+)\s+Isr: (\S+)", desc)
        if (len(parts) == 3 and all(int(p[1]) >= 0 for p in parts)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert re.search(rf"Topic: {re.escape(topic)}\s+TopicId: \S+\s+PartitionCount: 3\s+ReplicationFactor: 1", desc), desc
    m = re.search(r"Configs: (.*)", desc)
    assert m, desc
    configs = dict(kv.split("=", 1) for kv in m.group(1).strip().split(","))
    assert configs.get("retention.ms") == "4321000", desc
    assert configs.get("segment.bytes") == "1048576", desc
    assert sorted(int(p[0]) for p in parts) == [0, 1, 2], desc
    assert len({p[1] for p in parts}) == 1 and all(p[2] == p[1] and p[3] == p[1] for p in parts), desc

    assert topic in topics_cmd(broker, "--list").split()

    topics_cmd(broker, "--alter", "--topic", topic, "--partitions", "4")
    desc = topics_cmd(broker, "--describe", "--topic", topic)
    assert re.search(r"PartitionCount: 4\b", desc), desc

    topics_cmd(broker, "--delete", "--topic", topic)
    deadline = time.monotonic() + 20
    while topic in topics_cmd(broker, "--list").split() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert topic not in topics_cmd(broker, "--list").split()

    # Describing a topic that does not exist fails.
    p = java("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", broker.bootstrap,
             "--describe", "--topic", topic, check=False)
    assert p.returncode != 0
    assert "does not exist" in (p.stdout + p.stderr).decode()
