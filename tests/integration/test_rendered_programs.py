"""The rendered configuration runs the real programs.

playbooks/site.yml renders the stack (render mode, "full" inventory minus what would need the
internet or extras the local builds lack: OIDC discovery, stats reporting, TLS certificates,
coturn's Prometheus exporter). URL previews, SSO and email run for real in test_synapse_features.py.
Then, on loopback only:
- the secret files are laid out exactly as the pod mounts them (values generated with the same
  generators matrix.stack.matrix_secret uses), the init container's command (compose_secrets.py
  from the ConfigMap, rendered arguments) builds the libpq password file and the email fragment,
  and Synapse starts with the rendered command line (--no-secrets-in-config included), the
  rendered homeserver.yaml and log config, against the real PostgreSQL fixture, and answers /health;
- coturn starts from the rendered turnserver.conf plus the static-auth-secret line the init
  container appends, and TURN credentials that Synapse hands out on /voip/turnServer allocate
  relays with turnutils_uclient (wrong credentials do not);
- the rendered Element config.json points at the homeserver that Synapse advertises.

Only what cannot be the same outside a pod is changed: the mount roots (/config, /secrets,
/run/synapse, /data) become directories under tmp, the listeners bind 127.0.0.1 on free ports,
the database host/port/name are the fixture's. coturn's listening/relay addresses are set by the
coturn_factory fixture, plus allow-loopback-peers/allowed-peer-ip=127.0.0.1 because the relay
peers of this test live on loopback (the rendered denied-peer-ip list rightly forbids that).
"""

import json
import os
import re
import secrets
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import matrix_client
from helpers.pod import Pod, secret_generators
from helpers.services import SYNAPSE_PYTHON, free_port, stop_pid, wait_until

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
UCLIENT = "/usr/bin/turnutils_uclient"

pytestmark = [pytest.mark.integration, pytest.mark.synapse]


@pytest.fixture(scope="module")
def rendered(run_playbook, tmp_path_factory):
    out = tmp_path_factory.mktemp("programs-render")
    result = run_playbook(SITE, inventory=REPO / "inventories" / "test" / "full", extra_vars={
        "matrix_stack_render_dir": str(out), "synapse_oidc_providers": [], "synapse_report_stats": False,
        "coturn_tls_secret_name": "", "coturn_metrics_enabled": False})
    assert result.rc == 0, result.stdout[-3000:]
    objects = {}
    for path in out.rglob("*.yaml"):
        obj = yaml.safe_load(path.read_text())
        objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return objects


@pytest.fixture(scope="module")
def synapse_pod(rendered, postgres_server, tmp_path_factory):
    generate = secret_generators()
    configmap = rendered[("ConfigMap", "chat-synapse")]
    deployment = rendered[("Deployment", "chat-synapse")]
    pod = Pod(tmp_path_factory.mktemp("synapse-pod"), deployment, configmap)

    # Secrets, as matrix_secret would create them (SECRETS.md lists names and types).
    db_password = generate("alnum", 40)
    role = f"synapse_{secrets.token_hex(3)}"
    database = f"synapse_render_{secrets.token_hex(3)}"
    postgres_server.create_role(role, db_password)
    postgres_server.create_database(database, owner=role)
    pod.write_secret("synapse/signing.key", generate("signing_key"))
    for key in ("macaroon_secret_key", "registration_shared_secret", "form_secret"):
        pod.write_secret(f"synapse/{key}", generate("alnum", 64))
    pod.write_secret("db/password", db_password)
    turn_secret = generate("alnum", 64)
    pod.write_secret("turn/shared-secret", turn_secret)
    pod.write_secret("smtp/password", generate("password", 24))
    (pod.mounts["/secrets"] / "old-signing-keys").mkdir()  # optional key absent: empty directory

    # ConfigMap files; homeserver.yaml gets only the loopback-specific changes.
    config = yaml.safe_load(configmap["data"]["homeserver.yaml"])
    port, metrics_port = free_port(), free_port()
    for listener in config["listeners"]:
        listener["bind_addresses"] = ["127.0.0.1"]
        listener["port"] = port if listener["type"] == "http" else metrics_port
    config["database"]["args"].update(host=postgres_server.host, port=postgres_server.port, dbname=database, user=role,
                                      sslmode="disable")
    text = yaml.safe_dump(config, sort_keys=False)
    for mount in ("/config", "/secrets", "/run/synapse", "/data"):
        text = text.replace(f": {mount}/", f": {pod.mounts[mount]}/")
    assert ": /secrets/" not in text and ": /config/" not in text
    (pod.mounts["/config"] / "homeserver.yaml").write_text(text)
    for key, value in configmap["data"].items():
        if key != "homeserver.yaml":
            (pod.mounts["/config"] / key).write_text(value)

    # Init container: the rendered command and arguments (paths mapped; it waits for the database above).
    pod.config = config
    subprocess.run(pod.argv(pod.spec["initContainers"][0]), check=True, capture_output=True, timeout=60)
    pgpass = pod.mounts["/run/synapse"] / "pgpass"
    assert oct(pgpass.stat().st_mode & 0o777) == "0o600"
    email_fragment = yaml.safe_load((pod.mounts["/run/synapse"] / "email.yaml").read_text())
    assert email_fragment["email"]["smtp_host"] == "smtp.example.test" and email_fragment["email"]["smtp_pass"]

    # Main container: the rendered command line and environment.
    container = pod.spec["containers"][0]
    assert "--no-secrets-in-config" in container["args"]
    argv = [str(SYNAPSE_PYTHON) if arg == "python" else pod.local(arg) for arg in container["command"] + container["args"]]
    env = {**os.environ, **{e["name"]: pod.local(e["value"]) for e in container["env"]}}
    env.pop("PGPASSWORD", None)
    log = pod.root / "synapse.stdout"
    with open(log, "wb") as out:
        # pylint: disable-next=consider-using-with
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=pod.mounts["/tmp"])
    base_url = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as resp:
                return resp.status == 200 and resp.read() == b"OK"
        except OSError:
            return False

    try:
        wait_until("rendered Synapse /health", healthy, 180, proc, log)
        yield {"base_url": base_url, "metrics_port": metrics_port, "turn_secret": turn_secret, "pod": pod,
               "registration_shared_secret": (pod.mounts["/secrets"] / "synapse/registration_shared_secret").read_text(),
               "server_name": config["server_name"], "log": log}
    finally:
        stop_pid(proc.pid)
        postgres_server.drop_database(database)


