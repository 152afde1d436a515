"""The repository-wide lint gates of `make test` can fail: a defect planted in a copy of the repository is
reported by yamllint and ansible-lint run exactly as scripts/test runs them, file by file, and nothing else is.

(The manifest gates, checkov and kubernetes-validate, are proven the same way in test_render.py.)
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".work" / "venv" / "bin"

pytestmark = pytest.mark.integration

# path -> (content, what the gate must say about it)
YAMLLINT_PLANTS = {
    "roles/element/defaults/planted.yml": ("---\nelement_planted: yes\n", "truthy"),
    "inventories/test/minimal/group_vars/all/planted.yml": ("---\nkey: 1\nkey: 2\n", "key-duplicates"),
    "playbooks/planted.yml": ("---\n- hosts: localhost   \n  tasks: []\n", "trailing-spaces"),
    "molecule/default/planted.yml": ("---\nvalue: 0755\n", "octal-values"),
}
ANSIBLE_LINT_PLANTS = {
    "roles/element/tasks/planted.yml": ("---\n- ansible.builtin.shell: cat /etc/hostname\n", "name[missing]"),
    "playbooks/planted.yml": (
        "---\n- name: Planted\n  hosts: localhost\n  tasks:\n    - name: Planted task\n      command: /bin/true\n",
        "fqcn[action-core]"),
    "molecule/default/planted.yml": (
        "---\n- name: Planted\n  hosts: localhost\n  tasks:\n    - name: planted lower case\n"
        "      ansible.builtin.command: /bin/true\n      changed_when: false\n", "name[casing]"),
}


def repo_copy(tmp_path, plants):
    """The files git would hand to the gates (tracked and untracked-not-ignored), plus the planted ones, as a repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    dest = tmp_path / "repo"
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for rel, (content, _rule) in plants.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(content)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


def run_gate(argv, cwd):
    env = {**os.environ, "NO_COLOR": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".work" / "collections")}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, check=False, timeout=600)


def reported_files(output, pattern):
    return {m.group(1) for m in re.finditer(pattern, output, re.MULTILINE)}


def test_yamllint_reports_every_planted_defect(tmp_path):
    copy = repo_copy(tmp_path, YAMLLINT_PLANTS)
    proc = run_gate([str(VENV_BIN / "yamllint"), "--strict", "-f", "parsable", "."], copy)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for rel, (_content, rule) in YAMLLINT_PLANTS.items():
        assert re.search(rf"^\./{re.escape(rel)}:\d+:\d+: \[(error|warning)\] .*\({rule}\)$", output, re.MULTILINE), output
    # Positive twin in the same run: every file that was not planted passes.
    assert reported_files(output, r"^\./([^:]+):\d+:\d+:") == set(YAMLLINT_PLANTS), output


def test_ansible_lint_reports_every_planted_defect(tmp_path):
    copy = repo_copy(tmp_path, ANSIBLE_LINT_PLANTS)
    proc = run_gate([str(VENV_BIN / "ansible-lint"), "--offline", "--profile", "production", "-f", "pep8", "--nocolor"], copy)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for rel, (_content, rule) in ANSIBLE_LINT_PLANTS.items():
        assert re.search(rf"^{re.escape(rel)}:\d+(:\d+)?: {re.escape(rule)}", output, re.MULTILINE), output
    assert reported_files(output, r"^([^:\s]+\.ya?ml):\d+(?::\d+)?: [a-z-]+\S*: ") == set(ANSIBLE_LINT_PLANTS), output
