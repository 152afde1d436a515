"""Synapse features proven by the real programs: external PostgreSQL over TLS, SSO, URL previews, email.

One playbooks/site.yml run renders four inventories at once (one host each):
- "tls": postgres_mode external on a real PostgreSQL with TLS on and a throwaway CA, the default
  sslmode (verify-full), the CA from a Secret and a client certificate (the server requires it:
  pg_hba clientcert=verify-full); URL previews on with the default blacklist; password login on;
  jemalloc at its default (on);
- "sso": password login off, a real OIDC provider (tests/helpers/oidc.py, HTTPS on 127.0.0.1) with
  the client secret from a Secret file; URL previews with 127.0.0.1/32 whitelisted; email through a
  real SMTP server (tests/helpers/smtp.py: STARTTLS and AUTH required) with the password from a Secret,
  plus an extra email key in synapse_extra_config; jemalloc off;
- "noca": external PostgreSQL with the default sslmode and no CA: refused before anything is rendered;
- "extradb": synapse_extra_config.database: refused, the message names the TLS variables.

The rendered Deployments then run as local processes (tests/helpers/pod.py): the init container's
command, then Synapse with the rendered command line and environment. Changes, only what cannot be the
same outside a pod: mount roots, loopback listeners, the internal database's address (sso), and
SSL_CERT_FILE pointing at the test CA for Synapse's HTTPS/STARTTLS clients (the OIDC provider and the
SMTP server have certificates from that CA). A third Synapse gets the "tls" pod with a wrong CA and must
fail. The three Synapse processes start together.
"""

import json
import re
import secrets
import shutil
import smtplib
import ssl
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from helpers import matrix_client
from helpers.oidc import OidcProvider
from helpers.pki import CertificateAuthority
from helpers.pod import Pod, secret_generators, write_synapse_secrets
from helpers.services import PostgresServer, wait_until
from helpers.smtp import SmtpServer

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
SERVER_NAME = "example.test"
PREVIEW_TITLE = "matrix.stack preview page"
EMAIL_SUBJECT_MARK = "matrix.stack extra email key kept"
SSO_USER = {"sub": "u-4711", "preferred_username": "alice.sso", "name": "Alice From SSO", "email": "alice@example.test"}

pytestmark = [pytest.mark.integration, pytest.mark.synapse]


# ----- real services on loopback -----------------------------------------------------------------

@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority("matrix.stack test CA")


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_bytes(ca.pem)
    return path


@pytest.fixture(scope="module")
def oidc_provider(ca, tmp_path_factory):
    provider = OidcProvider(tmp_path_factory.mktemp("oidc"), ca, "synapse", secrets.token_urlsafe(32), SSO_USER)
    try:
        yield provider.start()
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def smtp_server(ca, tmp_path_factory):
    server = SmtpServer(tmp_path_factory.mktemp("smtp"), ca, "matrix", secrets.token_urlsafe(24))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def preview_site():
    """An HTML page with an OpenGraph title on 127.0.0.1; counts the requests per path."""
    hits = {}
    page = (f'<html><head><meta property="og:title" content="{PREVIEW_TITLE}"><title>plain</title></head>'
            "<body>preview</body></html>").encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            pass

        def do_GET(self):  # pylint: disable=invalid-name
            hits[self.path] = hits.get(self.path, 0) + 1
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "hits": hits}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def tls_postgres(ca):
    """A real PostgreSQL with TLS on (certificate from the test CA) that requires a client certificate."""
    server = PostgresServer().start()
    try:
        tls_dir = server.root / "tls"
        tls_dir.mkdir()
        cert, key = ca.write(tls_dir, "server", "127.0.0.1", hosts=["127.0.0.1"])
        (tls_dir / "ca.crt").write_bytes(ca.pem)
        for path in (tls_dir, cert, key, tls_dir / "ca.crt"):
            shutil.chown(path, "postgres", "postgres")
        role, password = "synapse_tls", secrets.token_urlsafe(24)
        server.create_role(role, password)
        server.create_database(role, owner=role)
        (server.data_dir / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            f"hostssl all {role} 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
            f"host all {role} 127.0.0.1/32 reject\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        for setting, value in (("ssl", "on"), ("ssl_cert_file", cert), ("ssl_key_file", key),
                               ("ssl_ca_file", tls_dir / "ca.crt")):
            server.psql(f"ALTER SYSTEM SET {setting} = '{value}'")
        server.psql("SELECT pg_reload_conf()")
        wait_until("PostgreSQL TLS on", lambda: server.psql("SHOW ssl").strip() == "on", 30)
        yield {"server": server, "role": role, "password": password}
    finally:
        server.stop()


