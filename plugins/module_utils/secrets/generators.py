# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secret value generators for matrix.stack (private module_utils).

Every random byte comes from the operating system's CSPRNG through the ``secrets`` module. Nothing here
logs or prints a value. Generators return ``bytes`` (what a Kubernetes Secret stores). A signing key is one line of
Synapse's file format, ``ed25519 <version> <unpadded base64 of the 32-byte seed>``; reading such files is in
``signing_keys``. This file imports nothing from the collection (tests load it alone to provision a pod).
"""

import base64
import re
import secrets
import string

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the environment
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc


class SecretSpecError(ValueError):
    """A key specification (name, type, length, value) is not acceptable."""


class SigningKeyFormatError(ValueError):
    """A stored value is not a Synapse signing key."""


ALNUM = string.ascii_letters + string.digits
# Only characters that need no quoting in URLs, connection strings, YAML or shell words.
PASSWORD_SYMBOLS = "-._~"
PASSWORD_ALPHABET = ALNUM + PASSWORD_SYMBOLS

SIGNING_KEY_ALGORITHM = "ed25519"
SIGNING_KEY_VERSION_PREFIX = "a_"
SIGNING_KEY_VERSION_RANDOM_CHARS = 8
SIGNING_KEY_VERSION_RE = re.compile(r"^[A-Za-z0-9_]+$")
OLD_SIGNING_KEYS_SUFFIX = ".old.yaml"

# Kubernetes validation for Secret/ConfigMap keys (IsConfigMapKey).
SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
SECRET_KEY_MAX_LENGTH = 253

GENERATED_TYPES = ("signing_key", "alnum", "hex", "base64", "password", "rsa", "ecdsa")
PROVIDED_TYPE = "provided"
ALL_TYPES = GENERATED_TYPES + (PROVIDED_TYPE,)

# type -> (default length, minimum, maximum, meaning of length); None: length not accepted.
LENGTH_RULES = {
    "alnum": (64, 16, 4096, "characters"),
    "password": (32, 16, 4096, "characters"),
    "hex": (32, 16, 2048, "random bytes (the value has twice as many hex characters)"),
    "base64": (32, 16, 2048, "random bytes (the value is standard padded base64 of them)"),
}
RSA_SIZES = (2048, 3072, 4096)
RSA_DEFAULT = 4096
ECDSA_CURVES = {256: "SECP256R1", 384: "SECP384R1", 521: "SECP521R1"}
ECDSA_DEFAULT = 256


# ----- key names and specifications --------------------------------------------------------------
def secret_key_name_error(name):
    """Return why ``name`` is not a valid Secret key, or None when it is valid."""
    if not isinstance(name, str) or not name:
        return "a Secret key name must be a non-empty string"
    if len(name) > SECRET_KEY_MAX_LENGTH:
        return "a Secret key name must be at most %d characters" % SECRET_KEY_MAX_LENGTH
    if not SECRET_KEY_RE.match(name):
        return "a Secret key name may contain only letters, digits, '-', '_' and '.'"
    if name in (".", "..") or name.startswith(".."):
        return "a Secret key name must not be '.' or '..' or start with '..'"
    return None


def old_signing_keys_name(name):
    """Name of the companion key that records the retired public keys of signing key ``name``."""
    return name + OLD_SIGNING_KEYS_SUFFIX


def normalize_key_spec(spec):
    """Validate one entry of the ``keys`` option; return a dict with name, type, length, value (bytes or None).

    ``spec`` holds ``name``, ``type``, ``length``, ``value`` and ``value_from_file`` (missing ones are None).
    Raises SecretSpecError with a message that never contains a value.
    """
    name = spec.get("name")
    problem = secret_key_name_error(name)
    if problem:
        raise SecretSpecError("invalid key name %r: %s" % (name, problem))
    ktype = spec.get("type")
    length = spec.get("length")
    value = spec.get("value")
    value_file = spec.get("value_from_file")
    if value is not None and value_file is not None:
        raise SecretSpecError("key %r: value and value_from_file are mutually exclusive" % name)
    provided = value is not None or value_file is not None
    if ktype is None:
        if not provided:
            raise SecretSpecError("key %r: set a type (one of %s) or supply value / value_from_file"
                                  % (name, ", ".join(GENERATED_TYPES)))
        ktype = PROVIDED_TYPE
    if ktype not in ALL_TYPES:
        raise SecretSpecError("key %r: unknown type %r; supported types: %s" % (name, ktype, ", ".join(ALL_TYPES)))
    if ktype == PROVIDED_TYPE:
        if not provided:
            raise SecretSpecError("key %r: type provided needs value or value_from_file" % name)
        if length is not None:
            raise SecretSpecError("key %r: length is not used with supplied values" % name)
    elif provided:
        raise SecretSpecError("key %r: value / value_from_file cannot be combined with the generated type %r "
                              "(omit type or use type: provided)" % (name, ktype))
    length = check_length(name, ktype, length)
    if value_file is not None:
        try:
            with open(value_file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SecretSpecError("key %r: cannot read value_from_file %s: %s" % (name, value_file, exc.strerror)) from None
    elif value is not None:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    else:
        data = None
    return {"name": name, "type": ktype, "length": length, "value": data}


def check_length(name, ktype, length):
    """Return the effective length for ``ktype`` (default when None) or raise SecretSpecError."""
    if ktype in LENGTH_RULES:
        default, minimum, maximum, unit = LENGTH_RULES[ktype]
        if length is None:
            return default
        if not minimum <= length <= maximum:
            raise SecretSpecError("key %r: length for type %s is in %s and must be between %d and %d, got %d"
                                  % (name, ktype, unit, minimum, maximum, length))
        return length
    if ktype == "rsa":
        if length is None:
            return RSA_DEFAULT
        if length not in RSA_SIZES:
            raise SecretSpecError("key %r: length for type rsa is the key size in bits, one of %s, got %d"
                                  % (name, ", ".join(str(s) for s in RSA_SIZES), length))
        return length
    if ktype == "ecdsa":
        if length is None:
            return ECDSA_DEFAULT
        if length not in ECDSA_CURVES:
            raise SecretSpecError("key %r: length for type ecdsa selects the NIST curve P-256, P-384 or P-521 "
                                  "(256, 384 or 521), got %d" % (name, length))
        return length
    if length is not None:
        raise SecretSpecError("key %r: length is not used with type %s" % (name, ktype))
    return None


# ----- simple generators -------------------------------------------------------------------------
def random_string(length, alphabet=ALNUM):
    """``length`` characters drawn uniformly from ``alphabet`` with the CSPRNG."""
    return "".join(secrets.choice(alphabet) for _position in range(length))


def generate_alnum(length=64):
    return random_string(length).encode("ascii")


def generate_hex(nbytes=32):
    return secrets.token_hex(nbytes).encode("ascii")


def generate_base64(nbytes=32):
    return base64.b64encode(secrets.token_bytes(nbytes))


def generate_password(length=32):
    """A password with at least one lower case letter, upper case letter, digit and symbol.

    Rejection sampling keeps the result uniform over all strings of ``length`` characters from
    PASSWORD_ALPHABET that contain every class.
    """
    if length < 4:
        raise SecretSpecError("a password needs at least 4 characters")
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, PASSWORD_SYMBOLS)
    for _attempt in range(1000):
        candidate = random_string(length, PASSWORD_ALPHABET)
        if all(any(c in cls for c in candidate) for cls in classes):
            return candidate.encode("ascii")
    raise RuntimeError("could not generate a password")  # pragma: no cover - probability ~0


# ----- ed25519 signing keys ----------------------------------------------------------------------
def b64_unpadded(data):
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64_decode_unpadded(text):
    text = text.strip()
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def generate_signing_key_version(taken=()):
    """A random key version such as ``a_x7Kq29Pb`` that is not in ``taken``."""
    for _attempt in range(100):
        version = SIGNING_KEY_VERSION_PREFIX + random_string(SIGNING_KEY_VERSION_RANDOM_CHARS)
        if version not in taken:
            return version
    raise RuntimeError("could not find a free signing key version")  # pragma: no cover


def generate_signing_key(taken_versions=()):
    """A Synapse signing key file line (bytes, newline terminated) with a fresh random seed and version."""
    version = generate_signing_key_version(taken_versions)
    seed = secrets.token_bytes(32)
    return ("%s %s %s\n" % (SIGNING_KEY_ALGORITHM, version, b64_unpadded(seed))).encode("ascii")


# ----- asymmetric keys (PEM) ---------------------------------------------------------------------
def _require_cryptography(what):
    if not HAS_CRYPTOGRAPHY:
        raise SecretSpecError("generating %s keys needs the Python library cryptography: %s"
                              % (what, CRYPTOGRAPHY_IMPORT_ERROR))


def generate_rsa(bits=RSA_DEFAULT):
    """Unencrypted PKCS#8 PEM RSA private key."""
    _require_cryptography("rsa")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_ecdsa(curve_bits=ECDSA_DEFAULT):
    """Unencrypted PKCS#8 PEM EC private key on NIST P-256, P-384 or P-521."""
    _require_cryptography("ecdsa")
    curve = getattr(ec, ECDSA_CURVES[curve_bits])()
    key = ec.generate_private_key(curve)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate(ktype, length=None, taken_versions=()):
    """Generate a value of ``ktype`` (one of GENERATED_TYPES); ``length`` as returned by check_length."""
    if ktype == "signing_key":
        return generate_signing_key(taken_versions)
    if ktype == "alnum":
        return generate_alnum(length)
    if ktype == "hex":
        return generate_hex(length)
    if ktype == "base64":
        return generate_base64(length)
    if ktype == "password":
        return generate_password(length)
    if ktype == "rsa":
        return generate_rsa(length)
    if ktype == "ecdsa":
        return generate_ecdsa(length)
    raise SecretSpecError("unknown type %r; supported types: %s" % (ktype, ", ".join(GENERATED_TYPES)))
