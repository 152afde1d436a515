"""The one apply step (matrix.stack.apply) of playbooks/site.yml on the local cluster (real kube-apiserver).

One playbook start per scenario, in order, on one namespace (minimal inventory):
1. first converge: every object created, the Secrets generated;
2. second converge: changed=0 and no resourceVersion moved;
3. check mode with --diff, Element disabled and one Synapse setting changed: nothing changes on the server,
   the diff shows the Synapse ConfigMap change, Element's objects are listed as "would prune", and no secret
   value appears anywhere in the output;
4. Element disabled for real: exactly Element's objects are pruned; a PVC and a Secret carrying the instance's
   labels (and applied by the same field manager) stay, as does every other object, unchanged;
5. an external database whose CA ConfigMap, then password Secret, is missing: each stops the play with the
   variable's name before anything is written.
"""

import base64
import json
import time
import secrets
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
INVENTORY = REPO / "inventories" / "test" / "minimal"
KINDS = ("configmap,deployment,statefulset,service,ingress,networkpolicy,persistentvolumeclaim,serviceaccount,"
         "secret,cronjob,role,rolebinding")
LABELS = {"app.kubernetes.io/instance": "matrix", "app.kubernetes.io/managed-by": "matrix.stack",
          "app.kubernetes.io/part-of": "matrix-stack", "app.kubernetes.io/name": "extra"}
ELEMENT = {("ConfigMap", "matrix-element"), ("Deployment", "matrix-element"), ("Service", "matrix-element"),
           ("Ingress", "matrix-element"), ("ServiceAccount", "matrix-element"), ("NetworkPolicy", "matrix-element")}

pytestmark = [pytest.mark.integration, pytest.mark.kube]


@pytest.fixture(scope="module")
def site(kube_cluster, run_playbook):
    namespace = f"apply-{secrets.token_hex(3)}"
    env = {"K8S_AUTH_KUBECONFIG": kube_cluster.kubeconfig}
    base = {"matrix_stack_namespace": namespace, "matrix_users_manage": False}

    def play(more=None, **kwargs):
        return run_playbook(SITE, inventory=INVENTORY, extra_vars={**base, **(more or {})}, env=env, **kwargs)

    try:
        yield {"namespace": namespace, "play": play, "kube": kube_cluster, "runs": {}}
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def snapshot(kube, namespace):
    items = json.loads(kube.kubectl("get", KINDS, "-n", namespace, "-o", "json").stdout)["items"]
    return {(item["kind"], item["metadata"]["name"]): item["metadata"]["resourceVersion"] for item in items
            if item["metadata"]["name"] != "kube-root-ca.crt" and item["metadata"]["name"] != "default"}


def secret_values(kube, namespace):
    """Every value of every Secret of the namespace (decoded), to look for in the output."""
    items = json.loads(kube.kubectl("get", "secrets", "-n", namespace, "-o", "json").stdout)["items"]
    values = set()
    for item in items:
        for value in (item.get("data") or {}).values():
            text = base64.b64decode(value).decode("utf-8", "replace")
            values.update(part for part in text.split() if len(part) >= 16)
    return values


def apply_result(result):
    """The apply step's result from the json callback."""
    for play in result.results["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].endswith("Apply the stack (one step)"):
                return next(iter(task["hosts"].values()))
    raise AssertionError("the apply step did not run")


def test_1_first_converge_creates_everything(site):
    first = site["play"](json_output=True)
    assert first.rc == 0, first.stdout[-4000:]
    step = apply_result(first)
    assert step["changed"] is True
    assert "Namespace/" + site["namespace"] in step["created"]
    assert {"Deployment/matrix-synapse", "StatefulSet/matrix-postgres", "Deployment/matrix-element"} <= set(step["created"])
    assert step["updated"] == [] and step["pruned"] == []
    assert {s["name"] for s in step["secrets"]} == {"matrix-synapse", "matrix-postgres", "matrix-coturn"}
    assert set(step["waited"]) == {"Deployment/matrix-synapse", "Deployment/matrix-element", "Deployment/matrix-coturn",
                                   "StatefulSet/matrix-postgres"}
    assert ELEMENT <= set(snapshot(site["kube"], site["namespace"]))
    site["runs"]["created"] = len(step["created"])


def test_2_second_converge_changes_nothing(site):
    before = snapshot(site["kube"], site["namespace"])
    second = site["play"](json_output=True)
    assert second.rc == 0, second.stdout[-4000:]
    assert second.stats["localhost"]["changed"] == 0
    step = apply_result(second)
    assert step["changed"] is False and step["created"] == [] and step["updated"] == [] and step["waited"] == []
    assert step["unchanged"] == site["runs"]["created"]
    assert snapshot(site["kube"], site["namespace"]) == before


def add_foreign_data(kube, namespace):
    """A PVC and a Secret with the instance's labels, applied by the stack's field manager (as a PVC or a
    Secret of a component that is later disabled would be): pruning must keep them."""
    for obj in (
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "matrix-extra-data", "labels": LABELS},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "matrix-extra-secret", "labels": LABELS},
         "stringData": {"token": "x" * 20}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "matrix-extra-unlabelled"}, "data": {"a": "b"}},
    ):
        kube.kubectl("apply", "--server-side", "--field-manager=matrix.stack", "-n", namespace, "-f", "-",
                     input=json.dumps(obj))
    # The PV controller annotates a new claim once, a moment later: let it settle, so that a snapshot taken next
    # only moves when something else writes.
    last, stable_since, deadline = None, time.monotonic(), time.monotonic() + 30
    while time.monotonic() < deadline:
        version = kube.kubectl("get", "pvc", "matrix-extra-data", "-n", namespace,
                               "-o", "jsonpath={.metadata.resourceVersion}").stdout
        if version != last:
            last, stable_since = version, time.monotonic()
        elif time.monotonic() - stable_since >= 3:
            break
        time.sleep(0.5)


