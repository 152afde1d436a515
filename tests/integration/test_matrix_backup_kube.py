"""matrix_backup against the real local Kubernetes API server (kwok nodes: pods run no containers):

* the Secrets managed by matrix_secret (label matrix.stack/secret=true) are backed up (encrypted) and put back;
* a restore scales the Synapse Deployment to 0 and back (observed with a watch);
* roles/backup renders a CronJob whose Job pods pass the `restricted` Pod Security admission;
* pod mode (pg_dump / pg_restore and the media streamed through the websocket exec API): a second kwok process
  of ours manages one extra, tainted node with kwok's exec server, whose ClusterExec runs the exec'ed commands on
  this host. kwok never propagates the close of an exec's stdin (kubectl exec -i hangs the same way); the
  restore does not rely on it (announced length, ``head -c``), which these tests prove end to end.
"""

import base64
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.backup import PG_SEARCH, make_small_db, media_tree, run_module as run_backup_module

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".work/venv/bin/python")


def secret(name, data, labels):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def run_module(run_playbook, tmp_path, args, kube_cluster, expect_ok=True):
    return run_backup_module(run_playbook, tmp_path, {"kubeconfig": kube_cluster.kubeconfig, **args}, expect_ok=expect_ok)[0]


@pytest.fixture
def small_db(postgres_server):
    name = make_small_db(postgres_server, "kb")
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
                         "password": postgres_server.password, "name": small_db, "pg_bin_search": PG_SEARCH},
            "secrets": {"namespace": ns}}
    b = run_module(run_playbook, tmp_path, {**base, "mode": "backup", "encryption": {"recipients": [str(ident.to_public())]}},
                   kube_cluster)
    assert b["stats"]["secrets"] == {"kubernetes": 2, "files": 0}
    assert signing not in json.dumps(b)
    v = run_module(run_playbook, tmp_path, {"mode": "verify", "dest": base["dest"], "encryption": {"identity_file": str(key_file)},
                                            "database": {"pg_bin_search": PG_SEARCH}}, kube_cluster)
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
                                            "secrets": {"namespace": ns}, "database": {"pg_bin_search": PG_SEARCH},
                                            "encryption": {"identity_file": str(key_file)}}, kube_cluster)
    assert r["stats"]["secrets"]["kubernetes"] == ["%s/chat-synapse" % ns]
    assert "database" not in r["stats"]


