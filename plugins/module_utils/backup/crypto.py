# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""age encryption (pyrage) for backup sets, streaming: memory use does not depend on the size."""

from __future__ import annotations

import os

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError
from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import CHUNK

try:
    import pyrage
    from pyrage import x25519
    HAS_PYRAGE = True
    PYRAGE_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    HAS_PYRAGE = False
    PYRAGE_IMPORT_ERROR = exc


def parse_recipients(recipients):
    out = []
    for r in recipients or []:
        r = r.strip()
        if not r:
            continue
        try:
            if r.startswith("age1"):
                out.append(x25519.Recipient.from_str(r))
            elif r.startswith("ssh-"):
                out.append(pyrage.ssh.Recipient.from_str(r))
            else:
                raise ValueError("unknown recipient type")
        except Exception as e:
            raise BackupError("invalid age recipient %r: %s" % (r[:20], e)) from e
    return out


def parse_identities(identities=None, identity_file=None):
    """Identities from strings (AGE-SECRET-KEY-...) and/or an age identity file (comments allowed)."""
    lines = list(identities or [])
    if identity_file:
        try:
            with open(identity_file, encoding="utf-8") as f:
                lines.extend(f.read().splitlines())
        except OSError as e:
            raise BackupError("cannot read age identity file %s: %s" % (identity_file, e.strerror)) from e
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(x25519.Identity.from_str(line))
        except Exception as e:
            # never echo the key material
            raise BackupError("invalid age identity (expected AGE-SECRET-KEY-1...)") from e
    return out


def encrypt_stream(reader, writer, recipients):
    """Encrypt everything read from reader into writer."""
    pyrage.encrypt_io(reader, writer, recipients)


def decrypt_stream(reader, writer, identities, what="file"):
    if not identities:
        raise BackupError("%s is encrypted: an age identity (private key) is needed" % what)
    try:
        pyrage.decrypt_io(reader, writer, identities)
    except pyrage.DecryptError as e:
        raise BackupError("cannot decrypt %s: %s (wrong age identity?)" % (what, e)) from e


def copy_stream(reader, writer):
    while True:
        block = reader.read(CHUNK)
        if not block:
            break
        writer.write(block)


def decrypt_bytes(data, identities, what="file"):
    if not identities:
        raise BackupError("%s is encrypted: an age identity (private key) is needed" % what)
    try:
        return pyrage.decrypt(data, identities)
    except pyrage.DecryptError as e:
        raise BackupError("cannot decrypt %s: %s (wrong age identity?)" % (what, e)) from e


def encrypt_bytes(data, recipients):
    return pyrage.encrypt(data, recipients)


def generate_identity():
    """(secret, public) strings; used by tests and docs examples."""
    ident = x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def open_private(path):
    """Open a new file with mode 0600 for writing (binary)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")