def test_3_check_mode_changes_nothing_shows_diff_and_would_prune(site):
    kube, namespace = site["kube"], site["namespace"]
    add_foreign_data(kube, namespace)
    before = snapshot(kube, namespace)
    checked = site["play"]({"matrix_stack_element_enabled": False, "synapse_max_upload_size": "77M"}, check=True,
                           diff=True)
    assert checked.rc == 0, checked.stdout[-4000:]
    after = snapshot(kube, namespace)
    assert after == before, ("check mode changed the cluster",
                             {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)})
    out = checked.stdout
    assert "max_upload_size: 77M" in out  # the diff of the Synapse ConfigMap
    assert "would prune" in out
    would = out.split("would prune", 1)[1].splitlines()[0]
    for kind, name in ELEMENT:
        assert f"{kind}/{name}" in would, would
    assert "matrix-extra" not in would
    leaked = [value for value in secret_values(kube, namespace) if value in out]
    assert not leaked, "secret values in the check-mode output"
    assert "Secret" not in would


def test_4_disabling_element_prunes_exactly_its_objects(site):
    kube, namespace = site["kube"], site["namespace"]
    before = snapshot(kube, namespace)
    pruned = site["play"]({"matrix_stack_element_enabled": False})
    assert pruned.rc == 0, pruned.stdout[-4000:]
    assert "pruned (no longer rendered by the inventory)" in pruned.stdout
    after = snapshot(kube, namespace)
    gone = set(before) - set(after)
    assert gone == ELEMENT, gone
    assert ("PersistentVolumeClaim", "matrix-extra-data") in after
    assert ("Secret", "matrix-extra-secret") in after
    assert ("ConfigMap", "matrix-extra-unlabelled") in after
    assert ("PersistentVolumeClaim", "matrix-synapse-media") in after
    # The NetworkPolicies that mention Element are re-rendered without it; nothing else moved.
    moved = {k for k in after if before[k] != after[k]}
    assert moved <= {("NetworkPolicy", "matrix-synapse"), ("NetworkPolicy", "matrix-default-deny")}, moved


def test_5_external_database_references_are_checked_before_anything_is_applied(site):
    """External PostgreSQL with a CA ConfigMap: a missing ConfigMap stops the play while the roles render (naming
    postgres_external_ssl_ca_configmap_name); once it exists, the missing password Secret stops the apply step before
    its first write (naming postgres_external_password_secret_name). Nothing changes on the server either time."""
    kube, namespace = site["kube"], site["namespace"]
    external = {"postgres_mode": "external", "postgres_external_host": "db.example.test",
                "postgres_external_sslmode": "verify-full", "postgres_external_ssl_ca_configmap_name": "db-ca",
                "postgres_external_password_secret_name": "db-pass",
                "networkpolicy_postgres_external_peers": [{"ipBlock": {"cidr": "10.0.12.7/32"}}]}
    before = snapshot(kube, namespace)
    no_ca = site["play"](external)
    assert no_ca.rc != 0
    assert "postgres_external_ssl_ca_configmap_name: ConfigMap db-ca with key ca.crt" in no_ca.stdout, no_ca.stdout[-3000:]
    assert snapshot(kube, namespace) == before
    kube.kubectl("create", "configmap", "db-ca", "-n", namespace, "--from-literal=ca.crt=not-checked-here")
    before = snapshot(kube, namespace)
    no_secret = site["play"](external)
    assert no_secret.rc != 0
    assert "ConfigMap db-ca with key" not in no_secret.stdout
    assert "postgres_external_password_secret_name" in no_secret.stdout and "db-pass" in no_secret.stdout, \
        no_secret.stdout[-3000:]
    assert snapshot(kube, namespace) == before
