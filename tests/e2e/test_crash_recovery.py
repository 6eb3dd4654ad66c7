"""Crash safety of one partition: kill -9 mid-stream loses no acknowledged record, and a
garbage or torn tail on the newest segment is truncated by recovery."""

from __future__ import annotations

import os
import struct
import time

import pytest
from broker_process import newest_segment, remove_clean_shutdown_markers
from clients import consume_range, create_topic, produce_all, producer, watermarks

MAX_RECORDS = 20000  # bound on the produce loop
MAX_SECONDS = 30.0  # bound on the produce loop
KILL_AFTER_ACKS = 400


def read_all(broker, topic):
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=None, timeout=60)
    assert [r.offset for r in recs] == list(range(len(recs))), "offsets not contiguous from 0"
    return recs


def produce_until_killed(broker, topic) -> dict[int, bytes]:
    """Produce with acks=1 until KILL_AFTER_ACKS are acknowledged, kill -9 the broker with
    requests in flight, and return {offset: value} of every acknowledged record."""
    acked: dict[int, bytes] = {}
    failed = []
    p = producer(
        broker.bootstrap,
        acks=1,
        **{
            "linger.ms": 1,
            "batch.num.messages": 20,
            "message.timeout.ms": 4000,
            "request.timeout.ms": 2000,
            "retries": 0,
            "reconnect.backoff.max.ms": 200,
        },
    )

    def cb(err, msg):
        if err is None:
            assert msg.offset() not in acked, f"offset {msg.offset()} acknowledged twice"
            acked[msg.offset()] = msg.value()
        else:
            failed.append(err)

    start = time.monotonic()
    killed_at = None
    i = 0
    while i < MAX_RECORDS and time.monotonic() - start < MAX_SECONDS:
        value = b"crash-%06d-" % i + bytes((i + j) % 251 for j in range(i % 64))
        try:
            p.produce(topic, value=value, partition=0, on_delivery=cb)
            i += 1
        except BufferError:
            pass
        p.poll(0)
        if killed_at is None and len(acked) >= KILL_AFTER_ACKS:
            broker.kill()  # kill -9 while the producer keeps sending
            killed_at = i
        if killed_at is not None and i - killed_at >= 200:
            break
        if i % 50 == 0:
            p.poll(0.005)
    assert killed_at is not None, f"only {len(acked)} acks in {MAX_SECONDS}s"
    p.flush(15)  # everything still pending fails (broker is down) within message.timeout.ms
    assert len(p) == 0
    assert failed, "records sent after the kill should have failed"
    return acked


def test_kill9_loses_no_acknowledged_record(broker, topic):
    create_topic(broker.bootstrap, topic)
    acked = produce_until_killed(broker, topic)
    broker.start()  # same data dir
    recs = read_all(broker, topic)
    by_offset = {r.offset: r.value for r in recs}
    missing = [o for o in acked if o not in by_offset]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. offsets {sorted(missing)[:10]}"
    wrong = [o for o, v in acked.items() if by_offset[o] != v]
    assert not wrong, f"acknowledged records changed at offsets {wrong[:10]}"
    for r in recs:  # nothing corrupt: every record is one that was sent
        assert r.value.startswith(b"crash-"), (r.offset, r.value[:40])
        i = int(r.value[6:12])
        assert r.value == b"crash-%06d-" % i + bytes((i + j) % 251 for j in range(i % 64)), r.offset
    assert watermarks(broker.bootstrap, topic) == (0, len(recs))
    # New writes continue right after the recovered end.
    p = producer(broker.bootstrap, acks=1)
    (m,) = produce_all(p, topic, [{"partition": 0, "value": b"after-restart"}])
    assert m.offset() == len(recs)


def last_batch(segment: bytes) -> tuple[int, bytes]:
    """(position, bytes) of the last complete record batch in a segment."""
    pos, last = 0, None
    guard = 0
    while pos + 12 <= len(segment):
        guard += 1
        assert guard < 10_000_000
        (_base, length) = struct.unpack_from(">qi", segment, pos)
        end = pos + 12 + length
        if length <= 0 or end > len(segment):
            break
        last = (pos, segment[pos:end])
        pos = end
    assert last is not None, "no batch in segment"
    return last


