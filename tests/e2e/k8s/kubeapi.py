"""A small Kubernetes API client on the standard library (urllib + ssl), for the node agent
and the test fixtures. It reads the admin kubeconfig the control plane writes (client
certificate + CA); it is not a general kubeconfig parser.

    api = KubeApi.from_kubeconfig(path)
    api.get("/api/v1/namespaces/default/pods")                  -> dict
    api.patch(path, body, kind="merge")                          -> dict
    for event in api.watch("/api/v1/pods", resource_version=rv): -> {"type", "object"}
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str):
        self.status = status
        self.body = body
        reason = body
        try:
            reason = json.loads(body).get("message", body)
        except (ValueError, AttributeError):
            pass
        super().__init__(f"{method} {path}: HTTP {status}: {reason}")


def _kubeconfig_value(text: str, key: str) -> str:
    """The value of the first `key: value` line (the kubeconfig files we write are flat)."""
    for line in text.splitlines():
        s = line.strip().lstrip("- ")
        if s.startswith(key + ":"):
            return s.split(":", 1)[1].strip().strip('"')
    raise KeyError(f"{key} not in kubeconfig")


class KubeApi:
    def __init__(self, server: str, ca_file: str, cert_file: str, key_file: str):
        self.server = server.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.ctx.load_cert_chain(cert_file, key_file)

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> "KubeApi":
        text = Path(path).read_text()
        return cls(
            _kubeconfig_value(text, "server"),
            _kubeconfig_value(text, "certificate-authority"),
            _kubeconfig_value(text, "client-certificate"),
            _kubeconfig_value(text, "client-key"),
        )

    def request(self, method: str, path: str, body=None, *, params: dict | None = None,
                content_type: str = "application/json", timeout: float = 30.0) -> dict:
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, method, path, e.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else {}

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: dict) -> dict:
        return self.request("POST", path, body)

    def put(self, path: str, body: dict) -> dict:
        return self.request("PUT", path, body)

    def patch(self, path: str, body, kind: str = "merge") -> dict:
        return self.request("PATCH", path, body, content_type=PATCH_TYPES[kind])

    def delete(self, path: str, body: dict | None = None) -> dict:
        return self.request("DELETE", path, body)

    def get_or_none(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def watch(self, path: str, resource_version: str, timeout_s: int = 60, **params):
        """Yields watch events until the server ends the watch (after about timeout_s) or
        the connection breaks; the caller re-lists on ApiError/OSError or an ERROR event."""
        q = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_s),
             "allowWatchBookmarks": "true", **params}
        req = urllib.request.Request(self.server + path + "?" + urllib.parse.urlencode(q))
        req.add_header("Accept", "application/json")
        try:
            resp = urllib.request.urlopen(req, context=self.ctx, timeout=timeout_s + 30)
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, "WATCH", path, e.read().decode(errors="replace")) from None
        with resp:
            for line in resp:
                line = line.strip()
                if line:
                    yield json.loads(line)
