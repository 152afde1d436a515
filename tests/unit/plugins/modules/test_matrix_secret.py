"""Unit tests for plugins/modules/matrix_secret.py.

Planning and validation are tested directly. The module's main() runs in-process against a small in-memory
Kubernetes API stand-in on 127.0.0.1 (plain HTTP, Secrets only), which lets us inject API errors (401, 403, 404
namespace, 409 conflicts, 500) that are hard to provoke on demand on the real cluster. The real cluster is
exercised in tests/integration/test_matrix_secret.py.
"""

import base64
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position,redefined-outer-name
from ansible.module_utils.testing import patch_module_args  # noqa: E402

from ..module_utils._kube_discovery import DISCOVERY, send_json  # noqa: E402

from ansible_collections.matrix.stack.plugins.module_utils.kube import secrets as kube_secrets  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.secrets import generators as gen  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.secrets import signing_keys  # noqa: E402
from ansible_collections.matrix.stack.plugins.modules import matrix_secret as ms  # noqa: E402

OWNED = {"matrix.stack/secret": "true", "app.kubernetes.io/managed-by": "matrix.stack"}


# ----- in-memory API server ----------------------------------------------------------------------

class FakeApi:
    """Secrets in namespaces, resourceVersion checks, dry runs, injected failures, request log."""

    PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/secrets(?:/(?P<name>[^/]+))?$")

    def __init__(self):
        self.namespaces = {"ns"}
        self.secrets = {}
        self.version = 100
        self.inject = []  # list of (method, status, reason, message, details) consumed in order
        self.on_request = None  # callable(method) run before handling (to simulate concurrent writers)
        self.requests = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def host(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def next_version(self):
        self.version += 1
        return str(self.version)

    def put_secret(self, ns, name, data, labels=None):
        self.secrets[(ns, name)] = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}, "uid": "uid-" + name,
                         "resourceVersion": self.next_version()},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }

    def data(self, ns, name):
        return {k: base64.b64decode(v) for k, v in self.secrets[(ns, name)].get("data", {}).items()}

    def writes(self):
        return [r for r in self.requests if r[0] != "GET"]

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # silence
                pass

            def _send(self, status, body):
                send_json(self, status, body)

            def _status(self, code, reason, message, details=None):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                  "reason": reason, "details": details or {}, "code": code})

            def _handle(self, method):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                dry = query.get("dryRun") == ["All"]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if method == "DELETE" and body is not None:
                    # like kube-apiserver: a DeleteOptions body replaces the query parameters
                    dry = body.get("dryRun") == ["All"]
                if method == "GET" and url.path in DISCOVERY:  # kubernetes.core's client construction
                    return self._send(200, DISCOVERY[url.path])
                with api.lock:
                    api.requests.append((method, url.path, dry))
                    if api.on_request:
                        api.on_request(method)
                    if api.inject and api.inject[0][0] in (method, "*"):
                        code, reason, message, details = api.inject.pop(0)[1:]
                        return self._status(code, reason, message, details)
                    match = api.PATH.match(url.path)
                    if not match:
                        return self._status(404, "NotFound", "the server could not find the requested resource")
                    ns, name = match["ns"], match["name"]
                    key = (ns, name)
                    if method == "GET":
                        if key not in api.secrets:
                            return self._status(404, "NotFound", 'secrets "%s" not found' % name,
                                                {"name": name, "kind": "secrets"})
                        return self._send(200, api.secrets[key])
                    if ns not in api.namespaces:
                        return self._status(404, "NotFound", 'namespaces "%s" not found' % ns,
                                            {"name": ns, "kind": "namespaces"})
                    if method == "POST":
                        key = (ns, body["metadata"]["name"])
                        if key in api.secrets:
                            return self._status(409, "AlreadyExists", 'secrets "%s" already exists' % key[1])
                        obj = json.loads(json.dumps(body))
                        obj["metadata"].update(uid="uid-" + key[1], resourceVersion=api.next_version())
                        if not dry:
                            api.secrets[key] = obj
                        return self._send(201, obj)
                    if key not in api.secrets:
                        return self._status(404, "NotFound", 'secrets "%s" not found' % name,
                                            {"name": name, "kind": "secrets"})
                    current = api.secrets[key]["metadata"]["resourceVersion"]
                    if method == "PUT":
                        if body["metadata"].get("resourceVersion") != current:
                            return self._status(409, "Conflict", "the object has been modified")
                        obj = json.loads(json.dumps(body))
                        obj["metadata"]["resourceVersion"] = api.next_version()
                        if not dry:
                            api.secrets[key] = obj
                        return self._send(200, obj)
                    if method == "DELETE":
                        pre = (body or {}).get("preconditions") or {}
                        if pre.get("resourceVersion") and pre["resourceVersion"] != current:
                            return self._status(409, "Conflict", "precondition failed")
                        obj = api.secrets[key]
                        if not dry:
                            del api.secrets[key]
                        return self._send(200, obj)
                    return self._status(405, "MethodNotAllowed", "no")

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def do_PUT(self):  # noqa: N802
                self._handle("PUT")

            def do_DELETE(self):  # noqa: N802
                self._handle("DELETE")

        return Handler


