"""matrix_backup against the real local Kubernetes API server (kwok nodes: pods run no containers):

* the Secrets managed by matrix_secret (label matrix.stack/secret=true) are backed up (encrypted) and put back;
* a restore scales the Synapse Deployment to 0 and back (observed with a watch);
* roles/backup renders a CronJob whose Job pods pass the `restricted` Pod Security admission.
Exec streaming into pods cannot run here (kwok has no kubelet exec endpoint); see the unit tests of _kube_exec.
"""

import base64
import json
import secrets
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.kube]

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "integration" / "files" / "matrix_backup_run.yml"
PYTHON = str(REPO / ".work/venv/bin/python")
PG_BIN = "/usr/lib/postgresql/15/bin"


def secret(name, data, labels):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def run_module(run_playbook, tmp_path, args, kube_cluster, expect_ok=True):
    out_file = tmp_path / ("r-%s.json" % secrets.token_hex(3))
    args = {"kubeconfig": kube_cluster.kubeconfig, **args}
    res = run_playbook(RUN, extra_vars={"mb_args": args, "mb_result_file": str(out_file), "ansible_python_interpreter": PYTHON})
    assert res.rc == 0, res.stdout[-3000:]
    out = json.loads(out_file.read_text())
    assert bool(out.get("failed")) != expect_ok, out.get("msg")
    return out


@pytest.fixture
def small_db(postgres_server):
    name = "kb_%s" % secrets.token_hex(3)
    postgres_server.create_database(name)
    postgres_server.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);"
                         "CREATE TABLE e2e_one_time_keys_json (k text); INSERT INTO e2e_one_time_keys_json VALUES ('otk')",
                         dbname=name)
    yield name
    postgres_server.drop_database(name)


def test_secrets_round_trip_and_scaling(kube_cluster, kube_namespace, run_playbook, tmp_path, postgres_server, small_db):
    pyrage = pytest.importorskip("pyrage")
    ns = kube_namespace(restricted=True)
    owned = {"matrix.stack/secret": "true", "app.kubernetes.io/managed-by": "matrix.stack"}
    signing = "ed25519 a_%s %s" % (secrets.token_hex(3), secrets.token_urlsafe(32))
    manifests = [secret("chat-synapse", {"signing.key": signing, "macaroon_secret_key": secrets.token_urlsafe(30)}, owned),
                 secret("chat-postgres", {"password": secrets.token_urlsafe(30)}, owned),
                 secret("unrelated", {"token": "not ours"}, {"app": "other"})]
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    ident = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.key"
    key_file.write_text(str(ident) + "\n")
    base = {"dest": str(tmp_path / "repo"), "server_name": "kube.test",
            "database": {"host": postgres_server.host, "port": postgres_server.port, "user": "postgres",
                         "password": postgres_server.password, "name": small_db, "pg_bin_dir": PG_BIN},
            "secrets": {"namespace": ns}}
    b = run_module(run_playbook, tmp_path, {**base, "mode": "backup", "encryption": {"recipients": [str(ident.to_public())]}},
                   kube_cluster)
    assert b["stats"]["secrets"] == {"kubernetes": 2, "files": 0}
    assert signing not in json.dumps(b)
    v = run_module(run_playbook, tmp_path, {"mode": "verify", "dest": base["dest"], "encryption": {"identity_file": str(key_file)},
                                            "database": {"pg_bin_dir": PG_BIN}}, kube_cluster)
    assert sorted(v["sets"][0]["manifest"]["secrets"]["kubernetes"]) == ["%s/chat-postgres" % ns, "%s/chat-synapse" % ns]

    # lose one Secret, change another; the unrelated one must not be touched
    kube_cluster.kubectl("delete", "secret", "-n", ns, "chat-synapse")
    kube_cluster.kubectl("patch", "secret", "-n", ns, "chat-postgres", "--type=merge", "-p",
                         json.dumps({"data": {"password": base64.b64encode(b"changed").decode()}}))
    kube_cluster.kubectl("patch", "secret", "-n", ns, "unrelated", "--type=merge", "-p",
                         json.dumps({"data": {"token": base64.b64encode(b"changed too").decode()}}))

    # a Synapse Deployment with 2 replicas (kwok makes its pods Ready); watch its replicas during the restore
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat-synapse"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "synapse-test"}},
                    "template": {"metadata": {"labels": {"app": "synapse-test"}}, "spec": {
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 991, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{"name": "synapse", "image": "example.invalid/synapse:1", "securityContext": {
                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}}}
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(dep))
    kube_cluster.kubectl("rollout", "status", "-n", ns, "deployment/chat-synapse", "--timeout=120s")
    seen = []
    stop = threading.Event()

    def watch():
        from kubernetes import client, watch as kwatch
        api = client.AppsV1Api(kube_cluster.api_client())
        w = kwatch.Watch()
        for ev in w.stream(api.list_namespaced_deployment, ns, timeout_seconds=120):
            seen.append(ev["object"].spec.replicas)
            if stop.is_set():
                w.stop()
    t = threading.Thread(target=watch, daemon=True)
    t.start()

    # restore into a fresh database next to the original one (the original is non-empty: refused without force)
    refused = run_module(run_playbook, tmp_path, {**base, "mode": "restore", "encryption": {"identity_file": str(key_file)},
                                                  "synapse": {"deployment": "chat-synapse", "namespace": ns}},
                         kube_cluster, expect_ok=False)
    assert "not empty" in refused["msg"]
    target = "kb_restored_%s" % secrets.token_hex(3)
    try:
        r = run_module(run_playbook, tmp_path, {**base, "mode": "restore", "encryption": {"identity_file": str(key_file)},
                                                "database": {**base["database"], "name": target},
                                                "synapse": {"deployment": "chat-synapse", "namespace": ns,
                                                            "health_timeout": 120}}, kube_cluster)
        assert sorted(r["stats"]["secrets"]["kubernetes"]) == ["%s/chat-postgres" % ns, "%s/chat-synapse" % ns]
        assert r["stats"]["scaled_to"] == 2
        assert postgres_server.psql("SELECT count(*) FROM t", dbname=target).strip() == "100"
        assert postgres_server.psql("SELECT count(*) FROM e2e_one_time_keys_json", dbname=target).strip() == "0"
    finally:
        postgres_server.drop_database(target)
        kube_cluster.kubectl("patch", "deployment", "-n", ns, "chat-synapse", "--type=merge", "-p", '{"metadata": {"annotations": {"x": "y"}}}')
        stop.set()
        t.join(timeout=30)
    assert 0 in seen and seen[-1] == 2, seen

    got = json.loads(kube_cluster.kubectl("get", "secret", "-n", ns, "chat-synapse", "-o", "json").stdout)
    assert base64.b64decode(got["data"]["signing.key"]).decode() == signing
    assert got["metadata"]["labels"]["matrix.stack/secret"] == "true"
    got = json.loads(kube_cluster.kubectl("get", "secret", "-n", ns, "chat-postgres", "-o", "json").stdout)
    assert base64.b64decode(got["data"]["password"]) != b"changed"
    got = json.loads(kube_cluster.kubectl("get", "secret", "-n", ns, "unrelated", "-o", "json").stdout)
    assert base64.b64decode(got["data"]["token"]) == b"changed too"

    # secrets-only restore (disaster recovery phase 1): no database options, nothing else touched
    kube_cluster.kubectl("delete", "secret", "-n", ns, "chat-synapse")
    r = run_module(run_playbook, tmp_path, {"mode": "restore", "dest": base["dest"], "server_name": "kube.test",
                                            "secrets": {"namespace": ns}, "database": {"pg_bin_dir": PG_BIN},
                                            "encryption": {"identity_file": str(key_file)}}, kube_cluster)
    assert r["stats"]["secrets"]["kubernetes"] == ["%s/chat-synapse" % ns]
    assert "database" not in r["stats"]