def torn_next_batch(segment: bytes, next_offset: int) -> bytes:
    """The first half of a copy of the last batch, renumbered to start at next_offset: what
    a crash in the middle of appending the next batch leaves behind."""
    _pos, batch = last_batch(segment)
    batch = struct.pack(">q", next_offset) + batch[8:]
    return batch[: len(batch) // 2]


def corrupt_full_batch(segment: bytes, next_offset: int) -> bytes:
    """A complete next batch whose payload no longer matches its CRC-32C."""
    _pos, batch = last_batch(segment)
    b = bytearray(struct.pack(">q", next_offset) + batch[8:])
    b[-1] ^= 0x5A
    return bytes(b)


TAILS = {
    "garbage": lambda seg, nxt: bytes((i * 37 + 11) % 256 for i in range(777)),
    "zeros": lambda seg, nxt: b"\x00" * 4096,  # preallocation-style zero fill
    "torn-batch": torn_next_batch,
    "bad-crc-batch": corrupt_full_batch,
}


def test_recovery_truncates_bad_tail(broker, topic):
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks=1, **{"compression.type": "lz4"})
    sent = [{"partition": 0, "value": b"rec-%d" % i + b"x" * (i % 100), "key": b"k%d" % i} for i in range(150)]
    msgs = produce_all(p, topic, sent)
    assert [m.offset() for m in msgs] == list(range(150))
    del p
    expected = [(r.offset, r.key, r.value) for r in read_all(broker, topic)]
    assert len(expected) == 150
    leo = 150

    for name, make_tail in TAILS.items():
        broker.kill()  # no clean-shutdown marker
        remove_clean_shutdown_markers(broker.data_dir)
        seg = newest_segment(broker.partition_dir(topic))
        data = seg.read_bytes()
        tail = make_tail(data, leo)
        with open(seg, "ab") as f:
            f.write(tail)
            f.flush()
            os.fsync(f.fileno())
        broker.start()
        got = [(r.offset, r.key, r.value) for r in read_all(broker, topic)]
        assert got == expected, f"after a {name} tail: records differ"
        assert watermarks(broker.bootstrap, topic) == (0, leo), f"after a {name} tail"
        p = producer(broker.bootstrap, acks=1)
        value = f"after-{name}".encode()
        (m,) = produce_all(p, topic, [{"partition": 0, "value": value, "key": b"k"}])
        assert m.offset() == leo, f"after a {name} tail, produce went to offset {m.offset()} not {leo}"
        expected.append((leo, b"k", value))
        leo += 1
        del p

    assert [(r.offset, r.key, r.value) for r in read_all(broker, topic)] == expected


@pytest.mark.broker_settings(**{"log.segment.bytes": 1048576})  # Kafka's minimum
def test_restart_with_several_segments(broker, topic):
    """Clean restart and crash restart both keep a multi-segment log whole."""
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks=1, **{"linger.ms": 0})
    sent = [{"partition": 0, "value": b"seg-%04d-" % i + bytes((i + j) % 256 for j in range(12000))} for i in range(300)]
    for chunk in range(0, 300, 30):  # several requests -> several batches -> several segments
        produce_all(p, topic, sent[chunk : chunk + 30])
    del p
    assert len(list(broker.partition_dir(topic).glob("*.log"))) >= 3
    names = sorted(x.name for x in broker.partition_dir(topic).glob("*.log"))
    assert names[0] == "00000000000000000000.log"
    assert all(len(n) == len("00000000000000000000.log") for n in names)
    broker.restart()  # SIGTERM (exit code asserted) + start
    assert [r.value for r in read_all(broker, topic)] == [s["value"] for s in sent]
    broker.kill()
    broker.start()
    assert [r.value for r in read_all(broker, topic)] == [s["value"] for s in sent]
    assert watermarks(broker.bootstrap, topic) == (0, 300)
