"""pytest fixtures for the operator tests (imported by tests/e2e/conftest.py):

    kube            session-wide: a control plane + node agent (k8s.Kube); started on first use
    k8s_namespace   a fresh namespace per test, deleted afterwards (not waited for)
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from .cluster import Kube, unavailable_reason


@pytest.fixture(scope="session")
def kube(request):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="rill-k8s-"))
    k = Kube(workdir)
    try:
        k.start()
    except Exception as e:  # anything else than "not root / no unshare" fails loudly
        k.stop()
        raise RuntimeError(f"the k8s harness did not start (logs kept in {workdir}): {e}") from e
    except BaseException:
        k.stop()
        raise
    print(f"\nk8s harness in {workdir}: {k.timings}")
    yield k
    k.stop()
    if k.agent_rc != 0:
        pytest.fail(f"the node agent did not exit cleanly on SIGTERM (exit {k.agent_rc}); see {k.agent_log}")
    # keep the work dir (component and pod logs) when a test failed, or when asked to
    if request.session.testsfailed or os.environ.get("RILL_K8S_KEEP"):
        print(f"\nk8s harness work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def k8s_namespace(request, kube) -> str:
    # readable (the test's name) and unique (a namespace of an earlier test may still be
    # terminating); short enough to stay a DNS label
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:44].strip("-")
    name = f"t-{name}-{secrets.token_hex(2)}"
    kube.create_namespace(name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