def test_synapse_starts_from_rendered_config(synapse_pod):
    with urllib.request.urlopen(synapse_pod["base_url"] + "/health", timeout=5) as resp:
        assert resp.status == 200
    # The separate metrics listener answers too.
    with urllib.request.urlopen(f"http://127.0.0.1:{synapse_pod['metrics_port']}/_synapse/metrics", timeout=5) as resp:
        assert b"synapse_" in resp.read()
    # Delegation: Synapse names <server name>:443 for federation (the well-known Ingress routes the
    # federation API on that host) and the public base URL for clients.
    with urllib.request.urlopen(synapse_pod["base_url"] + "/.well-known/matrix/server", timeout=5) as resp:
        assert json.load(resp) == {"m.server": "example.test:443"}
    with urllib.request.urlopen(synapse_pod["base_url"] + "/.well-known/matrix/client", timeout=5) as resp:
        assert json.load(resp)["m.homeserver"]["base_url"] == "https://matrix.example.test/"
    log = synapse_pod["log"].read_text(errors="replace")
    assert "secret" not in " ".join(re.findall(r"^.*Traceback.*$", log, re.MULTILINE))


def test_rendered_config_rejected_with_inline_secret(synapse_pod, tmp_path):
    """--no-secrets-in-config is effective: the same command refuses an inlined secret."""
    pod = synapse_pod["pod"]
    bad = tmp_path / "inline.yaml"
    bad.write_text(yaml.safe_dump({"macaroon_secret_key": "inline"}))
    container = pod.spec["containers"][0]
    argv = [str(SYNAPSE_PYTHON) if arg == "python" else pod.local(arg) for arg in container["command"] + container["args"]]
    argv.insert(argv.index("--no-secrets-in-config"), "--config-path")
    argv.insert(argv.index("--no-secrets-in-config"), str(bad))
    proc = subprocess.run(argv + ["--print-pidfile"], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PGPASSFILE": pod.local("/run/synapse/pgpass")}, cwd=pod.mounts["/tmp"])
    assert proc.returncode != 0
    assert "macaroon_secret_key" in proc.stdout + proc.stderr


def test_turn_credentials_from_synapse_allocate_on_rendered_coturn(synapse_pod, rendered, coturn_factory):
    conf = rendered[("ConfigMap", "chat-coturn")]["data"]["turnserver.conf"]
    assert "static-auth-secret" not in conf
    # What the init container does: append the secret line read from the Secret file.
    effective = conf + f"static-auth-secret={synapse_pod['turn_secret']}\n"
    effective += "allow-loopback-peers\nallowed-peer-ip=127.0.0.1\n"  # test peers live on loopback
    coturn = coturn_factory(effective)

    user = f"turn{secrets.token_hex(3)}"
    token = matrix_client.register_shared_secret(synapse_pod["base_url"], synapse_pod["registration_shared_secret"],
                                                 user, secrets.token_urlsafe(16))["access_token"]
    creds = matrix_client.request(synapse_pod["base_url"], "GET", "/_matrix/client/v3/voip/turnServer", token=token)
    assert creds["uris"][0].startswith("turn:turn.example.test:")
    assert creds["username"].endswith(f":@{user}:example.test")

    def uclient(username, password):
        return subprocess.run([UCLIENT, "-y", "-n", "3", "-l", "64", "-m", "1", "-p", str(coturn.port),
                               "-u", username, "-w", password, "127.0.0.1"],
                              capture_output=True, text=True, timeout=60, check=False)

    good = uclient(creds["username"], creds["password"])
    output = good.stdout + good.stderr
    assert good.returncode == 0, output[-3000:]
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
    assert totals, output[-3000:]
    sent, received = (int(n) for n in totals[-1])
    assert sent > 0 and received == sent, output[-3000:]
    assert "Total lost packets 0 " in output

    bad = uclient(creds["username"], "wrong" + creds["password"])
    bad_totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", bad.stdout + bad.stderr)
    assert bad.returncode != 0 or not bad_totals or int(bad_totals[-1][1]) == 0


def test_element_points_at_the_homeserver(synapse_pod, rendered):
    element = json.loads(rendered[("ConfigMap", "chat-element")]["data"]["config.json"])
    homeserver = element["default_server_config"]["m.homeserver"]
    synapse_config = yaml.safe_load(rendered[("ConfigMap", "chat-synapse")]["data"]["homeserver.yaml"])
    assert homeserver == {"base_url": synapse_config["public_baseurl"], "server_name": synapse_config["server_name"]}
    # And it is the base URL the running Synapse advertises to clients.
    with urllib.request.urlopen(synapse_pod["base_url"] + "/.well-known/matrix/client", timeout=5) as resp:
        assert json.load(resp)["m.homeserver"]["base_url"] == homeserver["base_url"]
