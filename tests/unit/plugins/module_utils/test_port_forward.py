"""Unit tests for plugins/module_utils/kube/port_forward.py.

A small fake Kubernetes API server on 127.0.0.1 serves the REST reads (Service, pods) and the
``pods/portforward`` websocket with the real channel framing (``v4.channel.k8s.io``: per port a data
channel and an error channel, each opened by a frame carrying the port number little-endian; client
frames masked). Its data channel is wired to a real HTTP backend, so a SynapseAdminClient talks through
PortForwarder -> kubernetes.stream.portforward -> websocket -> backend, end to end.
The real API server of the local cluster is exercised in tests/integration/test_matrix_user_port_forward.py.
"""

import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

COLLECTIONS = Path(__file__).resolve().parents[4] / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.matrix.stack.plugins.module_utils.kube import port_forward as pf  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.synapse import endpoints, transport  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_synapse_admin import Scripted  # noqa: E402  pylint: disable=wrong-import-position

from ._kube_discovery import DISCOVERY  # noqa: E402  pylint: disable=wrong-import-position

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


def ws_frame(payload, opcode=2):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_ws_frame(sock):
    b0, b1 = read_exact(sock, 2)
    opcode = b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(sock, 8))[0]
    mask = read_exact(sock, 4) if b1 & 0x80 else None
    data = read_exact(sock, n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return opcode, data


def pod(name, ready=True, ports=(("http", 8008),)):
    return {"metadata": {"name": name, "labels": {"app": "synapse"}},
            "spec": {"containers": [{"name": "synapse", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
            "status": {"phase": "Running" if ready else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class FakeApiServer:
    def __init__(self, backend_port):
        self.backend_port = backend_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.services = {"synapse-main": {"metadata": {"name": "synapse-main"},
                                          "spec": {"selector": {"app": "synapse"},
                                                   "ports": [{"port": 8008, "targetPort": "http"}]}}}
        self.pods = [pod("synapse-1"), pod("synapse-0", ready=False)]
        self.deny_forward = None
        self.forwards = []  # (pod, port)
        self.error_on_channel = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        target = lines[0].split(" ", 2)[1]
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        path = target.split("?")[0]
        if headers.get("upgrade", "").lower() == "websocket":
            self._forward(conn, path, target, headers)
            return
        parts = path.strip("/").split("/")
        if path in DISCOVERY:  # kubernetes.core's client construction
            self._json(conn, 200, DISCOVERY[path])
        elif len(parts) == 6 and parts[4] == "services":
            svc = self.services.get(parts[5])
            self._json(conn, 200 if svc else 404, svc or {"kind": "Status", "code": 404,
                                                          "message": 'services "%s" not found' % parts[5]})
        elif len(parts) == 5 and parts[4] == "pods":
            self._json(conn, 200, {"kind": "PodList", "items": self.pods})
        else:
            self._json(conn, 404, {"kind": "Status", "code": 404, "message": "nope"})
        conn.close()

    @staticmethod
    def _json(conn, status, body):
        data = json.dumps(body).encode()
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (status, len(data)) + data)

    def _forward(self, conn, path, target, headers):
        if self.deny_forward:
            body = self.deny_forward.encode()
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            conn.close()
            return
        port = int(target.split("ports=")[1].split("&")[0])
        self.forwards.append((path.strip("/").split("/")[5], port))
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n" % accept).encode())
        port_bytes = struct.pack("<H", port)
        conn.sendall(ws_frame(b"\x00" + port_bytes) + ws_frame(b"\x01" + port_bytes))
        if self.error_on_channel:
            conn.sendall(ws_frame(b"\x01" + self.error_on_channel.encode()))
            conn.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        lock = threading.Lock()

        def backend_to_ws():
            try:
                while True:
                    data = backend.recv(65536)
                    if not data:
                        break
                    with lock:
                        conn.sendall(ws_frame(b"\x00" + data))
            except OSError:
                pass
            try:
                with lock:
                    conn.sendall(ws_frame(struct.pack("!H", 1000), opcode=8))
                conn.close()
            except OSError:
                pass

        threading.Thread(target=backend_to_ws, daemon=True).start()
        try:
            while True:
                opcode, data = read_ws_frame(conn)
                if opcode == 8:
                    break
                if opcode == 2 and data and data[0] == 0:
                    backend.sendall(data[1:])
        except (EOFError, OSError):
            pass
        try:
            backend.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.sock.close()


@pytest.fixture
def backend():
    srv = Scripted()
    srv.default = (200, {"ok": True, "pad": "x" * 200000})  # larger than one websocket frame read
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def api(backend):
    server = FakeApiServer(backend.server_address[1])
    yield server
    server.close()


def forwarder(api, **kw):
    params = {"kube_host": "http://127.0.0.1:%d" % api.port, "kube_api_key": "k8s-token", "kube_namespace": "matrix",
              "kube_port": 8008}
    params.update(kw)
    return pf.forwarder_from_params(params)


def test_forwarded_http_through_service(api, backend):
    fwd = forwarder(api, kube_service="synapse-main")
    url = fwd.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert (fwd.pod, fwd.container_port) == ("synapse-1", 8008)  # the ready pod, named targetPort resolved
        client = endpoints.SynapseAdminClient(url, access_token="t")
        for _i in range(5):
            status, body = client.request("GET", "/_synapse/admin/v2/users")
            assert status == 200 and body["ok"] is True and len(body["pad"]) == 200000
        client.close()
        assert len(backend.requests) == 5
        assert api.forwards[0] == ("synapse-1", 8008)
        assert fwd.errors == []
    finally:
        fwd.stop()


def test_pod_selector_and_numeric_port(api):
    api.pods = [pod("synapse-9", ports=(("web", 8080),))]
    fwd = forwarder(api, kube_pod_selector="app=synapse", kube_port=8080)
    try:
        fwd.start()
        assert (fwd.pod, fwd.container_port) == ("synapse-9", 8080)
    finally:
        fwd.stop()


def test_forward_refused_is_clear(api):
    api.deny_forward = 'pods "synapse-1" is forbidden: cannot create resource "pods/portforward"'
    fwd = forwarder(api, kube_service="synapse-main")
    with pytest.raises(pf.PortForwardError) as info:
        fwd.start()
    fwd.stop()
    msg = str(info.value)
    assert "refused the port-forward to pod matrix/synapse-1 port 8008" in msg
    assert "403 Forbidden" in msg and "pods/portforward" in msg and "content-type" not in msg


def test_no_ready_pod(api):
    api.pods = [pod("synapse-0", ready=False)]
    with pytest.raises(pf.PortForwardError, match="no running and ready pod .*synapse-0"):
        forwarder(api, kube_service="synapse-main").start()


def test_missing_service(api):
    with pytest.raises(pf.PortForwardError, match="not found"):
        forwarder(api, kube_service="nope").start()


def test_service_port_mismatch(api):
    with pytest.raises(pf.PortForwardError, match="Service synapse-main has no port 9000"):
        forwarder(api, kube_service="synapse-main", kube_port=9000).start()


def test_named_port_missing():
    with pytest.raises(pf.PortForwardError, match="no container port named 'http'"):
        pf.select_target({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}},
                         [pod("p", ports=(("web", 1),))], 80)


def test_error_channel_closes_the_connection(api):
    fwd = forwarder(api, kube_service="synapse-main")
    url = fwd.start()
    api.error_on_channel = "an error occurred forwarding 8008 -> 8008: connection refused"
    try:
        client = endpoints.SynapseAdminClient(url, access_token="t", retries=1, sleep=lambda s: None)
        with pytest.raises(transport.SynapseAdminError, match="Cannot reach the homeserver"):
            client.request("GET", "/x")
        deadline = time.time() + 5
        while not fwd.errors and time.time() < deadline:
            time.sleep(0.05)
        assert fwd.errors and "port 8008: an error occurred forwarding 8008 -> 8008: connection refused" in fwd.errors[0]
    finally:
        fwd.stop()


def test_handshake_reason_cleanup():
    raw = "Handshake status 403 Forbidden -+-+- {'content-type': 'text/plain'} -+-+- b'resolve_deny: denied'"
    assert pf.handshake_reason(raw) == "Handshake status 403 Forbidden: resolve_deny: denied"
    assert pf.handshake_reason("plain") == "plain"


def test_kube_params_mapping():
    mapped = pf.kube_params({"kubeconfig": "/k", "context": "c", "kube_host": "h", "kube_api_key": "a",
                             "kube_validate_certs": False, "kube_ca_cert": "/ca"})
    assert mapped["host"] == "h" and mapped["api_key"] == "a" and mapped["validate_certs"] is False
    assert mapped["ca_cert"] == "/ca" and mapped["kubeconfig"] == "/k" and mapped["context"] == "c"


def test_module_error_carries_the_port_forward_reason(api, capsys):
    from ansible.module_utils.testing import patch_module_args  # pylint: disable=import-outside-toplevel
    from ansible_collections.matrix.stack.plugins.modules import matrix_user  # pylint: disable=import-outside-toplevel
    api.error_on_channel = "an error occurred forwarding 8008 -> 8008: dial tcp4 127.0.0.1:8008: connect: connection refused"
    args = {"kube_host": "http://127.0.0.1:%d" % api.port, "kube_api_key": "k8s-unit-token", "kube_namespace": "matrix",
            "kube_service": "synapse-main", "admin_token": "syt_unit_pf_token", "user": "alice", "retries": 1}
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            matrix_user.main()
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] is True and out["changed"] is False
    assert "Cannot reach the homeserver" in out["msg"]
    assert "Port-forward: pod matrix/synapse-1 port 8008: an error occurred forwarding" in out["msg"]
    assert "syt_unit_pf_token" not in json.dumps(out) and "k8s-unit-token" not in json.dumps(out)
