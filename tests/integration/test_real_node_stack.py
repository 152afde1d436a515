"""The whole stack from our manifests, running for real on the local cluster's real node.

One `site.yml` converge (inventories/test/node: every default except the images, which are the local
test images of scripts/images, and the scheduled backup switched on so that its CronJob runs) into a
namespace whose pods the API server places on the real node; then, in order, on that one stack:

- every pod Running and Ready under Pod Security `restricted`; the initial admin bootstrapped by
  users.yml through the port-forward over the real kubelet;
- a Matrix client through a port-forward to the Synapse Service: admin API registration, login, room,
  messages, media upload/download compared by sha256;
- Element's pod serves config.json pointing at the homeserver, with the security headers;
- coturn in its pod allocates a relay with the credentials Synapse issued (not with wrong ones) and
  refuses a permission to a private peer;
- the backup CronJob, triggered as a Job, writes a set into its PVC that matrix_backup verifies;
- backup.yml and restore.yml round-trip the running stack (database and media wiped in between);
- uninstall.yml keeps the PVCs and Secrets, and a new site.yml run brings the same server back.

The tests depend on each other's state (the order of this file) and share the module's namespace.

Not repeated here: a second site.yml run with 0 changed on the real node, users included, is molecule's
idempotence step (test_molecule.py); no resourceVersion moving on a second run is
test_apply.py::test_2_second_converge_changes_nothing, and the scheduled backup's objects unchanged by a second
run is test_matrix_backup_kube.py::test_backup_role_cronjob_and_its_job_playbook.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, WORK, localcluster
from helpers import matrix_client as mc
from helpers.backup import run_module as run_backup_module
from helpers.turn_client import TurnClient, TurnError

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.slow, pytest.mark.xdist_group("real-node")]

INVENTORY = REPO / "inventories" / "test" / "node"
PLAYBOOKS = REPO / "playbooks"
SERVER_NAME = "matrix.test.local"
INSTANCE = "matrix"
PG_BIN = str(WORK / "postgresql" / "17" / "bin")
APPS = {"synapse", "postgres", "element", "coturn"}


class Stack:
    def __init__(self, kube, namespace, extra_vars, tmp, identity_file):
        self.kube, self.namespace, self.extra_vars = kube, namespace, extra_vars
        self.tmp, self.identity_file = tmp, identity_file
        self.first_run = None
        self.state = {}

    def kubectl(self, *args, **kw):
        return self.kube.kubectl("-n", self.namespace, *args, **kw)

    def get(self, *args):
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def secret(self, name):
        data = self.get("secret", name)["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    @contextmanager
    def port_forward(self, target, port):
        """kubectl port-forward to a Service or pod on a free local port; yields http://127.0.0.1:<port>."""
        # pylint: disable-next=consider-using-with
        proc = subprocess.Popen([str(localcluster.BIN / "kubectl"), f"--kubeconfig={self.kube.kubeconfig}",
                                 "-n", self.namespace, "port-forward", "--address=127.0.0.1", target, f":{port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not match:
                proc.kill()
                raise AssertionError(f"port-forward to {target}:{port} failed: {line}{proc.stderr.read()}")
            yield int(match.group(1))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @contextmanager
    def synapse(self):
        with self.port_forward(f"svc/{INSTANCE}-synapse", 8008) as port:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: urllib.request.urlopen(url + "/health", timeout=5).status == 200, 120, "Synapse /health")
            yield url


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # pylint: disable=broad-except
            last = exc
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}: {last!r}")


def api_server_peers(kube):
    """The API server's endpoint addresses and ports, for networkpolicy_kube_api_peers (backup pods)."""
    endpoints = json.loads(kube.kubectl("get", "endpoints", "kubernetes", "-n", "default", "-o", "json").stdout)
    peers, ports = [], []
    for subset in endpoints["subsets"]:
        peers += [{"ipBlock": {"cidr": f"{a['ip']}/32"}} for a in subset["addresses"]]
        ports += [p["port"] for p in subset["ports"]]
    return peers, sorted(set(ports))


