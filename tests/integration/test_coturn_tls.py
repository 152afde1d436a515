"""TURN over TLS (turns:) with the real coturn from Debian and the rendered configuration.

site.yml renders the minimal inventory with coturn_tls_secret_name set. A throwaway CA signs a certificate for
coturn_public_host and 127.0.0.1; its tls.crt/tls.key are laid out as the Deployment mounts the Secret (the
mount path the rendered cert=/pkey= lines point into, mode 0440). coturn starts from the rendered
turnserver.conf plus the static-auth-secret line the init container appends, and:
- the certificate it serves verifies against the CA (openssl s_client), not against another CA;
- TLS 1.2 is accepted, TLS 1.0 and 1.1 are refused at once;
- turnutils_uclient -S -t (TLS over TCP, the transport of the turns: URI Synapse hands out) allocates relays with
  credentials computed exactly as Synapse issues them (<expiry>:<user id>, base64 HMAC-SHA1 of the shared
  secret), and the same allocation with a wrong password is refused.
Only what cannot be the same outside a pod changes: the mount root, listening addresses and ports (the
CoturnServer helper), and allow-loopback-peers because the relay peers of this test live on loopback.
"""

import base64
import hashlib
import hmac
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers.rendered import REAL_PROGRAMS_VARS, first, render_stack
from helpers.services import CoturnServer

UCLIENT = "/usr/bin/turnutils_uclient"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

pytestmark = pytest.mark.integration


def turn_credentials(shared_secret, user_id, lifetime=3600):
    """What Synapse's /voip/turnServer returns: username <expiry>:<user id>, password base64 HMAC-SHA1."""
    username = f"{int(time.time()) + lifetime}:{user_id}"
    mac = hmac.new(shared_secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


def openssl(*args, **kwargs):
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False,
                          **kwargs)


def make_ca(directory, name):
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    proc = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                   "-subj", f"/CN={name}", "-keyout", key, "-out", cert)
    assert proc.returncode == 0, proc.stderr
    return key, cert


