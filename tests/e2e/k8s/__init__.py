"""Operator tests on a real Kubernetes control plane: see README.md in this folder.

    from k8s import Kube          # control plane + node agent + helpers
    from k8s.fixtures import kube, k8s_namespace   # pytest fixtures (conftest imports them)
"""

from .cluster import Kube, WaitTimeout, default_image_bin, unavailable_reason  # noqa: F401
