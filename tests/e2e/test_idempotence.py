"""Idempotent producer (issue 4): InitProducerId, sequence checks, duplicates answered
with the original offset, epoch fencing, state that survives a restart and a kill -9.

The Java client (kafka-clients, enable.idempotence=true) produces with retries, also
while the broker is paused long enough for its requests to time out, and no record
lands twice. Raw-protocol tests resend exact batches to pin the broker's answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time

import pytest
from broker_process import cache_dir, kafka_jars, kafka_version, target
from clients import consume_range, create_topic, produce_all, producer
from kafka_wire import Conn, _str, _varint, header_v1, produce

from kafka.record.util import calc_crc32c

API_INIT_PRODUCER_ID = 22

ERR_NONE = 0
ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
ERR_INVALID_PRODUCER_EPOCH = 47
ERR_INVALID_TXN_STATE = 48
ERR_UNSUPPORTED_VERSION = 35
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
RETRIABLE_COORDINATOR_ERRORS = (14, 15, 16)

rill_only = pytest.mark.rill_only
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")


# ---- raw protocol: InitProducerId v1 and idempotent batches ---------------------------


def init_producer_id(port: int, transactional_id: str | None = None) -> tuple[int, int, int]:
    """-> (error_code, producer_id, producer_epoch), InitProducerId v1 (non-flexible).
    Retriable coordinator errors (Apache Kafka answers them while it starts) are retried
    for a bounded time, as clients do."""
    deadline = time.monotonic() + 30
    while True:
        with Conn(port) as c:
            corr = c.next_corr()
            body = _str(transactional_id) + struct.pack(">i", 60000)
            resp = c.request(header_v1(API_INIT_PRODUCER_ID, 1, corr) + body)
            got_corr, _throttle, err, pid, epoch = struct.unpack(">iihqh", resp[:20])
            assert got_corr == corr
        if err not in RETRIABLE_COORDINATOR_ERRORS or time.monotonic() > deadline:
            return err, pid, epoch
        time.sleep(0.2)


def idempotent_batch(values: list[bytes], producer_id: int, epoch: int, base_seq: int,
                     transactional: bool = False) -> bytes:
    """An uncompressed magic-2 batch carrying producer id, epoch and base sequence."""
    base_ts = int(time.time() * 1000)
    body = b""
    for i, value in enumerate(values):
        rec = b"\x00" + _varint(0) + _varint(i) + _varint(-1) + _varint(len(value)) + value + _varint(0)
        body += _varint(len(rec)) + rec
    n = len(values)
    attributes = 0x10 if transactional else 0
    after_crc = struct.pack(">hiqqqhii", attributes, n - 1, base_ts, base_ts, producer_id, epoch, base_seq, n) + body
    crc = calc_crc32c(after_crc)
    return struct.pack(">qiibI", 0, 4 + 1 + 4 + len(after_crc), -1, 2, crc) + after_crc


def values_in_log(broker, topic: str) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value) for r in consume_range(broker.bootstrap, topic, 0, 0, count=None, timeout=30)]


# ---- Java -------------------------------------------------------------------------------


def java_classpath() -> str:
    classes = cache_dir() / "java-classes" / kafka_version()
    return os.pathsep.join([str(classes), kafka_jars("clients")])


def java_producer(broker, topic: str, n: int, hold_at: int = 0, request_timeout_ms: int = 15000) -> subprocess.Popen:
    return subprocess.Popen(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
         "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", java_classpath(),
         "RillIdempotentProducer", broker.bootstrap, topic, "0", str(n), str(hold_at), str(request_timeout_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[list[tuple[int, int]], dict]:
    """Waits for the Java producer; returns [(offset, i)] of its acks and its metrics."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"java producer did not finish in {timeout}s:\n{err.decode(errors='replace')[-3000:]}")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"java producer exited {proc.returncode}\n{text[-3000:]}\n{err.decode(errors='replace')[-3000:]}"
    acks = [(int(o), int(i)) for _, o, i in (line.split() for line in text.splitlines() if line.startswith("ack "))]
    metrics = {name: float(v) for _, name, v in (line.split() for line in text.splitlines() if line.startswith("metric "))}
    return acks, metrics