@pytest.fixture(scope="module")
def tls_coturn(run_playbook):
    objects = render_stack(run_playbook, extra_vars=REAL_PROGRAMS_VARS)
    root = Path(tempfile.mkdtemp(prefix="matrix-stack-turns-"))
    server = None
    try:
        conf = first(obj for (kind, name), obj in objects.items()
                     if kind == "ConfigMap" and name.endswith("-coturn"))["data"]["turnserver.conf"]
        deployment = first(obj for (kind, name), obj in objects.items()
                           if kind == "Deployment" and name.endswith("-coturn"))
        homeserver = yaml.safe_load(first(obj for (kind, name), obj in objects.items()
                                          if kind == "ConfigMap" and name.endswith("-synapse"))["data"]["homeserver.yaml"])
        # The Secret's files, where the Deployment mounts them.
        spec = deployment["spec"]["template"]["spec"]
        mount = first(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls")
        volume = first(v for v in spec["volumes"] if v["name"] == "tls")
        ca_key, ca_cert = make_ca(root, "ca")
        host = re.search(r"^turns:([^:]+):", first(u for u in homeserver["turn_uris"] if u.startswith("turns:"))).group(1)
        tls_dir = root / mount["mountPath"].lstrip("/")
        tls_dir.mkdir(parents=True)
        (root / "san.ext").write_text(f"subjectAltName=DNS:{host},IP:127.0.0.1\n")
        proc = openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={host}",
                       "-keyout", tls_dir / "tls.key", "-out", root / "tls.csr")
        assert proc.returncode == 0, proc.stderr
        proc = openssl("x509", "-req", "-in", root / "tls.csr", "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                       "-days", "1", "-extfile", root / "san.ext", "-out", tls_dir / "tls.crt")
        assert proc.returncode == 0, proc.stderr
        for name in ("tls.crt", "tls.key"):
            (tls_dir / name).chmod(volume["secret"]["defaultMode"])
        shared_secret = secrets.token_urlsafe(48)
        effective = conf.replace(mount["mountPath"] + "/", str(tls_dir) + "/")
        effective += f"static-auth-secret={shared_secret}\nallow-loopback-peers\nallowed-peer-ip=127.0.0.1\n"
        server = CoturnServer(effective, root, tls=True).start()
        yield {"server": server, "secret": shared_secret, "ca": ca_cert, "root": root, "host": host,
               "homeserver": homeserver, "conf": conf, "deployment": deployment}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_rendered_tls_wiring(tls_coturn):
    """Synapse hands out the turns: URI; coturn reads the mounted Secret; the Service-facing port is listened on."""
    conf, homeserver = tls_coturn["conf"], tls_coturn["homeserver"]
    tls_port = int(re.search(r"^tls-listening-port=(\d+)$", conf, re.MULTILINE).group(1))
    assert f"turns:{tls_coturn['host']}:{tls_port}?transport=tcp" in homeserver["turn_uris"]
    assert "no-tls" not in conf.split() and "static-auth-secret" not in conf
    spec = tls_coturn["deployment"]["spec"]["template"]["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls")
    assert f"cert={mount['mountPath']}/tls.crt" in conf.splitlines() and mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "turn-tls"
    # 0440 files, group = the pod's fsGroup = coturn's group: readable by coturn, not by others.
    assert volume["secret"]["defaultMode"] == 0o440
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
    assert ports["turns-tcp"] == tls_port


def test_certificate_and_protocols(tls_coturn):
    server, root = tls_coturn["server"], tls_coturn["root"]
    _other_key, other_ca = make_ca(root, "other")

    def handshake(*args):
        return openssl("s_client", "-connect", f"127.0.0.1:{server.tls_port}", "-verify_return_error",
                       "-servername", tls_coturn["host"], *args, input="")

    good = handshake("-CAfile", tls_coturn["ca"], "-verify_hostname", tls_coturn["host"], "-tls1_2")
    assert good.returncode == 0 and "Verify return code: 0 (ok)" in good.stdout, good.stdout[-2000:] + good.stderr
    wrong_ca = handshake("-CAfile", other_ca)
    assert wrong_ca.returncode != 0 and "certificate verify failed" in wrong_ca.stderr
    for old in ("-tls1", "-tls1_1"):
        # SECLEVEL=0 lets this client offer the old protocol, so only the server can refuse it.
        started = time.monotonic()
        refused = handshake("-CAfile", tls_coturn["ca"], old, "-cipher", "DEFAULT@SECLEVEL=0")
        assert refused.returncode != 0 and "alert" in refused.stderr, (old, refused.stdout[-1000:])
        assert time.monotonic() - started < 10, f"{old} was not refused at once"


def test_turns_allocation_with_synapse_credentials(tls_coturn):
    server = tls_coturn["server"]
    username, password = turn_credentials(tls_coturn["secret"], f"@alice:{tls_coturn['homeserver']['server_name']}")

    def uclient(user, secret):
        # -S -t: TLS over TCP; -y: two clients relay to each other; -c: no RTCP connections.
        return subprocess.run([UCLIENT, "-S", "-t", "-y", "-c", "-n", "4", "-l", "64", "-m", "1",
                               "-p", str(server.tls_port), "-u", user, "-w", secret, "127.0.0.1"],
                              capture_output=True, text=True, timeout=120, check=False)

    good = uclient(username, password)
    output = good.stdout + good.stderr
    assert good.returncode == 0, output[-3000:]
    assert re.search(r"tls_connect: client session connected with cipher \S+, method=TLSv1\.[23]", output), output[-3000:]
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
    assert totals and int(totals[-1][0]) > 0 and int(totals[-1][1]) > 0, output[-3000:]

    bad = uclient(username, "wrong" + password)
    assert bad.returncode != 0, (bad.stdout + bad.stderr)[-3000:]
    assert "Cannot complete Allocation" in bad.stdout + bad.stderr


def test_default_denied_peers_keep_public_ipv4_relayable(run_playbook, tmp_path):
    """The default denied-peer-ip list, run by the real coturn: private and documentation peers are refused,
    public IPv4 peers are not (a "::" range in the list once made coturn refuse every IPv4 peer).
    A permission only installs a rule in coturn: no packet is sent to any peer."""
    from helpers.turn_client import TurnClient, TurnError  # pylint: disable=import-outside-toplevel

    objects = render_stack(run_playbook, extra_vars=REAL_PROGRAMS_VARS)
    conf = first(obj for (kind, name), obj in objects.items()
                 if kind == "ConfigMap" and name.endswith("-coturn"))["data"]["turnserver.conf"]
    secret = secrets.token_urlsafe(24)
    kept = [line for line in conf.splitlines() if not line.startswith(("cert=", "pkey=", "tls-listening-port"))]
    server = CoturnServer("\n".join(kept + [f"static-auth-secret={secret}"]), tmp_path).start()
    try:
        user = "%d:@alice:example.test" % (time.time() + 600)
        password = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()
        with TurnClient("127.0.0.1", server.port, user, password) as client:
            client.allocate()
            for public in ("8.8.8.8", "1.1.1.1", "151.101.1.1"):
                client.create_permission(public)
            for private in ("10.0.0.1", "127.0.0.1", "169.254.169.254", "192.168.1.1", "203.0.113.5", "100.64.0.1"):
                with pytest.raises(TurnError) as refused:
                    client.create_permission(private)
                assert refused.value.code == 403, private
    finally:
        server.stop()
