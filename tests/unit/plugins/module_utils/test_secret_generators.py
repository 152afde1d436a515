"""Unit tests for plugins/module_utils/secrets/generators.py (no mocks: real CSPRNG, real cryptography)."""

import base64
import json
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position
from ansible_collections.matrix.stack.plugins.module_utils.secrets import generators as gen  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.secrets import signing_keys  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402

SIGNING_LINE = re.compile(r"^ed25519 (a_[A-Za-z0-9]{8}) ([A-Za-z0-9+/]{43})\n$")


# ----- simple types ------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [16, 32, 64, 200])
def test_alnum_length_and_alphabet(length):
    value = gen.generate_alnum(length).decode()
    assert len(value) == length
    assert set(value) <= set(string.ascii_letters + string.digits)


def test_alnum_uses_whole_alphabet_and_values_differ():
    values = {gen.generate_alnum(64) for _attempt in range(200)}
    assert len(values) == 200
    assert set("".join(v.decode() for v in values)) == set(string.ascii_letters + string.digits)


@pytest.mark.parametrize("nbytes", [16, 32, 48])
def test_hex(nbytes):
    value = gen.generate_hex(nbytes).decode()
    assert len(value) == 2 * nbytes
    assert re.fullmatch(r"[0-9a-f]+", value)
    assert len(bytes.fromhex(value)) == nbytes


@pytest.mark.parametrize("nbytes", [16, 32, 33, 64])
def test_base64(nbytes):
    value = gen.generate_base64(nbytes)
    assert len(base64.b64decode(value, validate=True)) == nbytes
    assert len(value) == 4 * ((nbytes + 2) // 3)


@pytest.mark.parametrize("length", [16, 32, 100])
def test_password_classes_and_alphabet(length):
    for _attempt in range(50):
        value = gen.generate_password(length).decode()
        assert len(value) == length
        assert set(value) <= set(gen.PASSWORD_ALPHABET)
        assert any(c.islower() for c in value)
        assert any(c.isupper() for c in value)
        assert any(c.isdigit() for c in value)
        assert any(c in gen.PASSWORD_SYMBOLS for c in value)


def test_password_too_short():
    with pytest.raises(gen.SecretSpecError):
        gen.generate_password(3)


# ----- signing keys ------------------------------------------------------------------------------

def test_signing_key_format():
    line = gen.generate_signing_key().decode()
    match = SIGNING_LINE.match(line)
    assert match, "unexpected signing key format"
    version = match.group(1)
    assert version != "0"
    seed = base64.b64decode(match.group(2) + "=")
    assert len(seed) == 32
    [(parsed_version, parsed_seed)] = signing_keys.parse_signing_keys(line)
    assert (parsed_version, parsed_seed) == (version, seed)


def test_1000_signing_keys_distinct_in_one_process():
    lines = [gen.generate_signing_key().decode() for _attempt in range(1000)]
    seeds = {line.split()[2] for line in lines}
    versions = {line.split()[1] for line in lines}
    assert len(seeds) == 1000
    # 62**8 possible versions: a collision among 1000 has probability ~2e-9.
    assert len(versions) == 1000


def test_1000_signing_keys_distinct_across_processes():
    """A constant or time-based seed would repeat across fresh interpreters started in the same second."""
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from ansible_collections.matrix.stack.plugins.module_utils.secrets import generators as g\n"
        "print('\\n'.join(g.generate_signing_key().decode().split()[2] for _attempt in range(100)))\n" % str(COLLECTIONS)
    )
    seeds = []
    for _attempt in range(10):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
        seeds.extend(out.stdout.split())
    assert len(seeds) == 1000
    assert len(set(seeds)) == 1000


def test_signing_key_version_avoids_taken():
    taken = set()
    for _attempt in range(50):
        version = gen.generate_signing_key_version(taken)
        assert version not in taken
        taken.add(version)
    line = gen.generate_signing_key(taken).decode()
    assert line.split()[1] not in taken


RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


@pytest.mark.parametrize("use_cryptography", [True, False])
def test_ed25519_public_key_rfc8032_vector(use_cryptography):
    assert signing_keys.ed25519_public_key(RFC8032_SEED, use_cryptography=use_cryptography) == RFC8032_PUBLIC


def test_pure_python_ed25519_matches_cryptography():
    for _attempt in range(20):
        seed = gen.secrets.token_bytes(32)
        expected = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert signing_keys.ed25519_public_key(seed, use_cryptography=False) == expected


def test_signing_key_public_keys_sign_and_verify():
    line = gen.generate_signing_key()
    [(version, seed)] = signing_keys.parse_signing_keys(line)
    [(key_id, public_b64)] = signing_keys.signing_key_public_keys(line).items()
    assert key_id == "ed25519:" + version
    assert "=" not in public_b64
    public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64 + "="))
    signature = ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(b"matrix")
    public.verify(signature, b"matrix")  # raises when the derived public key is wrong


def test_parse_signing_keys_several_lines():
    text = gen.generate_signing_key() + b"\n" + gen.generate_signing_key()
    assert len(signing_keys.parse_signing_keys(text)) == 2


@pytest.mark.parametrize("text", [
    "",
    "ed25519 a_x",
    "rsa a_x AAAA",
    "ed25519 a-x! " + "A" * 43,
    "ed25519 a_x not*base64",
    "ed25519 a_x " + base64.b64encode(b"short").decode(),
    b"\xff\xfe",
])
def test_parse_signing_keys_rejects(text):
    with pytest.raises(gen.SigningKeyFormatError):
        signing_keys.parse_signing_keys(text)


# ----- old signing keys --------------------------------------------------------------------------

