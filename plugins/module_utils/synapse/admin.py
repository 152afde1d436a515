# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client for the Synapse Admin API, shared by matrix_user and matrix_user_info.

Private module util (leading underscore): no API stability promise outside this collection.

* ``SynapseAdminClient``: one persistent HTTP/1.1 connection (keep-alive) to the Synapse main
  process, JSON in/out, timeouts, retries on 429 (honouring ``retry_after_ms`` and
  ``Retry-After``), on connection errors and on 502/503/504 with exponential backoff, and clear
  messages for 401/403/404, MAS-delegated servers and TLS errors.
* User ID grammar (``parse_user_id``), e-mail normalisation as Synapse does it
  (``canonicalise_email``), and the compare/minimal-PUT logic (``UserManager``).
"""

import email.utils
import hashlib
import hmac
import http.client
import json
import re
import ssl
import time
import urllib.parse

ADMIN_V1_USERS = "/_synapse/admin/v1/users"
ADMIN_V2_USERS = "/_synapse/admin/v2/users"
ADMIN_V3_USERS = "/_synapse/admin/v3/users"
REGISTER_PATH = "/_synapse/admin/v1/register"
DEACTIVATE_PATH = "/_synapse/admin/v1/deactivate/"
LOGIN_PATH = "/_matrix/client/v3/login"
WHOAMI_PATH = "/_matrix/client/v3/account/whoami"
SERVER_KEYS_PATH = "/_matrix/key/v2/server"

# https://spec.matrix.org/v1.17/appendices/#user-identifiers
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
# server_name = hostname [ ":" port ]; hostname = IPv4 / "[" IPv6 "]" / DNS name
_DNS_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9\-.]{0,253}[A-Za-z0-9])?"
_IPV6 = r"\[[0-9A-Fa-f:.]{2,45}\]"
SERVER_NAME_RE = re.compile(r"^(?:%s|%s)(?::[0-9]{1,5})?$" % (_IPV6, _DNS_NAME))
MAX_USER_ID_LENGTH = 255

RETRY_STATUSES = (502, 503, 504)


class SynapseAdminError(Exception):
    """An error with a message fit for an operator; never contains secrets."""

    def __init__(self, msg, status=None, errcode=None, body=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.errcode = errcode
        self.body = body


class UserIdError(ValueError):
    pass


# --------------------------------------------------------------------------------------------
# user IDs and e-mail addresses
# --------------------------------------------------------------------------------------------

def validate_server_name(server_name):
    if not server_name or not SERVER_NAME_RE.match(server_name):
        raise UserIdError("%r is not a valid Matrix server name" % (server_name,))
    if ":" in server_name.rsplit("]", 1)[-1]:
        port = int(server_name.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise UserIdError("%r is not a valid Matrix server name (port)" % (server_name,))
    return server_name


def parse_user_id(user, server_name=None):
    """Return ``(localpart, server_part)`` for a localpart or a full MXID.

    ``server_part`` is None for a bare localpart. Follows the Matrix user identifier grammar for
    new users: lowercase ``a-z 0-9 . _ = - / +``, at most 255 bytes for the full ID.
    """
    if not isinstance(user, str) or not user:
        raise UserIdError("user must be a non-empty string")
    if user.startswith("@"):
        if ":" not in user:
            raise UserIdError("%r is not a valid Matrix user ID: expected @localpart:server.name" % user)
        localpart, server_part = user[1:].split(":", 1)
        validate_server_name(server_part)
    else:
        if ":" in user:
            raise UserIdError("%r is not a valid localpart: a full user ID must start with '@'" % user)
        localpart, server_part = user, None
    if not localpart:
        raise UserIdError("%r is not a valid Matrix user ID: empty localpart" % user)
    if not LOCALPART_RE.match(localpart):
        hint = " (upper-case letters are not allowed)" if LOCALPART_RE.match(localpart.lower()) else ""
        raise UserIdError(
            "%r is not a valid Matrix user ID localpart: only a-z, 0-9 and '._=-/+' are allowed%s" % (localpart, hint))
    full_len = len(("@%s:%s" % (localpart, server_part or server_name or "")).encode("utf-8"))
    if (server_part or server_name) and full_len > MAX_USER_ID_LENGTH:
        raise UserIdError("%r is too long: a Matrix user ID is at most 255 bytes" % user)
    return localpart, server_part


def make_user_id(user, server_name):
    """Full MXID for ``user`` on ``server_name``; refuses users of another server."""
    localpart, server_part = parse_user_id(user, server_name)
    if server_part is not None and server_part != server_name:
        raise UserIdError(
            "%r belongs to server %r, but the homeserver serves %r: this module manages local users only"
            % (user, server_part, server_name))
    return "@%s:%s" % (localpart, server_name)


def canonicalise_email(address):
    """Synapse's normalisation (synapse.util.threepids.canonicalise_email): strip, casefold the
    local part, lowercase the domain."""
    address = address.strip()
    parts = address.split("@")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError("%r is not a valid e-mail address" % address)
    return parts[0].casefold() + "@" + parts[1].lower()


def registration_mac(shared_secret, nonce, username, password, admin, user_type=None):
    """HMAC-SHA1 of the shared-secret registration (synapse.rest.admin.users.UserRegisterServlet)."""
    mac = hmac.new(key=shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------

def _parse_retry_after(headers, body, default):
    """Seconds to wait for a 429: JSON ``retry_after_ms`` first, then the ``Retry-After`` header."""
    if isinstance(body, dict):
        ms = body.get("retry_after_ms")
        if ms is None and isinstance(body.get("error"), dict):  # defensive: nested shapes
            ms = body["error"].get("retry_after_ms")
        if isinstance(ms, (int, float)) and ms >= 0:
            return ms / 1000.0
    value = headers.get("Retry-After") if headers is not None else None
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError, IndexError):
            pass
    return default


class SynapseAdminClient(object):
    """JSON over one keep-alive HTTP connection to the Synapse main process."""

    def __init__(self, base_url, access_token=None, timeout=30, validate_certs=True, ca_path=None,
                 retries=5, backoff=0.5, max_backoff=10.0, max_retry_wait=120.0, sleep=time.sleep,
                 user_agent="matrix.stack"):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SynapseAdminError("homeserver_url %r must be an http:// or https:// URL" % (base_url,))
        self.base_url = base_url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.access_token = access_token
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_wait = max_retry_wait
        self.sleep = sleep
        self.user_agent = user_agent
        self.retry_log = []  # (reason, waited seconds) -- returned to the user, no secrets
        self.request_count = 0
        self._conn = None
        self._served = 0  # responses read on the current connection

    # -- connection -----------------------------------------------------------------------
    def _ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.ca_path) if self.ca_path else ssl.create_default_context()
        if not self.validate_certs:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connection(self):
        if self._conn is None:
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=self._ssl_context())
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self):
        self._served = 0
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- requests -------------------------------------------------------------------------
    def _send_once(self, method, url, payload, headers):
        reused = self._conn is not None and self._served > 0
        conn = self._connection()
        try:
            conn.request(method, url, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if not reused:
                raise
            # The server closed the idle kept-alive connection before reading this request:
            # send it again at once on a fresh connection (no backoff, not counted as a retry).
            conn = self._connection()
            try:
                conn.request(method, url, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except BaseException:
                self.close()
                raise
        except BaseException:
            self.close()
            raise
        self._served += 1
        if resp.will_close:
            self.close()
        return resp.status, resp.headers, data

    def request(self, method, path, body=None, query=None, auth=True, ok=(200,)):
        """Send one JSON request. Returns ``(status, parsed_json)`` for statuses in ``ok``;
        raises SynapseAdminError otherwise (after retries for retryable failures)."""
        url = self.prefix + path
        if query:
            url += "?" + urllib.parse.urlencode([(k, v) for k, v in query.items() if v is not None])
        headers = {"Accept": "application/json", "User-Agent": self.user_agent, "Connection": "keep-alive"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if auth:
            if not self.access_token:
                raise SynapseAdminError("No access token available for %s %s" % (method, path))
            headers["Authorization"] = "Bearer " + self.access_token

        attempt = 0
        while True:
            attempt += 1
            self.request_count += 1
            try:
                status, resp_headers, data = self._send_once(method, url, payload, headers)
            except ssl.SSLCertVerificationError as exc:
                raise SynapseAdminError(
                    "TLS certificate verification failed for %s: %s. Give the CA with ca_path, or (tests only) "
                    "set validate_certs=false." % (self.base_url, exc.verify_message or exc))
            except ssl.SSLError as exc:
                raise SynapseAdminError("TLS error talking to %s: %s" % (self.base_url, exc))
            except (OSError, http.client.HTTPException) as exc:
                # connection refused/reset, timeouts, DNS failures, server closed a kept-alive connection
                if attempt > self.retries:
                    raise SynapseAdminError(
                        "Cannot reach the homeserver at %s (%s %s): %s: %s (after %d attempts)"
                        % (self.base_url, method, path, type(exc).__name__, exc, attempt))
                self._wait("connection error: %s" % type(exc).__name__, self._backoff(attempt))
                continue

            parsed = None
            if data:
                try:
                    parsed = json.loads(data.decode("utf-8"))
                except ValueError:
                    parsed = None
            if status in ok:
                return status, (parsed if parsed is not None else {})

            if status == 429 and attempt <= self.retries:
                wait = _parse_retry_after(resp_headers, parsed, self._backoff(attempt))
                if wait > self.max_retry_wait:
                    raise self._error(method, path, status, parsed, data,
                                      extra=" (asked to wait %.1fs, more than max_retry_wait)" % wait)
                self._wait("429 rate limited", wait)
                continue
            if status in RETRY_STATUSES and attempt <= self.retries:
                self._wait("HTTP %d" % status, self._backoff(attempt))
                continue
            raise self._error(method, path, status, parsed, data)

    def _backoff(self, attempt):
        return min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))

    def _wait(self, reason, seconds):
        self.retry_log.append({"reason": reason, "waited": round(seconds, 3)})
        if seconds > 0:
            self.sleep(seconds)

    def _error(self, method, path, status, parsed, raw, extra=""):
        errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if error is None:
            error = (raw or b"")[:200].decode("utf-8", "replace").strip()
        where = "%s %s" % (method, path.split("?")[0])
        text = "%s failed: HTTP %s %s: %s%s" % (where, status, errcode or "", error, extra)
        lowered = (error or "").lower()
        if "mas" in lowered.split() or "delegat" in lowered or "matrix authentication service" in lowered:
            msg = ("%s. This homeserver delegates authentication to Matrix Authentication Service (MAS): "
                   "Synapse's user creation, password and shared-secret registration APIs are disabled; manage "
                   "users through the MAS admin API instead." % text)
        elif status == 401:
            msg = ("%s. The access token was rejected (unknown, expired or logged out): check admin_token, or "
                   "bootstrap a new one with registration_shared_secret." % text)
        elif status == 403 and errcode == "M_FORBIDDEN" and "admin" in lowered:
            msg = "%s. The access token is valid but does not belong to a server admin." % text
        elif status == 404 and errcode == "M_UNRECOGNIZED":
            msg = ("%s. The endpoint does not exist there: homeserver_url must point at the Synapse main process "
                   "(the admin API is not served by workers or a public ingress)." % text)
        elif status == 429:
            msg = "%s. Still rate limited after %d retries." % (text, self.retries)
        else:
            msg = text
        return SynapseAdminError(msg, status=status, errcode=errcode, body=parsed)

    # -- API helpers ----------------------------------------------------------------------
    @staticmethod
    def quote(user_id):
        return urllib.parse.quote(user_id, safe="")

    def whoami(self):
        return self.request("GET", WHOAMI_PATH)[1]

    def server_name_from_keys(self):
        """The server name from the unauthenticated key endpoint (None if not served)."""
        try:
            return self.request("GET", SERVER_KEYS_PATH, auth=False)[1].get("server_name")
        except SynapseAdminError:
            return None

    def get_user(self, user_id):
        status, body = self.request("GET", "%s/%s" % (ADMIN_V2_USERS, self.quote(user_id)), ok=(200, 404))
        if status == 404:
            if body.get("errcode") == "M_UNRECOGNIZED":
                raise self._error("GET", ADMIN_V2_USERS + "/<user>", status, body, b"")
            return None
        return body

    def put_user(self, user_id, body):
        return self.request("PUT", "%s/%s" % (ADMIN_V2_USERS, self.quote(user_id)), body=body, ok=(200, 201))

    def deactivate(self, user_id, erase):
        return self.request("POST", DEACTIVATE_PATH + self.quote(user_id), body={"erase": bool(erase)})[1]

    def list_users(self, page_size=100, version="v2", **filters):
        """Yield every user of the paginated list (following ``next_token`` until the end)."""
        path = ADMIN_V3_USERS if version == "v3" else ADMIN_V2_USERS
        token = "0"
        pages = 0
        while token is not None:
            query = {"from": token, "limit": page_size}
            for key, value in filters.items():
                if value is not None:
                    query[key] = ("true" if value else "false") if isinstance(value, bool) else value
            body = self.request("GET", path, query=query)[1]
            pages += 1
            yield from body.get("users", [])
            nxt = body.get("next_token")
            token = str(nxt) if nxt is not None and body.get("users") else None
            if pages > 1000000:  # pragma: no cover - bound the loop
                break

    def list_total(self, **filters):
        query = {"from": "0", "limit": 1}
        query.update({k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in filters.items()})
        return int(self.request("GET", ADMIN_V2_USERS, query=query)[1].get("total", 0))

    def joined_rooms(self, user_id):
        return self.request("GET", "%s/%s/joined_rooms" % (ADMIN_V1_USERS, self.quote(user_id)))[1]

    def devices(self, user_id):
        return self.request("GET", "%s/%s/devices" % (ADMIN_V2_USERS, self.quote(user_id)))[1]

    def register_shared_secret(self, shared_secret, localpart, password, admin, user_type=None, displayname=None):
        """Shared-secret registration (nonce + HMAC). Returns the response (user_id, access_token)
        or None when the user ID is already taken."""
        nonce = self.request("GET", REGISTER_PATH, auth=False)[1].get("nonce")
        if not nonce:
            raise SynapseAdminError("The homeserver did not return a registration nonce")
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": bool(admin),
                "mac": registration_mac(shared_secret, nonce, localpart, password, admin, user_type)}
        if user_type:
            body["user_type"] = user_type
        if displayname is not None:
            body["displayname"] = displayname
        status, resp = self.request("POST", REGISTER_PATH, body=body, auth=False, ok=(200, 400))
        if status == 400:
            if resp.get("errcode") == "M_USER_IN_USE":
                return None
            raise self._register_error(resp)
        return resp

    def _register_error(self, resp):
        err = resp.get("error", "")
        if "not enabled" in err.lower():
            return SynapseAdminError(
                "Shared-secret registration failed: %s. The homeserver has no registration_shared_secret "
                "configured, or delegates authentication to Matrix Authentication Service (MAS), which "
                "disables it." % err, status=400, errcode=resp.get("errcode"))
        return SynapseAdminError("Shared-secret registration failed: HTTP 400 %s: %s"
                                 % (resp.get("errcode", ""), err), status=400, errcode=resp.get("errcode"))

    def login_password(self, user, password, device_display_name="matrix.stack"):
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                "password": password, "initial_device_display_name": device_display_name}
        status, resp = self.request("POST", LOGIN_PATH, body=body, auth=False, ok=(200, 403))
        if status == 403:
            raise SynapseAdminError(
                "Logging in as %s failed (%s: %s): the user exists but the password is wrong or the account is "
                "deactivated. Supply a valid admin_token instead." % (user, resp.get("errcode"), resp.get("error")),
                status=403, errcode=resp.get("errcode"))
        return resp


# --------------------------------------------------------------------------------------------
# compare / minimal PUT
# --------------------------------------------------------------------------------------------

USER_FIELDS = ("password", "update_password", "admin", "displayname", "emails", "user_type", "locked",
               "logout_devices", "state")
# Managed attributes shown in diffs and compared; never the password.
SNAPSHOT_KEYS = ("exists", "admin", "displayname", "emails", "user_type", "locked", "deactivated", "erased")
# Bulk runs list the server's users instead of one GET per user when the server holds at most
# this many users per requested user (the list API is one request per LIST_PAGE_SIZE users).
LIST_THRESHOLD = 5
LIST_PAGE_SIZE = 1000
LIST_MAX_RATIO = 20


class UserSpecError(ValueError):
    pass


def normalise_emails(emails):
    out = set()
    for address in emails or ():
        try:
            out.add(canonicalise_email(address))
        except ValueError as exc:
            raise UserSpecError(str(exc))
    return sorted(out)


def current_emails(current):
    return sorted({t.get("address") for t in current.get("threepids") or () if t.get("medium") == "email"})


def snapshot(current, with_emails=True):
    """Comparable view of a Synapse user object (None: absent)."""
    if current is None:
        return {"exists": False}
    snap = {
        "exists": True,
        "admin": bool(current.get("admin")),
        "displayname": current.get("displayname"),
        "user_type": current.get("user_type"),
        "locked": bool(current.get("locked")),
        "deactivated": bool(current.get("deactivated")),
        "erased": bool(current.get("erased")),
    }
    if with_emails and "threepids" in current:
        snap["emails"] = current_emails(current)
    return snap


def _norm_displayname(value):
    return value if value else None  # Synapse stores "" as no display name


def plan_user(spec, current):
    """Work out what must change for one user.

    ``spec``: dict with the USER_FIELDS (None: not managed). ``current``: Synapse user object or
    None. Returns ``(ops, before, after)`` where ``ops`` is a list of ``(kind, body)`` with kind in
    ``put`` / ``deactivate``; ``before``/``after`` are snapshots for the diff (no passwords).
    """
    state = spec.get("state") or "present"
    before = snapshot(current)
    after = dict(before)
    ops = []
    if state == "absent":
        if current is not None and not (current.get("deactivated") and current.get("erased")):
            ops.append(("deactivate", {"erase": True}))
            # deactivation removes threepids and the password; erase also removes the profile
            after.update(deactivated=True, erased=True, displayname=None)
            if "emails" in after:
                after["emails"] = []
        return ops, before, after
    if state == "deactivated":
        if current is not None and not current.get("deactivated"):
            ops.append(("deactivate", {"erase": False}))
            after.update(deactivated=True)
            if "emails" in after:
                after["emails"] = []
        return ops, before, after

    # present
    password = spec.get("password")
    update_password = spec.get("update_password") or "on_create"
    want_emails = normalise_emails(spec["emails"]) if spec.get("emails") is not None else None
    want_type = spec.get("user_type")
    if want_type == "":
        want_type_value = None
    else:
        want_type_value = want_type

    if current is None:
        body = {}
        if password is not None:
            body["password"] = password
        if spec.get("admin") is not None:
            body["admin"] = bool(spec["admin"])
        if spec.get("displayname") is not None:
            body["displayname"] = spec["displayname"]
        if want_emails is not None:
            body["threepids"] = [{"medium": "email", "address": a} for a in want_emails]
        if want_type is not None:
            body["user_type"] = want_type_value
        ops.append(("put", body))
        # Synapse ignores 'locked' when creating: lock in a second call.
        if spec.get("locked"):
            ops.append(("put", {"locked": True}))
        after = {
            "exists": True,
            "admin": bool(spec.get("admin")),
            "displayname": _norm_displayname(spec.get("displayname")),
            "user_type": want_type_value,
            "locked": bool(spec.get("locked")),
            "deactivated": False,
            "erased": False,
            "emails": want_emails if want_emails is not None else [],
        }
        if password is not None:
            after["password_updated"] = True
        return ops, before, after

    body = {}
    if current.get("deactivated"):
        if password is None:
            raise UserSpecError(
                "%s is deactivated: reactivating it (state=present) needs a new password" % current.get("name"))
        body["deactivated"] = False
        body["password"] = password
        after.update(deactivated=False, erased=False)
    elif password is not None and update_password == "always":
        body["password"] = password
    if "password" in body:
        after["password_updated"] = True
        if spec.get("logout_devices") is not None:
            body["logout_devices"] = bool(spec["logout_devices"])
    if spec.get("admin") is not None and bool(spec["admin"]) != bool(current.get("admin")):
        body["admin"] = bool(spec["admin"])
        after["admin"] = bool(spec["admin"])
    if spec.get("displayname") is not None and \
            _norm_displayname(spec["displayname"]) != _norm_displayname(current.get("displayname")):
        body["displayname"] = spec["displayname"]
        after["displayname"] = _norm_displayname(spec["displayname"])
    if want_emails is not None:
        if "threepids" not in current:
            raise ValueError("internal error: e-mails compared without the user's threepids")
        if want_emails != current_emails(current):
            others = [{"medium": t["medium"], "address": t["address"]}
                      for t in current.get("threepids") or () if t.get("medium") != "email"]
            body["threepids"] = others + [{"medium": "email", "address": a} for a in want_emails]
            after["emails"] = want_emails
    if want_type is not None and want_type_value != current.get("user_type"):
        body["user_type"] = want_type_value
        after["user_type"] = want_type_value
    if spec.get("locked") is not None and bool(spec["locked"]) != bool(current.get("locked")):
        body["locked"] = bool(spec["locked"])
        after["locked"] = bool(spec["locked"])
    if body:
        ops.append(("put", body))
    return ops, before, after


class UserManager(object):
    """Ensure the desired state of many users over one client connection."""

    def __init__(self, client, server_name, check_mode=False, diff=False, user_objects="always"):
        self.client = client
        self.user_objects = user_objects  # "always" or "changed": which results carry the user object
        self.server_name = server_name
        self.check_mode = check_mode
        self.diff = diff
        self._listed = None  # name -> list entry, when the list API was used

    def resolve(self, specs):
        """Validate every spec and attach ``user_id``; raises before any request is sent."""
        seen = {}
        for index, spec in enumerate(specs):
            try:
                user_id = make_user_id(spec["user"], self.server_name)
            except UserIdError as exc:
                raise UserSpecError("users[%d]: %s" % (index, exc))
            if user_id in seen:
                raise UserSpecError("users[%d]: %s is listed twice (also users[%d])" % (index, user_id, seen[user_id]))
            seen[user_id] = index
            if spec.get("emails") is not None:
                try:
                    normalise_emails(spec["emails"])
                except UserSpecError as exc:
                    raise UserSpecError("users[%d] (%s): %s" % (index, user_id, exc))
            spec["user_id"] = user_id
        return specs

    def prefetch(self, specs):
        """For bulk runs, list all users once (paginated) when that is cheaper than one GET each."""
        if len(specs) < LIST_THRESHOLD:
            return
        listed = {}
        filters = {"deactivated": "true", "locked": "true", "guests": "true"}
        approved_variants = [None]
        first = True
        while approved_variants:
            approved = approved_variants.pop(0)
            token = "0"
            while token is not None:
                query = dict(filters, limit=LIST_PAGE_SIZE)
                query["from"] = token
                if approved is not None:
                    query["approved"] = approved
                body = self.client.request("GET", ADMIN_V2_USERS, query=query)[1]
                if first:
                    first = False
                    if int(body.get("total", 0)) > max(LIST_PAGE_SIZE, LIST_MAX_RATIO * len(specs)):
                        return  # a large server: individual GETs are cheaper
                    if any("approved" in u for u in body.get("users", [])):
                        # MSC3866 on: the list hides unapproved users unless asked for them
                        approved_variants.append("false")
                for entry in body.get("users", []):
                    listed[entry["name"]] = entry
                nxt = body.get("next_token")
                token = str(nxt) if nxt is not None and body.get("users") else None
        self._listed = listed

    def current(self, spec):
        user_id = spec["user_id"]
        if self._listed is not None:
            entry = self._listed.get(user_id)
            if entry is None:
                return None
            if spec.get("state", "present") == "present" and spec.get("emails") is not None:
                return self.client.get_user(user_id)  # the list API has no threepids
            return entry
        return self.client.get_user(user_id)

    def ensure(self, spec):
        """Returns a result dict for one user. Raises SynapseAdminError / UserSpecError."""
        user_id = spec["user_id"]
        current = self.current(spec)
        ops, before, after = plan_user(spec, current)
        result = {"user_id": user_id, "state": spec.get("state") or "present", "changed": bool(ops),
                  "created": current is None and bool(ops) and ops[0][0] == "put"}
        final = current
        if ops and not self.check_mode:
            for kind, body in ops:
                if kind == "put":
                    final = self.client.put_user(user_id, body)[1]
                else:
                    self.client.deactivate(user_id, erase=body["erase"])
                    final = None
            if final is None or spec.get("state") in ("absent", "deactivated"):
                final = self.client.get_user(user_id)
        if final is not None and not (self.check_mode and ops) and (ops or self.user_objects == "always"):
            result["user"] = public_user(final)
        if self.diff:
            result["diff"] = {"before": before, "after": after}
        return result


def public_user(user):
    """The user object as returned to Ansible (Synapse returns no secrets; copy defensively)."""
    keys = ("name", "admin", "deactivated", "erased", "locked", "shadow_banned", "displayname", "avatar_url",
            "threepids", "external_ids", "user_type", "is_guest", "creation_ts", "last_seen_ts", "appservice_id",
            "suspended", "approved", "consent_version", "consent_ts", "consent_server_notice_sent")
    out = {k: user[k] for k in keys if k in user}
    if "threepids" in out:
        out["emails"] = current_emails(out)
    return out


# --------------------------------------------------------------------------------------------
# module plumbing shared by matrix_user and matrix_user_info
# --------------------------------------------------------------------------------------------

def connection_argument_spec():
    """Argument spec matching doc_fragments/synapse_admin.py."""
    return dict(
        homeserver_url=dict(type="str"),
        admin_token=dict(type="str", no_log=True),
        registration_shared_secret=dict(type="str", no_log=True),
        server_name=dict(type="str"),
        timeout=dict(type="float", default=30),
        retries=dict(type="int", default=5),
        max_retry_wait=dict(type="float", default=120),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        kube_namespace=dict(type="str"),
        kube_service=dict(type="str"),
        kube_pod_selector=dict(type="str"),
        kube_port=dict(type="int", default=8008),
        kubeconfig=dict(type="raw", no_log=True),
        context=dict(type="str"),
        kube_host=dict(type="str", aliases=["host"]),
        kube_api_key=dict(type="str", no_log=True, aliases=["api_key"]),
        kube_validate_certs=dict(type="bool", aliases=["verify_ssl"]),
        kube_ca_cert=dict(type="path", aliases=["ca_cert", "ssl_ca_cert"]),
        kube_client_cert=dict(type="path", aliases=["client_cert", "cert_file"]),
        kube_client_key=dict(type="path", no_log=False, aliases=["client_key", "key_file"]),
        kube_proxy=dict(type="str", aliases=["proxy"]),
    )


CONNECTION_REQUIRED_ONE_OF = [("homeserver_url", "kube_namespace")]
CONNECTION_MUTUALLY_EXCLUSIVE = [("kube_service", "kube_pod_selector")]
CONNECTION_REQUIRED_BY = {"kube_service": ("kube_namespace",), "kube_pod_selector": ("kube_namespace",)}


class Connection(object):
    """Client plus (optionally) the port-forward it runs through. Use as a context manager."""

    def __init__(self, params):
        self.params = params
        self.forwarder = None
        self.client = None

    def __enter__(self):
        p = self.params
        base_url = p.get("homeserver_url")
        if p.get("kube_namespace"):
            if not (p.get("kube_service") or p.get("kube_pod_selector")):
                raise SynapseAdminError("kube_namespace needs kube_service or kube_pod_selector")
            from ansible_collections.matrix.stack.plugins.module_utils.kube import port_forward as _port_forward  # pylint: disable=import-outside-toplevel
            try:
                self.forwarder = _port_forward.forwarder_from_params(p)
                base_url = self.forwarder.start()
            except _port_forward.PortForwardError as exc:
                if self.forwarder is not None:
                    self.forwarder.stop()
                raise SynapseAdminError(str(exc))
        self.client = SynapseAdminClient(
            base_url, access_token=p.get("admin_token"), timeout=p.get("timeout") or 30,
            validate_certs=p.get("validate_certs", True), ca_path=p.get("ca_path"),
            retries=p.get("retries") if p.get("retries") is not None else 5,
            max_retry_wait=p.get("max_retry_wait") or 120)
        return self.client

    def explain(self, exc):
        """The error message, plus what the port-forward reported (if one was used)."""
        msg = str(exc)
        if self.forwarder is not None and self.forwarder.errors:
            msg += " Port-forward: " + "; ".join(dict.fromkeys(self.forwarder.errors))
        return msg

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.forwarder is not None:
            self.forwarder.stop()
        return False


def discover_server_name(client, given=None):
    """server_name from the option, the token's whoami, or the key endpoint."""
    if given:
        validate_server_name(given)
        return given
    if client.access_token:
        user_id = client.whoami().get("user_id", "")
        if ":" in user_id:
            return user_id.split(":", 1)[1]
    name = client.server_name_from_keys()
    if name:
        return name
    raise SynapseAdminError("Cannot discover the homeserver's server_name: set the server_name option")
