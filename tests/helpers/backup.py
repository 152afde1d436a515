"""Shared pieces of the matrix_backup integration tests."""

import hashlib
import json
import secrets
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "integration" / "files" / "matrix_backup_run.yml"
PYTHON = str(REPO / ".work/venv/bin/python")
# matrix_backup's database.pg_bin_search for the binaries of every major laid out by scripts/setup-postgres
PG_SEARCH = [str(REPO / ".work" / "postgresql" / "{major}" / "bin")]


def supported_pg_majors():
    """The PostgreSQL majors pinned in roles/backup/files/postgresql-binaries.txt, oldest first."""
    lines = (REPO / "roles" / "backup" / "files" / "postgresql-binaries.txt").read_text().splitlines()
    return sorted(int(line.split()[0]) for line in lines if line[:1].isdigit())


def run_module(run_playbook, tmp_path, args, expect_ok=True, check=False):
    """Run matrix_backup once through Ansible; returns (module result, playbook result)."""
    out_file = tmp_path / ("r-%s.json" % secrets.token_hex(3))
    res = run_playbook(RUN, extra_vars={"mb_args": args, "mb_result_file": str(out_file), "ansible_python_interpreter": PYTHON},
                       check=check)
    assert res.rc == 0, res.stdout[-3000:]
    out = json.loads(out_file.read_text())
    assert bool(out.get("failed")) != expect_ok, out.get("msg")
    return out, res


def media_tree(root):
    """{rel path: sha256} of the local_content and local_thumbnails files under root."""
    out = {}
    for top in ("local_content", "local_thumbnails"):
        for p in (Path(root) / top).rglob("*") if (Path(root) / top).exists() else []:
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_small_db(postgres_server, prefix):
    """A database with 100 rows in t and one one-time key (the dump must leave the keys out)."""
    name = "%s_%s" % (prefix, secrets.token_hex(3))
    postgres_server.create_database(name)
    postgres_server.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100);"
                         "CREATE TABLE e2e_one_time_keys_json (k text); INSERT INTO e2e_one_time_keys_json VALUES ('otk')",
                         dbname=name)
    return name
