"""A small, real OpenID Connect provider on 127.0.0.1 over HTTPS, for SSO tests.

Authorization-code flow with PKCE (S256): discovery, /authorize (consents at once for the one
configured user), /token (client_secret_basic or client_secret_post, code and PKCE verifier
checked), /userinfo, /jwks (RS256 ID tokens). Runs as its own process (this file is the
program) so the tests stop it by PID; every request is logged as one JSON line.
"""

import base64
import hashlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# This file is also the provider's program (python tests/helpers/oidc.py CONFIG): find the helpers package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# pylint: disable-next=wrong-import-position
from helpers.services import free_port, stop_pid, wait_until  # noqa: E402


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value):
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Provider:
    def __init__(self, config):
        from cryptography.hazmat.primitives.asymmetric import rsa  # pylint: disable=import-outside-toplevel
        self.config = config
        self.issuer = config["issuer"]
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(4)
        self.codes = {}
        self.tokens = {}

    def sign(self, claims):
        from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives.asymmetric import padding  # pylint: disable=import-outside-toplevel
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = self.key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def discovery(self):
        base = self.issuer.rstrip("/")
        return {"issuer": self.issuer, "authorization_endpoint": base + "/authorize", "token_endpoint": base + "/token",
                "userinfo_endpoint": base + "/userinfo", "jwks_uri": base + "/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "scopes_supported": ["openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"]}

    def jwks(self):
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}]}

    def authorize(self, query):
        if query.get("client_id") != self.config["client_id"] or query.get("response_type") != "code":
            return 400, {"error": "unauthorized_client"}, None
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"redirect_uri": query.get("redirect_uri"), "nonce": query.get("nonce"),
                            "challenge": query.get("code_challenge"), "method": query.get("code_challenge_method")}
        location = query["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": query.get("state", "")})
        return 302, None, location

    def token(self, form, authorization):
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _sep, client_secret = (urllib.parse.unquote_plus(part) for part in decoded.partition(":"))
        if client_id != self.config["client_id"] or client_secret != self.config["client_secret"]:
            return 401, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code"), None)
        if grant is None or form.get("grant_type") != "authorization_code" or grant["redirect_uri"] != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant"}
        if grant["challenge"]:
            verifier = form.get("code_verifier", "")
            if grant["method"] != "S256" or b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        user = self.config["user"]
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user["sub"], "aud": client_id, "iat": now, "exp": now + 300, **user}
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        access_token = secrets.token_urlsafe(24)
        self.tokens[access_token] = user
        return 200, {"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": self.sign(claims)}

    def userinfo(self, authorization):
        user = self.tokens.get(authorization.removeprefix("Bearer "))
        return (200, user) if user else (401, {"error": "invalid_token"})


def make_handler(provider, log_path):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            pass

        def _send(self, status, body=None, location=None):
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            data = json.dumps(body).encode() if body is not None else b""
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"method": self.command, "path": urllib.parse.urlsplit(self.path).path,
                                      "status": status}) + "\n")

        def do_GET(self):  # pylint: disable=invalid-name
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/.well-known/openid-configuration":
                self._send(200, provider.discovery())
            elif url.path == "/jwks":
                self._send(200, provider.jwks())
            elif url.path == "/authorize":
                status, body, location = provider.authorize(query)
                self._send(status, body, location)
            elif url.path == "/userinfo":
                self._send(*provider.userinfo(self.headers.get("Authorization", "")))
            else:
                self._send(404, {"error": "not_found"})

        def do_POST(self):  # pylint: disable=invalid-name
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            if urllib.parse.urlsplit(self.path).path == "/token":
                self._send(*provider.token(form, self.headers.get("Authorization", "")))
            else:
                self._send(404, {"error": "not_found"})
    return Handler


def serve(config_path):
    config = json.loads(Path(config_path).read_text())
    provider = Provider(config)
    server = ThreadingHTTPServer(("127.0.0.1", config["port"]), make_handler(provider, config["log"]))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(config["cert"], config["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


class OidcProvider:
    """The provider as a process: start() waits for its discovery document, stop() ends that PID."""

    def __init__(self, root, ca, client_id, client_secret, user):
        self.root = Path(root)
        self.port = free_port()
        self.issuer = f"https://127.0.0.1:{self.port}/"
        self.ca = ca
        self.log_path = self.root / "requests.jsonl"
        cert, key = ca.write(self.root, "oidc", "127.0.0.1", hosts=["127.0.0.1"])
        self.config_path = self.root / "oidc.json"
        self.config_path.touch(mode=0o600)
        self.config_path.write_text(json.dumps({"issuer": self.issuer, "port": self.port, "cert": str(cert), "key": str(key),
                                                "client_id": client_id, "client_secret": client_secret, "user": user,
                                                "log": str(self.log_path)}))
        self.ca_path = self.root / "ca.crt"
        self.ca_path.write_bytes(ca.pem)
        self.proc = None

    def _ready(self):
        context = ssl.create_default_context(cafile=str(self.ca_path))
        try:
            import urllib.request  # pylint: disable=import-outside-toplevel
            with urllib.request.urlopen(self.issuer + ".well-known/openid-configuration", timeout=2, context=context) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self):
        stdout = self.root / "oidc.stdout"
        with open(stdout, "ab") as out:
            # pylint: disable-next=consider-using-with
            self.proc = subprocess.Popen([sys.executable, __file__, str(self.config_path)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until("the OIDC provider", self._ready, 30, self.proc, stdout)
        return self

    def requests(self):
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None


if __name__ == "__main__":
    os.umask(0o077)
    serve(sys.argv[1])
