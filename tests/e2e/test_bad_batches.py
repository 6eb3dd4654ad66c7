"""Record batches with a valid CRC that lie about their records, and decompression
bombs, produced on raw sockets: each is refused with the error code Kafka gives, nothing
of it is written (the log end offset does not move), the records acknowledged before
still read back, and a bomb does not raise the broker's peak RSS beyond a few tens of MB.

Rill-only cases are where Rill is stricter than Kafka on purpose (see each marker)."""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from pathlib import Path

import cramjam
import kafka_wire as w
import lz4.frame
import pytest
import zstandard
from clients import consume_range, create_topic
from kafka.record.util import calc_crc32c

ERR_INVALID_TIMESTAMP = 32
ERR_INVALID_RECORD = 87

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4


# ---- raw record batches whose every field can lie ------------------------------------


def varint(n: int) -> bytes:
    return w._varint(n)


def record(offset_delta: int, key: bytes | None, value: bytes | None, ts_delta: int = 0,
           headers: bytes = b"\x00", key_len: int | None = None, length: int | None = None) -> bytes:
    """One v2 record; `key_len` / `length` override the true lengths (to lie)."""
    body = b"\x00" + varint(ts_delta) + varint(offset_delta)
    if key_len is not None:
        body += varint(key_len) + (key or b"")
    else:
        body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += headers
    return varint(len(body) if length is None else length) + body


def batch(section: bytes, count: int, last_delta: int | None = None, attributes: int = 0,
          producer_id: int = -1, base_ts: int | None = None, max_ts: int | None = None) -> bytes:
    """A magic-2 batch around `section` (records, maybe compressed), CRC-32C valid."""
    ts = int(time.time() * 1000) if base_ts is None else base_ts
    last_delta = count - 1 if last_delta is None else last_delta
    after_crc = struct.pack(
        ">hiqqqhii", attributes, last_delta, ts, ts if max_ts is None else max_ts, producer_id, -1, -1, count
    ) + section
    crc = calc_crc32c(after_crc)
    return struct.pack(">qiibI", 0, 4 + 1 + 4 + len(after_crc), -1, 2, crc) + after_crc


def compress(codec: int, data: bytes) -> bytes:
    if codec == GZIP:
        return gzip.compress(data)
    if codec == SNAPPY:  # Kafka's (snappy-java) framing: magic header, then length-prefixed blocks
        out = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
        for i in range(0, len(data), 32 * 1024):
            block = bytes(cramjam.snappy.compress_raw(data[i:i + 32 * 1024]))
            out += struct.pack(">i", len(block)) + block
        return out
    if codec == LZ4:
        return lz4.frame.compress(data)
    if codec == ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(codec)


def good_records(n: int) -> bytes:
    return b"".join(record(i, b"k%d" % i, b"value-%d" % i) for i in range(n))


# ---- Produce v8: error message and record errors --------------------------------------


def produce_v8(port: int, topic: str, records: bytes, partition: int = 0) -> dict:
    """-> {"error": code, "base": offset, "record_errors": [(index, msg)], "message": str}"""
    with w.Conn(port, timeout=60) as c:
        corr = c.next_corr()
        body = w._str(None) + struct.pack(">hi", 1, 30000)
        body += struct.pack(">i", 1) + w._str(topic)
        body += struct.pack(">i", 1) + struct.pack(">i", partition)
        body += struct.pack(">i", len(records)) + records
        resp = c.request(w.header_v1(w.API_PRODUCE, 8, corr) + body)
    r = w.Reader(resp)
    assert r.take(">i") == corr
    out = {}
    for _ in range(r.take(">i")):
        r.string()
        for _ in range(r.take(">i")):
            _idx, err, base, _lat, _lso = r.take(">ihqqq")
            errors = []
            for _ in range(r.take(">i")):
                errors.append((r.take(">i"), r.string()))
            out = {"error": err, "base": base, "record_errors": errors, "message": r.string()}
    return out


# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture
def acked(broker, topic):
    """Three records produced and acknowledged before the bad batches."""
    create_topic(broker.bootstrap, topic)
    err, base = w.produce(broker.port, topic, 0, batch(good_records(3), 3))
    assert (err, base) == (w.ERR_NONE, 0)
    return [(i, b"k%d" % i, b"value-%d" % i) for i in range(3)]


def assert_nothing_written(broker, topic, acked):
    """The acked records read back unchanged and the next good batch lands right after."""
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=None, timeout=30)
    assert [(r.offset, r.key, r.value) for r in recs] == acked
    err, base = w.produce(broker.port, topic, 0, batch(good_records(1), 1))
    assert (err, base) == (w.ERR_NONE, len(acked)), "the log end offset moved"


def refused(broker, topic, records: bytes, code: int) -> dict:
    resp = produce_v8(broker.port, topic, records)
    assert resp["error"] == code, resp
    assert resp["base"] == -1, resp
    return resp


# ---- item 2: lying batches ------------------------------------------------------------

LYING = {
    # A record count of 1000 with one record (lastOffsetDelta agrees with the count).
    "count-1000-one-record": batch(good_records(1), 1000),
    # One real record claiming 2^31-1: moved the log end by 2^31 before.
    "count-max-one-record": batch(good_records(1), 2**31 - 1),
    # Three records under a count of 1.
    "three-records-count-1": batch(good_records(3), 1),
    # Count and lastOffsetDelta disagree.
    "count-vs-last-offset-delta": batch(good_records(2), 2, last_delta=5),
    "count-zero": batch(b"", 0, last_delta=0),
    # Record length 2^31-1, and negative.
    "record-length-max": batch(record(0, b"k", b"v", length=2**31 - 1), 1),
    "record-length-negative": batch(record(0, b"k", b"v", length=-7), 1),
    # Record length shorter than its fields.
    "record-length-short": batch(record(0, b"k", b"value", length=4), 1),
    # Key length 2^31-1 (bytes absent).
    "key-length-max": batch(record(0, b"k", b"v", key_len=2**31 - 1), 1),
    # Header count 2^31-1, negative; header key length negative.
    "header-count-max": batch(record(0, b"k", b"v", headers=varint(2**31 - 1)), 1),
    "header-count-negative": batch(record(0, b"k", b"v", headers=varint(-3)), 1),
    "header-key-negative": batch(record(0, b"k", b"v", headers=varint(1) + varint(-5) + varint(-1)), 1),
    "header-key-length-max": batch(record(0, b"k", b"v", headers=varint(1) + varint(2**31 - 1)), 1),
    # Bytes after the last record.
    "trailing-garbage": batch(good_records(2) + b"\xde\xad\xbe\xef", 2),
    # Control batch from a client; transactional bit with producer id -1.
    "control-bit": batch(good_records(1), 1, attributes=0x20),
}

# Rill refuses these, Kafka takes them (reads key length -5 as null; ignores the offset
# deltas of an uncompressed batch) or answers another code (a transactional batch in a
# request without a transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53).
LYING_RILL_ONLY = {
    "transactional-no-producer": batch(good_records(1), 1, attributes=0x10),
    "key-length-negative": batch(record(0, b"k", b"v", key_len=-5), 1),
    "offset-deltas-out-of-sequence": batch(record(0, b"a", b"1") + record(7, b"b", b"2"), 2),
}


@pytest.mark.parametrize("kind", list(LYING))
def test_lying_batch_is_invalid_record(broker, topic, acked, kind):
    refused(broker, topic, LYING[kind], ERR_INVALID_RECORD)
    assert_nothing_written(broker, topic, acked)


@pytest.mark.rill_only
@pytest.mark.parametrize("kind", list(LYING_RILL_ONLY))
def test_lying_batch_rill_stricter_than_kafka(broker, topic, acked, kind):
    refused(broker, topic, LYING_RILL_ONLY[kind], ERR_INVALID_RECORD)
    assert_nothing_written(broker, topic, acked)


