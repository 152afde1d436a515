# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Synapse signing keys as stored in a Secret: parsing, public keys, and the ``old_signing_keys`` companion document.

A signing key file has one line per key (``ed25519 <version> <unpadded base64 seed>``); the key id is
``ed25519:<version>``. The public key is derived with ``cryptography`` when it is importable, otherwise with a small
pure-Python implementation of RFC 8032 (only public key derivation is needed). Generation is in ``generators``.
"""

import hashlib
import json

from ansible_collections.matrix.stack.plugins.module_utils.secrets.generators import (
    HAS_CRYPTOGRAPHY, SIGNING_KEY_ALGORITHM, SIGNING_KEY_VERSION_RE, SigningKeyFormatError, b64_decode_unpadded,
    b64_unpadded)

if HAS_CRYPTOGRAPHY:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519


def parse_signing_keys(value):
    """Parse a Synapse signing key file; return a list of (version, seed bytes). Raises SigningKeyFormatError."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise SigningKeyFormatError("not ASCII text") from None
    keys = []
    for number, line in enumerate(value.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise SigningKeyFormatError("line %d: expected '<algorithm> <version> <seed>'" % number)
        algorithm, version, seed_b64 = parts
        if algorithm != SIGNING_KEY_ALGORITHM:
            raise SigningKeyFormatError("line %d: unsupported algorithm %r" % (number, algorithm))
        if not SIGNING_KEY_VERSION_RE.match(version):
            raise SigningKeyFormatError("line %d: key version must match [A-Za-z0-9_]+" % number)
        try:
            seed = b64_decode_unpadded(seed_b64)
        except (ValueError, TypeError):
            raise SigningKeyFormatError("line %d: the seed is not base64" % number) from None
        if len(seed) != 32:
            raise SigningKeyFormatError("line %d: the seed must be 32 bytes" % number)
        keys.append((version, seed))
    if not keys:
        raise SigningKeyFormatError("no key found")
    return keys


# Pure-Python ed25519 public key derivation (RFC 8032, section 5.1.5), used without ``cryptography``.
_P = 2 ** 255 - 19
_Q = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _recover_x(y, sign):
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x & 1) != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _point_add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % _P
    pb = (y1 + x1) * (y2 + x2) % _P
    pc = t1 * 2 * _D * t2 % _P
    pd = z1 * 2 * z2 % _P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _point_mul(scalar, point):
    result = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = _point_add(result, point)
        point = _point_add(point, point)
        scalar >>= 1
    return result


def _point_compress(point):
    x, y, z, _t = point
    zinv = pow(z, _P - 2, _P)
    x, y = x * zinv % _P, y * zinv % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _ed25519_public_pure(seed):
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254
    return _point_compress(_point_mul(scalar, _G))


def ed25519_public_key(seed, use_cryptography=None):
    """Raw 32-byte ed25519 public key for a 32-byte seed."""
    if use_cryptography is None:
        use_cryptography = HAS_CRYPTOGRAPHY
    if use_cryptography:
        private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _ed25519_public_pure(seed)


def signing_key_public_keys(value):
    """Map ``ed25519:<version>`` to the unpadded base64 public key for every key in a signing key file."""
    return {"%s:%s" % (SIGNING_KEY_ALGORITHM, version): b64_unpadded(ed25519_public_key(seed))
            for version, seed in parse_signing_keys(value)}


# ----- old signing keys document -----------------------------------------------------------------
def empty_old_signing_keys():
    return render_old_signing_keys({})


def parse_old_signing_keys(value):
    """Parse the companion document; return the ``old_signing_keys`` mapping. Raises SigningKeyFormatError."""
    if value is None:
        return {}
    try:
        doc = json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)
    except (ValueError, UnicodeDecodeError):
        raise SigningKeyFormatError("the old signing keys document is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("old_signing_keys", {}), dict):
        raise SigningKeyFormatError("the old signing keys document must be {\"old_signing_keys\": {...}}")
    old = doc.get("old_signing_keys") or {}
    for key_id, entry in old.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) \
                or not isinstance(entry.get("expired_ts"), int):
            raise SigningKeyFormatError("old signing key %r must be {key: <base64>, expired_ts: <ms>}" % key_id)
    return old


def render_old_signing_keys(old):
    """Serialise the companion document: JSON (therefore also YAML), sorted, one trailing newline."""
    return (json.dumps({"old_signing_keys": old}, sort_keys=True, indent=2) + "\n").encode("utf-8")


def retire_signing_keys(old_doc, current_value, expired_ts):
    """Add every key of ``current_value`` to the old keys document ``old_doc``; return (new document, key ids).

    ``expired_ts`` is in milliseconds since the epoch, as Synapse's ``old_signing_keys`` expects. A key id that
    is already recorded keeps its first ``expired_ts``.
    """
    old = dict(parse_old_signing_keys(old_doc))
    retired = []
    for key_id, public in signing_key_public_keys(current_value).items():
        if key_id not in old:
            old[key_id] = {"key": public, "expired_ts": int(expired_ts)}
        retired.append(key_id)
    return render_old_signing_keys(old), retired


def versions_in_use(current_value, old_doc):
    """Key versions that must not be reused: those of the current key and of every retired key."""
    taken = set()
    if current_value:
        try:
            taken.update(version for version, _seed in parse_signing_keys(current_value))
        except SigningKeyFormatError:
            pass
    try:
        taken.update(key_id.split(":", 1)[-1] for key_id in parse_old_signing_keys(old_doc))
    except SigningKeyFormatError:
        pass
    return taken
