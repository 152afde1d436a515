"""Unit tests for plugins/module_utils/kube/: the connection built by kubernetes.core (against a loopback fake that
answers discovery and records the headers it receives), the errors reported before it, and error translation.
The real API server is used by every module test in tests/integration/."""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position,redefined-outer-name
import urllib3  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.dynamic.exceptions import api_exception  # noqa: E402

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.kube import client as kube  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.kube import errors  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.kube import secrets as kube_secrets  # noqa: E402

from ._kube_discovery import DISCOVERY, send_json  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("K8S_AUTH_") or name == "KUBECONFIG":
            monkeypatch.delenv(name)


class FakeApi:
    """Answers discovery like kube-apiserver; 401 for the token "bad"; records (path, headers) of every request."""

    def __init__(self):
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                api.requests.append((self.path, self.headers))
                if self.headers.get("Authorization") == "Bearer bad":
                    status, body = 401, {"kind": "Status", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"}
                else:
                    status, body = (200, DISCOVERY[self.path]) if self.path in DISCOVERY else (404, {"kind": "Status"})
                send_json(self, status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def headers(self, name):
        return [value for _path, headers in self.requests for value in headers.get_all(name) or ()]


@pytest.fixture
def api():
    fake = FakeApi()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def kubeconfig_dict(server):
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "ua", "user": {"token": "tok-a"}}, {"name": "ub", "user": {"token": "tok-b"}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "ua"}},
                     {"name": "b", "context": {"cluster": "c", "user": "ub"}}],
    }


def test_argument_spec_is_kubernetes_core_s():
    spec = kube.kube_auth_argument_spec()
    assert set(spec) == set(AUTH_ARG_SPEC) and {"impersonate_user", "impersonate_groups"} <= set(spec)
    assert spec["validate_certs"]["aliases"] == ["verify_ssl"] and spec["ca_cert"]["aliases"] == ["ssl_ca_cert"]
    assert spec["api_key"]["no_log"] and spec["password"]["no_log"] and spec["kubeconfig"]["no_log"]
    assert spec["client_key"]["no_log"] is False
    spec["host"]["type"] = "int"
    assert "type" not in AUTH_ARG_SPEC["host"]  # a copy


def test_kubeconfig_file_and_context(api, tmp_path):
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(kubeconfig_dict(api.url)))
    client = kube.build_api_client({"kubeconfig": str(path)})
    assert client.configuration.host == api.url
    assert client.configuration.api_key == {"authorization": "Bearer tok-a"}
    client_b = kube.build_api_client({"kubeconfig": str(path), "context": "b"})
    assert client_b.configuration.api_key == {"authorization": "Bearer tok-b"}
    assert client_b.user_agent.startswith("matrix.stack/kubernetes-")


def test_kubeconfig_as_a_dictionary_and_environment_fallbacks(api, tmp_path, monkeypatch):
    client = kube.build_api_client({"kubeconfig": kubeconfig_dict(api.url), "context": "b"})
    assert client.configuration.api_key == {"authorization": "Bearer tok-b"}
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(kubeconfig_dict(api.url)))
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(path))
    monkeypatch.setenv("K8S_AUTH_CONTEXT", "b")
    assert kube.build_api_client({}).configuration.api_key == {"authorization": "Bearer tok-b"}
    # an explicit option wins over the environment
    assert kube.build_api_client({"context": "a"}).configuration.api_key == {"authorization": "Bearer tok-a"}


def test_host_and_token_need_no_kubeconfig(api):
    client = kube.build_api_client({"host": api.url + "/", "api_key": "t", "validate_certs": False})
    assert client.configuration.host == api.url and client.configuration.verify_ssl is False
    assert "Bearer t" in api.headers("Authorization")


def test_a_client_never_inherits_the_kubeconfig_of_an_earlier_one(api):
    """kubernetes.core loads a kubeconfig into the process-wide default configuration, with a hook that puts the
    kubeconfig's host and token back before every request: a later client must not talk to that server as that user."""
    kube.build_api_client({"kubeconfig": kubeconfig_dict(api.url)})
    other = FakeApi()
    try:
        second = kube.build_api_client({"host": other.url, "api_key": "t"})
        assert second.configuration.refresh_api_key_hook is None
        assert other.headers("Authorization") and set(other.headers("Authorization")) == {"Bearer t"}
        assert "Bearer t" not in api.headers("Authorization")
    finally:
        other.server.shutdown()
        other.server.server_close()


