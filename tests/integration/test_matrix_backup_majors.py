"""matrix_backup on real PostgreSQL servers of every supported major (15-18, laid out by scripts/setup-postgres):

* backup -> restore (which verifies first) round trip on each major, with the client binaries of the server's
  major found by the module itself (Debian's directory through the default search where it exists);
* the major upgrade of docs/upgrading.md (backup on the old major, restore into a fresh server of the next one),
  for every pair of consecutive majors;
* a dump of a newer major is refused by an older server before anything is touched (and its positive twin);
* a server whose major has no client binaries gives an error naming the major and the package to install.

One server per major for the whole module; one ansible-playbook start per scenario.
"""

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.backup import PG_SEARCH, make_small_db, supported_pg_majors
from helpers.services import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "tests" / "integration" / "files" / "matrix_backup_runs.yml"
PYTHON = str(REPO / ".work/venv/bin/python")
MAJORS = supported_pg_majors()
SERVER = "majors.test"


def major(version):
    return int(str(version).split(".", 1)[0].split("beta", 1)[0])


@pytest.fixture(scope="module")
def servers():
    started = {m: PostgresServer(major=m) for m in MAJORS}
    try:
        with ThreadPoolExecutor(len(MAJORS)) as pool:      # initdb and start overlap
            list(pool.map(lambda server: server.start(), started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


def run_many(run_playbook, tmp_path, runs):
    """Run the module once per item (one playbook); returns the list of results."""
    out = tmp_path / ("results-%s.json" % secrets.token_hex(3))
    res = run_playbook(RUNS, extra_vars={"mb_runs": runs, "mb_result_file": str(out), "ansible_python_interpreter": PYTHON})
    assert res.rc == 0, res.stdout[-3000:]
    return json.loads(out.read_text())


def database(server, name, search=PG_SEARCH):
    args = {"host": server.host, "port": server.port, "user": "postgres", "password": server.password, "name": name}
    if search is not None:
        args["pg_bin_search"] = search
    return args


def backup(dest, server, name, **kw):
    return {"mode": "backup", "dest": str(dest), "server_name": SERVER, "database": database(server, name, **kw)}


def restore(dest, server, name, force=False, **kw):
    return {"mode": "restore", "dest": str(dest), "server_name": SERVER, "force": force,
            "database": database(server, name, **kw)}


def ok(result):
    assert not result.get("failed"), result.get("msg")
    return result


def manifest_of(result):
    return json.loads((Path(result["path"]) / "manifest.json").read_text())["postgresql"]


def restored_rows(server, name):
    return (server.psql("SELECT count(*) FROM t", dbname=name).strip(),
            server.psql("SELECT count(*) FROM e2e_one_time_keys_json", dbname=name).strip())


@pytest.mark.parametrize("pg_major", MAJORS)
def test_round_trip_on_each_major(servers, run_playbook, tmp_path, pg_major):
    pg = servers[pg_major]
    # where Debian ships this major, the module's default search finds it (/usr/lib/postgresql/<major>/bin)
    search = None if Path("/usr/lib/postgresql/%d/bin/pg_dump" % pg_major).exists() else PG_SEARCH
    src, target = make_small_db(pg, "rt"), "rt_restored_%s" % secrets.token_hex(3)
    dest = tmp_path / "repo"
    try:
        # the restore verifies the set first (pg_restore --list with a client of the dump's major)
        b, r = run_many(run_playbook, tmp_path, [backup(dest, pg, src, search=search), restore(dest, pg, target, search=search)])
        facts = manifest_of(ok(b))
        assert major(facts["server_version"]) == major(facts["pg_dump_version"]) == pg_major
        assert ok(r)["verify"]["bytes_checked"] > 0
        assert major(ok(r)["postgresql"]["pg_restore_version"]) == r["postgresql"]["dump_major"] == pg_major
        assert restored_rows(pg, target) == ("100", "0")
    finally:
        pg.drop_database(src)
        pg.drop_database(target)


@pytest.mark.parametrize("old,new", list(zip(MAJORS, MAJORS[1:])), ids=str)
def test_major_upgrade_through_backup_and_restore(servers, run_playbook, tmp_path, old, new):
    """docs/upgrading.md: back up on the old major, restore the set into a fresh server of the new major, back
    up again on the new major."""
    src = make_small_db(servers[old], "up")
    target = "up_%s" % secrets.token_hex(3)
    try:
        b_old, r_new, b_new, v_new = run_many(run_playbook, tmp_path, [
            backup(tmp_path / "repo", servers[old], src),
            restore(tmp_path / "repo", servers[new], target),
            backup(tmp_path / "repo", servers[new], target),
            {"mode": "verify", "dest": str(tmp_path / "repo"), "set": "all", "database": {"pg_bin_search": PG_SEARCH}}])
        assert major(manifest_of(ok(b_old))["server_version"]) == old
        facts = ok(r_new)["postgresql"]
        assert facts["dump_major"] == old and major(facts["server_version"]) == major(facts["pg_restore_version"]) == new
        assert restored_rows(servers[new], target) == ("100", "0")
        assert major(manifest_of(ok(b_new))["server_version"]) == new
        assert ok(v_new)["ok"] and len(v_new["sets"]) == 2
    finally:
        servers[old].drop_database(src)
        servers[new].drop_database(target)


def test_dump_from_a_newer_major_is_refused_by_an_older_server(servers, run_playbook, tmp_path):
    newer, older = servers[MAJORS[-1]], servers[MAJORS[-2]]
    src_new, src_old = make_small_db(newer, "nw"), make_small_db(older, "od")
    # non-empty targets on the older server: restoring with force would drop them
    keep, twin = make_small_db(older, "keep"), make_small_db(older, "twin")
    older.psql("INSERT INTO t VALUES (-1)", dbname=keep)
    try:
        _b1, _b2, refused, accepted = run_many(run_playbook, tmp_path, [
            backup(tmp_path / "new", newer, src_new),
            backup(tmp_path / "old", older, src_old),
            restore(tmp_path / "new", older, keep, force=True),
            restore(tmp_path / "old", older, twin, force=True)])
        assert refused.get("failed")
        msg = refused["msg"]
        assert "holds a dump of PostgreSQL %d" % MAJORS[-1] in msg and "runs PostgreSQL %d." % MAJORS[-2] in msg, msg
        assert "Nothing was changed" in msg
        # nothing touched: the database still has its extra row
        assert older.psql("SELECT count(*) FROM t", dbname=keep).strip() == "101"
        # positive twin: a dump of the server's own major restores over the same kind of target
        assert ok(accepted)["postgresql"]["dump_major"] == MAJORS[-2]
        assert restored_rows(older, twin) == ("100", "0")
    finally:
        for server, name in ((newer, src_new), (older, src_old), (older, keep), (older, twin)):
            server.drop_database(name)


def test_missing_client_major_is_named_with_what_to_install(servers, run_playbook, tmp_path):
    newest = MAJORS[-1]
    pg = servers[newest]
    src = make_small_db(pg, "mc")
    only_oldest = [str(Path(PG_SEARCH[0].format(major=MAJORS[0])))]
    try:
        missing, found = run_many(run_playbook, tmp_path, [
            backup(tmp_path / "a", pg, src, search=only_oldest),
            backup(tmp_path / "b", pg, src)])
        assert missing.get("failed")
        assert "PostgreSQL %d client binaries" % newest in missing["msg"], missing["msg"]
        assert "postgresql-client-%d" % newest in missing["msg"]
        assert not (tmp_path / "a" / "sets").exists() or not any((tmp_path / "a" / "sets").iterdir())
        assert major(manifest_of(ok(found))["pg_dump_version"]) == newest
    finally:
        pg.drop_database(src)
