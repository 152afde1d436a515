"""Unit tests for plugins/module_utils/synapse/.

HTTP behaviour is tested against a scripted HTTP server on 127.0.0.1 (recorded Synapse answers,
including 429s), not against mocks, so the real http.client keep-alive/reconnect paths run.
"""

import email.utils
import hashlib
import hmac
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

COLLECTIONS = Path(__file__).resolve().parents[4] / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.matrix.stack.plugins.module_utils.synapse import endpoints, ids, planning, transport, users  # noqa: E402

# ------------------------------------------------------------------------------------------------
# scripted server
# ------------------------------------------------------------------------------------------------


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = []       # list of (status, body_dict_or_bytes, headers) or callables(request) -> same
        self.default = None
        self.requests = []     # dicts: method, path, headers, body, conn
        self.connections = 0
        self.close_after_each = False

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.server.connections += 1
        self.conn_id = self.server.connections

    def log_message(self, *args):  # quiet
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        req = {"method": self.command, "path": self.path, "headers": dict(self.headers),
               "body": json.loads(raw) if raw else None, "conn": self.conn_id}
        self.server.requests.append(req)
        item = self.server.script.pop(0) if self.server.script else self.server.default
        if callable(item):
            item = item(req)
        status, body, headers = item if len(item) == 3 else (item[0], item[1], {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        if self.server.close_after_each:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = _handle


@pytest.fixture
def server():
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


TOKEN = "syt_unit_test_secret_value"


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def client_for(srv, **kw):
    sleeps = Sleeps()
    kw.setdefault("access_token", TOKEN)
    return endpoints.SynapseAdminClient(srv.url, sleep=sleeps, **kw), sleeps


# ------------------------------------------------------------------------------------------------
# user IDs, e-mails, HMAC
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("user, expected", [
    ("alice", ("alice", None)),
    ("a.b_c=d-e/f+g9", ("a.b_c=d-e/f+g9", None)),
    ("@alice:example.org", ("alice", "example.org")),
    ("@alice:example.org:8448", ("alice", "example.org:8448")),
    ("@alice:127.0.0.1", ("alice", "127.0.0.1")),
    ("@alice:[::1]:8448", ("alice", "[::1]:8448")),
])
def test_parse_user_id_valid(user, expected):
    assert ids.parse_user_id(user) == expected


@pytest.mark.parametrize("user, message", [
    ("", "non-empty"),
    ("Alice", "upper-case"),
    ("al ice", "only a-z"),
    ("al:ice", "must start with '@'"),
    ("@alice", "expected @localpart:server.name"),
    ("@:example.org", "empty localpart"),
    ("@alice:exa mple.org", "not a valid Matrix server name"),
    ("@alice:example.org:99999", "port"),
    ("@alice:-bad.org", "not a valid Matrix server name"),
    ("é", "only a-z"),
])
def test_parse_user_id_invalid(user, message):
    with pytest.raises(ids.UserIdError, match=message):
        ids.parse_user_id(user)


def test_user_id_length_limit():
    assert ids.make_user_id("a" * 240, "example.org") == "@%s:example.org" % ("a" * 240)
    with pytest.raises(ids.UserIdError, match="at most 255 bytes"):
        ids.make_user_id("a" * 250, "example.org")


def test_make_user_id_refuses_other_servers():
    assert ids.make_user_id("bob", "example.org") == "@bob:example.org"
    assert ids.make_user_id("@bob:example.org", "example.org") == "@bob:example.org"
    with pytest.raises(ids.UserIdError, match="belongs to server 'other.org'"):
        ids.make_user_id("@bob:other.org", "example.org")


def test_canonicalise_email_matches_synapse_rules():
    assert ids.canonicalise_email("  Foo.Bar@Example.COM ") == "foo.bar@example.com"
    assert ids.canonicalise_email("STRASSE@EXAMPLE.org") == "strasse@example.org"
    assert ids.canonicalise_email("Straße@example.org") == "strasse@example.org"  # casefold, not lower
    for bad in ("nobody", "a@b@c", "@example.org", "user@"):
        with pytest.raises(ValueError):
            ids.canonicalise_email(bad)
    assert planning.normalise_emails(["B@X.org", "b@x.ORG", "a@x.org"]) == ["a@x.org", "b@x.org"]


def test_registration_mac():
    # Independent computation following Synapse's documented algorithm
    nonce, user, pw = "thisisanonce", "pepper_roni", "pizza"
    want = hmac.new(b"shared", b"thisisanonce\x00pepper_roni\x00pizza\x00admin", hashlib.sha1).hexdigest()
    assert ids.registration_mac("shared", nonce, user, pw, True) == want
    want_type = hmac.new(b"shared", b"thisisanonce\x00pepper_roni\x00pizza\x00notadmin\x00bot", hashlib.sha1).hexdigest()
    assert ids.registration_mac("shared", nonce, user, pw, False, "bot") == want_type


def test_retry_after_parsing():
    assert transport._parse_retry_after({}, {"retry_after_ms": 1500}, 9) == 1.5
    assert transport._parse_retry_after({"Retry-After": "3"}, {"errcode": "M_LIMIT_EXCEEDED"}, 9) == 3.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < transport._parse_retry_after({"Retry-After": future}, None, 9) <= 31
    assert transport._parse_retry_after({"Retry-After": "garbage"}, None, 9) == 9
    assert transport._parse_retry_after({}, None, 0.5) == 0.5


# ------------------------------------------------------------------------------------------------
# HTTP client
# ------------------------------------------------------------------------------------------------

def test_keep_alive_one_connection(server):
    server.default = (200, {"ok": True})
    client, _sleeps = client_for(server)
    for _i in range(20):
        assert client.request("GET", "/x")[1] == {"ok": True}
    assert server.connections == 1
    assert all(r["headers"]["Authorization"] == "Bearer " + TOKEN for r in server.requests)


def test_reconnects_when_server_closes(server):
    server.default = (200, {"ok": True})
    server.close_after_each = True
    client, sleeps = client_for(server)
    for _i in range(3):
        client.request("GET", "/x")
    assert server.connections == 3 and sleeps == []


def test_recorded_429_is_retried_after_retry_after_ms(server):
    # a 429 as Synapse sends it (body recorded from Synapse 1.163 login rate limiting)
    limited = (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 1234},
               {"Retry-After": "2"})
    server.script = [limited, limited, (200, {"user_id": "@a:b"})]
    client, sleeps = client_for(server)
    status, body = client.request("POST", "/_matrix/client/v3/login", body={"type": "m.login.password"}, auth=False)
    assert status == 200 and body == {"user_id": "@a:b"}
    assert sleeps == [1.234, 1.234]
    assert [r["reason"] for r in client.retry_log] == ["429 rate limited"] * 2
    assert len(server.requests) == 3


def test_429_retry_after_header_only(server):
    server.script = [(429, {"errcode": "M_LIMIT_EXCEEDED"}, {"Retry-After": "3"}), (200, {})]
    client, sleeps = client_for(server)
    client.request("GET", "/x")
    assert sleeps == [3.0]


def test_429_too_long_wait_fails_clearly(server):
    server.script = [(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 600000})]
    client, sleeps = client_for(server, max_retry_wait=60)
    with pytest.raises(transport.SynapseAdminError, match="asked to wait 600.0s, more than max_retry_wait"):
        client.request("GET", "/x")
    assert sleeps == []


