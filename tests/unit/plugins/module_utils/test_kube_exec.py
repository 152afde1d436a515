"""Unit tests for the websocket exec frame handling of kube/pod_exec.py (fake socket: edge cases only;
the real API server path is covered by tests/integration/test_matrix_backup_kube.py)."""

import json

import pytest

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils.kube import pod_exec as ke

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
    ex._stdin_error, ex._stdin = None, None  # pylint: disable=protected-access
    ex.protocol, ex.timeout = "v5.channel.k8s.io", 5
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


def test_stdin_is_sent_in_full_then_closed():
    ex = session([b"\x03" + status(0)])
    ex._stdin = ke._sized_chunks([b"a" * 10, b"bc"], 12)  # pylint: disable=protected-access
    assert ex.wait() == 0
    assert [p for p, _op in ex.sock.sent] == [b"\x00" + b"a" * 10, b"\x00bc", bytes([255, 0])]
    assert ex.bytes_in == 12


@pytest.mark.parametrize("chunks, msg", [([b"a" * 5], "ended after 5 of the announced 10 bytes"),
                                         ([b"a" * 11], "longer than the announced 10 bytes")])
def test_stdin_of_the_wrong_size_stops_the_command(chunks, msg):
    ex = session([b"\x03" + status(0)])
    ex._stdin = ke._sized_chunks(chunks, 10)  # pylint: disable=protected-access
    with pytest.raises(ke.ExecError, match=msg):
        ex.wait()
    assert ex.sock.closed


def test_command_failure_wins_over_the_send_error_it_caused():
    ex = session([b"\x02pg_restore: error: could not execute query\n", b"\x03" + status(1)])

    def broken():
        yield b"x" * 4
        raise BrokenPipeError("gone")
    ex._stdin = broken()  # pylint: disable=protected-access
    with pytest.raises(ke.ExecError, match="could not execute query"):
        ex.wait()


def test_bounded_command_passes_arguments_verbatim():
    assert ke.bounded_stdin_command(["tar", "-C", "/data dir", "-xf", "-"], 1024) == [
        "sh", "-c", 'head -c "$0" | "$@"', "1024", "tar", "-C", "/data dir", "-xf", "-"]


def test_exec_url_repeats_command():
    class Cfg:
        host = "https://127.0.0.1:6443"

    class Api:
        configuration = Cfg()
    url = ke.exec_url(Api(), "ns", "pod", ["sh", "-c", "echo a&b"], container="c", stdin=True)
    assert url.startswith("wss://127.0.0.1:6443/api/v1/namespaces/ns/pods/pod/exec?")
    assert "command=sh&command=-c&command=echo+a%26b" in url and "stdin=true" in url and "container=c" in url


def test_bearer_headers_from_a_real_client_configuration():
    from kubernetes.client import Configuration  # pylint: disable=import-outside-toplevel

    config = Configuration()
    config.api_key = {"authorization": "t0ken"}
    config.api_key_prefix = {"authorization": "Bearer"}
    assert ke.bearer_headers(config) == {"authorization": "Bearer t0ken"}
    # A refresh hook (in-cluster config re-reads the projected token) runs before the header is made.
    config.refresh_api_key_hook = lambda conf: conf.api_key.update(authorization="fresh")
    assert ke.bearer_headers(config) == {"authorization": "Bearer fresh"}
    # Its twin: client-certificate authentication sends no Authorization header.
    assert ke.bearer_headers(Configuration()) == {}