# ----- one render for every scenario -------------------------------------------------------------

def host(render_dir, **host_vars):
    return {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "matrix_stack_render_dir": str(render_dir), **host_vars}


@pytest.fixture(scope="module")
def render(run_playbook, tmp_path_factory, tls_postgres, oidc_provider, smtp_server):
    root = tmp_path_factory.mktemp("features-render")
    dirs = {name: root / name for name in ("tls", "sso", "noca", "extradb")}
    external = {"postgres_mode": "external", "postgres_external_host": "127.0.0.1",
                "postgres_external_password_secret_name": "db-password"}
    hosts = {
        "tls": host(dirs["tls"], **external, postgres_external_port=tls_postgres["server"].port,
                    postgres_database=tls_postgres["role"], postgres_user=tls_postgres["role"],
                    postgres_external_ssl_ca_secret_name="db-ca", postgres_external_ssl_client_secret_name="db-client",
                    synapse_url_preview_enabled=True),
        "sso": host(dirs["sso"], synapse_password_login_enabled=False, synapse_oidc_providers=[{
            "idp_id": "testidp", "idp_name": "Test IdP", "issuer": oidc_provider.issuer, "client_id": "synapse",
            "client_secret_secret_name": "oidc-testidp", "client_secret_secret_key": "client-secret",
            "scopes": ["openid", "profile"],
            "user_mapping_provider": {"config": {
                "localpart_template": "{% raw %}{{ user.preferred_username }}{% endraw %}",
                "display_name_template": "{% raw %}{{ user.name }}{% endraw %}"}}}],
            synapse_url_preview_enabled=True, synapse_url_preview_ip_range_whitelist=["127.0.0.1/32"],
            synapse_email_enabled=True, synapse_email_smtp_host=smtp_server.hostname,
            synapse_email_smtp_port=smtp_server.port, synapse_email_smtp_user=smtp_server.user,
            synapse_email_smtp_password_secret_name="smtp-credentials",
            synapse_extra_config={"email": {"subjects": {"email_validation": f"[%(server_name)s] {EMAIL_SUBJECT_MARK}"}}},
            synapse_jemalloc_enabled=False),
        "noca": host(dirs["noca"], **external),
        "extradb": host(dirs["extradb"], synapse_extra_config={"database": {"args": {"sslrootcert": "/ca.crt"}}}),
    }
    inventory = root / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"matrix_stack": {
        "hosts": hosts,
        "vars": {"synapse_server_name": SERVER_NAME, "synapse_public_baseurl": "https://matrix.example.test/",
                 "matrix_stack_coturn_enabled": False, "matrix_stack_element_enabled": False,
                 "matrix_stack_networkpolicy_enabled": False}}}))
    result = run_playbook(SITE, inventory=inventory)
    rendered = {}
    for name, directory in dirs.items():
        rendered[name] = {}
        for path in directory.rglob("*.yaml"):
            obj = yaml.safe_load(path.read_text())
            rendered[name][(obj["kind"], obj["metadata"]["name"])] = obj
    return {"result": result, "objects": rendered}


def test_bad_database_tls_input_refused_before_rendering(render):
    result = render["result"]
    out = result.stdout
    assert result.stats["tls"]["failed"] == 0 and result.stats["sso"]["failed"] == 0, out[-3000:]
    assert result.stats["noca"]["failed"] == 1 and result.stats["extradb"]["failed"] == 1, out[-3000:]
    assert not render["objects"]["noca"] and not render["objects"]["extradb"], "validation must stop before rendering"
    noca = " ".join(line for line in out.splitlines() if "[noca]" in line and "postgres_external_sslmode" in line)
    assert "postgres_external_ssl_ca_secret_name" in noca and "postgres_external_ssl_ca_configmap_name" in noca, out[-3000:]
    extradb = " ".join(line for line in out.splitlines() if "[extradb]" in line and "synapse_extra_config" in line)
    assert "postgres_external_ssl_ca_secret_name" in extradb, out[-3000:]


