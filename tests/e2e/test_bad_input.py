"""Malformed and hostile input on raw sockets: the broker answers with the right error or
closes that one connection, and keeps serving everyone else with the data intact."""

from __future__ import annotations

import socket
import struct
import time

import kafka_wire as w
import pytest
from clients import consume_range, create_topic

SOCKET_REQUEST_MAX = 102400
MESSAGE_MAX = 20000

pytestmark = pytest.mark.broker_settings(
    **{"socket.request.max.bytes": SOCKET_REQUEST_MAX, "message.max.bytes": MESSAGE_MAX}
)


@pytest.fixture
def acked(broker, topic):
    """Three records produced and acknowledged before the bad input."""
    create_topic(broker.bootstrap, topic)
    ts = int(time.time() * 1000)
    batch = w.record_batch([(b"a", b"first"), (None, b"second"), (b"c", b"third " * 10)], ts)
    err, base = w.produce(broker.port, topic, 0, batch)
    assert (err, base) == (w.ERR_NONE, 0)
    return [(0, b"a", b"first"), (1, None, b"second"), (2, b"c", b"third " * 10)]


def assert_still_healthy(broker, topic, acked):
    md = w.metadata(broker.port, [topic])
    assert [(h, p) for _, h, p in md["brokers"]] == [("127.0.0.1", broker.port)]
    assert md["topics"][topic]["error"] == 0
    assert md["topics"][topic]["partitions"][0]["leader"] == md["brokers"][0][0]
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=None, timeout=30)
    assert [(r.offset, r.key, r.value) for r in recs] == acked


def test_api_versions_unsupported_version(broker, topic, acked):
    with w.Conn(broker.port) as c:
        resp = c.request(w.api_versions_request(127, 4242))
    av = w.parse_api_versions_v0(resp)  # answered in v0 encoding whatever was asked
    assert av.correlation_id == 4242
    assert av.error_code == w.ERR_UNSUPPORTED_VERSION
    assert av.api_keys, "the v0 answer must list ApiVersions' own range"
    lo, hi = av.api_keys[w.API_API_VERSIONS]
    assert lo == 0 and hi >= 3
    assert_still_healthy(broker, topic, acked)


def test_api_versions_v0_and_v3(broker, topic, acked):
    with w.Conn(broker.port) as c:
        av = w.parse_api_versions_v0(c.request(w.api_versions_request(0, 7)))
    assert (av.correlation_id, av.error_code) == (7, 0)
    for key in (w.API_PRODUCE, w.API_FETCH, w.API_LIST_OFFSETS, w.API_METADATA, w.API_API_VERSIONS):
        assert key in av.api_keys, f"api key {key} not advertised"
    assert av.api_keys[w.API_PRODUCE][1] >= 7 and av.api_keys[w.API_METADATA][1] >= 4
    assert av.api_keys[w.API_PRODUCE][0] <= 3  # record batch v2 producers from Kafka 0.11 on
    # v3 (flexible) on the same connection: the response header stays v0.
    with w.Conn(broker.port) as c:
        c.send_raw(w.frame(w.api_versions_request(3, 8)))
        resp = c.recv_frame()
    (corr, err) = struct.unpack_from(">ih", resp)
    assert (corr, err) == (8, 0)
    assert_still_healthy(broker, topic, acked)


def test_unknown_api_key_closes_connection(broker, topic, acked):
    with w.Conn(broker.port) as c:
        c.send_raw(w.frame(w.header_v1(32000, 0, 1) + b"\x00" * 8))
        c.assert_closed_by_peer()
    assert_still_healthy(broker, topic, acked)


def test_frame_over_socket_request_max_bytes_closes_connection(broker, topic, acked):
    with w.Conn(broker.port) as c:
        # Only the length and a header are sent: the broker must not wait for the body.
        c.send_raw(struct.pack(">i", SOCKET_REQUEST_MAX + 1) + w.metadata_request_v4(1))
        c.assert_closed_by_peer()
    with w.Conn(broker.port) as c:
        c.send_raw(struct.pack(">i", 0x7FFFFFF0) + b"\x00" * 64)
        c.assert_closed_by_peer()
    assert_still_healthy(broker, topic, acked)


GARBAGE = {
    # A frame too short for a request header.
    "short-header": w.frame(b"\x00\x03\x00"),
    # A Metadata header whose client id claims more bytes than the frame has.
    "client-id-overrun": w.frame(struct.pack(">hhih", 3, 4, 1, 30000) + b"abc"),
    # Metadata v4 body cut short (topic array claims 5 topics, gives none).
    "truncated-body": w.frame(w.header_v1(3, 4, 1) + struct.pack(">i", 5)),
    # Random bytes.
    "random": w.frame(bytes((i * 73 + 41) % 256 for i in range(300))),
    # A negative frame length.
    "negative-length": struct.pack(">i", -5) + b"\x00" * 16,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_frame_closes_connection(broker, topic, acked, kind):
    with w.Conn(broker.port) as c:
        c.send_raw(GARBAGE[kind])
        c.assert_closed_by_peer()
    assert_still_healthy(broker, topic, acked)


def test_frame_cut_off_by_client(broker, topic, acked):
    with w.Conn(broker.port) as c:
        c.send_raw(struct.pack(">i", 100) + w.metadata_request_v4(1)[:10])
        c.sock.shutdown(socket.SHUT_WR)  # EOF in the middle of a frame
        c.assert_closed_by_peer()
    assert_still_healthy(broker, topic, acked)


def test_produce_flipped_byte_is_corrupt_message(broker, topic, acked):
    batch = bytearray(w.record_batch([(b"k", b"will be corrupted"), (b"k2", b"v2")], int(time.time() * 1000)))
    batch[-5] ^= 0x01  # inside the last record, covered by the CRC
    err, _ = w.produce(broker.port, topic, 0, bytes(batch))
    assert err == w.ERR_CORRUPT_MESSAGE
    # Flipped in the CRC field itself.
    batch = bytearray(w.record_batch([(b"k", b"v")], int(time.time() * 1000)))
    batch[17] ^= 0xFF
    err, _ = w.produce(broker.port, topic, 0, bytes(batch))
    assert err == w.ERR_CORRUPT_MESSAGE
    assert_still_healthy(broker, topic, acked)
    # The log end did not move: the next good batch lands at offset 3.
    err, base = w.produce(broker.port, topic, 0, w.record_batch([(None, b"next")], int(time.time() * 1000)))
    assert (err, base) == (w.ERR_NONE, 3)


def test_produce_batch_over_message_max_bytes(broker, topic, acked):
    big = w.record_batch([(None, bytes(i % 256 for i in range(MESSAGE_MAX + 100)))], int(time.time() * 1000))
    assert len(big) > MESSAGE_MAX
    err, _ = w.produce(broker.port, topic, 0, big)
    assert err == w.ERR_MESSAGE_TOO_LARGE
    assert_still_healthy(broker, topic, acked)
    # Just under the limit is accepted, at the next offset.
    ok = w.record_batch([(None, b"z" * (MESSAGE_MAX - 200))], int(time.time() * 1000))
    assert len(ok) <= MESSAGE_MAX
    err, base = w.produce(broker.port, topic, 0, ok)
    assert (err, base) == (w.ERR_NONE, 3)


def test_many_bad_connections_then_good(broker, topic, acked):
    """A bounded burst of bad connections does not wedge the broker."""
    for i in range(50):
        with w.Conn(broker.port) as c:
            c.send_raw(GARBAGE["random"] if i % 2 else GARBAGE["short-header"])
            c.assert_closed_by_peer()
    assert_still_healthy(broker, topic, acked)