@pytest.fixture
def api():
    fake = FakeApi()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def run_module(capsys, args, check=False, diff=False):
    """Run main() in-process; return the parsed result (with 'failed' for fail_json)."""
    args = dict(args)
    args["_ansible_check_mode"] = check
    args["_ansible_diff"] = diff
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            ms.main()
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


def base_args(api, **kwargs):
    args = dict(host=api.host, api_key="test-token", namespace="ns", name="s")
    args.update(kwargs)
    return args


KEYS = [
    {"name": "signing.key", "type": "signing_key"},
    {"name": "macaroon", "type": "alnum"},
    {"name": "db", "type": "password", "length": 24},
    {"name": "enc", "type": "hex"},
]


# ----- validation --------------------------------------------------------------------------------

def norm(keys):
    return [dict(dict(type=None, length=None, value=None, value_from_file=None), **k) for k in keys]


@pytest.mark.parametrize("keys,rotate,labels,match", [
    ([{"name": "a", "type": "alnum"}, {"name": "a", "type": "hex"}], [], {}, "duplicate key names"),
    ([{"name": "s", "type": "signing_key"}, {"name": "s.old.yaml", "type": "alnum"}], [], {}, "reserved"),
    ([{"name": "x" * 250, "type": "signing_key"}], [], {}, "too long"),
    ([{"name": "a", "type": "alnum"}], ["b"], {}, "not in keys"),
    ([{"name": "a", "value": "v"}], ["a"], {}, "supplied value"),
    ([], [], {"matrix.stack/secret": "false"}, "ownership label"),
    ([], [], {"app.kubernetes.io/managed-by": "helm"}, "ownership label"),
    ([{"name": "bad/name", "type": "alnum"}], [], {}, "invalid key name"),
    ([{"name": "a", "type": "sha1"}], [], {}, "unknown type"),
])
def test_validate_request_errors(keys, rotate, labels, match):
    with pytest.raises(gen.SecretSpecError, match=match):
        ms.validate_request(norm(keys), rotate, labels)


# ----- planning ----------------------------------------------------------------------------------

def secret_dict(data, labels=None, rv="7"):
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns", "labels": dict(labels or {}), "resourceVersion": rv,
                         "uid": "u", "managedFields": [{"manager": "x"}]},
            "type": "Opaque", "data": kube_secrets.encode_secret_data(data)}


def plan(existing, keys, rotate=(), labels=None, adopt=False, now=1700000000000):
    specs = ms.validate_request(norm(keys), list(rotate), labels or {})
    return ms.plan_present(existing, specs, list(rotate), labels or {}, adopt, now, "ns", "s")


def test_plan_create_generates_everything():
    result = plan(None, KEYS)
    assert result["changed"]
    assert sorted(result["generated"]) == sorted(["signing.key", "signing.key.old.yaml", "macaroon", "db", "enc"])
    assert not result["kept"] and not result["rotated"]
    assert result["data"]["signing.key.old.yaml"] == signing_keys.empty_old_signing_keys()
    assert len(result["data"]["db"]) == 24
    assert result["labels"] == OWNED
    body = ms.build_body(None, result, "ns", "s")
    assert body["type"] == "Opaque" and body["metadata"]["labels"] == OWNED
    assert kube_secrets.decode_secret_data(body) == result["data"]


def test_plan_rerun_is_unchanged():
    first = plan(None, KEYS)
    existing = secret_dict(first["data"], OWNED)
    again = plan(existing, KEYS)
    assert not again["changed"]
    assert again["data"] == first["data"]
    assert sorted(again["kept"]) == sorted(first["generated"])
    assert not again["generated"]


def test_plan_new_key_only_that_one():
    first = plan(None, KEYS)
    second = plan(secret_dict(first["data"], OWNED), KEYS + [{"name": "form", "type": "alnum", "length": 20}])
    assert second["generated"] == ["form"]
    assert {k: v for k, v in second["data"].items() if k != "form"} == first["data"]
    assert len(second["data"]["form"]) == 20


