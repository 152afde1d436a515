"""playbooks/site.yml with bad input stops before anything is applied and lists every problem at once.

The rules themselves are unit-tested (tests/unit/plugins/plugin_utils/test_validate.py: one case per bad
setting, in process). These few playbook runs prove the wiring: the matrix.stack.validate pass is the first
task of site.yml, it runs before any role's own argument spec check (which would stop at the first bad
variable of its role), it reports the problems of several roles in one run, and nothing reaches the
cluster or the render directory.
"""

import json
import secrets
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
MINIMAL = REPO / "inventories" / "test" / "minimal"

pytestmark = pytest.mark.integration

# One bad setting in each role, plus a cross-role rule (SMTP host without an egress rule). The first is a
# matrix_stack variable whose own argument spec check would stop the run alone.
BAD = {
    "matrix_stack_wait_timeout": "forever",
    "synapse_metrics_port": 8008,
    "postgres_max_connections": 5,
    "coturn_relay_min_port": 50000,
    "coturn_relay_max_port": 49000,
    "element_default_theme": "purple",
    "networkpolicy_oidc_ports": [70000],
    "synapse_email_enabled": True,
    "synapse_email_smtp_host": "smtp.internal.example",
    "synapse_max_uplod_size": "100M",  # a typo: warned about, with the likely meant variable
}
NAMED = ["matrix_stack_wait_timeout", "synapse_metrics_port", "postgres_max_connections", "coturn_relay_min_port",
         "element_default_theme", "networkpolicy_oidc_ports[0]", "networkpolicy_smtp_peers"]


def assert_every_problem_listed(result):
    output = result.stdout + result.stderr
    assert result.rc != 0, output[-3000:]
    for name in NAMED:
        assert f"- {name}: " in output, f"{name} not listed in:\n{output[-4000:]}"
    assert f"{len(NAMED)} invalid setting(s), nothing was applied" in output, output[-4000:]
    assert "synapse_max_uplod_size is not a variable of matrix.stack (ignored): did you mean synapse_max_upload_size?" in output
    # The validation pass is the play's first task: nothing else ran.
    stats = next(iter(result.stats.values()))
    assert stats["failed"] == 1 and stats["ok"] == 0 and stats["changed"] == 0, result.stats


def test_render_mode_lists_every_problem_and_writes_nothing(run_playbook, tmp_path):
    out_dir = tmp_path / "out"
    result = run_playbook(SITE, inventory=MINIMAL, extra_vars={"matrix_stack_render_dir": str(out_dir), **BAD})
    assert_every_problem_listed(result)
    assert not out_dir.exists(), "the render directory was created before validation failed"


@pytest.fixture
def cluster_inventory(kube_cluster, tmp_path):
    namespace = f"inputs-{secrets.token_hex(3)}"
    try:
        yield namespace, {"K8S_AUTH_KUBECONFIG": kube_cluster.kubeconfig}
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def namespace_exists(kube_cluster, namespace):
    found = kube_cluster.kubectl("get", "namespace", namespace, "-o", "json", check=False)
    return found.returncode == 0 and json.loads(found.stdout)["metadata"]["name"] == namespace


@pytest.mark.kube
def test_apply_mode_lists_every_problem_and_creates_nothing(run_playbook, kube_cluster, cluster_inventory):
    namespace, env = cluster_inventory
    result = run_playbook(SITE, inventory=MINIMAL, env=env, extra_vars={"matrix_stack_namespace": namespace, **BAD})
    assert_every_problem_listed(result)
    assert not namespace_exists(kube_cluster, namespace)


@pytest.mark.kube
def test_apply_mode_with_valid_input_creates_the_namespace(run_playbook, kube_cluster, cluster_inventory):
    """Positive twin: the same harness and cluster with valid input get past validation and create the namespace.

    To stay fast the input is valid but names an external database password Secret that does not exist: the
    run stops at the first cluster-side check after the namespace (a check validation cannot do offline).
    """
    namespace, env = cluster_inventory
    valid = {"matrix_stack_namespace": namespace, "matrix_stack_networkpolicy_enabled": False, "postgres_mode": "external",
             "postgres_external_host": "203.0.113.9", "postgres_external_password_secret_name": "absent-db",
             "matrix_users_manage": False}
    result = run_playbook(SITE, inventory=MINIMAL, env=env, extra_vars=valid)
    output = result.stdout + result.stderr
    assert "invalid setting(s)" not in output, output[-4000:]
    assert "postgres_external_password_secret_name: Secret absent-db with key password" in output, output[-4000:]
    assert namespace_exists(kube_cluster, namespace)