def test_old_signing_keys_document():
    empty = signing_keys.empty_old_signing_keys()
    assert json.loads(empty) == {"old_signing_keys": {}}
    assert yaml.safe_load(empty) == {"old_signing_keys": {}}
    first = gen.generate_signing_key()
    doc, retired = signing_keys.retire_signing_keys(empty, first, 1700000000123)
    [(key_id, public)] = signing_keys.signing_key_public_keys(first).items()
    assert retired == [key_id]
    parsed = yaml.safe_load(doc)
    assert parsed == {"old_signing_keys": {key_id: {"key": public, "expired_ts": 1700000000123}}}
    # a second retirement keeps the first entry and its timestamp
    second = gen.generate_signing_key(signing_keys.versions_in_use(first, doc))
    doc2, _unused = signing_keys.retire_signing_keys(doc, second, 1800000000000)
    old = signing_keys.parse_old_signing_keys(doc2)
    assert set(old) == {key_id, list(signing_keys.signing_key_public_keys(second))[0]}
    assert old[key_id]["expired_ts"] == 1700000000123
    # retiring the same key again does not change the document
    doc3, _unused = signing_keys.retire_signing_keys(doc2, second, 1900000000000)
    assert doc3 == doc2
    assert signing_keys.versions_in_use(second, doc2) >= {key_id.split(":")[1]}


@pytest.mark.parametrize("doc", [b"not json", b"[]", b'{"old_signing_keys": []}',
                                 b'{"old_signing_keys": {"ed25519:a": {"key": 1, "expired_ts": 1}}}',
                                 b'{"old_signing_keys": {"ed25519:a": {"key": "x"}}}'])
def test_parse_old_signing_keys_rejects(doc):
    with pytest.raises(gen.SigningKeyFormatError):
        signing_keys.parse_old_signing_keys(doc)


# ----- PEM keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2048])
def test_rsa(bits):
    pem = gen.generate_rsa(bits)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == bits
    assert gen.generate_rsa(bits) != pem


@pytest.mark.parametrize("bits,curve", [(256, ec.SECP256R1), (384, ec.SECP384R1), (521, ec.SECP521R1)])
def test_ecdsa(bits, curve):
    pem = gen.generate_ecdsa(bits)
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, curve)


def test_generate_dispatch_and_unknown_type():
    assert SIGNING_LINE.match(gen.generate("signing_key").decode())
    assert len(gen.generate("alnum", 20)) == 20
    assert len(gen.generate("hex", 16)) == 32
    assert len(base64.b64decode(gen.generate("base64", 16))) == 16
    assert len(gen.generate("password", 16)) == 16
    assert b"PRIVATE KEY" in gen.generate("ecdsa", 256)
    with pytest.raises(gen.SecretSpecError, match="unknown type"):
        gen.generate("md5", 16)


# ----- key specifications ------------------------------------------------------------------------

def spec(**kwargs):
    base = dict(name="k", type=None, length=None, value=None, value_from_file=None)
    base.update(kwargs)
    return base


@pytest.mark.parametrize("name", ["a", "signing.key", "A-b_c.d", "x" * 253, ".hidden"])
def test_valid_key_names(name):
    assert gen.secret_key_name_error(name) is None
    assert gen.normalize_key_spec(spec(name=name, type="alnum"))["name"] == name


@pytest.mark.parametrize("name", ["", ".", "..", "..x", "a/b", "a b", "x" * 254, "ключ", "a:b", None])
def test_invalid_key_names(name):
    with pytest.raises(gen.SecretSpecError, match="invalid key name"):
        gen.normalize_key_spec(spec(name=name, type="alnum"))


def test_defaults_and_lengths():
    assert gen.normalize_key_spec(spec(type="alnum"))["length"] == 64
    assert gen.normalize_key_spec(spec(type="password"))["length"] == 32
    assert gen.normalize_key_spec(spec(type="hex"))["length"] == 32
    assert gen.normalize_key_spec(spec(type="rsa"))["length"] == 4096
    assert gen.normalize_key_spec(spec(type="ecdsa"))["length"] == 256
    assert gen.normalize_key_spec(spec(type="signing_key"))["length"] is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(type="md5"), "unknown type"),
    (dict(), "set a type"),
    (dict(type="provided"), "needs value"),
    (dict(value="a", value_from_file="/etc/hostname"), "mutually exclusive"),
    (dict(type="alnum", value="a"), "cannot be combined"),
    (dict(type="signing_key", length=32), "not used with type signing_key"),
    (dict(value="a", length=3), "not used with supplied"),
    (dict(type="alnum", length=8), "between 16 and 4096"),
    (dict(type="password", length=5000), "between 16 and 4096"),
    (dict(type="hex", length=4), "between 16 and 2048"),
    (dict(type="rsa", length=1024), "one of 2048, 3072, 4096"),
    (dict(type="ecdsa", length=255), "P-256"),
    (dict(value_from_file="/nonexistent/file"), "cannot read value_from_file"),
])
def test_spec_errors(kwargs, match):
    with pytest.raises(gen.SecretSpecError, match=match):
        gen.normalize_key_spec(spec(**kwargs))


def test_spec_error_never_contains_value():
    with pytest.raises(gen.SecretSpecError) as err:
        gen.normalize_key_spec(spec(type="alnum", value="SUPERSECRETVALUE"))
    assert "SUPERSECRETVALUE" not in str(err.value)


def test_provided_values(tmp_path):
    assert gen.normalize_key_spec(spec(value="pässword"))["value"] == "pässword".encode()
    assert gen.normalize_key_spec(spec(value="x"))["type"] == "provided"
    path = tmp_path / "v"
    path.write_bytes(b"\x00binary\nline\n")
    result = gen.normalize_key_spec(spec(value_from_file=str(path), type="provided"))
    assert result["value"] == b"\x00binary\nline\n"