def test_backup_role_cronjob_passes_restricted_admission(kube_cluster, kube_namespace, run_playbook, tmp_path):
    ns = kube_namespace(restricted=True)
    play = tmp_path / "role.yml"
    play.write_text(json.dumps([{
        "name": "backup role", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "include", "ansible.builtin.include_role": {"name": "matrix.stack.backup"}}]}]))
    ev = {"ansible_python_interpreter": PYTHON, "matrix_stack_namespace": ns, "matrix_stack_instance": "chat",
          "matrix_stack_kubeconfig": kube_cluster.kubeconfig, "synapse_server_name": "kube.test",
          "matrix_backup_schedule_enabled": True, "matrix_backup_image": "example.invalid/matrix-backup:0.1.0",
          "matrix_backup_age_recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}
    # matrix_stack's defaults (labels, field manager) come from its role; include it for its vars only
    play.write_text(json.dumps([{
        "name": "backup role", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "matrix.stack.matrix_stack", "when": False}],
        "tasks": [{"name": "include", "ansible.builtin.include_role": {"name": "matrix.stack.backup"}}]}]))
    res = run_playbook(play, extra_vars=ev)
    assert res.rc == 0, res.stdout[-4000:]
    res2 = run_playbook(play, extra_vars=ev)
    assert res2.rc == 0 and res2.stats["localhost"]["changed"] == 0, res2.stdout[-3000:]
    cj = json.loads(kube_cluster.kubectl("get", "cronjob", "-n", ns, "chat-backup", "-o", "json").stdout)
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    job = kube_cluster.kubectl("create", "job", "-n", ns, "manual-backup", "--from=cronjob/chat-backup", check=False)
    assert job.returncode == 0, job.stderr
    import time
    deadline = time.monotonic() + 60
    pods = []
    while time.monotonic() < deadline and not pods:
        pods = json.loads(kube_cluster.kubectl("get", "pods", "-n", ns, "-l", "job-name=manual-backup", "-o", "json").stdout)["items"]
        time.sleep(1)
    assert pods, kube_cluster.kubectl("describe", "job", "-n", ns, "manual-backup").stdout[-2000:]
    cm = json.loads(kube_cluster.kubectl("get", "configmap", "-n", ns, "chat-backup", "-o", "json").stdout)
    job_cfg = json.loads(cm["data"]["job.json"])
    assert job_cfg["server_name"] == "kube.test" and job_cfg["retention"]["keep_daily"] == 7