def assert_exactly_once_in_order(broker, topic: str, n: int, acks: list[tuple[int, int]]) -> None:
    assert acks == [(i, i) for i in range(n)], acks[:10]
    log = values_in_log(broker, topic)
    assert len(log) == n, f"{len(log)} records in the log for {n} sent"
    assert log == [(i, b"idem-%d" % i) for i in range(n)]


@needs_java
def test_java_idempotent_producer_lands_each_record_once(broker, topic):
    create_topic(broker.bootstrap, topic)
    n = 3000
    acks, metrics = finish(java_producer(broker, topic, n))
    assert metrics.get("record-error-total") == 0.0
    assert_exactly_once_in_order(broker, topic, n, acks)


@needs_java
def test_java_retries_after_a_broker_pause_write_no_duplicates(broker, topic):
    """The broker is stopped (SIGSTOP) while the producer has batches in flight, longer
    than request.timeout.ms: the client gives up on those requests and sends the same
    batches again on a new connection. On SIGCONT the broker reads both the original
    requests and the retries; the retries must be answered as duplicates."""
    create_topic(broker.bootstrap, topic)
    n, hold_at = 600, 200
    proc = java_producer(broker, topic, n, hold_at=hold_at, request_timeout_ms=1500)
    try:
        deadline = time.monotonic() + 60
        line = b""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.strip() == b"held":
                break
        assert line.strip() == b"held", f"java producer did not reach the hold point: {line!r}"
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            # Several request timeouts: the client disconnects and resends meanwhile.
            time.sleep(5)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        acks, metrics = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    held = [(i, i) for i in range(hold_at)]
    assert acks[:hold_at] == held
    assert metrics.get("record-retry-total", 0) > 0, f"no retry happened: {metrics}"
    assert metrics.get("record-error-total") == 0.0
    assert_exactly_once_in_order(broker, topic, n, acks)


def test_librdkafka_idempotent_producer_lands_each_record_once(broker, topic):
    create_topic(broker.bootstrap, topic)
    n = 2000
    p = producer(broker.bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 2,
                                      "batch.num.messages": 50})
    msgs = produce_all(p, topic, [{"value": b"idem-%d" % i, "partition": 0} for i in range(n)])
    acks = [(m.offset(), i) for i, m in enumerate(msgs)]
    assert_exactly_once_in_order(broker, topic, n, acks)


# ---- raw protocol ------------------------------------------------------------------------


def test_duplicate_is_answered_with_the_original_offset_gaps_and_old_epochs_are_refused(broker, topic):
    create_topic(broker.bootstrap, topic)
    err, pid, epoch = init_producer_id(broker.port)
    assert (err, epoch) == (ERR_NONE, 0) and pid >= 0
    err2, pid2, _ = init_producer_id(broker.port)
    assert err2 == ERR_NONE and pid2 != pid

    first = idempotent_batch([b"a", b"b", b"c"], pid, 0, 0)
    second = idempotent_batch([b"d", b"e"], pid, 0, 3)
    assert produce(broker.port, topic, 0, first, acks=-1) == (ERR_NONE, 0)
    # The same batch again: no error, the original base offset, nothing written.
    assert produce(broker.port, topic, 0, first, acks=-1) == (ERR_NONE, 0)
    assert produce(broker.port, topic, 0, second, acks=-1) == (ERR_NONE, 3)
    assert produce(broker.port, topic, 0, second, acks=-1) == (ERR_NONE, 3)
    # An older batch still among the last five.
    assert produce(broker.port, topic, 0, first, acks=-1) == (ERR_NONE, 0)

    # A gap: sequence 5 is next, 9 is refused.
    err, _ = produce(broker.port, topic, 0, idempotent_batch([b"x"], pid, 0, 9), acks=-1)
    assert err == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
    # A new epoch restarts at sequence 0 ...
    assert produce(broker.port, topic, 0, idempotent_batch([b"f"], pid, 1, 0), acks=-1) == (ERR_NONE, 5)
    # ... must start there ...
    err, _ = produce(broker.port, topic, 0, idempotent_batch([b"y"], pid, 2, 7), acks=-1)
    assert err == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
    # ... and fences the old one.
    err, _ = produce(broker.port, topic, 0, idempotent_batch([b"z"], pid, 0, 5), acks=-1)
    assert err == ERR_INVALID_PRODUCER_EPOCH
    # Another producer is independent.
    assert produce(broker.port, topic, 0, idempotent_batch([b"g"], pid2, 0, 0), acks=-1) == (ERR_NONE, 6)

    assert values_in_log(broker, topic) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d"), (4, b"e"), (5, b"f"), (6, b"g")]


