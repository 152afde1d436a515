"""What a fake API server of the unit tests answers to the discovery requests kubernetes.core's client construction
sends (GET /version, /api, /apis), and a fixture isolating each test's client construction."""

import json
import tempfile

import pytest

DISCOVERY = {
    "/version": {"major": "1", "minor": "34", "gitVersion": "v1.34.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
}


def send_json(handler, status, body):
    """Answer a BaseHTTPRequestHandler's request with ``body`` as JSON."""
    raw = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


@pytest.fixture(autouse=True)
def discovery_cache_in_tmp_path(monkeypatch, tmp_path):
    """Each test starts like a module process: kubernetes.core's discovery cache (in tempfile.gettempdir()) in the
    test's own directory, no client pooled by kubernetes.core, no kubeconfig loaded into the kubernetes client's
    process-wide default configuration (a loaded kubeconfig keeps resetting the host of its copies)."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as core_client  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(core_client, "_pool", {})
    monkeypatch.setattr(client.Configuration, "_default", None)