def test_plan_rotate_only_named_key():
    first = plan(None, KEYS)
    second = plan(secret_dict(first["data"], OWNED), KEYS, rotate=["macaroon"])
    assert second["rotated"] == ["macaroon"]
    changed = {k for k in first["data"] if first["data"][k] != second["data"][k]}
    assert changed == {"macaroon"}


def test_plan_rotate_signing_key_keeps_old_public_key():
    first = plan(None, KEYS)
    old_line = first["data"]["signing.key"]
    [(old_id, old_public)] = signing_keys.signing_key_public_keys(old_line).items()
    second = plan(secret_dict(first["data"], OWNED), KEYS, rotate=["signing.key"], now=1800000000000)
    assert second["rotated"] == ["signing.key"]
    assert second["updated"] == ["signing.key.old.yaml"]
    assert second["retired_key_ids"] == [old_id]
    new_line = second["data"]["signing.key"]
    assert new_line != old_line
    assert new_line.split()[1] != old_line.split()[1]  # new key id
    old = signing_keys.parse_old_signing_keys(second["data"]["signing.key.old.yaml"])
    assert old == {old_id: {"key": old_public, "expired_ts": 1800000000000}}
    changed = {k for k in first["data"] if first["data"][k] != second["data"][k]}
    assert changed == {"signing.key", "signing.key.old.yaml"}


def test_plan_rotate_malformed_signing_key_refused():
    with pytest.raises(gen.SecretSpecError, match="cannot rotate"):
        plan(secret_dict({"sk": b"garbage"}, OWNED), [{"name": "sk", "type": "signing_key"}], rotate=["sk"])


def test_plan_foreign_refused_and_adopted():
    foreign = secret_dict({"macaroon": b"existing-value", "other": b"x"}, {"team": "a"})
    with pytest.raises(ms.ForeignSecretError, match="adopt"):
        plan(foreign, KEYS)
    result = plan(foreign, KEYS, adopt=True)
    assert result["adopted"] and result["changed"]
    assert result["data"]["macaroon"] == b"existing-value"
    assert result["data"]["other"] == b"x"
    assert "macaroon" in result["kept"]
    assert result["labels"] == dict(OWNED, team="a")


def test_plan_provided_values():
    keys = [{"name": "smtp", "value": "one"}]
    first = plan(None, keys)
    assert first["stored"] == ["smtp"] and first["data"]["smtp"] == b"one"
    same = plan(secret_dict(first["data"], OWNED), keys)
    assert not same["changed"] and same["kept"] == ["smtp"]
    changed = plan(secret_dict(first["data"], OWNED), [{"name": "smtp", "value": "two"}])
    assert changed["updated"] == ["smtp"] and changed["data"]["smtp"] == b"two"


def test_plan_labels():
    first = plan(None, KEYS, labels={"app": "matrix"})
    existing = secret_dict(first["data"], first["labels"])
    assert not plan(existing, KEYS, labels={"app": "matrix"})["changed"]
    relabel = plan(existing, KEYS, labels={"app": "other"})
    assert relabel["changed"] and not relabel["data_changed"] and relabel["labels"]["app"] == "other"


def test_build_body_replace_keeps_version_drops_managed_fields():
    first = plan(None, KEYS)
    existing = secret_dict(first["data"], OWNED, rv="42")
    result = plan(existing, KEYS + [{"name": "n", "type": "alnum"}])
    body = ms.build_body(existing, result, "ns", "s")
    assert body["metadata"]["resourceVersion"] == "42"
    assert "managedFields" not in body["metadata"]
    assert "managedFields" in existing["metadata"]  # the input is not modified


def test_key_diff_names_only():
    first = plan(None, KEYS)
    second = plan(secret_dict(first["data"], OWNED), KEYS + [{"name": "new", "type": "alnum"}], rotate=["macaroon"])
    before, after = ms.key_diff(second["current"], second)
    text = json.dumps([before, after])
    for value in list(first["data"].values()) + list(second["data"].values()):
        assert value.decode() not in text
    assert after["keys"]["new"] == "generated"
    assert after["keys"]["macaroon"] == "rotated"
    assert before["keys"]["macaroon"] == "present" and after["keys"]["db"] == "present"


# ----- main() against the in-memory API ----------------------------------------------------------