@rill_only
def test_transactions_are_refused_plainly(broker, topic):
    create_topic(broker.bootstrap, topic)
    err, pid, epoch = init_producer_id(broker.port, transactional_id="txn-1")
    assert (err, pid, epoch) == (ERR_UNSUPPORTED_VERSION, -1, -1)
    _, pid, _ = init_producer_id(broker.port)
    err, _ = produce(broker.port, topic, 0, idempotent_batch([b"t"], pid, 0, 0, transactional=True), acks=-1)
    assert err == ERR_INVALID_TXN_STATE
    assert values_in_log(broker, topic) == []


def produce_three_batches(broker, topic) -> tuple[int, list[bytes]]:
    err, pid, _ = init_producer_id(broker.port)
    assert err == ERR_NONE and pid >= 0
    batches = [
        idempotent_batch([b"r0", b"r1"], pid, 0, 0),
        idempotent_batch([b"r2"], pid, 0, 2),
        idempotent_batch([b"r3", b"r4", b"r5"], pid, 0, 3),
    ]
    assert [produce(broker.port, topic, 0, b, acks=-1) for b in batches] == [(0, 0), (0, 2), (0, 3)]
    return pid, batches


def assert_state_survived(broker, topic, pid: int, batches: list[bytes]) -> None:
    # A retry of the last batch is still recognised ...
    assert produce(broker.port, topic, 0, batches[2], acks=-1) == (ERR_NONE, 3)
    if target() == "rill":
        # ... and of older ones: Rill keeps all five in snapshots and rebuilds them from
        # the log, where Apache Kafka restores only each producer's last batch.
        assert produce(broker.port, topic, 0, batches[0], acks=-1) == (ERR_NONE, 0)
    # ... and the sequence continues where it was, gaps still refused.
    err, _ = produce(broker.port, topic, 0, idempotent_batch([b"gap"], pid, 0, 7), acks=-1)
    assert err == ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(broker.port, topic, 0, idempotent_batch([b"r6"], pid, 0, 6), acks=-1) == (ERR_NONE, 6)
    assert [v for _, v in values_in_log(broker, topic)] == [b"r%d" % i for i in range(7)]


def test_state_survives_a_clean_restart_through_the_snapshot(broker, topic):
    create_topic(broker.bootstrap, topic)
    pid, batches = produce_three_batches(broker, topic)
    broker.stop_clean()
    snapshots = sorted(p.name for p in broker.partition_dir(topic).glob("*.snapshot"))
    assert f"{6:020d}.snapshot" in snapshots, snapshots
    broker.start()
    assert_state_survived(broker, topic, pid, batches)


def test_state_survives_kill_9_by_replaying_the_log(broker, topic):
    create_topic(broker.bootstrap, topic)
    pid, batches = produce_three_batches(broker, topic)
    broker.kill()
    # No snapshot at all: the state can only come from scanning the batch headers.
    for p in broker.partition_dir(topic).glob("*.snapshot"):
        p.unlink()
    broker.start()
    assert_state_survived(broker, topic, pid, batches)
    # Producer ids stay unique across restarts.
    _, new_pid, _ = init_producer_id(broker.port)
    assert new_pid != pid
