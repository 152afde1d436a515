"""playbooks/users.yml: admin bootstrapped from the generated Secret, its token stored with matrix_secret and
reused, inventory users created idempotently. Real Synapse on PostgreSQL; Secrets on the real API server
(kwok cluster). The Admin API is reached directly (matrix_users_homeserver_url): kwok pods run no containers,
so the port-forward default cannot reach a Synapse there (see test_matrix_user_port_forward.py)."""

import base64
import json
import secrets
import sys

import pytest
import yaml

from helpers import matrix_client as mc

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.synapse]


@pytest.fixture(scope="module")
def synapse(synapse_factory):
    return synapse_factory(server_name="pb.test", extra_config={"bcrypt_rounds": 4})


def read_secret(kube_cluster, namespace, name):
    proc = kube_cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_users_playbook(kube_cluster, kube_namespace, synapse, run_playbook, tmp_path):
    ns = kube_namespace()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mx-synapse", "namespace": ns},
              "data": {"registration_shared_secret": base64.b64encode(synapse.registration_shared_secret.encode()).decode()}}
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    bob_pw = secrets.token_urlsafe(12)
    users = [{"user": "bob", "password": bob_pw, "displayname": "Bob", "emails": ["Bob@Example.org"]},
             {"user": "carol", "admin": True},
             {"user": "bot1", "user_type": "bot"}]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"matrix_stack": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}, "vars": {
        "matrix_stack_namespace": ns, "matrix_stack_instance": "mx", "matrix_stack_kubeconfig": kube_cluster.kubeconfig,
        "matrix_users_homeserver_url": synapse.base_url, "matrix_users_admin_displayname": "Chief",
        "matrix_users": users}}}))
    playbook = "playbooks/users.yml"

    # first run: bootstrap by shared-secret registration, token stored, users created
    res = run_playbook(playbook, inventory=inventory)
    assert res.rc == 0, res.stdout[-4000:]
    stored = read_secret(kube_cluster, ns, "mx-synapse-admin")
    assert set(stored) == {"password", "access_token"} and len(stored["password"]) >= 32
    token = stored["access_token"]
    who = mc.request(synapse.base_url, "GET", "/_matrix/client/v3/account/whoami", token)
    assert who["user_id"] == "@admin:pb.test"
    admin = mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@admin:pb.test", token)
    assert admin["admin"] is True and admin["displayname"] == "Chief"
    bob = mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@bob:pb.test", token)
    assert bob["displayname"] == "Bob" and [t["address"] for t in bob["threepids"]] == ["bob@example.org"]
    assert mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@carol:pb.test", token)["admin"] is True
    assert mc.login(synapse.base_url, "bob", bob_pw)["user_id"] == "@bob:pb.test"
    assert mc.login(synapse.base_url, "admin", stored["password"])["user_id"] == "@admin:pb.test"
    devices_before = mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@admin:pb.test/devices", token)

    # second run, at -vvv: nothing changes, the stored token is reused (no new login, no new device)
    res = run_playbook(playbook, inventory=inventory, verbosity=3)
    assert res.rc == 0, res.stdout[-4000:]
    assert res.stats["localhost"]["changed"] == 0, res.stdout[-4000:]
    assert read_secret(kube_cluster, ns, "mx-synapse-admin") == stored
    devices_after = mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@admin:pb.test/devices", token)
    assert devices_after["total"] == devices_before["total"]
    for value in (token, stored["password"], bob_pw, synapse.registration_shared_secret):
        assert value not in res.stdout and value not in res.stderr

    # check mode changes nothing
    users[0]["displayname"] = "Robert"
    inventory.write_text(inventory.read_text().replace("displayname: Bob", "displayname: Robert"))
    res = run_playbook(playbook, inventory=inventory, check=True)
    assert res.rc == 0, res.stdout[-4000:]
    assert mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@bob:pb.test", token)["displayname"] == "Bob"

    # the stored token was logged out: a new one is obtained with the password and stored
    mc.request(synapse.base_url, "POST", "/_matrix/client/v3/logout", token, {})
    res = run_playbook(playbook, inventory=inventory)
    assert res.rc == 0, res.stdout[-4000:]
    new = read_secret(kube_cluster, ns, "mx-synapse-admin")
    assert new["password"] == stored["password"] and new["access_token"] != token
    assert mc.request(synapse.base_url, "GET", "/_matrix/client/v3/account/whoami", new["access_token"])["user_id"] \
        == "@admin:pb.test"
    assert mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/@bob:pb.test",
                      new["access_token"])["displayname"] == "Robert"
    res = run_playbook(playbook, inventory=inventory)
    assert res.rc == 0 and res.stats["localhost"]["changed"] == 0, res.stdout[-4000:]


def test_users_playbook_needs_the_synapse_secret(kube_cluster, kube_namespace, run_playbook, tmp_path):
    ns = kube_namespace()
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"matrix_stack": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}, "vars": {
        "matrix_stack_namespace": ns, "matrix_stack_instance": "mx", "matrix_stack_kubeconfig": kube_cluster.kubeconfig,
        "matrix_users_homeserver_url": "http://127.0.0.1:9"}}}))
    res = run_playbook("playbooks/users.yml", inventory=inventory)
    assert res.rc != 0
    assert "deploy the stack with site.yml first" in res.stdout
    assert read_secret(kube_cluster, ns, "mx-synapse-admin") is None


def test_users_playbook_skipped_in_render_mode_and_when_off(run_playbook, tmp_path):
    for extra in ({"matrix_stack_render_dir": str(tmp_path / "out")}, {"matrix_users_manage": False}):
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"matrix_stack": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}, "vars": dict({
                "matrix_stack_namespace": "does-not-exist", "matrix_stack_kubeconfig": str(tmp_path / "missing"),
                "matrix_users": [{"user": "x"}]}, **extra)}}))
        res = run_playbook("playbooks/users.yml", inventory=inventory)
        assert res.rc == 0, res.stdout[-3000:]
        assert res.stats["localhost"]["changed"] == 0 and res.stats["localhost"]["ok"] == 0