# ----- the rendered pods, started together -------------------------------------------------------

def rendered_pod(render, name, root):
    objects = render["objects"][name]
    return Pod(root, objects[("Deployment", "matrix-synapse")], objects[("ConfigMap", "matrix-synapse")])


@pytest.fixture(scope="module")
def pods(render, tls_postgres, postgres_server, oidc_provider, smtp_server, ca, ca_file, tmp_path_factory):
    generate = secret_generators()
    env = {"SSL_CERT_FILE": str(ca_file)}

    # tls: everything as rendered, the database included (address, TLS files, client key copy).
    tls = rendered_pod(render, "tls", tmp_path_factory.mktemp("pod-tls"))
    tls_shared = write_synapse_secrets(tls, generate)
    tls.write_secret("db/password", tls_postgres["password"])
    client_cert, client_key = ca.issue(tls_postgres["role"], client=True)
    tls.write_secret("db-ca/ca.crt", ca.pem, mode=0o444)
    tls.write_secret("db-client/tls.crt", client_cert)
    tls.write_secret("db-client/tls.key", client_key)
    tls_config = tls.write_config()

    # The same pod with a CA that did not sign the server's certificate.
    wrong = rendered_pod(render, "tls", tmp_path_factory.mktemp("pod-wrong-ca"))
    write_synapse_secrets(wrong, generate)
    wrong.write_secret("db/password", tls_postgres["password"])
    wrong.write_secret("db-ca/ca.crt", CertificateAuthority("some other CA").pem, mode=0o444)
    wrong.write_secret("db-client/tls.crt", client_cert)
    wrong.write_secret("db-client/tls.key", client_key)
    wrong.write_config()

    # sso: the internal database's address becomes the session PostgreSQL's.
    sso = rendered_pod(render, "sso", tmp_path_factory.mktemp("pod-sso"))
    sso_shared = write_synapse_secrets(sso, generate)
    role, password, database = f"synapse_{secrets.token_hex(3)}", generate("alnum", 40), f"synapse_sso_{secrets.token_hex(3)}"
    postgres_server.create_role(role, password)
    postgres_server.create_database(database, owner=role)
    sso.write_secret("db/password", password)
    sso.write_secret("smtp/password", smtp_server.password)
    sso.write_secret("oidc/testidp/client-secret", json.loads(oidc_provider.config_path.read_text())["client_secret"])

    def local_database(config):
        config["database"]["args"].update(host=postgres_server.host, port=postgres_server.port, dbname=database,
                                          user=role, sslmode="disable")
    sso_config = sso.write_config(local_database)

    started = []
    try:
        for pod in (tls, wrong, sso):
            started.append(pod.start(env))
        tls.wait_healthy()
        sso.wait_healthy()
        yield {"tls": tls, "tls_config": tls_config, "tls_shared": tls_shared, "wrong": wrong,
               "sso": sso, "sso_config": sso_config, "sso_shared": sso_shared}
    finally:
        for pod in started:
            pod.stop()
        postgres_server.drop_database(database)


def maps_jemalloc(pid):
    return "libjemalloc" in Path(f"/proc/{pid}/maps").read_text()


# ----- external PostgreSQL over TLS ---------------------------------------------------------------

