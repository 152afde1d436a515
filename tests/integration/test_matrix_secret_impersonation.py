"""Impersonation (kubernetes.core's impersonate_user / impersonate_groups) through matrix.stack.matrix_secret against the
real local API server: the cluster-admin kubeconfig acting as identities RBAC allows or refuses. One playbook."""

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.kube]

KEYS = [{"name": "macaroon_secret_key", "type": "alnum"}]


def test_impersonated_identity_decides_what_matrix_secret_may_do(kube_cluster, kube_namespace, run_playbook, tmp_path):
    ns = kube_namespace()
    for role, verbs in (("secret-reader", "get"), ("secret-writer", "get,create,update")):
        kube_cluster.kubectl("create", "role", role, "-n", ns, "--verb=" + verbs, "--resource=secrets")
    kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    kube_cluster.kubectl("create", "serviceaccount", "writer", "-n", ns)
    kube_cluster.kubectl("create", "rolebinding", "reader", "-n", ns, "--role=secret-reader",
                         "--serviceaccount=%s:reader" % ns)
    kube_cluster.kubectl("create", "rolebinding", "writer", "-n", ns, "--role=secret-writer",
                         "--serviceaccount=%s:writer" % ns)
    kube_cluster.kubectl("create", "rolebinding", "writers-group", "-n", ns, "--role=secret-writer",
                         "--group=matrix-writers")

    def task(name, **impersonation):
        return {"name": name, "ignore_errors": True, "matrix.stack.matrix_secret": dict(
            kubeconfig=kube_cluster.kubeconfig, namespace=ns, name=name, keys=KEYS, **impersonation)}

    tasks = [
        task("as-reader", impersonate_user="system:serviceaccount:%s:reader" % ns),
        task("as-writer", impersonate_user="system:serviceaccount:%s:writer" % ns),
        task("as-nobody", impersonate_user="nobody"),
        task("as-nobody-in-group", impersonate_user="nobody", impersonate_groups=["matrix-writers"]),
        task("as-admin"),
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks,
                                         "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}}]))
    out = run_playbook(playbook, json_output=True)
    results = {t["task"]["name"]: t["hosts"]["localhost"] for t in out.results["plays"][0]["tasks"]}

    # the reader may read (the Secret is absent) but not create it; nobody may not even read it
    for refused, verb in (("as-reader", "create"), ("as-nobody", "read")):
        assert results[refused]["failed"] and results[refused]["kube_error"] == "forbidden", results[refused]
        assert "not allowed to %s Secret %s/%s" % (verb, ns, refused) in results[refused]["msg"]
    for allowed in ("as-writer", "as-nobody-in-group", "as-admin"):
        assert not results[allowed].get("failed") and results[allowed]["changed"], results[allowed]
        assert results[allowed]["generated"] == ["macaroon_secret_key"]
    existing = kube_cluster.kubectl("get", "secrets", "-n", ns, "-o", "name").stdout.split()
    assert sorted(existing) == ["secret/as-admin", "secret/as-nobody-in-group", "secret/as-writer"]
