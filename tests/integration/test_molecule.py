"""`molecule test` of the default scenario: create, converge site.yml, idempotence (0 changed), verify, destroy.

Runs on the local cluster here (MATRIX_STACK_CLUSTER_PROVIDER=local), its pods on the real node from the local
test images; users with Docker get kind. Molecule installs nothing (`prerun: false`, dependency step off): the
scenario runs this checkout through ANSIBLE_COLLECTIONS_PATH and leaves no copy of the collection in the user's
collections path (a copy there shadowed the checkout for ansible-lint).
"""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, VENV_BIN, ansible_env

# Real pods on the local cluster's real node: two converges that wait for Synapse, users included.
pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(1800)]

USER_COPY = Path.home() / ".ansible" / "collections" / "ansible_collections" / "matrix" / "stack"


def copy_state():
    """What molecule could have left in the user's collections path: None, or the copy's modification time."""
    return USER_COPY.stat().st_mtime_ns if USER_COPY.exists() else None


def test_molecule_default_scenario(kube_cluster):  # pylint: disable=unused-argument
    env = ansible_env({"MATRIX_STACK_CLUSTER_PROVIDER": os.environ.get("MATRIX_STACK_CLUSTER_PROVIDER", "local")})
    before = copy_state()
    proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", "default"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "idempotence" in output.lower()
    # Nothing installed: no prerun, and the one matrix.stack every playbook saw is this checkout.
    assert "prerun" not in output and "Another version of 'matrix.stack'" not in output, output[-6000:]
    assert copy_state() == before, f"molecule wrote {USER_COPY}"
