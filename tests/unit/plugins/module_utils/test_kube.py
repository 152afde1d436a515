"""Unit tests for plugins/module_utils/kube/: configuration resolution and error translation."""

import json
import socket
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position
import urllib3  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from ansible_collections.matrix.stack.plugins.module_utils.kube import client as kube  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("K8S_AUTH_") or name == "KUBECONFIG":
            monkeypatch.delenv(name)


def kubeconfig_dict(server="https://127.0.0.1:6443", token="tok"):
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}},
                     {"name": "c2", "cluster": {"server": "https://127.0.0.2:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}},
                     {"name": "b", "context": {"cluster": "c2", "user": "u"}}],
    }


def test_argument_spec_matches_kubernetes_core_names():
    spec = kube.kube_auth_argument_spec()
    assert spec["validate_certs"]["aliases"] == ["verify_ssl"]
    assert spec["ca_cert"]["aliases"] == ["ssl_ca_cert"]
    assert spec["api_key"]["no_log"] and spec["password"]["no_log"] and spec["kubeconfig"]["no_log"]
    spec["host"]["type"] = "int"
    assert kube.KUBE_AUTH_ARG_SPEC["host"]["type"] == "str"  # a copy


def test_kubeconfig_file_and_context(tmp_path):
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(kubeconfig_dict()))
    cfg = kube.build_configuration({"kubeconfig": str(path)})
    assert cfg.host == "https://127.0.0.1:6443"
    assert cfg.api_key == {"authorization": "Bearer tok"}
    cfg_b = kube.build_configuration({"kubeconfig": str(path), "context": "b"})
    assert cfg_b.host == "https://127.0.0.2:6443"
    # the process-wide default configuration is never touched
    from kubernetes import client  # pylint: disable=import-outside-toplevel
    assert client.Configuration.get_default_copy().host != cfg_b.host


def test_kubeconfig_dict_and_overrides(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    cfg = kube.build_configuration({"kubeconfig": kubeconfig_dict(), "host": "https://10.0.0.1:443/",
                                    "api_key": "other", "validate_certs": True, "ca_cert": str(ca),
                                    "proxy": "http://127.0.0.1:3128", "no_proxy": "localhost",
                                    "proxy_headers": {"proxy_basic_auth": "a:b", "user_agent": None}})
    assert cfg.host == "https://10.0.0.1:443"
    assert cfg.api_key == {"authorization": "Bearer other"}
    assert cfg.verify_ssl is True and cfg.ssl_ca_cert == str(ca)
    assert cfg.proxy == "http://127.0.0.1:3128" and cfg.no_proxy == "localhost"
    assert "proxy-authorization" in cfg.proxy_headers


def test_host_and_token_need_no_kubeconfig():
    cfg = kube.build_configuration({"host": "https://127.0.0.1:1", "api_key": "t", "validate_certs": False})
    assert cfg.host == "https://127.0.0.1:1" and cfg.verify_ssl is False


def test_environment_fallbacks(monkeypatch, tmp_path):
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(kubeconfig_dict()))
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(path))
    monkeypatch.setenv("K8S_AUTH_CONTEXT", "b")
    monkeypatch.setenv("K8S_AUTH_VERIFY_SSL", "no")
    monkeypatch.setenv("K8S_AUTH_PROXY_HEADERS_USER_AGENT", "ua/1")
    auth = kube.resolve_auth({})
    assert auth["kubeconfig"] == str(path) and auth["context"] == "b" and auth["validate_certs"] is False
    assert auth["proxy_headers"] == {"user_agent": "ua/1"}
    cfg = kube.build_configuration({})
    assert cfg.host == "https://127.0.0.2:6443" and cfg.verify_ssl is False
    # an explicit option wins over the environment
    assert kube.resolve_auth({"context": "a"})["context"] == "a"
    monkeypatch.setenv("K8S_AUTH_VALIDATE_CERTS", "true")
    assert kube.resolve_auth({})["validate_certs"] is True


@pytest.mark.parametrize("params,match", [
    ({"kubeconfig": "/nonexistent/kubeconfig"}, "does not exist"),
    ({"kubeconfig": 42}, "path or a dictionary"),
    ({"kubeconfig": {"apiVersion": "v1", "kind": "Config", "contexts": []}}, "could not load"),
    ({"host": "https://127.0.0.1:1", "api_key": "t", "ca_cert": "/nonexistent/ca"}, "ca_cert file not found"),
])
def test_configuration_errors(params, match):
    with pytest.raises(kube.KubeConfigError, match=match):
        kube.build_configuration(params)


def test_missing_kubeconfig_message_does_not_need_the_path(tmp_path):
    with pytest.raises(kube.KubeConfigError) as err:
        kube.build_configuration({"kubeconfig": str(tmp_path / "secret-path")})
    assert "secret-path" not in str(err.value)


def api_exception(status, reason, message, details=None):
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message, "reason": reason, "details": details or {}})
    return exc


@pytest.mark.parametrize("exc,cls,text", [
    (api_exception(404, "NotFound", 'namespaces "n" not found', {"kind": "namespaces", "name": "n"}),
     kube.KubeNamespaceNotFoundError, "namespace 'n' does not exist"),
    (api_exception(404, "NotFound", 'secrets "s" not found', {"kind": "secrets"}), kube.KubeNotFoundError, "404"),
    (api_exception(409, "AlreadyExists", "exists"), kube.KubeAlreadyExistsError, "already exists"),
    (api_exception(409, "Conflict", "modified"), kube.KubeConflictError, "conflict"),
    (api_exception(403, "Forbidden", 'User "x" cannot create'), kube.KubeForbiddenError, 'User "x" cannot create'),
    (api_exception(401, "Unauthorized", ""), kube.KubeUnauthorizedError, "401"),
    (api_exception(422, "Invalid", "bad"), kube.KubeInvalidError, "invalid"),
    (api_exception(503, "ServiceUnavailable", "etcd"), kube.KubeApiError, "503"),
    (ApiException(status=0, reason="Handshake status 0"), kube.KubeUnreachableError, "unreachable"),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=ConnectionRefusedError(111, "refused")),
     kube.KubeUnreachableError, "unreachable"),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=urllib3.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")),
     kube.KubeTLSError, "ca_cert"),
    (socket.timeout("timed out"), kube.KubeUnreachableError, "timed out"),
    (ValueError("odd"), kube.KubeApiError, "ValueError"),
])
def test_translate_error(exc, cls, text):
    err = kube.translate_error(exc, "create", "Secret n/s", namespace="n", host="https://127.0.0.1:6443")
    assert type(err) is cls  # pylint: disable=unidiomatic-typecheck
    assert text in str(err)


def test_secret_data_round_trip():
    values = {"a": b"\x00\xffbinary", "b": "text".encode()}
    secret = {"data": kube.encode_secret_data(values)}
    assert kube.decode_secret_data(secret) == values
    assert kube.decode_secret_data(None) == {}