def test_backup_role_cronjob_and_its_job_playbook(kube_cluster, kube_namespace, run_playbook, tmp_path, postgres_server, small_db):
    ns = kube_namespace(restricted=True)
    play = tmp_path / "role.yml"
    play.write_text(json.dumps([{
        "name": "backup role", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "include", "ansible.builtin.include_role": {"name": "matrix.stack.backup"}}]}]))
    ev = {"ansible_python_interpreter": PYTHON, "matrix_stack_namespace": ns, "matrix_stack_instance": "chat",
          "matrix_stack_kubeconfig": kube_cluster.kubeconfig, "synapse_server_name": "kube.test",
          "backup_schedule_enabled": True, "backup_image": "example.invalid/matrix-backup:0.1.0",
          "backup_age_recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}
    # The role used on its own: it hands its objects over, then matrix_stack's one apply step applies them
    # (matrix_stack's defaults, such as the field manager, come from its role, listed for its vars only).
    play.write_text(json.dumps([{
        "name": "backup role", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "matrix.stack.matrix_stack", "when": False}],
        "tasks": [{"name": "include", "ansible.builtin.include_role": {"name": "matrix.stack.backup"}},
                  {"name": "apply", "ansible.builtin.include_role": {"name": "matrix.stack.matrix_stack",
                                                                     "tasks_from": "deploy"}}]}]))
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
    assert job_cfg["database"]["host"] == "chat-postgres.%s.svc" % ns

    # Run the job's playbook exactly as rendered into the ConfigMap (the image cannot run under kwok), with the
    # database pointed at the test PostgreSQL and the Synapse pod on an exec-capable node.
    job_cfg["dest"] = str(tmp_path / "pvc" / "repository")
    job_cfg["database"].update(host=postgres_server.host, port=postgres_server.port, name=small_db)
    media = tmp_path / "media_store"
    (media / "local_content" / "ab" / "cd").mkdir(parents=True)
    (media / "local_content" / "ab" / "cd" / "efgh").write_bytes(os.urandom(4000))
    job_cfg["media_path"] = str(media)
    job_cfg["allow_unencrypted_secrets"] = False
    # The job reads the password from the mounted Secret file, never from its environment.
    assert job_cfg["database_password_file"] == "/run/secrets/postgres/password"
    pod_spec = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod_spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert mounts["db-password"] == "/run/secrets/postgres"
    assert volumes["db-password"]["secret"]["items"] == [{"key": "postgres-password", "path": "password"}]
    assert not [e for e in pod_spec["containers"][0].get("env", []) if "valueFrom" in e]
    # The API token: no automount, an explicit projected token that expires, where the in-cluster client looks.
    assert pod_spec["automountServiceAccountToken"] is False
    assert mounts["api-token"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    token = volumes["api-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"path": "token", "expirationSeconds": 3600}
    password_file = tmp_path / "db-password"
    password_file.write_text(postgres_server.password + "\n")  # as a Secret file may end
    job_cfg["database_password_file"] = str(password_file)
    (tmp_path / "job.json").write_text(json.dumps(job_cfg))
    (tmp_path / "backup.yml").write_text(cm["data"]["backup.yml"])
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(
        secret("chat-synapse", {"signing.key": "ed25519 a_x %s" % secrets.token_urlsafe(32)},
               {"matrix.stack/secret": "true"})))
    with exec_node(kube_cluster, ns, tmp_path, {"PATH": "/usr/bin:/bin"}) as node:
        make_pod(kube_cluster, ns, "chat-synapse-0", node,
                 labels={"app.kubernetes.io/name": "synapse", "app.kubernetes.io/instance": "chat"}, container="synapse")
        # the image's client of the server's major (/opt/postgresql/<major>/bin there) is found on PATH here
        env = {"MATRIX_BACKUP_JOB": str(tmp_path / "job.json"), "K8S_AUTH_KUBECONFIG": kube_cluster.kubeconfig,
               "PATH": "%s:%s:%s" % (postgres_server.bin_dir, REPO / ".work" / "venv" / "bin", os.environ["PATH"])}
        for _run in range(2):
            res = run_playbook(tmp_path / "backup.yml", extra_vars={"ansible_python_interpreter": PYTHON}, env=env)
            assert res.rc == 0, res.stdout[-4000:]
    # two runs on the same day: keep_daily keeps the newest set of the day, the job's prune removed the first
    sets = sorted(os.listdir(tmp_path / "pvc" / "repository" / "sets"))
    assert len(sets) == 1 and all((tmp_path / "pvc" / "repository" / "sets" / s / "COMPLETE").exists() for s in sets)
    assert (tmp_path / "pvc" / "repository" / "sets" / sets[-1] / "secrets.json.age").exists()
    assert (tmp_path / "pvc" / "repository" / "sets" / sets[-1] / "media.idx").read_text().count("\n") == 1


@contextlib.contextmanager
def exec_node(kube_cluster, namespace, tmp_path, envs):
    """An extra kwok-managed node whose pods' exec runs the command on this host (kwok ClusterExec)."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.services import free_port, stop_pid  # pylint: disable=import-outside-toplevel
    node = "mb-exec-%s" % secrets.token_hex(3)
    port = free_port()
    cert, key = tmp_path / "kwok.crt", tmp_path / "kwok.key"
    # The API server verifies kubelets against the cluster CA (--kubelet-certificate-authority): sign the
    # serving certificate of this kwok "kubelet" with it.
    pki = kube_cluster.cluster.pki
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(tmp_path / "kwok.csr"),
                    "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    (tmp_path / "kwok.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(tmp_path / "kwok.csr"), "-CA", str(pki / "ca.crt"),
                    "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-CAserial", str(tmp_path / "ca.srl"), "-days", "1",
                    "-extfile", str(tmp_path / "kwok.ext"), "-out", str(cert)], check=True, capture_output=True)
    cfg = tmp_path / "kwok.yaml"
    docs = [{"kind": "KwokConfiguration", "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "options": {}},
            {"kind": "ClusterExec", "apiVersion": "kwok.x-k8s.io/v1alpha1", "metadata": {"name": node},
             "spec": {"selector": {"matchNamespaces": [namespace]},
                      "execs": [{"local": {"workDir": str(tmp_path), "envs": [{"name": k, "value": v} for k, v in envs.items()]}}]}}]
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n---\n".join(json.dumps(d) for d in docs))
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"type": "mb-exec"}},
        "spec": {"taints": [{"key": "matrix.stack/test-exec", "value": "true", "effect": "NoSchedule"}]}}))
    with open(tmp_path / "kwok.log", "wb") as log:
        proc = subprocess.Popen([str(REPO / ".work/bin/kwok"), "--kubeconfig=" + kube_cluster.kubeconfig,
                                 "--manage-all-nodes=false", "--manage-single-node=" + node,
                                 "--server-address=127.0.0.1:%d" % port, "--node-ip=127.0.0.1", "--node-port=%d" % port,
                                 "--tls-cert-file=%s" % cert, "--tls-private-key-file=%s" % key, "-c", str(cfg),
                                 "--cidr=10.245.0.0/16"], stdout=log, stderr=subprocess.STDOUT,
                                # kwok looks the exec'ed command up on its own PATH (the env only reaches the command)
                                env={**os.environ, "PATH": envs.get("PATH", os.environ.get("PATH", ""))})
    try:
        yield node
    finally:
        stop_pid(proc.pid)
        kube_cluster.kubectl("delete", "node", node, "--wait=false", check=False)


def make_pod(kube_cluster, ns, name, node, labels=None, container="main"):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": {
        "nodeName": node, "tolerations": [{"key": "matrix.stack/test-exec", "operator": "Exists"}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 999, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": container, "image": "example.invalid/none:1", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if kube_cluster.kubectl("get", "pod", "-n", ns, name, "-o", "jsonpath={.status.phase}").stdout == "Running":
            return
        time.sleep(0.5)
    pytest.fail("pod %s never ran" % name)


def synapse_deployment(kube_cluster, ns, node):
    """A one-replica Synapse Deployment whose pods run on the exec-capable node."""
    labels = {"app.kubernetes.io/name": "synapse", "app.kubernetes.io/instance": "chat"}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat-synapse"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "nodeName": node, "tolerations": [{"key": "matrix.stack/test-exec", "operator": "Exists"}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 991, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "synapse", "image": "example.invalid/synapse:1", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}}}
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(dep))
    kube_cluster.kubectl("rollout", "status", "-n", ns, "deployment/chat-synapse", "--timeout=90s")


tree = media_tree


def test_pod_mode_backup_streams_through_exec(kube_cluster, kube_namespace, run_playbook, tmp_path, postgres_server, small_db):
    pyrage = pytest.importorskip("pyrage")
    ns = kube_namespace(restricted=True)
    media = tmp_path / "media_store"
    rnd = hashlib.sha256(b"seed").digest()
    for i in range(300):          # > one argv batch of paths, binary content including NUL and newlines
        mid = hashlib.sha256(rnd + str(i).encode()).hexdigest()[:24]
        p = media / "local_content" / mid[:2] / mid[2:4] / mid[4:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(1000 + i * 37) + b"\0\n\r\xff")
        if i % 3 == 0:
            t = media / "local_thumbnails" / mid[:2] / mid[2:4] / mid[4:] / "32-32-image-png-crop"
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_bytes(os.urandom(300))
    (media / "remote_content" / "x").mkdir(parents=True)
    (media / "remote_content" / "x" / "cached").write_bytes(b"skip me")
    envs = {"PATH": "%s:/usr/bin:/bin" % postgres_server.bin_dir, "PGHOST": postgres_server.host,
            "PGPORT": str(postgres_server.port), "PGPASSWORD": postgres_server.password}
    ident = pyrage.x25519.Identity.generate()
    with exec_node(kube_cluster, ns, tmp_path, envs) as node:
        make_pod(kube_cluster, ns, "chat-postgres-0", node)
        make_pod(kube_cluster, ns, "chat-synapse-0", node)
        base = {"dest": str(tmp_path / "repo"), "server_name": "pods.test",
                "database": {"pod": "chat-postgres-0", "namespace": ns, "user": "postgres", "name": small_db, "pg_bin_search": PG_SEARCH},
                "media": {"pod": "chat-synapse-0", "namespace": ns, "path": str(media)}}
        plain = run_module(run_playbook, tmp_path, {**base, "mode": "backup"}, kube_cluster)
        assert plain["stats"]["media"]["files_copied"] == len(tree(media)) == 400
        # the pod's own pg_dump made the dump: its version, asked in the pod, is recorded next to the server's
        pod_pg = json.loads((Path(plain["path"]) / "manifest.json").read_text())["postgresql"]
        assert pod_pg["pg_dump_version"].split(".")[0] == pod_pg["server_version"].split(".")[0]
        enc = run_module(run_playbook, tmp_path, {**base, "mode": "backup", "dest": str(tmp_path / "repo-enc"),
                                                  "encryption": {"recipients": [str(ident.to_public())]}}, kube_cluster)
        assert enc["stats"]["database"]["bytes"] == plain["stats"]["database"]["bytes"] > 0
        # incremental through the pod: one new file
        extra = media / "local_content" / "zz" / "yy" / "newfile"
        extra.parent.mkdir(parents=True)
        extra.write_bytes(os.urandom(5000))
        inc = run_module(run_playbook, tmp_path, {**base, "mode": "backup"}, kube_cluster)
        assert inc["stats"]["media"]["files_copied"] == 1 and inc["stats"]["media"]["files_reused"] == 400
        # a failing command in the pod is reported with its stderr (no such database)
        bad = run_module(run_playbook, tmp_path, {**base, "mode": "backup", "database": {**base["database"], "name": "nope_db"}},
                         kube_cluster, expect_ok=False)
        assert "nope_db" in bad["msg"]

        # restore into the pods: pg_restore and tar -x fed through the exec API's stdin
        key = tmp_path / "age.key"
        key.write_text(str(ident) + "\n")
        first_set = sorted(n for n in os.listdir(tmp_path / "repo" / "sets") if n[0].isdigit())[0]
        for repo, opts in (("repo", {}), ("repo-enc", {"encryption": {"identity_file": str(key)}})):
            target_db = "kb_podr_%s" % secrets.token_hex(3)
            target = tmp_path / ("restored-in-pod-" + repo)
            first = sorted(tree(media))[0]   # the pod already has one of the files
            (target / first).parent.mkdir(parents=True, exist_ok=True)
            (target / first).write_bytes((media / first).read_bytes())
            try:
                r = run_module(run_playbook, tmp_path, {**base, **opts, "mode": "restore", "dest": str(tmp_path / repo),
                                                        "set": first_set if repo == "repo" else "latest",
                                                        "database": {**base["database"], "name": target_db},
                                                        "media": {**base["media"], "path": str(target)}}, kube_cluster)
                assert postgres_server.psql("SELECT count(*) FROM t", dbname=target_db).strip() == "100"
                assert postgres_server.psql("SELECT count(*) FROM e2e_one_time_keys_json", dbname=target_db).strip() == "0"
                # the pod's pg_restore (asked in the pod) is at least the dump's major
                assert int(r["postgresql"]["pg_restore_version"].split(".")[0]) >= r["postgresql"]["dump_major"]
                assert r["stats"]["media"]["files_restored"] == 399 and r["stats"]["media"]["files_skipped"] == 1
                assert tree(target) == {k: v for k, v in tree(media).items() if "newfile" not in k}
            finally:
                postgres_server.drop_database(target_db)
        # a corrupted object is caught before anything reaches the pod's tar; the database is untouched
        victim = next(p for p in sorted((tmp_path / "repo" / "media").rglob("*")) if p.is_file() and ".tmp" not in p.parts)
        victim.write_bytes(b"x" + victim.read_bytes()[1:])
        broken = run_module(run_playbook, tmp_path, {**base, "mode": "restore", "dest": str(tmp_path / "repo"), "set": first_set,
                                                     "database": {**base["database"], "name": "kb_never_%s" % secrets.token_hex(3)},
                                                     "media": {**base["media"], "path": str(tmp_path / "never")}},
                            kube_cluster, expect_ok=False)
        assert "verification" in broken["msg"] and not (tmp_path / "never").exists()
    key = tmp_path / "age.key"
    key.write_text(str(ident) + "\n")
    v = run_module(run_playbook, tmp_path, {"mode": "verify", "dest": str(tmp_path / "repo-enc"), "set": "all",
                                            "database": {"pg_bin_search": PG_SEARCH}, "encryption": {"identity_file": str(key)}},
                   kube_cluster)
    assert v["ok"] and v["sets"][0]["dump_toc_entries"] > 0
    # restore the pod-made encrypted set directly (database + local media) and compare
    target_db = "kb_pod_%s" % secrets.token_hex(3)
    target = tmp_path / "restored"
    try:
        run_module(run_playbook, tmp_path, {"mode": "restore", "dest": str(tmp_path / "repo-enc"), "server_name": "pods.test",
                                            "database": {"host": postgres_server.host, "port": postgres_server.port,
                                                         "user": "postgres", "password": postgres_server.password,
                                                         "name": target_db, "pg_bin_search": PG_SEARCH},
                                            "media": {"path": str(target)}, "encryption": {"identity_file": str(key)}},
                   kube_cluster)
        assert postgres_server.psql("SELECT count(*) FROM t", dbname=target_db).strip() == "100"
        expected = {k: v for k, v in tree(media).items() if "newfile" not in k}
        assert tree(target) == expected
    finally:
        postgres_server.drop_database(target_db)


def test_backup_and_restore_playbooks(kube_cluster, kube_namespace, run_playbook, tmp_path, postgres_server, small_db,
                                      minio_server):
    """playbooks/backup.yml and restore.yml end to end against pods on the exec-capable node: the plan in check
    mode, the refusal of a non-empty database, the full restore from the off-site copy (media into the Synapse pod, Deployment scaled
    to 0, pg_restore in the PostgreSQL pod, Secrets, scaled back, Available), and the secrets-only phase."""
    pyrage = pytest.importorskip("pyrage")
    ns = kube_namespace(restricted=True)
    signing = "ed25519 a_pb %s" % secrets.token_urlsafe(32)
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(
        secret("chat-synapse", {"signing.key": signing}, {"matrix.stack/secret": "true"})))
    media = tmp_path / "media_store"
    for i in range(5):
        p = media / "local_content" / "aa" / ("%02d" % i) / "media"
        p.parent.mkdir(parents=True)
        p.write_bytes(os.urandom(2000 + i))
    ident = pyrage.x25519.Identity.generate()
    key = tmp_path / "age.key"
    key.write_text(str(ident) + "\n")
    envs = {"PATH": "%s:/usr/bin:/bin" % postgres_server.bin_dir, "PGHOST": postgres_server.host,
            "PGPORT": str(postgres_server.port), "PGPASSWORD": postgres_server.password}
    ev = {"ansible_python_interpreter": PYTHON, "matrix_stack_hosts": "localhost", "matrix_stack_namespace": ns,
          "matrix_stack_instance": "chat", "matrix_stack_kubeconfig": kube_cluster.kubeconfig,
          "synapse_server_name": "play.test", "postgres_database": small_db, "backup_dest": str(tmp_path / "repo"),
          "backup_age_recipients": [str(ident.to_public())], "backup_age_identity_file": str(key),
          "backup_media_path": str(media), "backup_retention": {"keep_last": 3},
          "backup_pg_bin_dir": str(postgres_server.bin_dir),
          "backup_s3": {"bucket": "backups", "prefix": "play", "endpoint_url": minio_server.endpoint_url,
                        "access_key": minio_server.access_key, "secret_key": minio_server.secret_key}}
    with exec_node(kube_cluster, ns, tmp_path, envs) as node:
        make_pod(kube_cluster, ns, "chat-postgres-0", node, container="postgres")
        synapse_deployment(kube_cluster, ns, node)
        res = run_playbook(REPO / "playbooks" / "backup.yml", extra_vars=ev)
        assert res.rc == 0, res.stdout[-4000:]
        assert signing not in res.stdout
        sets = os.listdir(tmp_path / "repo" / "sets")
        assert len(sets) == 1
        bucket = minio_server.client().list_objects_v2(Bucket="backups", Prefix="play/sets/%s/" % sets[0])
        assert "play/sets/%s/COMPLETE" % sets[0] in [o["Key"] for o in bucket.get("Contents", [])]
        assert minio_server.secret_key not in res.stdout
        plan = run_playbook(REPO / "playbooks" / "restore.yml", extra_vars={**ev, "backup_force": True}, check=True)
        assert plan.rc == 0, plan.stdout[-4000:]
        assert "pg_restore db.dump.age" in plan.stdout and "scale Deployment" in plan.stdout
        refused = run_playbook(REPO / "playbooks" / "restore.yml", extra_vars=ev, check=True)
        assert refused.rc != 0 and "not empty" in refused.stdout

        kube_cluster.kubectl("delete", "secret", "-n", ns, "chat-synapse")
        target_db, target_media = "kb_pb_%s" % secrets.token_hex(3), tmp_path / "restored_media"
        target_media.mkdir()
        try:
            # from the off-site copy, as on a new machine: the local cache starts empty
            res = run_playbook(REPO / "playbooks" / "restore.yml", extra_vars={
                **ev, "backup_database": {"name": target_db, "owner": "postgres"}, "backup_media_path": str(target_media),
                "backup_restore_timeout": 120, "backup_dest": str(tmp_path / "new-machine")})
            assert res.rc == 0, res.stdout[-4000:]
            assert signing not in res.stdout
            assert postgres_server.psql("SELECT count(*) FROM t", dbname=target_db).strip() == "100"
        finally:
            postgres_server.drop_database(target_db)
        assert tree(target_media) == tree(media)
        got = json.loads(kube_cluster.kubectl("get", "secret", "-n", ns, "chat-synapse", "-o", "json").stdout)
        assert base64.b64decode(got["data"]["signing.key"]).decode() == signing
        dep = json.loads(kube_cluster.kubectl("get", "deployment", "-n", ns, "chat-synapse", "-o", "json").stdout)
        assert dep["spec"]["replicas"] == 1 and dep["status"].get("availableReplicas") == 1
    kube_cluster.kubectl("delete", "secret", "-n", ns, "chat-synapse")
    res = run_playbook(REPO / "playbooks" / "restore.yml", extra_vars={**ev, "backup_restore_phase": "secrets"})
    assert res.rc == 0, res.stdout[-4000:]
    got = json.loads(kube_cluster.kubectl("get", "secret", "-n", ns, "chat-synapse", "-o", "json").stdout)
    assert base64.b64decode(got["data"]["signing.key"]).decode() == signing
