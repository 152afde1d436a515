# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Binary-safe, streaming exec into a pod over the Kubernetes websocket exec API.

``kubernetes.core.k8s_exec`` (and ``kubernetes.stream.stream`` with preloaded content) buffer the
whole output in memory and decode it as text. This helper uses the ``kubernetes`` client's websocket
plumbing (``kubernetes.stream.ws_client``) but reads frames itself, so that:

* stdout is delivered as bytes, chunk by chunk, to a reader (``read()``) -- memory use is one frame;
* stdin is sent from the same thread that reads (SSL sockets are not safe for concurrent reads and
  writes from two threads: doing so lost the exit status about once in 30 runs), interleaved with
  reading through ``select`` so that a process that reads stdin and writes output never deadlocks;
* stdin has a size announced up front: the command runs as ``head -c SIZE | command``, so it sees
  end-of-file after exactly SIZE bytes even where the close of stdin is never propagated (API servers
  before 1.30, and kwok); the ``v5.channel.k8s.io`` close signal is sent as well where it exists;
* the exit status comes from the error channel; stderr is kept (bounded) for error messages.
"""

from __future__ import annotations

import json
import select

from ansible_collections.matrix.stack.plugins.module_utils.common.streams import ReadStream

try:
    from kubernetes.stream import ws_client
    from websocket import ABNF, WebSocketTimeoutException
    HAS_KUBE_WS = True
    KUBE_WS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    HAS_KUBE_WS = False
    KUBE_WS_IMPORT_ERROR = exc

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255
PROTOCOLS = "v5.channel.k8s.io, v4.channel.k8s.io"
STDERR_KEEP = 64 * 1024
STDIN_CHUNK = 256 * 1024


class ExecError(Exception):
    def __init__(self, msg, rc=None, stderr=""):
        super().__init__(msg)
        self.rc = rc
        self.stderr = stderr


def _handshake_message(exc):
    """The API server's Status message from a failed websocket handshake, else the exception text."""
    body = getattr(exc, "resp_body", None)
    status = getattr(exc, "status_code", None)
    if body:
        try:
            msg = json.loads(body.decode("utf-8", "replace") if isinstance(body, bytes) else body).get("message")
            if msg:
                return "%s (HTTP %s)" % (msg, status) if status else msg
        except (ValueError, AttributeError):
            pass
    return str(exc)


def exec_url(api_client, namespace, pod, command, container=None, stdin=False):
    query = [("stdout", "true"), ("stderr", "true"), ("stdin", "true" if stdin else "false"), ("tty", "false")]
    if container:
        query.append(("container", container))
    for arg in command:
        query.append(("command", arg))
    path = "/api/v1/namespaces/%s/pods/%s/exec" % (namespace, pod)
    return ws_client.get_websocket_url(api_client.configuration.host + path, query)


def bounded_stdin_command(command, size):
    """Wrap command so that it reads exactly size bytes of stdin, then sees end-of-file."""
    return ["sh", "-c", 'head -c "$0" | "$@"', str(int(size))] + list(command)


def bearer_headers(configuration):
    """The Authorization header of the client's configuration (a refreshed in-cluster token included).

    Read from ``auth_settings()`` rather than through ``ApiClient.update_params_for_auth``, whose signature
    changed in kubernetes 35 (three more positional arguments).
    """
    auth = configuration.auth_settings().get("BearerToken") or {}
    if auth.get("in") == "header" and auth.get("value"):
        return {auth["key"].lower(): auth["value"]}
    return {}