def test_429_gives_up_after_retries(server):
    server.default = (429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 10})
    client, sleeps = client_for(server, retries=3)
    with pytest.raises(transport.SynapseAdminError, match="Still rate limited after 3 retries"):
        client.request("GET", "/x")
    assert len(sleeps) == 3 and len(server.requests) == 4


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_backoff(server, status):
    server.script = [(status, b"<html>bad gateway</html>"), (status, b""), (200, {"ok": 1})]
    client, sleeps = client_for(server)
    assert client.request("GET", "/x")[1] == {"ok": 1}
    assert sleeps == [0.5, 1.0]


def test_backoff_is_capped(server):
    client, _sleeps = client_for(server, backoff=1, max_backoff=4)
    assert [client._backoff(n) for n in range(1, 6)] == [1, 2, 4, 4, 4]


def test_connection_refused_is_retried_then_clear():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    client = endpoints.SynapseAdminClient("http://127.0.0.1:%d" % port, access_token="t", retries=2, sleep=sleeps)
    with pytest.raises(transport.SynapseAdminError, match=r"Cannot reach the homeserver at http://127.0.0.1:\d+ .*"
                                                          r"ConnectionRefusedError.*after 3 attempts"):
        client.request("GET", "/x")
    assert sleeps == [0.5, 1.0]


def test_timeout_is_a_connection_error(server):
    def slow(_req):
        time.sleep(1.5)
        return (200, {})
    server.script = [slow]
    client, _sleeps = client_for(server, timeout=0.3, retries=0)
    with pytest.raises(transport.SynapseAdminError, match="timed out|TimeoutError"):
        client.request("GET", "/x")


