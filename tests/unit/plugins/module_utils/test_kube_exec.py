"""Unit tests for the websocket exec frame handling of _kube_exec (fake socket: edge cases only;
the real API server path is covered by tests/integration/test_matrix_backup_kube.py)."""

import json

import pytest

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils import _kube_exec as ke

websocket = pytest.importorskip("websocket")


class FakeFrame:
    def __init__(self, data):
        self.data = data


class FakeSock:
    def __init__(self, frames):
        self.frames = list(frames)
        self.sent = []
        self.closed = False

    def recv_data_frame(self, _control):
        if not self.frames:
            return websocket.ABNF.OPCODE_CLOSE, FakeFrame(b"")
        return websocket.ABNF.OPCODE_BINARY, FakeFrame(self.frames.pop(0))

    def send(self, payload, opcode=None):
        self.sent.append((payload, opcode))

    def close(self):
        self.closed = True


def session(frames):
    ex = ke.PodExec.__new__(ke.PodExec)
    ex.sock = FakeSock(frames)
    ex.command = ["tar", "cf", "-"]
    ex.pod = "ns/pod"
    ex._buf, ex._eof, ex._stderr, ex._status = b"", False, bytearray(), None  # pylint: disable=protected-access
    ex._stdin_error, ex._stdin_thread = None, None  # pylint: disable=protected-access
    ex.bytes_out = ex.bytes_in = 0
    return ex


def status(rc):
    if rc == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps({"status": "Failure", "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}).encode()


def test_binary_stdout_is_preserved_and_rc_zero():
    payload = bytes(range(256)) * 10
    ex = session([b"\x01" + payload[:1000], b"\x02warning\n", b"\x01" + payload[1000:], b"\x03" + status(0)])
    out = b""
    while True:
        block = ex.read(333)
        if not block:
            break
        out += block
    assert out == payload
    assert ex.wait() == 0
    assert ex.stderr == "warning\n"


def test_nonzero_exit_raises_with_stderr():
    ex = session([b"\x02pg_dump: error: connection failed\n", b"\x03" + status(1)])
    with pytest.raises(ke.ExecError) as err:
        ex.wait()
    assert err.value.rc == 1 and "connection failed" in str(err.value)


def test_stderr_is_bounded():
    ex = session([b"\x02" + b"x" * (ke.STDERR_KEEP * 2), b"\x03" + status(0)])
    ex.wait()
    assert len(ex.stderr) == ke.STDERR_KEEP


def test_stdin_pump_sends_close_signal():
    ex = session([])

    class Src:
        def __init__(self):
            self.chunks = [b"a" * 10, b""]

        def read(self, _n):
            return self.chunks.pop(0)
    ex._pump_stdin(Src())  # pylint: disable=protected-access
    assert ex.sock.sent[0][0] == b"\x00" + b"a" * 10
    assert ex.sock.sent[-1][0] == bytes([255, 0])


def test_exec_url_repeats_command():
    class Cfg:
        host = "https://127.0.0.1:6443"

    class Api:
        configuration = Cfg()
    url = ke.exec_url(Api(), "ns", "pod", ["sh", "-c", "echo a&b"], container="c", stdin=True)
    assert url.startswith("wss://127.0.0.1:6443/api/v1/namespaces/ns/pods/pod/exec?")
    assert "command=sh&command=-c&command=echo+a%26b" in url and "stdin=true" in url and "container=c" in url
