"""A small Matrix client for tests: talks to a real Synapse over its client/admin APIs."""

import hashlib
import hmac
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid


class MatrixError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def request(base_url, method, path, token=None, body=None, raw=None, content_type="application/json", timeout=30):
    """Send one request; returns parsed JSON (or bytes for non-JSON answers). Raises MatrixError on >= 400."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            if resp.headers.get_content_type() == "application/json":
                return json.loads(payload or b"{}")
            return payload
    except urllib.error.HTTPError as exc:
        raise MatrixError(exc.code, exc.read().decode(errors="replace")) from None


def register_shared_secret(base_url, shared_secret, username, password, admin=False):
    """Shared-secret registration (HMAC-SHA1 over nonce, user, password, admin flag). Returns the login response."""
    nonce = request(base_url, "GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    return request(base_url, "POST", "/_synapse/admin/v1/register", body={
        "nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac.hexdigest()})


def login(base_url, user, password):
    return request(base_url, "POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})


def create_room(base_url, token, name, invite=()):
    return request(base_url, "POST", "/_matrix/client/v3/createRoom", token,
                   {"name": name, "preset": "private_chat", "invite": list(invite)})["room_id"]


def join_room(base_url, token, room_id):
    return request(base_url, "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", token, {})


def send_message(base_url, token, room_id, text):
    path = (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/"
            f"{uuid.uuid4().hex}")
    return request(base_url, "PUT", path, token, {"msgtype": "m.text", "body": text})["event_id"]


def messages(base_url, token, room_id, limit=1000):
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit={limit}"
    return request(base_url, "GET", path, token)["chunk"]


def joined_rooms(base_url, token):
    return request(base_url, "GET", "/_matrix/client/v3/joined_rooms", token)["joined_rooms"]


def upload(base_url, token, content, content_type="application/octet-stream", filename="file"):
    path = f"/_matrix/media/v3/upload?filename={urllib.parse.quote(filename)}"
    return request(base_url, "POST", path, token, raw=content, content_type=content_type)["content_uri"]


def download(base_url, token, mxc_uri):
    server, media_id = mxc_uri[len("mxc://"):].split("/", 1)
    return request(base_url, "GET", f"/_matrix/client/v1/media/download/{server}/{media_id}", token)


def thumbnail(base_url, token, mxc_uri, width=32, height=32):
    server, media_id = mxc_uri[len("mxc://"):].split("/", 1)
    path = f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}?width={width}&height={height}&method=scale"
    return request(base_url, "GET", path, token)


def server_keys(base_url):
    return request(base_url, "GET", "/_matrix/key/v2/server")
