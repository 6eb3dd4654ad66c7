"""kcat (Debian's kcat, librdkafka underneath) produces and consumes against the broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from clients import CODECS, wait_topic_ready

N = 50
FORMAT = r"%o %T %K %S %h\n%k%s\n"

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (tests/tools/install.sh)")


def kcat(*args: str, stdin: bytes | None = None, timeout: float = 60.0) -> bytes:
    p = subprocess.run(
        ["kcat", *args],
        input=stdin if stdin is not None else b"",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
    )
    assert p.returncode == 0, f"kcat {' '.join(args)} exited {p.returncode}:\n{p.stderr.decode(errors='replace')}"
    return p.stdout


def key_of(i: int) -> bytes:
    return f"key-{i:04d}".encode()


def value_of(codec: str, i: int) -> bytes:
    # Printable ASCII with tabs, punctuation and multi-byte UTF-8; no newline (the
    # producer's message delimiter). Sizes vary so batches span several sizes.
    body = "".join(chr(0x21 + (i * 7 + j) % 94) for j in range(i * 13 % 300))
    return f"{codec}|{i}|\tß∂ƒ©|{body}|end".encode()


def parse_kcat(out: bytes) -> list[dict]:
    recs = []
    pos = 0
    guard = 0
    while pos < len(out):
        guard += 1
        assert guard <= 100000, "parse loop bound"
        nl = out.index(b"\n", pos)
        head = out[pos:nl].decode()
        off, ts, klen, vlen, hdrs = head.split(" ", 4)
        klen, vlen = int(klen), int(vlen)
        body_start = nl + 1
        kb = out[body_start : body_start + max(klen, 0)]
        vb = out[body_start + max(klen, 0) : body_start + max(klen, 0) + max(vlen, 0)]
        end = body_start + max(klen, 0) + max(vlen, 0)
        assert out[end : end + 1] == b"\n", f"bad framing at {end}: {out[end:end+20]!r}"
        pos = end + 1
        recs.append(
            {
                "offset": int(off),
                "timestamp": int(ts),
                "key": None if klen < 0 else kb,
                "value": None if vlen < 0 else vb,
                "headers": hdrs,
            }
        )
    return recs


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_consume_codec(broker, topic, codec):
    lines = b"".join(key_of(i) + b"\t" + value_of(codec, i) + b"\n" for i in range(N))
    t0 = int(time.time() * 1000)
    kcat(
        "-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-z", codec, "-K", "\t",
        "-H", "h1=one", "-H", f"codec={codec}",
        "-X", "topic.request.required.acks=1", "-X", "linger.ms=20",
        stdin=lines,
    )
    t1 = int(time.time() * 1000)
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", FORMAT)
    recs = parse_kcat(out)
    assert [r["offset"] for r in recs] == list(range(N))
    for i, r in enumerate(recs):
        assert r["key"] == key_of(i)
        assert r["value"] == value_of(codec, i)
        assert r["headers"] == f"h1=one,codec={codec}"
        assert t0 - 5000 <= r["timestamp"] <= t1 + 5000, (r["timestamp"], t0, t1)

    # Consuming from the middle returns exactly the tail.
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", str(N - 7), "-e", "-q", "-f", FORMAT)
    tail = parse_kcat(out)
    assert [r["offset"] for r in tail] == list(range(N - 7, N))
    assert [r["value"] for r in tail] == [value_of(codec, i) for i in range(N - 7, N)]


def test_kcat_metadata(broker, topic):
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", stdin=b"hello\n")
    wait_topic_ready(broker.bootstrap, topic)
    md = json.loads(kcat("-L", "-J", "-b", broker.bootstrap, "-t", topic))
    assert [(b["name"]) for b in md["brokers"]] == [f"127.0.0.1:{broker.port}"], md
    (t,) = md["topics"]
    assert t["topic"] == topic
    assert "error" not in t or not t["error"], t
    assert [p["partition"] for p in t["partitions"]] == [0]
    leader = t["partitions"][0]["leader"]
    assert leader == md["brokers"][0]["id"]

    # Whole-cluster listing includes the topic too.
    md_all = json.loads(kcat("-L", "-J", "-b", broker.bootstrap))
    assert topic in [x["topic"] for x in md_all["topics"]]
