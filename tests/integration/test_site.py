"""playbooks/site.yml on the local cluster (real kube-apiserver, kwok nodes).

Runs the molecule scenario's own playbooks (prepare, converge) against a fresh namespace enforcing Pod Security
restricted:
- converge: every workload becomes ready;
- changing one setting changes only the affected objects and rolls only the affected pod
  (config-hash annotation); the other pods keep their UIDs;
- uninstall.yml keeps PVCs and Secrets; purging needs the namespace's name as confirmation.

Covered elsewhere, so not repeated here: a second converge with 0 changed and no resourceVersion moved
(test_apply.py::test_2_second_converge_changes_nothing, and molecule's idempotence step in test_molecule.py);
the scenario's verify.yml (run by `molecule test` in test_molecule.py, on pods that really run).
"""

import json
import secrets
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "default"

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.slow]

KINDS = "configmap,deployment,statefulset,service,ingress,networkpolicy,persistentvolumeclaim,serviceaccount,secret"


@pytest.fixture(scope="module")
def stack(kube_cluster, run_playbook, tmp_path_factory):
    namespace = f"site-{secrets.token_hex(3)}"
    inventory = tmp_path_factory.mktemp("site") / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"cluster": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    # The scenario's playbooks read what molecule's create step recorded; here the API-level run on the kwok
    # nodes: no real-node annotations, the scenario's own (upstream) images, which kwok never pulls.
    ephemeral = inventory.parent / "ephemeral"
    ephemeral.mkdir()
    (ephemeral / "cluster.json").write_text(json.dumps({"provider": "kwok", "namespace_annotations": {}}))
    env = {"K8S_AUTH_KUBECONFIG": kube_cluster.kubeconfig, "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral)}
    # Users need a port-forward into a running Synapse: the scenario does that on the real node (test_molecule);
    # this API-level run on kwok leaves them out.
    extra = {"matrix_stack_namespace": namespace, "matrix_users_manage": False}

    def play(name, more=None):
        started = time.monotonic()
        result = run_playbook(SCENARIO / name, inventory=inventory, extra_vars={**extra, **(more or {})}, env=env)
        result.seconds = time.monotonic() - started
        return result

    try:
        prepared = play("prepare.yml")
        assert prepared.rc == 0, prepared.stdout[-3000:]
        first = play("converge.yml")
        assert first.rc == 0, first.stdout[-5000:]
        yield {"namespace": namespace, "play": play, "first": first, "kube": kube_cluster}
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def snapshot(kube, namespace):
    out = kube.kubectl("get", KINDS, "-n", namespace, "-o", "json").stdout
    objects = {(item["kind"], item["metadata"]["name"]): item["metadata"]["resourceVersion"]
               for item in json.loads(out)["items"]}
    pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    pod_uids = {pod["metadata"]["labels"].get("app.kubernetes.io/name"): pod["metadata"]["uid"] for pod in pods
                if pod["metadata"].get("deletionTimestamp") is None}
    return objects, pod_uids


def test_first_converge_makes_every_workload_ready(stack):
    kube, namespace = stack["kube"], stack["namespace"]
    assert stack["first"].changed("cluster") > 0
    for kind, name in [("deployment", "mol-synapse"), ("deployment", "mol-element"), ("deployment", "mol-coturn"),
                       ("statefulset", "mol-postgres")]:
        obj = json.loads(kube.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        assert obj["status"].get("readyReplicas") == obj["spec"]["replicas"], f"{kind}/{name} not ready"
    labels = json.loads(kube.kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    secrets_ = json.loads(kube.kubectl("get", "secrets", "-n", namespace, "-o", "json").stdout)["items"]
    names = {s["metadata"]["name"] for s in secrets_}
    assert {"mol-synapse", "mol-postgres", "mol-coturn", "mol-smtp"} <= names


def test_one_setting_changes_only_the_affected_objects_and_pods(stack):
    kube, namespace = stack["kube"], stack["namespace"]
    before, pods_before = snapshot(kube, namespace)
    changed = stack["play"]("converge.yml", {"synapse_max_upload_size": "77M"})
    assert changed.rc == 0, changed.stdout[-3000:]
    assert changed.changed("cluster") >= 1
    after, pods_after = snapshot(kube, namespace)
    differing = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
    # The Synapse Ingresses' body size follows synapse_max_upload_size (nginx ingress class).
    assert differing == {("ConfigMap", "mol-synapse"), ("Deployment", "mol-synapse"), ("Ingress", "mol-synapse"),
                         ("Ingress", "mol-synapse-wellknown")}, differing
    assert pods_after["synapse"] != pods_before["synapse"], "the Synapse pod was not rolled"
    ingress = json.loads(kube.kubectl("get", "ingress", "mol-synapse", "-n", namespace, "-o", "json").stdout)
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "77m"
    for app in ("postgres", "element", "coturn"):
        assert pods_after[app] == pods_before[app], f"{app} pod was rolled"
    config = json.loads(kube.kubectl("get", "configmap", "mol-synapse", "-n", namespace, "-o", "json").stdout)
    assert "max_upload_size: 77M" in config["data"]["homeserver.yaml"]

    # Element-only change: only Element's ConfigMap and Deployment move.
    before, pods_before = after, pods_after
    themed = stack["play"]("converge.yml", {"synapse_max_upload_size": "77M", "element_brand": "Renamed Chat"})
    assert themed.rc == 0, themed.stdout[-3000:]
    after, pods_after = snapshot(kube, namespace)
    differing = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
    assert differing == {("ConfigMap", "mol-element"), ("Deployment", "mol-element")}, differing
    assert pods_after["element"] != pods_before["element"]
    for app in ("postgres", "synapse", "coturn"):
        assert pods_after[app] == pods_before[app], f"{app} pod was rolled"


def test_uninstall_keeps_data_then_purge_needs_confirmation(stack, run_playbook):
    kube, namespace = stack["kube"], stack["namespace"]
    inventory_extra = {"matrix_stack_namespace": namespace, "matrix_stack_instance": "mol", "matrix_stack_hosts": "localhost",
                       "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    env = {"K8S_AUTH_KUBECONFIG": kube.kubeconfig}
    uninstall = REPO / "playbooks" / "uninstall.yml"
    labels = {"app.kubernetes.io/instance": "mol", "app.kubernetes.io/managed-by": "matrix.stack"}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        # what roles/backup adds when backup_schedule_enabled (the molecule scenario leaves it off)
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "mol-backup", "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "mol-backup", "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mol-backup"},
         "subjects": [{"kind": "ServiceAccount", "name": "mol-backup", "namespace": namespace}]},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "mol-backup", "labels": labels},
         "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": {"template": {"spec": {
             "restartPolicy": "Never", "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                                           "seccompProfile": {"type": "RuntimeDefault"}},
             "containers": [{"name": "backup", "image": "example.invalid/backup:1", "securityContext": {
                 "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}}}}}]}))
    # Check mode: names (and diffs, Secrets never among them) what would go, changes nothing.
    before = snapshot(kube, namespace)[0]
    dry = run_playbook(uninstall, extra_vars=inventory_extra, env=env, check=True, diff=True)
    assert dry.rc == 0 and dry.stats["localhost"]["changed"] == 1, dry.stdout[-3000:]
    assert "would remove: " in dry.stdout and "CronJob/mol-backup" in dry.stdout and "Role/mol-backup" in dry.stdout
    assert "Secret/" not in dry.stdout and "PersistentVolumeClaim/" not in dry.stdout
    assert snapshot(kube, namespace)[0] == before

    result = run_playbook(uninstall, extra_vars=inventory_extra, env=env)
    assert result.rc == 0, result.stdout[-3000:]
    assert "removed: " in result.stdout
    left = json.loads(kube.kubectl("get", KINDS + ",cronjob,role,rolebinding", "-n", namespace, "-o", "json").stdout)["items"]
    kinds = {item["kind"] for item in left if item["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == "mol"}
    assert kinds == {"PersistentVolumeClaim", "Secret"}, kinds

    refused = run_playbook(uninstall, extra_vars={**inventory_extra, "matrix_stack_purge": True}, env=env)
    assert refused.rc != 0 and "matrix_stack_purge_confirm" in refused.stdout
    assert kube.kubectl("get", "namespace", namespace, check=False).returncode == 0

    again = run_playbook(uninstall, extra_vars=inventory_extra, env=env)
    assert again.rc == 0 and again.stats["localhost"]["changed"] == 0, again.stdout[-3000:]

    purged = run_playbook(uninstall, extra_vars={**inventory_extra, "matrix_stack_purge": True,
                                                 "matrix_stack_purge_confirm": namespace}, env=env)
    assert purged.rc == 0, purged.stdout[-3000:]
    assert "Secret/mol-synapse" in purged.stdout and "Namespace/%s" % namespace in purged.stdout
    assert kube.kubectl("get", "namespace", namespace, check=False).returncode != 0
