"""`molecule test` of the default scenario: create, converge site.yml, idempotence (0 changed), verify, destroy.

Runs on the local cluster here (MATRIX_STACK_CLUSTER_PROVIDER=local), its pods on the real node from the local
test images; users with Docker get kind.
"""

import os
import subprocess

import pytest

from conftest import REPO, VENV_BIN, ansible_env

# Real pods on the local cluster's real node: two converges that wait for Synapse, users included.
pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_molecule_default_scenario(kube_cluster):  # pylint: disable=unused-argument
    env = ansible_env({"MATRIX_STACK_CLUSTER_PROVIDER": os.environ.get("MATRIX_STACK_CLUSTER_PROVIDER", "local")})
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", "default"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "idempotence" in output.lower()