class PodExec(ReadStream):
    """One exec session. Use as a context manager; read stdout with read(); call wait() for the rc."""

    def __init__(self, api_client, namespace, pod, command, container=None, stdin=None, stdin_size=None, timeout=600):
        """stdin: None, or a file-like object with read() / an iterable of bytes chunks, holding exactly
        stdin_size bytes."""
        if not HAS_KUBE_WS:
            raise ExecError("the kubernetes and websocket-client Python libraries are required")
        self.command = command
        if stdin is not None:
            if stdin_size is None:
                raise ExecError("stdin needs its size up front (stdin_size)")
            command = bounded_stdin_command(command, stdin_size)
        headers = bearer_headers(api_client.configuration)
        headers["sec-websocket-protocol"] = PROTOCOLS
        url = exec_url(api_client, namespace, pod, command, container, stdin is not None)
        try:
            self.sock = ws_client.create_websocket(api_client.configuration, url, headers)
        except Exception as e:  # websocket handshake errors carry the HTTP status and the API's Status
            raise ExecError("exec into %s/%s failed: %s" % (namespace, pod, _handshake_message(e))) from e
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.protocol = self._negotiated()
        self.pod = "%s/%s" % (namespace, pod)
        self._buf = b""
        self._eof = False
        self._stderr = bytearray()
        self._status = None
        self._stdin_error = None
        self._stdin = None if stdin is None else _sized_chunks(stdin, stdin_size)
        self.bytes_out = 0
        self.bytes_in = 0

    def _negotiated(self):
        resp = getattr(self.sock, "handshake_response", None)
        headers = getattr(resp, "headers", None) or {}
        for k, v in headers.items():
            if k.lower() == "sec-websocket-protocol":
                return v.strip()
        return "v4.channel.k8s.io"

    # -- stdin --------------------------------------------------------------------------------
    def _send(self, channel, data):
        self.sock.send(bytes([channel]) + data, opcode=ABNF.OPCODE_BINARY)

    def _send_stdin_chunk(self):
        """Send the next stdin chunk (or the close signal after the last one)."""
        try:
            block = next(self._stdin, None)
        except Exception as e:  # the source failed (wrong size, decryption): stop the command half-fed
            self._stdin_error = e
            self._stdin = None
            self.close()
            return
        try:
            if block is None:
                self._stdin = None
                if self.protocol == "v5.channel.k8s.io":
                    self._send(CLOSE_SIGNAL, bytes([STDIN]))
                return
            self._send(STDIN, block)
            self.bytes_in += len(block)
        except Exception as e:  # the command may have exited early: keep reading, its status says why
            self._stdin_error = e
            self._stdin = None

    def _await_frame(self):
        """Send stdin while no frame is waiting to be read."""
        raw = getattr(self.sock, "sock", None)
        while self._stdin is not None:
            if raw is None:
                self._send_stdin_chunk()
                continue
            pending = getattr(raw, "pending", None)
            if pending is not None and pending():
                return
            readable, writable, _x = select.select([raw], [raw], [], self.timeout)
            if readable:
                return
            if not writable:
                raise ExecError("exec into %s: no progress for %ss (timeout)" % (self.pod, self.timeout))
            self._send_stdin_chunk()

    # -- frames -------------------------------------------------------------------------------
    def _next_frame(self):
        """Process one frame; return stdout bytes (possibly b'') or None at end of stream."""
        self._await_frame()
        try:
            opcode, frame = self.sock.recv_data_frame(True)
        except WebSocketTimeoutException as e:
            raise ExecError("exec into %s: no data for too long (timeout)" % self.pod) from e
        except Exception as e:
            if self._status is not None or self._stdin_error is not None:
                return None
            raise ExecError("exec into %s: connection lost: %s" % (self.pod, e)) from e
        if opcode == ABNF.OPCODE_CLOSE:
            return None
        if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT):
            return b""
        data = frame.data
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not data:
            return b""
        channel, payload = data[0], data[1:]
        if channel == STDOUT:
            self.bytes_out += len(payload)
            return payload
        if channel == STDERR:
            self._stderr += payload
            if len(self._stderr) > STDERR_KEEP:
                del self._stderr[:len(self._stderr) - STDERR_KEEP]
        elif channel == ERROR and payload:
            try:
                self._status = json.loads(payload.decode("utf-8", "replace"))
            except ValueError:
                self._status = {"status": "Failure", "message": payload.decode("utf-8", "replace")}
        return b""

    def read(self, n=-1):
        """Read up to n bytes of stdout (blocking); b'' at end of output."""
        while not self._buf and not self._eof:
            chunk = self._next_frame()
            if chunk is None:
                self._eof = True
            elif chunk:
                self._buf = chunk
        if n is None or n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def drain(self):
        while self.read(1 << 20):
            pass

    @property
    def stderr(self):
        return self._stderr.decode("utf-8", "replace")

    def wait(self, check=True):
        """Drain the session and return the exit code (raises ExecError on failure when check)."""
        self.drain()
        self.close()
        rc = self.returncode
        if not check or (rc == 0 and self._stdin_error is None):
            return rc
        what = " ".join(self.command[:3])
        if self._stdin_error is not None and (rc == 0 or self._status is None):
            raise ExecError("exec %s in %s: sending stdin failed: %s" % (what, self.pod, self._stdin_error), rc, self.stderr)
        raise ExecError("exec %s in %s failed (rc=%s): %s" % (what, self.pod, rc, self.stderr.strip()[-2000:]), rc, self.stderr)

    @property
    def returncode(self):
        st = self._status
        if st is None:
            return None if not self._eof else -1
        if st.get("status") == "Success":
            return 0
        for cause in (st.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message"))
                except (TypeError, ValueError):
                    break
        return -1

    def close(self):
        try:
            self.sock.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _sized_chunks(stdin, size):
    """Yield the chunks of stdin, checking that it holds exactly size bytes."""
    sent = 0
    if hasattr(stdin, "read"):
        blocks = iter(lambda: stdin.read(STDIN_CHUNK), b"")
    else:
        blocks = (b[i:i + STDIN_CHUNK] for b in stdin for i in range(0, len(b), STDIN_CHUNK))
    for block in blocks:
        sent += len(block)
        if sent > size:
            raise ExecError("stdin is longer than the announced %d bytes" % size)
        yield block
    if sent != size:
        raise ExecError("stdin ended after %d of the announced %d bytes" % (sent, size))