@pytest.mark.parametrize("status, body, message", [
    (401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}, "access token was rejected"),
    (403, {"errcode": "M_FORBIDDEN", "error": "You are not a server admin"}, "does not belong to a server admin"),
    (404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, "must point at the Synapse main process"),
    (403, {"errcode": "M_FORBIDDEN", "error": "User creation via the Admin API is not available when Synapse is "
                                              "delegating authentication to MAS. Create the user via MAS instead."},
     "Matrix Authentication Service"),
    (400, {"errcode": "M_INVALID_USERNAME", "error": "User ID may not begin with _"}, "User ID may not begin with _"),
])
def test_error_messages(server, status, body, message):
    server.script = [(status, body)]
    client, sleeps = client_for(server)
    with pytest.raises(transport.SynapseAdminError, match=message) as info:
        client.request("PUT", "/_synapse/admin/v2/users/%40a%3Ab", body={})
    assert info.value.status == status and sleeps == []
    assert TOKEN not in str(info.value)


def test_get_user_404_means_absent(server):
    server.script = [(404, {"errcode": "M_NOT_FOUND", "error": "User not found"})]
    client, _sleeps = client_for(server)
    assert client.get_user("@a:b") is None
    assert server.requests[0]["path"] == "/_synapse/admin/v2/users/%40a%3Ab"


def test_base_url_with_path_prefix(server):
    server.default = (200, {})
    client = endpoints.SynapseAdminClient(server.url + "/synapse/", access_token="t")
    client.request("GET", "/_synapse/admin/v2/users", query={"from": "0", "limit": 5, "skip": None})
    assert server.requests[0]["path"] == "/synapse/_synapse/admin/v2/users?from=0&limit=5"


def test_bad_url():
    with pytest.raises(transport.SynapseAdminError, match="must be an http"):
        endpoints.SynapseAdminClient("ftp://x")