def test_main_create_rerun_rotate(api, capsys):
    result = run_module(capsys, base_args(api, keys=KEYS))
    assert result["changed"] and not result.get("failed")
    assert "values" not in result
    assert set(result["generated"]) == {"signing.key", "signing.key.old.yaml", "macaroon", "db", "enc"}
    assert result["public_keys"]["signing.key"]["key_id"].startswith("ed25519:a_")
    data = api.data("ns", "s")
    out = json.dumps(result)
    for value in data.values():
        if value != signing_keys.empty_old_signing_keys():
            assert value.decode() not in out

    api.requests.clear()
    again = run_module(capsys, base_args(api, keys=KEYS))
    assert not again["changed"]
    assert api.writes() == []  # a no-op run only reads
    assert api.data("ns", "s") == data

    rotated = run_module(capsys, base_args(api, keys=KEYS, rotate=["db"]))
    assert rotated["changed"] and rotated["rotated"] == ["db"]
    new = api.data("ns", "s")
    assert {k for k in data if data[k] != new[k]} == {"db"}


def test_main_check_mode_creates_nothing(api, capsys):
    result = run_module(capsys, base_args(api, keys=KEYS), check=True, diff=True)
    assert result["changed"]
    assert ("ns", "s") not in api.secrets
    assert any(r[0] == "POST" and r[2] for r in api.requests)  # server-side dry run
    assert not any(r[0] != "GET" and not r[2] for r in api.requests)  # and nothing else
    assert result["diff"]["before"] == {}
    assert set(result["diff"]["after"]["keys"]) == {"signing.key", "signing.key.old.yaml", "macaroon", "db", "enc"}
    assert result["public_keys"] == {}  # values generated in check mode are dropped, not reported


def test_main_check_mode_missing_namespace_warns(api, capsys):
    result = run_module(capsys, base_args(api, namespace="nope", keys=KEYS), check=True)
    assert result["changed"] and not result.get("failed")
    assert "namespace 'nope' does not exist" in json.dumps(result.get("warnings"))


def test_main_foreign_refused_then_adopted(api, capsys):
    api.put_secret("ns", "s", {"macaroon": b"keep-me"}, labels={"owner": "someone"})
    refused = run_module(capsys, base_args(api, keys=KEYS))
    assert refused["failed"] and "adopt" in refused["msg"]
    assert api.writes() == []
    adopted = run_module(capsys, base_args(api, keys=KEYS, adopt=True))
    assert adopted["adopted"] and adopted["changed"]
    assert api.data("ns", "s")["macaroon"] == b"keep-me"
    labels = api.secrets[("ns", "s")]["metadata"]["labels"]
    assert labels == dict(OWNED, owner="someone")


def test_main_conflict_is_retried_without_lost_update(api, capsys):
    run_module(capsys, base_args(api, keys=KEYS))
    state = {"done": False}

    def concurrent_writer(method):
        # Another writer adds a key between our read and our write.
        if method == "PUT" and not state["done"]:
            state["done"] = True
            secret = api.secrets[("ns", "s")]
            secret["data"]["theirs"] = base64.b64encode(b"their-value").decode()
            secret["data"]["form"] = base64.b64encode(b"their-form").decode()
            secret["metadata"]["resourceVersion"] = api.next_version()

    api.on_request = concurrent_writer
    result = run_module(capsys, base_args(api, keys=KEYS + [{"name": "form", "type": "alnum"}]))
    assert not result.get("failed"), result.get("msg")
    data = api.data("ns", "s")
    assert data["theirs"] == b"their-value"  # not lost
    assert data["form"] == b"their-form"  # their value won; ours was recomputed, not forced
    assert result["kept"].count("form") == 1 and "form" not in result["generated"]
    assert [r[0] for r in api.writes()].count("PUT") == 1  # first PUT got 409 before being stored


def test_main_create_race_already_exists(api, capsys):
    def concurrent_creator(method):
        if method == "POST" and ("ns", "s") not in api.secrets:
            api.put_secret("ns", "s", {"macaroon": b"first"}, labels=OWNED)

    api.on_request = concurrent_creator
    result = run_module(capsys, base_args(api, keys=KEYS))
    assert not result.get("failed"), result.get("msg")
    assert api.data("ns", "s")["macaroon"] == b"first"


def test_main_gives_up_after_repeated_conflicts(api, capsys):
    api.put_secret("ns", "s", {}, labels=OWNED)
    api.inject = [("PUT", 409, "Conflict", "modified", None)] * ms.MAX_ATTEMPTS
    result = run_module(capsys, base_args(api, keys=KEYS))
    assert result["failed"] and "kept changing" in result["msg"]


