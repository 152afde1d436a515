"""Unit tests for the matrix_user / matrix_user_info modules: argument spec vs documentation, spec
building, and whole module runs against a scripted HTTP server on 127.0.0.1."""

import json
import sys
import threading
from pathlib import Path

import pytest
import yaml

COLLECTIONS = Path(__file__).resolve().parents[4] / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible.module_utils.testing import patch_module_args  # noqa: E402

from ansible_collections.matrix.stack.plugins.doc_fragments.synapse_admin import ModuleDocFragment  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.synapse import connection, transport  # noqa: E402
from ansible_collections.matrix.stack.plugins.modules import matrix_user, matrix_user_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils"))
from test_synapse_admin import Scripted, synapse_user  # noqa: E402  pylint: disable=wrong-import-position

TOKEN = "syt_module_unit_secret"


@pytest.fixture
def server():
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_module(mod, args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as info:
            mod.main()
    out = json.loads(capsys.readouterr().out)
    out["_rc"] = info.value.code
    return out


def documented_options(doc):
    options = dict(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])
    options.update(yaml.safe_load(doc).get("options") or {})
    return options


def check_spec_matches_doc(spec, options, path=""):
    assert set(spec) == set(options), path
    for name, opt in spec.items():
        doc = options[name]
        assert opt.get("type", "str") == doc.get("type", "str"), path + name
        assert opt.get("default") == doc.get("default"), path + name
        assert opt.get("choices") == doc.get("choices"), path + name
        assert opt.get("elements") == doc.get("elements"), path + name
        assert bool(opt.get("required")) == bool(doc.get("required")), path + name
        assert opt.get("aliases") == doc.get("aliases"), path + name
        if "options" in opt:
            check_spec_matches_doc(opt["options"], doc["suboptions"], path + name + ".")


def test_matrix_user_spec_matches_documentation():
    check_spec_matches_doc(matrix_user.argument_spec(), documented_options(matrix_user.DOCUMENTATION))
    yaml.safe_load(matrix_user.EXAMPLES)
    yaml.safe_load(matrix_user.RETURN)


def test_matrix_user_info_documentation_parses():
    doc = documented_options(matrix_user_info.DOCUMENTATION)
    assert {"user", "admins", "deactivated", "guests", "locked", "name", "page_size", "homeserver_url"} <= set(doc)
    yaml.safe_load(matrix_user_info.EXAMPLES)
    yaml.safe_load(matrix_user_info.RETURN)


def test_secrets_are_no_log():
    spec = matrix_user.argument_spec()
    for name in ("admin_token", "registration_shared_secret", "password", "kube_api_key", "kubeconfig"):
        assert spec[name].get("no_log") is True, name
    assert spec["users"]["options"]["password"]["no_log"] is True


def test_build_specs_inherits_top_level_fields():
    params = {k: None for k in matrix_user.argument_spec()}
    params.update(update_password="always", state="present", user=None, locked=True,
                  users=[{"user": "a", "locked": False, "state": None}, {"user": "b", "state": "absent"}])
    specs = matrix_user.build_specs(params)
    assert [s["locked"] for s in specs] == [False, True]
    assert [s["state"] for s in specs] == ["present", "absent"]
    assert [s["update_password"] for s in specs] == ["always", "always"]


def whoami(req):
    return (200, {"user_id": "@admin:x.org"})


def test_module_creates_user_and_hides_password(server, capsys):
    server.script = [whoami, (404, {"errcode": "M_NOT_FOUND", "error": "User not found"}),
                     (201, synapse_user(name="@new:x.org", displayname="New"))]
    out = run_module(matrix_user, {"homeserver_url": server.url, "admin_token": TOKEN, "user": "new",
                                   "password": "p4ssw0rd-unit", "displayname": "New", "_ansible_diff": True},
                     capsys)
    assert out["_rc"] == 0 and out["changed"] is True and out["created"] is True
    assert out["user_id"] == "@new:x.org"
    assert out["diff"]["before"] == {"exists": False} and out["diff"]["after"]["displayname"] == "New"
    assert server.requests[2]["body"] == {"password": "p4ssw0rd-unit", "displayname": "New"}
    text = json.dumps(out)
    assert "p4ssw0rd-unit" not in text and TOKEN not in text
    assert out["http"]["requests"] == 3


def test_module_check_mode(server, capsys):
    server.script = [whoami, (200, synapse_user(name="@a:x.org", displayname="Old"))]
    out = run_module(matrix_user, {"homeserver_url": server.url, "admin_token": TOKEN, "user": "a",
                                   "displayname": "New", "_ansible_check_mode": True}, capsys)
    assert out["changed"] is True and "user" not in out
    assert [r["method"] for r in server.requests] == ["GET", "GET"]


def test_module_rejects_bad_user_before_any_request(server, capsys):
    out = run_module(matrix_user, {"homeserver_url": server.url, "admin_token": TOKEN,
                                   "users": [{"user": "ok"}, {"user": "Not OK"}]}, capsys)
    assert out["_rc"] == 1 and "users[1]" in out["msg"] and "not a valid Matrix user ID" in out["msg"]
    assert server.requests == []


def test_module_needs_credentials(server, capsys):
    out = run_module(matrix_user, {"homeserver_url": server.url, "user": "a"}, capsys)
    assert out["_rc"] == 1 and "admin_token or registration_shared_secret" in out["msg"]