def test_tls_verification_error_is_clear(tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    srv = Scripted()
    srv.default = (200, {"ok": True})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = "https://127.0.0.1:%d" % srv.server_address[1]
    try:
        with pytest.raises(transport.SynapseAdminError, match="TLS certificate verification failed.*ca_path"):
            endpoints.SynapseAdminClient(url, access_token="t", retries=0).request("GET", "/x")
        assert endpoints.SynapseAdminClient(url, access_token="t", ca_path=str(cert)).request("GET", "/x")[1] == {"ok": True}
        assert endpoints.SynapseAdminClient(url, access_token="t", validate_certs=False).request("GET", "/x")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_register_shared_secret_flow(server):
    server.script = [(200, {"nonce": "abc"}),
                     (200, {"user_id": "@admin:ex.org", "access_token": "syt_x", "device_id": "D"})]
    client, _sleeps = client_for(server, access_token=None)
    resp = client.register_shared_secret("s3cret", "admin", "pw", admin=True)
    assert resp["access_token"] == "syt_x"
    post = server.requests[1]
    assert "Authorization" not in post["headers"]
    assert post["body"]["mac"] == ids.registration_mac("s3cret", "abc", "admin", "pw", True)
    assert post["body"]["admin"] is True


def test_register_user_in_use_returns_none(server):
    server.script = [(200, {"nonce": "abc"}), (400, {"errcode": "M_USER_IN_USE", "error": "User ID already taken."})]
    client, _sleeps = client_for(server, access_token=None)
    assert client.register_shared_secret("s", "admin", "pw", admin=True) is None


def test_register_disabled_message(server):
    server.script = [(200, {"nonce": "abc"}), (400, {"errcode": "M_UNKNOWN",
                                                     "error": "Shared secret registration is not enabled"})]
    client, _sleeps = client_for(server, access_token=None)
    with pytest.raises(transport.SynapseAdminError, match="MAS"):
        client.register_shared_secret("s", "admin", "pw", admin=True)


def test_login_wrong_password_message(server):
    server.script = [(403, {"errcode": "M_FORBIDDEN", "error": "Invalid username or password"})]
    client, _sleeps = client_for(server, access_token=None)
    with pytest.raises(transport.SynapseAdminError, match="password is wrong or the account is deactivated"):
        client.login_password("admin", "pw")


def test_list_users_follows_next_token(server):
    server.script = [(200, {"users": [{"name": "@a:x"}, {"name": "@b:x"}], "total": 5, "next_token": "2"}),
                     (200, {"users": [{"name": "@c:x"}, {"name": "@d:x"}], "total": 5, "next_token": 4}),
                     (200, {"users": [{"name": "@e:x"}], "total": 5})]
    client, _sleeps = client_for(server)
    names = [u["name"] for u in client.list_users(page_size=2, admins=True)]
    assert names == ["@a:x", "@b:x", "@c:x", "@d:x", "@e:x"]
    assert [r["path"] for r in server.requests] == [
        "/_synapse/admin/v2/users?from=0&limit=2&admins=true",
        "/_synapse/admin/v2/users?from=2&limit=2&admins=true",
        "/_synapse/admin/v2/users?from=4&limit=2&admins=true"]


# ------------------------------------------------------------------------------------------------
# compare / minimal PUT
# ------------------------------------------------------------------------------------------------

def synapse_user(**kw):
    user = {"name": "@a:x", "admin": False, "deactivated": False, "erased": False, "locked": False,
            "displayname": "A", "user_type": None, "threepids": [], "shadow_banned": False}
    user.update(kw)
    return user


def spec(**kw):
    out = {"user": "a", "password": None, "update_password": "on_create", "admin": None, "displayname": None,
           "emails": None, "user_type": None, "locked": None, "logout_devices": None, "state": "present"}
    out.update(kw)
    return out


def test_plan_create_full():
    ops, before, after = planning.plan_user(spec(password="pw", admin=True, displayname="A", emails=["A@X.ORG"],
                                                 user_type="bot", locked=True), None)
    assert ops == [("put", {"password": "pw", "admin": True, "displayname": "A",
                            "threepids": [{"medium": "email", "address": "a@x.org"}], "user_type": "bot"}),
                   ("put", {"locked": True})]
    assert before == {"exists": False}
    assert after["password_updated"] is True and "pw" not in json.dumps(after)


def test_plan_no_change():
    current = synapse_user(threepids=[{"medium": "email", "address": "a@x.org"}, {"medium": "msisdn", "address": "1"}])
    ops, before, after = planning.plan_user(spec(password="pw", admin=False, displayname="A", emails=["A@x.org"],
                                                 user_type="", locked=False), current)
    assert ops == [] and before == after


def test_plan_minimal_body_keeps_phone_numbers():
    current = synapse_user(threepids=[{"medium": "email", "address": "a@x.org"}, {"medium": "msisdn", "address": "1"}])
    ops, _before, after = planning.plan_user(spec(displayname="B", emails=["b@x.org"]), current)
    assert ops == [("put", {"displayname": "B", "threepids": [{"medium": "msisdn", "address": "1"},
                                                              {"medium": "email", "address": "b@x.org"}]})]
    assert after["emails"] == ["b@x.org"]


def test_plan_password_always_and_logout_devices():
    ops = planning.plan_user(spec(password="pw", update_password="always", logout_devices=False), synapse_user())[0]
    assert ops == [("put", {"password": "pw", "logout_devices": False})]
    ops = planning.plan_user(spec(password="pw", update_password="on_create"), synapse_user())[0]
    assert ops == []


def test_plan_displayname_empty_equals_none():
    assert planning.plan_user(spec(displayname=""), synapse_user(displayname=None))[0] == []
    assert planning.plan_user(spec(displayname=""), synapse_user(displayname="A"))[0] == [("put", {"displayname": ""})]


def test_plan_reactivation_needs_password():
    with pytest.raises(planning.UserSpecError, match="needs a new password"):
        planning.plan_user(spec(), synapse_user(deactivated=True))
    ops, _before, after = planning.plan_user(spec(password="pw"), synapse_user(deactivated=True, erased=True))
    assert ops == [("put", {"deactivated": False, "password": "pw"})]
    assert after["deactivated"] is False and after["erased"] is False


def test_plan_states():
    assert planning.plan_user(spec(state="deactivated"), None)[0] == []
    assert planning.plan_user(spec(state="deactivated"), synapse_user())[0] == [("deactivate", {"erase": False})]
    assert planning.plan_user(spec(state="deactivated"), synapse_user(deactivated=True))[0] == []
    assert planning.plan_user(spec(state="absent"), None)[0] == []
    assert planning.plan_user(spec(state="absent"), synapse_user())[0] == [("deactivate", {"erase": True})]
    # deactivated earlier without erase: absent still erases
    assert planning.plan_user(spec(state="absent"), synapse_user(deactivated=True))[0] == [("deactivate", {"erase": True})]
    assert planning.plan_user(spec(state="absent"), synapse_user(deactivated=True, erased=True))[0] == []


def test_manager_resolve_validates_everything_first():
    manager = users.UserManager(client=None, server_name="x.org")
    with pytest.raises(planning.UserSpecError, match=r"users\[1\]: .*belongs to server"):
        manager.resolve([spec(user="a"), spec(user="@b:y.org")])
    with pytest.raises(planning.UserSpecError, match="listed twice"):
        manager.resolve([spec(user="a"), spec(user="@a:x.org")])
    with pytest.raises(planning.UserSpecError, match="not a valid e-mail"):
        manager.resolve([spec(user="a", emails=["nope"])])


def test_manager_bulk_uses_list_and_get_for_emails(server):
    listing = {"users": [{"name": "@u%d:x.org" % i, "admin": False, "deactivated": False, "locked": False,
                          "erased": False, "displayname": "U%d" % i, "user_type": None} for i in range(6)],
               "total": 6}
    server.script = [(200, listing),
                     (200, synapse_user(name="@u0:x.org", displayname="U0",
                                        threepids=[{"medium": "email", "address": "u0@x.org"}]))]
    client, _sleeps = client_for(server)
    manager = users.UserManager(client, "x.org")
    specs = manager.resolve([spec(user="u%d" % i, displayname="U%d" % i) for i in range(6)])
    specs[0]["emails"] = ["U0@X.org"]
    manager.prefetch(specs)
    results = [manager.ensure(s) for s in specs]
    assert not any(r["changed"] for r in results)
    assert [r["method"] for r in server.requests] == ["GET", "GET"]
    assert server.requests[0]["path"].startswith("/_synapse/admin/v2/users?")
    assert "deactivated=true" in server.requests[0]["path"] and "locked=true" in server.requests[0]["path"]
    assert server.requests[1]["path"] == "/_synapse/admin/v2/users/%40u0%3Ax.org"


def test_manager_bulk_large_server_falls_back_to_get(server):
    server.script = [(200, {"users": [], "total": 10 ** 6, "next_token": "1000"})]
    server.default = (404, {"errcode": "M_NOT_FOUND", "error": "User not found"})
    client, _sleeps = client_for(server)
    manager = users.UserManager(client, "x.org", check_mode=True)
    specs = manager.resolve([spec(user="n%d" % i) for i in range(5)])
    manager.prefetch(specs)
    results = [manager.ensure(s) for s in specs]
    assert all(r["changed"] and r["created"] for r in results)
    assert len(server.requests) == 6 and all(r["method"] == "GET" for r in server.requests)


def test_manager_check_mode_sends_no_writes(server):
    server.default = (200, synapse_user(name="@a:x.org"))
    client, _sleeps = client_for(server)
    manager = users.UserManager(client, "x.org", check_mode=True, diff=True)
    for s in manager.resolve([spec(user="a", displayname="new", admin=True, locked=True)]):
        result = manager.ensure(s)
        assert result["changed"] and result["diff"]["after"]["displayname"] == "new"
    assert {r["method"] for r in server.requests} == {"GET"}


def test_manager_create_then_lock(server):
    created = synapse_user(name="@a:x.org")
    server.script = [(404, {"errcode": "M_NOT_FOUND", "error": "User not found"}), (201, created),
                     (200, dict(created, locked=True))]
    client, _sleeps = client_for(server)
    manager = users.UserManager(client, "x.org")
    result = manager.ensure(manager.resolve([spec(user="a", locked=True, password="pw")])[0])
    assert result["created"] and result["user"]["locked"] is True
    assert [(r["method"], r["body"]) for r in server.requests[1:]] == [
        ("PUT", {"password": "pw"}), ("PUT", {"locked": True})]


def test_idle_keepalive_closed_by_server_is_resent_at_once(server):
    """The server drops the kept-alive connection without answering: resent on a new one, no backoff."""
    state = {"n": 0}
    server.default = (200, {"ok": True})
    client, sleeps = client_for(server)
    client.request("GET", "/first")

    orig_handle = Handler._handle

    def drop_once(self):
        if state["n"] == 0:
            state["n"] += 1
            self.close_connection = True
            self.rfile.read(0)
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        orig_handle(self)

    Handler.do_GET = drop_once
    try:
        assert client.request("GET", "/second")[1] == {"ok": True}
    finally:
        Handler.do_GET = orig_handle
    assert sleeps == [] and client.retry_log == [] and server.connections == 2