@pytest.fixture(scope="module")
def stack(kube_cluster, run_playbook, tmp_path_factory):
    import pyrage  # pylint: disable=import-outside-toplevel
    missing = [n for n in ("synapse", "postgres", "coturn", "element-nginx", "backup")
               if not (WORK / "images" / f"{n}.tar").exists()]
    if missing:
        pytest.fail(f"test images {missing} are missing from {WORK / 'images'}: run scripts/images build (make setup)")
    if kube_cluster.kubectl("get", "node", localcluster.REAL_NODE_NAME, check=False).returncode:
        pytest.fail("the local cluster has no real node: see the `scripts/cluster up` output for the reason")
    # The images may have been built after the cluster started.
    subprocess.run([str(REPO / "scripts" / "cluster"), "import-images"], check=True, capture_output=True, timeout=600)

    namespace = f"e2e-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "annotations": localcluster.REAL_NODE_NAMESPACE_ANNOTATIONS}}))
    kube_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
    tmp = tmp_path_factory.mktemp("e2e")
    identity = pyrage.x25519.Identity.generate()
    identity_file = tmp / "age.key"
    identity_file.write_text(f"{identity}\n")
    identity_file.chmod(0o600)
    peers, ports = api_server_peers(kube_cluster)
    extra_vars = {"matrix_stack_namespace": namespace, "matrix_stack_kubeconfig": kube_cluster.kubeconfig,
                  "backup_schedule_enabled": True, "backup_age_recipients": [str(identity.to_public())],
                  "networkpolicy_kube_api_peers": peers, "networkpolicy_kube_api_ports": ports}
    st = Stack(kube_cluster, namespace, extra_vars, tmp, identity_file)
    started = time.monotonic()
    st.first_run = run_playbook(PLAYBOOKS / "site.yml", inventory=INVENTORY, extra_vars=extra_vars)
    st.state["first_run_seconds"] = time.monotonic() - started
    try:
        yield st
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def pod_summary(st):
    lines = []
    for pod in st.get("pods")["items"]:
        statuses = pod["status"].get("containerStatuses", [])
        lines.append(f"{pod['metadata']['name']}: {pod['status'].get('phase')} "
                     + ", ".join(f"{c['name']} ready={c['ready']} restarts={c['restartCount']} {c['state']}"
                                 for c in statuses))
    return "\n".join(lines)


def running_pods(st):
    return [p for p in st.get("pods")["items"]
            if not any(o["kind"] == "Job" for o in p["metadata"].get("ownerReferences", []))]


# ----- converge ---------------------------------------------------------------------------------