@pytest.mark.parametrize("inject,kind,text", [
    (("GET", 403, "Forbidden", 'secrets "s" is forbidden: User "bob" cannot get resource "secrets"', None),
     "forbidden", "RBAC"),
    (("GET", 401, "Unauthorized", "Unauthorized", None), "unauthorized", "credentials"),
    (("POST", 403, "Forbidden", 'secrets is forbidden: User "bob" cannot create resource', None),
     "forbidden", "not allowed to create Secret ns/s"),
    (("GET", 500, "InternalError", "etcd down", None), "api_error", "500"),
    (("POST", 422, "Invalid", "Secret is invalid", None), "invalid", "invalid"),
])
def test_main_api_errors(api, capsys, inject, kind, text):
    api.inject = [inject]
    result = run_module(capsys, base_args(api, keys=KEYS))
    assert result["failed"]
    assert result["kube_error"] == kind
    assert text in result["msg"]


def test_main_namespace_missing(api, capsys):
    result = run_module(capsys, base_args(api, namespace="missing", keys=KEYS))
    assert result["failed"] and result["kube_error"] == "namespace_not_found"
    assert "namespace 'missing' does not exist" in result["msg"]


def test_main_unreachable(capsys):
    import socket  # pylint: disable=import-outside-toplevel
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is closed again: connections are refused
    result = run_module(capsys, dict(host="https://127.0.0.1:%d" % port, api_key="t", namespace="ns", name="s",
                                     keys=KEYS))
    assert result["failed"] and result["kube_error"] == "unreachable"
    assert "unreachable" in result["msg"] and "refused" in result["msg"]


def test_main_missing_kubeconfig(capsys, tmp_path):
    result = run_module(capsys, dict(kubeconfig=str(tmp_path / "none"), namespace="ns", name="s", keys=KEYS))
    assert result["failed"] and result["kube_error"] == "config"


def test_main_env_fallback(api, capsys, monkeypatch):
    monkeypatch.setenv("K8S_AUTH_HOST", api.host)
    monkeypatch.setenv("K8S_AUTH_API_KEY", "from-env")
    result = run_module(capsys, dict(namespace="ns", name="s", keys=[{"name": "a", "type": "alnum"}]))
    assert result["changed"] and not result.get("failed")


@pytest.mark.parametrize("keys,match", [
    ([{"name": "a", "type": "nope"}], "value of type must be one of"),
    ([{"name": "a/b", "type": "alnum"}], "invalid key name"),
    ([{"name": "a"}], "set a type"),
    ([{"name": "a", "type": "rsa", "length": 1000}], "2048"),
])
def test_main_spec_errors(api, capsys, keys, match):
    result = run_module(capsys, base_args(api, keys=keys))
    assert result["failed"] and match in result["msg"]
    assert api.requests == []  # validation happens before any API call


def test_main_return_values_flagged_no_log(api, capsys):
    result = run_module(capsys, base_args(api, keys=KEYS + [{"name": "smtp", "value": "smtp-pass-123"}],
                                          return_values=True))
    # the action plugin flags the result no_log (tested through Ansible in the integration tests)
    data = api.data("ns", "s")
    assert result["values"]["smtp"] == "smtp-pass-123"
    for key in ("signing.key", "macaroon", "db", "enc"):
        assert result["values"][key] == data[key].decode()
    # the supplied value is masked in the echoed arguments
    assert "smtp-pass-123" not in json.dumps(result["invocation"])


def test_main_absent(api, capsys):
    assert not run_module(capsys, base_args(api, state="absent"))["changed"]
    api.put_secret("ns", "s", {"a": b"1"}, labels={"x": "y"})
    refused = run_module(capsys, base_args(api, state="absent"))
    assert refused["failed"] and ("ns", "s") in api.secrets
    checked = run_module(capsys, base_args(api, state="absent", adopt=True), check=True, diff=True)
    assert checked["changed"] and ("ns", "s") in api.secrets
    assert checked["diff"]["before"] == {"keys": {"a": "present"}}
    api.put_secret("ns", "s", {"a": b"1"}, labels=OWNED)
    deleted = run_module(capsys, base_args(api, state="absent"))
    assert deleted["changed"] and deleted["deleted"] and ("ns", "s") not in api.secrets


def test_main_short_foreign_values_do_not_mask_output(api, capsys):
    """Values of keys the module does not manage are not added to the masking set (a value "1" would otherwise
    turn every "1" in the result into asterisks)."""
    api.put_secret("ns", "s", {"flag": b"1", "mode": b"ns"}, labels={"team": "ns"})
    result = run_module(capsys, base_args(api, keys=[{"name": "a", "type": "alnum"}], adopt=True))
    assert not result.get("failed"), result.get("msg")
    assert result["secret"]["resource_version"] == api.secrets[("ns", "s")]["metadata"]["resourceVersion"]
    assert result["secret"]["namespace"] == "ns" and result["secret"]["labels"]["team"] == "ns"
    assert "*" not in json.dumps(result["secret"])
