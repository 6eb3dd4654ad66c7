"""Requests whose array counts or lengths claim more than the frame holds: the broker
closes that connection before allocating anything (Kafka's generated readers refuse
such counts the same way), its memory does not move, and everyone else is served."""

from __future__ import annotations

import struct
import time

import kafka_wire as w
import pytest
from clients import consume_range, create_topic

HUGE = 0x7FFFFFFF


def i32(n: int) -> bytes:
    return struct.pack(">i", n)


def compact_count(n: int) -> bytes:
    return w._uvarint(n + 1)


# (name, api key, version, body after the request header). Each claims HUGE elements
# (or bytes) somewhere, top level or nested, in both encodings.
HOSTILE = [
    # The two frames from the report: Metadata v1 and the flexible v12.
    ("metadata-v1-topics", 3, 1, i32(HUGE)),
    ("metadata-v12-topics", 3, 12, bytes.fromhex("ffffffff0f")),
    ("produce-v3-topics", 0, 3, w._str(None) + struct.pack(">hi", 1, 1000) + i32(HUGE)),
    (
        "produce-v9-partitions",
        0,
        9,
        b"\x00" + struct.pack(">hi", 1, 1000) + compact_count(1) + w._compact_str("t")
        + compact_count(HUGE),
    ),
    (
        "fetch-v4-partitions",
        1,
        4,
        struct.pack(">iiiib", -1, 100, 1, 1 << 20, 0) + i32(1) + w._str("t") + i32(HUGE),
    ),
    (
        "fetch-v12-forgotten-partitions",
        1,
        12,
        struct.pack(">iiiibii", -1, 100, 1, 1 << 20, 0, 0, -1)
        + compact_count(0)
        + compact_count(1)
        + w._compact_str("t")
        + compact_count(HUGE),
    ),
    (
        "create-topics-v5-broker-ids",
        19,
        5,
        compact_count(1) + w._compact_str("t") + struct.pack(">ih", -1, -1)
        + compact_count(1) + i32(0) + compact_count(HUGE),
    ),
    ("join-group-v0-protocol-metadata", 11, 0,
     w._str("g") + i32(10000) + w._str("") + w._str("consumer") + i32(1) + w._str("range") + i32(HUGE)),
    ("describe-configs-v1-keys", 32, 1, i32(1) + b"\x02" + w._str("t") + i32(HUGE)),
    ("offset-commit-v8-partitions", 8, 8,
     w._compact_str("g") + i32(-1) + w._compact_str("") + b"\x00" + compact_count(1)
     + w._compact_str("t") + compact_count(HUGE)),
    ("delete-groups-v2-names", 42, 2, compact_count(HUGE)),
    ("list-offsets-v1-topics", 2, 1, i32(-1) + i32(HUGE)),
    ("client-id-longer-than-frame", 18, 0, b""),
]


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def header(api_key: int, version: int, name: str) -> bytes:
    flexible_from = {3: 9, 0: 9, 1: 12, 19: 5, 11: 6, 32: 4, 8: 8, 42: 2, 2: 6, 18: 3}
    if name == "client-id-longer-than-frame":
        return struct.pack(">hhih", api_key, version, 1, 30000) + b"x"
    if version >= flexible_from[api_key]:
        return w.header_v2(api_key, version, 1)
    return w.header_v1(api_key, version, 1)


@pytest.mark.parametrize("name,api_key,version,body", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_counts_beyond_the_frame_close_the_connection(broker, topic, name, api_key, version, body):
    create_topic(broker.bootstrap, topic)
    ts = int(time.time() * 1000)
    err, base = w.produce(broker.port, topic, 0, w.record_batch([(b"k", b"before")], ts))
    assert (err, base) == (w.ERR_NONE, 0)
    hwm_before = vm_hwm_kib(broker.proc.pid)

    for _ in range(3):
        with w.Conn(broker.port) as c:
            c.send_raw(w.frame(header(api_key, version, name) + body))
            c.assert_closed_by_peer()

    assert broker.proc.poll() is None, "the broker died"
    grown_mib = (vm_hwm_kib(broker.proc.pid) - hwm_before) / 1024
    assert grown_mib < 32, f"peak RSS grew by {grown_mib:.0f} MiB"
    # Everyone else is still served, and what was acknowledged is there.
    err, base = w.produce(broker.port, topic, 0, w.record_batch([(b"k", b"after")], ts))
    assert (err, base) == (w.ERR_NONE, 1)
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=None, timeout=30)
    assert [(r.offset, r.value) for r in recs] == [(0, b"before"), (1, b"after")]
