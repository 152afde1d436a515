"""A minimal TURN client (RFC 5766 over TCP, long-term credentials) to ask a real coturn for a relay.

Only what the tests need: Allocate (first without credentials to learn realm and nonce, then with a
MESSAGE-INTEGRITY keyed with MD5(username:realm:password)), and CreatePermission for a peer address.
"""

import hashlib
import hmac
import ipaddress
import os
import socket
import struct

MAGIC = 0x2112A442
ALLOCATE, CREATE_PERMISSION = 0x0003, 0x0008
SUCCESS, ERROR = 0x0100, 0x0110
ATTR_USERNAME, ATTR_MESSAGE_INTEGRITY, ATTR_ERROR_CODE = 0x0006, 0x0008, 0x0009
ATTR_XOR_PEER_ADDRESS, ATTR_REALM, ATTR_NONCE = 0x0012, 0x0014, 0x0015
ATTR_XOR_RELAYED_ADDRESS, ATTR_REQUESTED_TRANSPORT = 0x0016, 0x0019
UDP = 17


class TurnError(Exception):
    def __init__(self, code, reason):
        super().__init__(f"TURN error {code} {reason}")
        self.code = code
        self.reason = reason


def _attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def _xor_address(ip, port):
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + struct.pack("!I", int(ipaddress.IPv4Address(ip)) ^ MAGIC)


def _parse_xor_address(value):
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    ip = ipaddress.IPv4Address(struct.unpack("!I", value[4:8])[0] ^ MAGIC)
    return str(ip), port


class TurnClient:
    """One TCP connection to a TURN server (an allocation lives as long as the connection)."""

    def __init__(self, host, port, username, password, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.username, self.password = username, password
        self.realm = self.nonce = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the TURN server closed the connection")
            data += chunk
        return data

    def _request(self, method, attrs, authenticate):
        txid = os.urandom(12)
        body = b"".join(_attr(k, v) for k, v in attrs)
        if authenticate:
            body += _attr(ATTR_USERNAME, self.username.encode()) + _attr(ATTR_REALM, self.realm) \
                + _attr(ATTR_NONCE, self.nonce)
            key = hashlib.md5(b":".join([self.username.encode(), self.realm, self.password.encode()])).digest()
            header = struct.pack("!HHI", method, len(body) + 24, MAGIC) + txid
            body += _attr(ATTR_MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
        self.sock.sendall(struct.pack("!HHI", method, len(body), MAGIC) + txid + body)
        kind, length, _magic = struct.unpack("!HHI", self._recv(8))
        rest = self._recv(12 + length)
        if rest[:12] != txid:
            raise ConnectionError("answer to another transaction")
        answer, payload = {}, rest[12:]
        while payload:
            akind, alen = struct.unpack("!HH", payload[:4])
            answer[akind] = payload[4:4 + alen]
            payload = payload[4 + alen + (4 - alen % 4) % 4:]
        return kind & 0x0110, answer

    def _call(self, method, attrs):
        cls, answer = self._request(method, attrs, self.realm is not None)
        if cls == ERROR and self.realm is None and ATTR_NONCE in answer:
            self.realm, self.nonce = answer[ATTR_REALM], answer[ATTR_NONCE]
            cls, answer = self._request(method, attrs, True)
        if cls == ERROR and ATTR_NONCE in answer and answer[ATTR_ERROR_CODE][2:4] == b"\x04\x26":  # 438 stale nonce
            self.nonce = answer[ATTR_NONCE]
            cls, answer = self._request(method, attrs, True)
        if cls == ERROR:
            value = answer.get(ATTR_ERROR_CODE, b"\0\0\0\0")
            raise TurnError(value[2] * 100 + value[3], value[4:].decode(errors="replace"))
        return answer

    def allocate(self):
        """Allocate a UDP relay; returns its (ip, port)."""
        answer = self._call(ALLOCATE, [(ATTR_REQUESTED_TRANSPORT, struct.pack("!B3x", UDP))])
        return _parse_xor_address(answer[ATTR_XOR_RELAYED_ADDRESS])

    def create_permission(self, peer_ip):
        self._call(CREATE_PERMISSION, [(ATTR_XOR_PEER_ADDRESS, _xor_address(peer_ip, 0))])
