"""Unit tests for the matrix_backup module: argument spec vs documentation (and matrix_secret's), prune/verify through the
module entry point on real repositories (no database needed)."""

import importlib
import json
import os

import pytest
import yaml

from ..module_utils._backup_helpers import make_set, new_repo

from ansible.module_utils.testing import patch_module_args  # pylint: disable=wrong-import-order
from ansible_collections.matrix.stack.plugins.modules import matrix_backup, matrix_secret


def run_module(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            matrix_backup.main()
    out = json.loads(capsys.readouterr().out)
    return exc.value.code, out


def _compare(spec, doc, path=""):
    assert set(spec) == set(doc), "options differ at %s: %s" % (path, set(spec) ^ set(doc))
    for name, s in spec.items():
        d = doc[name]
        assert s.get("type", "str") == d.get("type", "str"), path + name
        assert s.get("default") == d.get("default"), "default of %s%s" % (path, name)
        assert bool(s.get("required")) == bool(d.get("required")), path + name
        assert s.get("choices") == d.get("choices"), path + name
        assert s.get("elements") == d.get("elements"), path + name
        assert sorted(s.get("aliases") or []) == sorted(d.get("aliases") or []), path + name
        if "options" in s:
            _compare(s["options"], d["suboptions"], path + name + ".")


def documented_options(module):
    """The module's options plus those of its documentation fragments (kubernetes.core's included)."""
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = dict(doc["options"])
    for fragment in doc.get("extends_documentation_fragment") or []:
        namespace, collection, name = fragment.split(".")
        loaded = importlib.import_module("ansible_collections.%s.%s.plugins.doc_fragments.%s" % (namespace, collection, name))
        options.update(yaml.safe_load(loaded.ModuleDocFragment.DOCUMENTATION)["options"])
    return options


@pytest.mark.parametrize("module", [matrix_backup, matrix_secret], ids=["matrix_backup", "matrix_secret"])
def test_documentation_matches_argument_spec(module):
    assert "kubernetes.core.k8s_auth_options" in yaml.safe_load(module.DOCUMENTATION)["extends_documentation_fragment"]
    _compare(module.argument_spec(), documented_options(module))
    yaml.safe_load(module.EXAMPLES)
    yaml.safe_load(module.RETURN)


def test_secret_options_are_no_log():
    spec = matrix_backup.argument_spec()
    assert spec["database"]["options"]["password"]["no_log"]
    assert spec["encryption"]["options"]["identities"]["no_log"]


def test_prune_check_mode_then_real(tmp_path, capsys):
    repo = new_repo(tmp_path)
    make_set(repo, "20260101T030000Z", media={"local_content/aa/bb/old": b"old"})
    make_set(repo, "20260102T030000Z", media={"local_content/aa/bb/old": b"old", "local_content/aa/bb/new": b"new"})
    make_set(repo, "20260103T030000Z", media={"local_content/aa/bb/new": b"new"})
    args = {"mode": "prune", "dest": repo.root, "retention": {"keep_last": 1}, "_ansible_check_mode": True,
            "_ansible_diff": True}
    rc, out = run_module(args, capsys)
    assert rc == 0 and out["changed"] and out["deleted"] == ["20260101T030000Z", "20260102T030000Z"]
    assert out["media_objects_deleted"] == 1
    assert "20260101T030000Z" in out["diff"]["before"] and "20260101T030000Z" not in out["diff"]["after"]
    assert len(repo.list_sets()) == 3          # check mode touched nothing
    args.pop("_ansible_check_mode")
    rc, out = run_module(args, capsys)
    assert rc == 0 and out["changed"]
    assert repo.list_sets() == ["20260103T030000Z"]
    assert len(list(repo.all_objects())) == 1
    rc, out = run_module(args, capsys)
    assert rc == 0 and not out["changed"]


def test_prune_requires_a_rule(tmp_path, capsys):
    repo = new_repo(tmp_path)
    make_set(repo, "20260101T030000Z")
    rc, out = run_module({"mode": "prune", "dest": repo.root, "retention": {}}, capsys)
    assert rc == 1 and "at least one of" in out["msg"]


def test_verify_missing_repository_fails(tmp_path, capsys):
    rc, out = run_module({"mode": "verify", "dest": str(tmp_path / "none")}, capsys)
    assert rc == 1 and "not a backup repository" in out["msg"]


def test_backup_refuses_unencrypted_secrets(tmp_path, capsys):
    key = tmp_path / "signing.key"
    key.write_text("ed25519 a_abc xyz\n")
    rc, out = run_module({"mode": "backup", "dest": str(tmp_path / "repo"), "server_name": "x.test",
                          "database": {"host": "127.0.0.1", "port": 1},
                          "secrets": {"files": [str(key)]}}, capsys)
    assert rc == 1 and "unencrypted" in out["msg"]
    assert not os.path.exists(tmp_path / "repo")


def test_media_encrypt_needs_recipients(tmp_path, capsys):
    rc, out = run_module({"mode": "backup", "dest": str(tmp_path / "repo"), "server_name": "x.test",
                          "database": {"host": "127.0.0.1", "port": 1},
                          "media": {"path": str(tmp_path), "encrypt": True}}, capsys)
    assert rc == 1 and "recipients" in out["msg"]