def test_impersonation_headers_reach_the_api_server(api, monkeypatch):
    kube.build_api_client({"host": api.url, "api_key": "t", "impersonate_user": "system:serviceaccount:ns:reader",
                           "impersonate_groups": ["g1", "g2"]})
    assert set(api.headers("Impersonate-User")) == {"system:serviceaccount:ns:reader"}
    assert sorted(set(api.headers("Impersonate-Group"))) == ["g1", "g2"]
    monkeypatch.setenv("K8S_AUTH_IMPERSONATE_USER", "from-env")
    client = kube.build_api_client({"host": api.url, "api_key": "other"})
    assert client.default_headers["Impersonate-User"] == "from-env"


def test_without_impersonation_no_header_is_sent(api):
    kube.build_api_client({"host": api.url, "api_key": "plain"})
    assert api.requests and not api.headers("Impersonate-User") and not api.headers("Impersonate-Group")


@pytest.mark.parametrize("params,cls,match", [
    ({"kubeconfig": "/nonexistent/kubeconfig"}, errors.KubeConfigError, "does not exist"),
    ({"kubeconfig": 42}, errors.KubeConfigError, "path or a dictionary"),
    ({"kubeconfig": {"apiVersion": "v1", "kind": "Config", "contexts": []}}, errors.KubeConfigError, "could not load"),
    ({"host": "https://127.0.0.1:1", "api_key": "t", "ca_cert": "/nonexistent/ca"}, errors.KubeConfigError,
     "ca_cert file not found"),
])
def test_configuration_errors(params, cls, match):
    with pytest.raises(cls, match=match):
        kube.build_api_client(params)


def test_missing_kubeconfig_message_does_not_need_the_path(tmp_path, monkeypatch):
    with pytest.raises(errors.KubeConfigError) as err:
        kube.build_api_client({"kubeconfig": str(tmp_path / "secret-path")})
    assert "secret-path" not in str(err.value)
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(tmp_path / "env-path"))
    with pytest.raises(errors.KubeConfigError, match="K8S_AUTH_KUBECONFIG"):
        kube.build_api_client({})


def test_unreachable_and_rejected_are_translated(api):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(errors.KubeUnreachableError, match="unreachable while trying to connect to the Kubernetes API"):
        kube.build_api_client({"host": "http://127.0.0.1:%d" % port, "api_key": "t"})
    with pytest.raises(errors.KubeUnauthorizedError, match="401"):
        kube.build_api_client({"host": api.url, "api_key": "bad"})


def status_exception(status, reason, message, details=None):
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message, "reason": reason, "details": details or {}})
    return exc


@pytest.mark.parametrize("exc,cls,text", [
    (status_exception(404, "NotFound", 'namespaces "n" not found', {"kind": "namespaces", "name": "n"}),
     errors.KubeNamespaceNotFoundError, "namespace 'n' does not exist"),
    (status_exception(404, "NotFound", 'secrets "s" not found', {"kind": "secrets"}), errors.KubeNotFoundError, "404"),
    (status_exception(409, "AlreadyExists", "exists"), errors.KubeAlreadyExistsError, "already exists"),
    (status_exception(409, "Conflict", "modified"), errors.KubeConflictError, "conflict"),
    (status_exception(403, "Forbidden", 'User "x" cannot create'), errors.KubeForbiddenError, 'User "x" cannot create'),
    (status_exception(401, "Unauthorized", ""), errors.KubeUnauthorizedError, "401"),
    (api_exception(status_exception(403, "Forbidden", 'User "y" cannot list')), errors.KubeForbiddenError,
     'User "y" cannot list'),
    (status_exception(422, "Invalid", "bad"), errors.KubeInvalidError, "invalid"),
    (status_exception(503, "ServiceUnavailable", "etcd"), errors.KubeApiError, "503"),
    (ApiException(status=0, reason="Handshake status 0"), errors.KubeUnreachableError, "unreachable"),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=ConnectionRefusedError(111, "refused")),
     errors.KubeUnreachableError, "unreachable"),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=urllib3.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")),
     errors.KubeTLSError, "ca_cert"),
    (socket.timeout("timed out"), errors.KubeUnreachableError, "timed out"),
    (ValueError("odd"), errors.KubeApiError, "ValueError"),
])
def test_translate_error(exc, cls, text):
    err = errors.translate_error(exc, "create", "Secret n/s", namespace="n", host="https://127.0.0.1:6443")
    assert type(err) is cls  # pylint: disable=unidiomatic-typecheck
    assert text in str(err)


def test_secret_data_round_trip():
    values = {"a": b"\x00\xffbinary", "b": "text".encode()}
    secret = {"data": kube_secrets.encode_secret_data(values)}
    assert kube_secrets.decode_secret_data(secret) == values
    assert kube_secrets.decode_secret_data(None) == {}
