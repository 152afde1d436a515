"""Unit tests for age encryption helpers (real pyrage, no mocks)."""

import io
import os

import pytest

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError
from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import HashingReader, HashingWriter


def test_stream_roundtrip_and_hashes():
    secret, public = crypto.generate_identity()
    data = os.urandom(3 * 1024 * 1024 + 17)
    enc = io.BytesIO()
    hr, hw = HashingReader(io.BytesIO(data)), HashingWriter(enc)
    crypto.encrypt_stream(hr, hw, crypto.parse_recipients([public]))
    assert hr.size == len(data) and hw.size == len(enc.getvalue()) > len(data)
    out = io.BytesIO()
    enc.seek(0)
    crypto.decrypt_stream(enc, out, crypto.parse_identities([secret]))
    assert out.getvalue() == data


def test_multiple_recipients_each_decrypt():
    ids = [crypto.generate_identity() for _i in range(2)]
    blob = crypto.encrypt_bytes(b"payload", crypto.parse_recipients([p for _s, p in ids]))
    for secret, _public in ids:
        assert crypto.decrypt_bytes(blob, crypto.parse_identities([secret])) == b"payload"


def test_wrong_key_fails_clearly():
    _secret, public = crypto.generate_identity()
    other = crypto.generate_identity()[0]
    blob = crypto.encrypt_bytes(b"payload", crypto.parse_recipients([public]))
    with pytest.raises(BackupError, match="wrong age identity"):
        crypto.decrypt_bytes(blob, crypto.parse_identities([other]), what="manifest")
    with pytest.raises(BackupError, match="identity .*needed"):
        crypto.decrypt_bytes(blob, [], what="manifest")


def test_invalid_keys_do_not_leak(tmp_path):
    with pytest.raises(BackupError, match="invalid age recipient"):
        crypto.parse_recipients(["age1notakey"])
    with pytest.raises(BackupError) as err:
        crypto.parse_identities(["AGE-SECRET-KEY-1SECRETVALUEXYZ"])
    assert "SECRETVALUE" not in str(err.value)


def test_identity_file_with_comments(tmp_path):
    secret, public = crypto.generate_identity()
    f = tmp_path / "key.txt"
    f.write_text("# created: today\n# public key: %s\n%s\n" % (public, secret))
    ids = crypto.parse_identities(identity_file=str(f))
    assert len(ids) == 1
    blob = crypto.encrypt_bytes(b"x", crypto.parse_recipients([public]))
    assert crypto.decrypt_bytes(blob, ids) == b"x"
    with pytest.raises(BackupError, match="cannot read"):
        crypto.parse_identities(identity_file=str(tmp_path / "missing"))


def test_open_private_is_0600(tmp_path):
    p = tmp_path / "s"
    with crypto.open_private(str(p)) as f:
        f.write(b"x")
    assert oct(p.stat().st_mode & 0o777) == "0o600"
