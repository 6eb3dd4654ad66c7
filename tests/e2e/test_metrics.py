"""Rill's Prometheus endpoint (`--metrics-listen`) counts what was really produced and
fetched. Rill-specific: skipped against Apache Kafka."""

from __future__ import annotations

import re
import time
import urllib.request

import kafka_wire as w
import pytest
from clients import consume_range, create_topic

pytestmark = pytest.mark.rill_only

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(broker) -> list[tuple[str, dict, float]]:
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode()
    assert ctype.startswith("text/plain") or "openmetrics" in ctype, ctype
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"unparseable metrics line: {line!r}"
        labels = dict(LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def series(samples, name: str, **labels) -> list[tuple[dict, float]]:
    return [(l, v) for n, l, v in samples if n == name and all(l.get(k) == str(x) for k, x in labels.items())]


def total(samples, name: str, **labels) -> float:
    s = series(samples, name, **labels)
    assert s, f"no series {name}{labels}"
    return sum(v for _, v in s)


def test_metrics_count_produce_and_fetch(broker, topic):
    create_topic(broker.bootstrap, topic)
    requests, per_request = 6, 5
    produced_bytes = 0
    for r in range(requests):
        batch = w.record_batch([(b"k%d" % i, b"v" * (10 + i)) for i in range(per_request)], int(time.time() * 1000))
        produced_bytes += len(batch)
        assert w.produce(broker.port, topic, 0, batch) == (0, r * per_request)
    n = requests * per_request
    recs = consume_range(broker.bootstrap, topic, 0, 0, count=n)
    assert len(recs) == n

    deadline = time.monotonic() + 10
    while True:  # counters may be published a moment after the response
        samples = scrape(broker)
        try:
            assert total(samples, "rill_topic_records_in_total", topic=topic) == n
            assert total(samples, "rill_topic_bytes_out_total", topic=topic) > 0
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)

    assert total(samples, "rill_topic_records_in_total", topic=topic) == n
    bytes_in = total(samples, "rill_topic_bytes_in_total", topic=topic)
    assert bytes_in > 0
    assert bytes_in <= produced_bytes * 2, (bytes_in, produced_bytes)
    assert total(samples, "rill_topic_bytes_out_total", topic=topic) > 0
    assert total(samples, "rill_requests_total", api="Produce") >= requests
    assert total(samples, "rill_requests_total", api="Fetch") > 0
    buckets = series(samples, "rill_request_duration_seconds_bucket", api="Fetch")
    assert buckets, "no Fetch latency histogram"
    assert all("le" in l for l, _ in buckets)
    inf = [v for l, v in buckets if l["le"] in ("+Inf", "Inf")]
    assert inf and inf[0] > 0
    assert total(samples, "rill_request_duration_seconds_count", api="Fetch") == inf[0]
    assert total(samples, "rill_partition_log_size_bytes", topic=topic, partition=0) > 0
    # One node: every record committed, every partition led here and fully in sync.
    assert total(samples, "rill_partition_high_watermark", topic=topic, partition=0) == n
    assert total(samples, "rill_partition_log_end_offset", topic=topic, partition=0) == n
    assert total(samples, "rill_leader_partitions") >= 1
    assert total(samples, "rill_under_replicated_partitions") == 0
    assert total(samples, "rill_active_controller") == 1

    # Counters only go up: produce more and scrape again.
    assert w.produce(broker.port, topic, 0, w.record_batch([(None, b"more")], int(time.time() * 1000)))[0] == 0
    deadline = time.monotonic() + 10
    while total(scrape(broker), "rill_topic_records_in_total", topic=topic) != n + 1:
        assert time.monotonic() < deadline, "records_in did not reach n+1"
        time.sleep(0.3)
