# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON over one keep-alive HTTP/1.1 connection to the Synapse main process: timeouts, retries on 429 (honouring
``retry_after_ms`` and ``Retry-After``), on connection errors and on 502/503/504 with exponential backoff, and
messages an operator can act on for 401/403/404, MAS-delegated servers and TLS errors."""

import email.utils
import http.client
import json
import ssl
import time
import urllib.parse

RETRY_STATUSES = (502, 503, 504)


class SynapseAdminError(Exception):
    """An error with a message fit for an operator; never contains secrets."""

    def __init__(self, msg, status=None, errcode=None, body=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.errcode = errcode
        self.body = body


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


class Transport(object):
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