def test_site_converges_every_pod_ready_on_the_real_node(stack):
    assert stack.first_run.rc == 0, stack.first_run.stdout[-5000:] + "\n" + pod_summary(stack)
    ns = stack.kube.kubectl("get", "namespace", stack.namespace, "-o", "json")
    labels = json.loads(ns.stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = running_pods(stack)
    assert {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods} == APPS, pod_summary(stack)
    for pod in pods:
        assert pod["spec"]["nodeName"] == localcluster.REAL_NODE_NAME, pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running", pod_summary(stack)
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", pod_summary(stack)
        # the containers really run: the kubelet reports them started by containerd
        for status in pod["status"]["containerStatuses"]:
            assert status["containerID"].startswith("containerd://"), status
            assert status["restartCount"] == 0, pod_summary(stack)


def test_admin_bootstrapped_through_the_port_forward(stack):
    admin = stack.secret(f"{INSTANCE}-synapse-admin")
    assert admin.get("access_token"), sorted(admin)
    with stack.synapse() as url:
        whoami = mc.request(url, "GET", "/_matrix/client/v3/account/whoami", admin["access_token"])
        assert whoami["user_id"] == f"@admin:{SERVER_NAME}"
        user = mc.request(url, "GET", f"/_synapse/admin/v2/users/@admin:{SERVER_NAME}", admin["access_token"])
        assert user["admin"] is True
        with pytest.raises(mc.MatrixError) as bad:
            mc.request(url, "GET", "/_matrix/client/v3/account/whoami", "not-" + admin["access_token"])
        assert bad.value.status == 401
    stack.state["admin_token"] = admin["access_token"]


# ----- Matrix, Element, TURN --------------------------------------------------------------------

def test_matrix_client_through_the_service(stack):
    password = secrets.token_urlsafe(18)
    user_id = f"@alice:{SERVER_NAME}"
    media = os.urandom(256 * 1024)
    with stack.synapse() as url:
        created = mc.request(url, "PUT", f"/_synapse/admin/v2/users/{user_id}", stack.state["admin_token"],
                             {"password": password, "displayname": "Alice"})
        assert created["name"] == user_id
        token = mc.login(url, "alice", password)["access_token"]
        with pytest.raises(mc.MatrixError) as wrong:
            mc.login(url, "alice", "wrong-" + password)
        assert wrong.value.status == 403
        room = mc.create_room(url, token, "e2e")
        texts = [f"hello {i} {secrets.token_hex(4)}" for i in range(3)]
        for text in texts:
            mc.send_message(url, token, room, text)
        bodies = [e["content"].get("body") for e in mc.messages(url, token, room) if e["type"] == "m.room.message"]
        assert sorted(b for b in bodies if b) == sorted(texts)
        mxc = mc.upload(url, token, media, filename="e2e.bin")
        assert hashlib.sha256(mc.download(url, token, mxc)).hexdigest() == hashlib.sha256(media).hexdigest()
        keys = mc.server_keys(url)["verify_keys"]
    stack.state.update(alice_password=password, room=room, texts=texts, mxc=mxc,
                       media_sha=hashlib.sha256(media).hexdigest(), verify_keys=keys)


def test_element_serves_its_config_with_security_headers(stack):
    with stack.port_forward(f"svc/{INSTANCE}-element", 8080) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config.json", timeout=10) as resp:
            config = json.loads(resp.read())
            headers = resp.headers
    homeserver = config["default_server_config"]["m.homeserver"]
    assert homeserver == {"base_url": f"https://{SERVER_NAME}/", "server_name": SERVER_NAME}
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert headers["Cache-Control"] == "no-cache"


def test_coturn_allocates_a_relay_with_synapse_credentials(stack):
    alice_password = stack.state["alice_password"]
    with stack.synapse() as url:
        token = mc.login(url, "alice", alice_password)["access_token"]
        creds = mc.request(url, "GET", "/_matrix/client/v3/voip/turnServer", token)
    assert creds["username"].endswith(f":@alice:{SERVER_NAME}")
    coturn = [p for p in running_pods(stack) if p["metadata"]["labels"]["app.kubernetes.io/name"] == "coturn"][0]
    with stack.port_forward(f"pod/{coturn['metadata']['name']}", 3478) as port:
        with TurnClient("127.0.0.1", port, creds["username"], "wrong" + creds["password"]) as bad:
            with pytest.raises(TurnError) as refused:
                bad.allocate()
            assert refused.value.code == 401
        with TurnClient("127.0.0.1", port, creds["username"], creds["password"]) as good:
            relay_ip, relay_port = good.allocate()
            # coturn advertises coturn_external_ip and a port of the relay range of the defaults
            assert relay_ip == "203.0.113.10"
            assert 49152 <= relay_port <= 49251
            # A permission only installs a rule in coturn: no packet is sent to the peer. A public address
            # is allowed (every documentation range is in the default denied-peer-ip list), a private one not.
            good.create_permission("8.8.8.8")
            with pytest.raises(TurnError) as private:
                good.create_permission("10.0.0.1")
            assert private.value.code == 403


# ----- backups ----------------------------------------------------------------------------------

def test_scheduled_backup_job_writes_a_verified_set(stack, run_playbook):
    job = f"e2e-{secrets.token_hex(3)}"
    stack.kubectl("create", "job", job, f"--from=cronjob/{INSTANCE}-backup")

    def finished():
        conditions = stack.get("job", job)["status"].get("conditions", [])
        return next((c["type"] for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"),
                    None)
    wait_for(finished, 300, f"job {job} to complete or fail")
    logs = stack.kubectl("logs", f"job/{job}", "--tail=60", check=False).stdout
    assert finished() == "Complete", logs
    claim = stack.get("pvc", f"{INSTANCE}-backup")
    volume = json.loads(stack.kube.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    # The job's dest is /backup/repository, with the claim mounted at /backup.
    repository = str(Path(volume["spec"]["hostPath"]["path"]) / "repository")
    verified, _output = run_backup_module(run_playbook, stack.tmp, {
        "mode": "verify", "dest": repository, "encryption": {"identity_file": str(stack.identity_file)},
        "database": {"pg_bin_dir": PG_BIN}})
    assert len(verified["sets"]) == 1, verified
    manifest = verified["sets"][0]["manifest"]
    assert manifest["server_name"] == SERVER_NAME
    assert f"{stack.namespace}/{INSTANCE}-synapse" in manifest["secrets"]["kubernetes"]


def exec_in(stack, app, container, *argv):
    pod = [p for p in running_pods(stack) if p["metadata"]["labels"]["app.kubernetes.io/name"] == app][0]
    return stack.kubectl("exec", pod["metadata"]["name"], "-c", container, "--", *argv)


def assert_same_server(stack, url):
    token = mc.login(url, "alice", stack.state["alice_password"])["access_token"]
    bodies = [e["content"].get("body") for e in mc.messages(url, token, stack.state["room"]) if e["type"] == "m.room.message"]
    assert sorted(b for b in bodies if b) == sorted(stack.state["texts"])
    assert hashlib.sha256(mc.download(url, token, stack.state["mxc"])).hexdigest() == stack.state["media_sha"]
    assert mc.server_keys(url)["verify_keys"] == stack.state["verify_keys"]


def test_backup_and_restore_round_trip_the_running_stack(stack, run_playbook):
    repo = stack.tmp / "repository"
    backup_vars = {**stack.extra_vars, "backup_dest": str(repo), "backup_pg_bin_dir": PG_BIN}
    backup = run_playbook(PLAYBOOKS / "backup.yml", inventory=INVENTORY, extra_vars=backup_vars)
    assert backup.rc == 0, backup.stdout[-5000:]

    # lose the media and the database
    exec_in(stack, "synapse", "synapse", "sh", "-c", "rm -rf /data/media_store/local_content /data/media_store/local_thumbnails")
    exec_in(stack, "postgres", "postgres", "psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres",
            "-c", "DROP DATABASE synapse WITH (FORCE)",
            "-c", "CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    tables = exec_in(stack, "postgres", "postgres", "psql", "-U", "postgres", "-d", "synapse", "-tAc",
                     "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert tables.stdout.strip() == "0"

    restore = run_playbook(PLAYBOOKS / "restore.yml", inventory=INVENTORY, extra_vars={
        **backup_vars, "backup_age_identity_file": str(stack.identity_file)})
    assert restore.rc == 0, restore.stdout[-5000:]
    with stack.synapse() as url:
        assert_same_server(stack, url)


def test_uninstall_keeps_data_and_site_brings_it_back(stack, run_playbook):
    uninstall = run_playbook(PLAYBOOKS / "uninstall.yml", inventory=INVENTORY, extra_vars=stack.extra_vars)
    assert uninstall.rc == 0, uninstall.stdout[-5000:]
    assert stack.get("deployments")["items"] == []
    assert stack.get("statefulsets")["items"] == []
    claims = {c["metadata"]["name"] for c in stack.get("pvc")["items"]}
    assert {f"{INSTANCE}-synapse-media", f"data-{INSTANCE}-postgres-0"} <= claims
    kept = {s["metadata"]["name"] for s in stack.get("secrets")["items"]}
    assert {f"{INSTANCE}-synapse", f"{INSTANCE}-postgres", f"{INSTANCE}-synapse-admin"} <= kept

    again = run_playbook(PLAYBOOKS / "site.yml", inventory=INVENTORY, extra_vars=stack.extra_vars)
    assert again.rc == 0, again.stdout[-5000:] + "\n" + pod_summary(stack)
    with stack.synapse() as url:
        assert_same_server(stack, url)