@pytest.mark.parametrize("codec", [NONE, GZIP, SNAPPY, LZ4, ZSTD])
def test_compressed_lies_are_invalid_record(broker, topic, acked, codec):
    """The same lies inside a compressed section: count beyond the records, and garbage
    after the last record."""
    pack = (lambda s: s) if codec == NONE else (lambda s: compress(codec, s))
    refused(broker, topic, batch(pack(good_records(2)), 5, attributes=codec), ERR_INVALID_RECORD)
    refused(broker, topic, batch(pack(good_records(2) + b"junk"), 2, attributes=codec), ERR_INVALID_RECORD)
    assert_nothing_written(broker, topic, acked)
    # The honest compressed batch is taken and reads back.
    err, base = w.produce(broker.port, topic, 0, batch(pack(good_records(2)), 2, attributes=codec))
    assert (err, base) == (w.ERR_NONE, 4)
    recs = consume_range(broker.bootstrap, topic, 0, 4, count=2, timeout=30)
    assert [(r.offset, r.key, r.value) for r in recs] == [(4, b"k0", b"value-0"), (5, b"k1", b"value-1")]


@pytest.mark.rill_only  # Kafka answers UNKNOWN_SERVER_ERROR for these
@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD, 5, 6, 7])
def test_garbage_payload_or_unknown_codec_is_corrupt_message(broker, topic, acked, codec):
    garbage = bytes((i * 73 + 41) % 256 for i in range(200))
    refused(broker, topic, batch(garbage, 1, attributes=codec), w.ERR_CORRUPT_MESSAGE)
    if codec <= ZSTD:
        # A truncated real payload too. The lz4 frame decoder ends quietly at a cut, so
        # the records run out first: INVALID_RECORD, as Kafka's premature EOF.
        real = compress(codec, good_records(50))
        want = ERR_INVALID_RECORD if codec == LZ4 else w.ERR_CORRUPT_MESSAGE
        refused(broker, topic, batch(real[: len(real) // 2], 50, attributes=codec), want)
    assert_nothing_written(broker, topic, acked)


def test_two_batches_in_one_partition_is_invalid_record(broker, topic, acked):
    two = batch(good_records(1), 1) + batch(good_records(1), 1)
    refused(broker, topic, two, ERR_INVALID_RECORD)
    assert_nothing_written(broker, topic, acked)


def test_timestamp_100_years_ahead_is_invalid_timestamp(broker, topic, acked):
    now = int(time.time() * 1000)
    far = now + 100 * 365 * 24 * 3600 * 1000
    # Second record 100 years ahead (base timestamp now, delta 100 years).
    records = record(0, b"a", b"now") + record(1, b"b", b"later", ts_delta=far - now)
    resp = refused(broker, topic, batch(records, 2, base_ts=now, max_ts=far), ERR_INVALID_TIMESTAMP)
    assert [i for i, _ in resp["record_errors"]] == [1], resp
    assert str(far) in resp["record_errors"][0][1], resp
    # Half an hour ahead is inside the default one hour.
    soon = now + 30 * 60 * 1000
    err, base = w.produce(broker.port, topic, 0, batch(record(0, b"s", b"soon"), 1, base_ts=soon))
    assert (err, base) == (w.ERR_NONE, 3)
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=None, timeout=30)
    assert [(r.offset, r.key) for r in recs] == [(0, b"k0"), (1, b"k1"), (2, b"k2"), (3, b"s")]


def test_topic_timestamp_bounds_apply(broker, topic):
    create_topic(broker.bootstrap, topic, config={
        "message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "1000"})
    now = int(time.time() * 1000)
    refused(broker, topic, batch(good_records(1), 1, base_ts=now - 3_600_000), ERR_INVALID_TIMESTAMP)
    refused(broker, topic, batch(good_records(1), 1, base_ts=now + 60_000), ERR_INVALID_TIMESTAMP)
    err, base = w.produce(broker.port, topic, 0, batch(good_records(1), 1, base_ts=now - 30_000))
    assert (err, base) == (w.ERR_NONE, 0)
    # LogAppendTime topics take any timestamp (the broker stamps the batch).
    lat = topic + "-lat"
    create_topic(broker.bootstrap, lat, config={
        "message.timestamp.type": "LogAppendTime", "message.timestamp.after.max.ms": "0"})
    err, base = w.produce(broker.port, lat, 0, batch(good_records(1), 1, base_ts=now + 10**9))
    assert (err, base) == (w.ERR_NONE, 0)


@pytest.mark.broker_settings(**{"log.message.timestamp.after.max.ms": "0"})
def test_broker_level_timestamp_bound_is_the_topic_default(broker, topic):
    create_topic(broker.bootstrap, topic)
    now = int(time.time() * 1000)
    refused(broker, topic, batch(good_records(1), 1, base_ts=now + 120_000), ERR_INVALID_TIMESTAMP)
    err, base = w.produce(broker.port, topic, 0, batch(good_records(1), 1, base_ts=now - 1000))
    assert (err, base) == (w.ERR_NONE, 0)


# ---- item 3: decompression bombs ------------------------------------------------------

BOMB_BYTES = 1 << 30  # one record whose value is 1 GiB of zeros


def bomb_section(codec: int, value_len: int) -> bytes:
    """A records section holding one record with a `value_len`-byte value, compressed
    in a stream so the test never holds the whole value."""
    body_head = b"\x00" + varint(0) + varint(0) + varint(1) + b"k" + varint(value_len)
    head = varint(len(body_head) + value_len + 1) + body_head
    chunk = bytes(1 << 20)
    if codec == ZSTD:
        c = zstandard.ZstdCompressor(level=3).compressobj()
        out = [c.compress(head)]
        for _ in range(value_len >> 20):
            out.append(c.compress(chunk))
        out.append(c.compress(b"\x00"))  # no headers
        out.append(c.flush())
        return b"".join(out)
    if codec == GZIP:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        out = [c.compress(head)]
        for _ in range(value_len >> 20):
            out.append(c.compress(chunk))
        out.append(c.compress(b"\x00"))
        out.append(c.flush())
        return b"".join(out)
    raise ValueError(codec)


def peak_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


@pytest.mark.rill_only  # Kafka streams such a batch and stores it; the RSS is a JVM's
@pytest.mark.parametrize("codec,value_len", [(ZSTD, BOMB_BYTES), (GZIP, 256 << 20)])
def test_decompression_bomb_is_refused_and_rss_stays_bounded(broker, topic, acked, codec, value_len):
    section = bomb_section(codec, value_len)
    assert len(section) < 512 * 1024, len(section)
    bomb = batch(section, 1, attributes=codec)
    rss_before, hwm_before = peak_rss_kib(broker.proc.pid)
    for _ in range(3):
        resp = refused(broker, topic, bomb, ERR_INVALID_RECORD)
        assert "decompress to more than" in (resp["message"] or ""), resp
    rss_after, hwm_after = peak_rss_kib(broker.proc.pid)
    print(f"codec {codec}: {len(section)} bytes inflating to {value_len}; "
          f"RSS {rss_before} KiB -> {rss_after} KiB, peak {hwm_before} KiB -> {hwm_after} KiB")
    assert hwm_after - hwm_before < 48 * 1024, (hwm_before, hwm_after)
    assert_nothing_written(broker, topic, acked)
    # ListOffsets by timestamp and compaction never see it: nothing was stored.
    # A batch inside the limit in the same codec is taken.
    small = bomb_section(codec, 4 << 20)
    err, base = w.produce(broker.port, topic, 0, batch(small, 1, attributes=codec))
    assert (err, base) == (w.ERR_NONE, 4)