def test_synapse_connects_with_verify_full_and_client_certificate(pods, tls_postgres):
    args = pods["tls_config"]["database"]["args"]
    assert args["sslmode"] == "verify-full"  # the default of postgres_external_sslmode
    assert args["sslrootcert"] == "/secrets/db-ca/ca.crt"
    assert args["sslcert"] == "/secrets/db-client/tls.crt" and args["sslkey"] == "/run/synapse/postgres-client.key"
    key_copy = pods["tls"].mounts["/run/synapse"] / "postgres-client.key"
    assert oct(key_copy.stat().st_mode & 0o777) == "0o600"
    rows = tls_postgres["server"].psql(
        "SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        f"WHERE a.usename = '{tls_postgres['role']}'").split()
    assert rows, "Synapse holds no connection to the TLS PostgreSQL"
    assert all(row == f"t|/CN={tls_postgres['role']}" for row in rows), rows


def test_wrong_ca_fails_with_a_clear_error(pods):
    wrong = pods["wrong"]
    try:
        code = wrong.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("Synapse with a wrong CA kept running")
    log = wrong.log.read_text(errors="replace")
    assert code != 0
    assert "certificate verify failed" in log, log[-3000:]


def test_jemalloc_preloaded_by_default_and_not_when_disabled(pods, render):
    tls_env = {e["name"]: e["value"] for e in pods["tls"].spec["containers"][0]["env"]}
    assert tls_env["LD_PRELOAD"] == "/usr/$LIB/libjemalloc.so.2"
    assert maps_jemalloc(pods["tls"].proc.pid)
    sso_env = {e["name"] for e in pods["sso"].spec["containers"][0]["env"]}
    assert "LD_PRELOAD" not in sso_env
    assert not maps_jemalloc(pods["sso"].proc.pid)


# ----- URL previews --------------------------------------------------------------------------------

def preview(pod, shared_secret, url):
    token = matrix_client.register_shared_secret(pod.base_url, shared_secret, f"p{secrets.token_hex(4)}",
                                                 secrets.token_urlsafe(16))["access_token"]
    return matrix_client.request(pod.base_url, "GET", "/_matrix/client/v1/media/preview_url?url="
                                 + urllib.parse.quote(url, safe=""), token=token)


def test_url_preview_of_loopback_refused_by_the_default_blacklist(pods, preview_site):
    assert "127.0.0.0/8" in pods["tls_config"]["url_preview_ip_range_blacklist"]
    with pytest.raises(matrix_client.MatrixError) as err:
        preview(pods["tls"], pods["tls_shared"], preview_site["url"] + "/blocked")
    assert err.value.status in (403, 502), err.value
    assert preview_site["hits"].get("/blocked", 0) == 0


def test_url_preview_of_whitelisted_address_returns_the_title(pods, preview_site):
    answer = preview(pods["sso"], pods["sso_shared"], preview_site["url"] + "/allowed")
    assert answer["og:title"] == PREVIEW_TITLE
    assert preview_site["hits"]["/allowed"] == 1


# ----- SSO and password login ----------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def fetch(url, headers=None, context=None):
    """GET without following redirects: (status, headers, body)."""
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.headers, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode(errors="replace")


def test_sso_login_creates_the_mapped_user(pods, oidc_provider, ca_file):
    sso = pods["sso"]
    flows = matrix_client.request(sso.base_url, "GET", "/_matrix/client/v3/login")["flows"]
    assert [idp["id"] for flow in flows if flow["type"] == "m.login.sso" for idp in flow["identity_providers"]] == ["oidc-testidp"]

    # As the Ingress forwards a browser's request for the public host (x_forwarded listener).
    public = {"Host": "matrix.example.test", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https"}
    status, headers, _body = fetch(sso.base_url + "/_matrix/client/v3/login/sso/redirect/oidc-testidp?redirectUrl="
                                   + urllib.parse.quote("https://chat.example.test/", safe=""), headers=public)
    assert status == 302 and headers["Location"].startswith(oidc_provider.issuer + "authorize?")
    cookies = "; ".join(value.split(";", 1)[0] for value in headers.get_all("Set-Cookie"))
    # The provider consents at once and sends the browser back to Synapse's public callback URL.
    status, headers, _body = fetch(headers["Location"], context=ssl.create_default_context(cafile=str(ca_file)))
    callback = urllib.parse.urlsplit(headers["Location"])
    assert status == 302 and f"{callback.scheme}://{callback.netloc}{callback.path}" == \
        "https://matrix.example.test/_synapse/client/oidc/callback"
    status, headers, body = fetch(f"{sso.base_url}{callback.path}?{callback.query}", headers={**public, "Cookie": cookies})
    assert status in (200, 302), body[-2000:]
    login_token = re.search(r"loginToken=([A-Za-z0-9_.~-]+)", (headers.get("Location") or "") + body)
    assert login_token, body[-2000:]
    login = matrix_client.request(sso.base_url, "POST", "/_matrix/client/v3/login",
                                  body={"type": "m.login.token", "token": login_token.group(1)})
    user_id = f"@{SSO_USER['preferred_username']}:{SERVER_NAME}"
    assert login["user_id"] == user_id
    profile = matrix_client.request(sso.base_url, "GET", f"/_matrix/client/v3/profile/{urllib.parse.quote(user_id)}",
                                    token=login["access_token"])
    assert profile["displayname"] == SSO_USER["name"]
    # Synapse authenticated to the token endpoint with the secret from the Secret file.
    assert {"method": "POST", "path": "/token", "status": 200} in oidc_provider.requests()


def test_oidc_provider_refuses_a_wrong_client_secret(oidc_provider, ca_file):
    """The provider fixture checks the client secret (so the SSO login above proves the secret file)."""
    request = urllib.request.Request(oidc_provider.issuer + "token", method="POST", data=urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": "x", "redirect_uri": "https://matrix.example.test/",
        "client_id": "synapse", "client_secret": "wrong"}).encode())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context(cafile=str(ca_file)))
    assert err.value.code == 401


