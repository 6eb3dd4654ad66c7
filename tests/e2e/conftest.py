"""Fixtures for the e2e tests: a fresh broker process per test on 127.0.0.1.

    broker            started with the test's `broker_settings` marker (if any), stopped
                      with SIGTERM at teardown; the clean exit (code 0 for Rill) is asserted.
    broker_factory    make more brokers, or brokers with settings chosen in the test.
    cluster_factory   multi-node clusters on 127.0.0.1..N (cluster_process.py).
    kube              a real Kubernetes control plane + node agent, per session (k8s/README.md).
    k8s_namespace     a fresh namespace in it per test.

Markers:
    @pytest.mark.broker_settings(**{"log.segment.bytes": 4096})
    @pytest.mark.rill_only      skipped when RILL_E2E_TARGET=kafka
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_process import BrokerProcess, kafka_version, target  # noqa: E402
from cluster_process import cluster_factory  # noqa: E402,F401  (multi-node clusters)
from k8s.fixtures import k8s_namespace, kube  # noqa: E402,F401  (Kubernetes control plane + node agent)


def pytest_configure(config):
    config.addinivalue_line("markers", "broker_settings(**settings): Kafka property names for the broker")
    config.addinivalue_line("markers", "rill_only: Rill-specific behaviour, skipped against Apache Kafka")
    config.addinivalue_line("markers", "cluster: multi-node cluster tests and their tools (cluster_process.py)")
    config.addinivalue_line("markers", "k8s: tests on a real Kubernetes control plane (k8s/README.md)")


def pytest_report_header(config):
    t = target()
    if t == "kafka":
        return f"e2e target: Apache Kafka {kafka_version()} (reference run)"
    from broker_process import rill_binary

    return f"e2e target: Rill ({rill_binary()})"


def pytest_collection_modifyitems(config, items):
    if target() != "kafka":
        return
    skip = pytest.mark.skip(reason="Rill-specific; not applicable to Apache Kafka")
    for item in items:
        if "rill_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def broker_factory(tmp_path):
    started: list[BrokerProcess] = []

    def make(settings: dict | None = None, start: bool = True, name: str | None = None) -> BrokerProcess:
        b = BrokerProcess(tmp_path / (name or f"broker{len(started)}"), settings)
        started.append(b)
        if start:
            b.start()
        return b

    yield make
    errors = []
    for b in started:
        if b.running:
            try:
                b.stop_clean()
            except AssertionError as e:  # report, but stop the others first
                errors.append(str(e))
        elif b.proc is not None:
            b.kill()
    if errors:
        pytest.fail("broker did not shut down cleanly:\n" + "\n".join(errors))


@pytest.fixture
def broker(request, broker_factory) -> BrokerProcess:
    marker = request.node.get_closest_marker("broker_settings")
    settings = dict(marker.kwargs) if marker else {}
    return broker_factory(settings)


@pytest.fixture
def topic(request) -> str:
    """A topic name unique to the test (valid Kafka characters only)."""
    name = request.node.name
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    return ("t-" + out)[:200]
