"""`molecule test` of the default scenario: create, converge site.yml, idempotence (0 changed), verify, destroy.

Runs on the local cluster here (MATRIX_STACK_CLUSTER_PROVIDER=local), its pods on the real node from the local
test images; users with Docker get kind. Molecule installs nothing (`prerun: false`, dependency step off): the
scenario runs this checkout through ANSIBLE_COLLECTIONS_PATH and leaves no copy of the collection in the user's
collections path (a copy there shadowed the checkout for ansible-lint). molecule runs with its own HOME, so that
what it would write there is seen (and nothing of the user's ~/.ansible is read). destroy deletes the scenario's
namespace from the local cluster, which keeps running: none of its pods runs on after the test.
"""

import os
import subprocess

import pytest
import yaml

from conftest import REPO, VENV_BIN, ansible_env

# Real pods on the local cluster's real node: two converges that wait for Synapse, users included.
pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.xdist_group("real-node")]

NAMESPACE = yaml.safe_load((REPO / "molecule" / "default" / "vars" / "stack.yml").read_text())["matrix_stack_namespace"]


def test_molecule_default_scenario(kube_cluster, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = ansible_env({"MATRIX_STACK_CLUSTER_PROVIDER": os.environ.get("MATRIX_STACK_CLUSTER_PROVIDER", "local"),
                       "HOME": str(home)})
    env.pop("VIRTUAL_ENV", None)  # molecule's prerun would install into $VIRTUAL_ENV/.ansible instead of HOME
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", "default"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "idempotence" in output.lower()
    # Nothing installed: no prerun, and the one matrix.stack every playbook saw is this checkout.
    assert "prerun" not in output and "Another version of 'matrix.stack'" not in output, output[-6000:]
    copies = [str(path) for path in home.rglob("ansible_collections")]
    assert not copies, f"molecule installed collections into {copies}"
    # destroy removed the scenario's namespace from the cluster that keeps running: no pod of it runs on.
    namespace = kube_cluster.kubectl("get", "namespace", NAMESPACE, "-o", "jsonpath={.status.phase}", check=False)
    assert namespace.returncode != 0 or namespace.stdout == "Terminating", namespace.stdout