def test_oidc_client_secret_only_in_the_secret_file(pods, render, oidc_provider):
    secret = json.loads(oidc_provider.config_path.read_text())["client_secret"]
    configmap = json.dumps(render["objects"]["sso"][("ConfigMap", "matrix-synapse")])
    assert secret not in configmap
    provider = pods["sso_config"]["oidc_providers"][0]
    assert provider["client_secret_path"] == "/secrets/oidc/testidp/client-secret" and "client_secret" not in provider


def password_login(pod, shared_secret):
    user, password = f"pw{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    matrix_client.register_shared_secret(pod.base_url, shared_secret, user, password)
    return matrix_client.login(pod.base_url, user, password)


def test_password_login_refused_when_disabled(pods):
    flows = [flow["type"] for flow in matrix_client.request(pods["sso"].base_url, "GET", "/_matrix/client/v3/login")["flows"]]
    assert "m.login.password" not in flows
    with pytest.raises(matrix_client.MatrixError) as err:
        password_login(pods["sso"], pods["sso_shared"])
    assert err.value.status in (400, 403), err.value


def test_password_login_accepted_by_default(pods):
    assert password_login(pods["tls"], pods["tls_shared"])["access_token"]


# ----- email ---------------------------------------------------------------------------------------

def test_email_validation_sent_with_the_secret_password_and_extra_keys(pods, smtp_server):
    sso = pods["sso"]
    assert "email" not in pods["sso_config"], "with an SMTP password the email block lives in email.yaml only"
    address = f"check{secrets.token_hex(3)}@example.test"
    answer = matrix_client.request(sso.base_url, "POST", "/_matrix/client/v3/account/3pid/email/requestToken", body={
        "client_secret": secrets.token_hex(8), "email": address, "send_attempt": 1})
    assert answer["sid"]
    wait_until("the validation email", lambda: any(address in m["to"] for m in smtp_server.messages), 60)
    mail = next(m for m in smtp_server.messages if address in m["to"])
    assert mail["tls"] and mail["authenticated"]  # AUTH succeeds only with the Secret's password
    assert mail["message"]["Subject"] == f"[{SERVER_NAME}] {EMAIL_SUBJECT_MARK}"  # from synapse_extra_config.email
    assert mail["message"]["From"].addresses[0].addr_spec == f"noreply@{SERVER_NAME}"


def test_smtp_server_refuses_a_wrong_password(smtp_server, ca_file):
    """The SMTP fixture checks the password (so the mail above proves the Secret's password was used)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with smtplib.SMTP(smtp_server.hostname, smtp_server.port, timeout=10) as client:
        client.starttls(context=context)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(smtp_server.user, "wrong")
        client.login(smtp_server.user, smtp_server.password)