def test_module_bootstrap_registers_and_returns_token_only_when_asked(server, capsys):
    registered = {"user_id": "@root:x.org", "access_token": "syt_fresh_token", "device_id": "D"}
    server.script = [(200, {"nonce": "n"}), (200, registered), (200, synapse_user(name="@root:x.org", admin=True))]
    out = run_module(matrix_user, {"homeserver_url": server.url, "registration_shared_secret": "shh",
                                   "user": "root", "password": "pw-unit-1"}, capsys)
    assert out["_rc"] == 0 and out["bootstrapped"] == "registered" and out["created"] is True
    assert "access_token" not in out and "syt_fresh_token" not in json.dumps(out)
    assert server.requests[2]["headers"]["Authorization"] == "Bearer syt_fresh_token"

    server.requests.clear()
    server.script = [(200, {"nonce": "n2"}), (400, {"errcode": "M_USER_IN_USE", "error": "User ID already taken."}),
                     (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 50}),
                     (200, dict(registered, access_token="syt_login_token")),
                     (200, synapse_user(name="@root:x.org", admin=True))]
    out = run_module(matrix_user, {"homeserver_url": server.url, "registration_shared_secret": "shh",
                                   "user": "root", "password": "pw-unit-1", "return_access_token": True}, capsys)
    assert out["_rc"] == 0 and out["bootstrapped"] == "logged_in" and out["changed"] is False
    assert out["access_token"] == "syt_login_token"
    assert out["http"]["retries"] == [{"reason": "429 rate limited", "waited": 0.05}]


def test_module_bulk_per_user_failure_continues(server, capsys):
    listing = {"users": [], "total": 1}
    server.script = [whoami, (200, listing)] + [
        (201, synapse_user(name="@b%d:x.org" % i)) if i != 2 else
        (400, {"errcode": "M_INVALID_USERNAME", "error": "User ID may not begin with _"}) for i in range(5)]
    out = run_module(matrix_user, {"homeserver_url": server.url, "admin_token": TOKEN,
                                   "users": [{"user": "b%d" % i} for i in range(5)]}, capsys)
    assert out["_rc"] == 1 and "1 of 5 users failed" in out["msg"]
    assert out["summary"] == {"total": 5, "changed": 4, "created": 4, "unchanged": 0, "failed": 1}
    assert out["results"][2]["failed"] is True and out["changed"] is True


def test_module_aborts_on_auth_errors(server, capsys):
    server.script = [(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."})]
    out = run_module(matrix_user, {"homeserver_url": server.url, "admin_token": TOKEN, "user": "a"}, capsys)
    assert out["_rc"] == 1 and "access token was rejected" in out["msg"] and out["changed"] is False


def test_info_module_lists_all_pages(server, capsys):
    server.script = [(200, {"users": [{"name": "@a:x"}], "total": 3, "next_token": "1"}),
                     (200, {"users": [{"name": "@b:x"}], "total": 3, "next_token": "2"}),
                     (200, {"users": [{"name": "@c:x"}], "total": 3})]
    out = run_module(matrix_user_info, {"homeserver_url": server.url, "admin_token": TOKEN, "page_size": 1,
                                        "deactivated": True, "name": "x"}, capsys)
    assert out["total"] == 3 and out["pages"] == 3 and out["changed"] is False
    assert server.requests[0]["path"] == "/_synapse/admin/v3/users?guests=true&locked=true&deactivated=true&name=x&limit=1&from=0"


def test_connection_options_validated(capsys):
    out = run_module(matrix_user, {"admin_token": TOKEN, "user": "a"}, capsys)
    assert out["_rc"] == 1 and "homeserver_url" in out["msg"]
    out = run_module(matrix_user, {"admin_token": TOKEN, "user": "a", "kube_namespace": "m"}, capsys)
    assert out["_rc"] == 1 and "kube_service or kube_pod_selector" in out["msg"]


def test_connection_errors_are_synapse_admin_errors():
    with pytest.raises(transport.SynapseAdminError):
        with connection.Connection({"homeserver_url": "gopher://x"}):
            pass


def test_empty_users_list(server, capsys):
    out = run_module(matrix_user, {"homeserver_url": server.url, "admin_token": TOKEN, "users": []}, capsys)
    assert out["_rc"] == 0 and out["changed"] is False and out["results"] == []
    out = run_module(matrix_user, {"homeserver_url": server.url, "registration_shared_secret": "unit-shared-secret", "users": []}, capsys)
    assert out["_rc"] == 1 and "no admin to bootstrap" in out["msg"]
    assert server.requests == []


def test_bootstrap_refuses_other_server_before_registering(server, capsys):
    server.script = [(200, {"server_name": "x.org", "verify_keys": {}})]
    out = run_module(matrix_user, {"homeserver_url": server.url, "registration_shared_secret": "unit-shared-secret",
                                   "user": "@root:elsewhere.org", "password": "pw-unit-2"}, capsys)
    assert out["_rc"] == 1 and "belongs to server 'elsewhere.org'" in out["msg"]
    assert [r["path"] for r in server.requests] == ["/_matrix/key/v2/server"]


def test_failure_after_registration_reports_changed(server, capsys):
    registered = {"user_id": "@root:x.org", "access_token": "syt_fresh_token_2", "device_id": "D"}
    server.script = [(200, {"nonce": "n"}), (200, registered),
                     (403, {"errcode": "M_FORBIDDEN", "error": "You are not a server admin"})]
    out = run_module(matrix_user, {"homeserver_url": server.url, "registration_shared_secret": "unit-shared-secret",
                                   "user": "root", "password": "pw-unit-3"}, capsys)
    assert out["_rc"] == 1 and out["changed"] is True and out["bootstrapped"] == "registered"
    assert "syt_fresh_token_2" not in json.dumps(out)
