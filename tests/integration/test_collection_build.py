"""The collection builds into a tarball that installs into a fresh collections path and documents itself."""

import subprocess
import tarfile

import yaml

from conftest import REPO, VENV_BIN, ansible_env

MODULES = ("matrix_secret", "matrix_user", "matrix_user_info", "matrix_backup")


def test_build_install_and_ansible_doc(tmp_path):
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, text=True)
    tarball = tmp_path / f"matrix-stack-{version}.tar.gz"
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "MANIFEST.json" in names
    assert not [name for name in names if name.startswith((".work", "tests/output", ".git/"))]
    assert "meta/runtime.yml" in names and "roles/synapse/tasks/main.yml" in names

    collections = tmp_path / "collections"
    # Only the fresh path is configured, so the repo's own link cannot count as "already installed".
    env = ansible_env({"ANSIBLE_COLLECTIONS_PATH": str(collections)})
    # --no-deps: kubernetes.core comes from the `ansible` package on the default search path.
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections),
                    str(tarball)], env=env, check=True, capture_output=True, text=True)
    assert (collections / "ansible_collections" / "matrix" / "stack" / "MANIFEST.json").is_file()

    listing = subprocess.run([str(VENV_BIN / "ansible-doc"), "-l", "matrix.stack"], env=env, check=True,
                             capture_output=True, text=True).stdout
    for module in MODULES:
        assert f"matrix.stack.{module}" in listing
    for module in MODULES:
        doc = subprocess.run([str(VENV_BIN / "ansible-doc"), f"matrix.stack.{module}"], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert "EXAMPLES:" in doc and "RETURN VALUES:" in doc
