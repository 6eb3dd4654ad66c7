"""Minimal hand-written Kafka wire encoding for the raw-socket tests (stdlib only, plus
kafka-python's CRC-32C). Only the few request versions the tests send are encoded here;
they are all non-flexible except the ApiVersions v3+ header.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from kafka.record.util import calc_crc32c

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_MESSAGE_TOO_LARGE = 10
ERR_UNSUPPORTED_VERSION = 35


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _varint(n: int) -> bytes:
    return _uvarint((n << 1) ^ (n >> 63))


def _compact_str(s: str) -> bytes:
    b = s.encode()
    return _uvarint(len(b) + 1) + b


def header_v1(api_key: int, version: int, correlation_id: int, client_id: str = "rill-e2e") -> bytes:
    return struct.pack(">hhi", api_key, version, correlation_id) + _str(client_id)


def header_v2(api_key: int, version: int, correlation_id: int, client_id: str = "rill-e2e") -> bytes:
    return header_v1(api_key, version, correlation_id, client_id) + b"\x00"  # no tagged fields


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class Conn:
    """A blocking loopback connection with request/response helpers."""

    def __init__(self, port: int, timeout: float = 10.0, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_corr(self) -> int:
        self.corr += 1
        return self.corr

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def recv_frame(self) -> bytes:
        (n,) = struct.unpack(">i", self.recv_exact(4))
        return self.recv_exact(n)

    def request(self, payload_without_len: bytes) -> bytes:
        self.send_raw(frame(payload_without_len))
        return self.recv_frame()

    def assert_closed_by_peer(self, timeout: float = 10.0) -> None:
        """The broker must close the connection (EOF or reset) without answering."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        received = b""
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return
            except socket.timeout:
                break
            if not chunk:
                assert received == b"", f"broker answered {received[:64]!r} before closing"
                return
            received += chunk
        raise AssertionError(
            f"connection still open after {timeout}s (received {len(received)} bytes: {received[:64]!r})"
        )


class Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.i = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        vals = struct.unpack_from(fmt, self.d, self.i)
        self.i += size
        return vals if len(vals) > 1 else vals[0]

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.i : self.i + n].decode()
        self.i += n
        return s

    def remaining(self) -> int:
        return len(self.d) - self.i


# ---- ApiVersions ---------------------------------------------------------------------


def api_versions_request(version: int, corr: int) -> bytes:
    if version >= 3:
        body = _compact_str("rill-e2e") + _compact_str("1.0") + b"\x00"
        return header_v2(API_API_VERSIONS, version, corr) + body
    return header_v1(API_API_VERSIONS, version, corr)


@dataclass
class ApiVersionsV0:
    correlation_id: int
    error_code: int
    api_keys: dict  # api_key -> (min, max)


def parse_api_versions_v0(resp: bytes) -> ApiVersionsV0:
    r = Reader(resp)
    corr = r.take(">i")
    err = r.take(">h")
    n = r.take(">i")
    keys = {}
    for _ in range(max(n, 0)):
        k, lo, hi = r.take(">hhh")
        keys[k] = (lo, hi)
    return ApiVersionsV0(corr, err, keys)


# ---- Metadata v4 ---------------------------------------------------------------------


def metadata_request_v4(corr: int, topics: list[str] | None = None, auto_create: bool = False) -> bytes:
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(_str(t) for t in topics)
    body += struct.pack(">?", auto_create)
    return header_v1(API_METADATA, 4, corr) + body


def parse_metadata_v4(resp: bytes) -> dict:
    r = Reader(resp)
    corr = r.take(">i")
    r.take(">i")  # throttle
    brokers = []
    for _ in range(r.take(">i")):
        node = r.take(">i")
        host = r.string()
        port = r.take(">i")
        r.string()  # rack
        brokers.append((node, host, port))
    cluster_id = r.string()
    controller = r.take(">i")
    topics = {}
    for _ in range(r.take(">i")):
        err = r.take(">h")
        name = r.string()
        r.take(">?")
        parts = {}
        for _ in range(r.take(">i")):
            perr, idx, leader = r.take(">hii")
            replicas = [r.take(">i") for _ in range(r.take(">i"))]
            isr = [r.take(">i") for _ in range(r.take(">i"))]
            parts[idx] = {"error": perr, "leader": leader, "replicas": replicas, "isr": isr}
        topics[name] = {"error": err, "partitions": parts}
    return {"correlation_id": corr, "brokers": brokers, "cluster_id": cluster_id,
            "controller": controller, "topics": topics}


def metadata(port: int, topics: list[str] | None = None, auto_create: bool = False) -> dict:
    with Conn(port) as c:
        corr = c.next_corr()
        md = parse_metadata_v4(c.request(metadata_request_v4(corr, topics, auto_create)))
        assert md["correlation_id"] == corr
        return md


# ---- Record batch v2 and Produce v7 ---------------------------------------------------


def record_batch(records: list[tuple[bytes | None, bytes | None]], base_ts: int) -> bytes:
    """An uncompressed magic-2 record batch, base offset 0, no producer id."""
    body = b""
    for i, (key, value) in enumerate(records):
        rec = b"\x00" + _varint(0) + _varint(i)  # attributes, timestamp delta, offset delta
        rec += _varint(-1) if key is None else _varint(len(key)) + key
        rec += _varint(-1) if value is None else _varint(len(value)) + value
        rec += _varint(0)  # headers
        body += _varint(len(rec)) + rec
    n = len(records)
    after_crc = struct.pack(
        ">hiqqqhii", 0, n - 1, base_ts, base_ts, -1, -1, -1, n
    ) + body  # attributes, last offset delta, first ts, max ts, producer id, epoch, base seq, count
    crc = calc_crc32c(after_crc)
    # base offset, batch length, partition leader epoch, magic, crc
    batch_len = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", 0, batch_len, -1, 2, crc) + after_crc


def produce_request_v7(corr: int, topic: str, partition: int, records: bytes, acks: int = 1,
                       timeout_ms: int = 10000) -> bytes:
    body = _str(None) + struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + _str(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(records)) + records
    return header_v1(API_PRODUCE, 7, corr) + body


def parse_produce_v7(resp: bytes) -> dict:
    """-> {"correlation_id": c, (topic, partition): (error_code, base_offset)}"""
    r = Reader(resp)
    out = {"correlation_id": r.take(">i")}
    for _ in range(r.take(">i")):
        name = r.string()
        for _ in range(r.take(">i")):
            idx, err, base, _log_append, _lso = r.take(">ihqqq")
            out[(name, idx)] = (err, base)
    return out


def produce(port: int, topic: str, partition: int, batch: bytes, acks: int = 1) -> tuple[int, int]:
    with Conn(port) as c:
        corr = c.next_corr()
        resp = parse_produce_v7(c.request(produce_request_v7(corr, topic, partition, batch, acks)))
        assert resp["correlation_id"] == corr
        return resp[(topic, partition)]
