"""Unit tests for the pg_dump / pg_restore command construction (no database needed)."""

import os

import pytest

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError

from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import ClientFinder

# the newest client laid out by scripts/setup-postgres, if any
try:
    PG_BIN = ClientFinder(search=[str(REPO / ".work" / "postgresql" / "{major}" / "bin")], path="").find(None)
except BackupError:
    PG_BIN = "/nonexistent"


def test_dump_follows_synapse_guidance():
    args = pg.dump_args("synapse", user="synapse")
    assert args[:2] == ["pg_dump", "-Fc"]
    assert "--exclude-table-data=e2e_one_time_keys_json" in args
    assert args[-2:] == ["-d", "synapse"]
    assert "--compress=3" in pg.dump_args("s", compress=3)


def test_restore_args_parallel_only_from_file():
    assert "--jobs=4" in pg.restore_args("s", jobs=4, path="/x/db.dump")
    assert not any(a.startswith("--jobs") for a in pg.restore_args("s", jobs=4))
    args = pg.restore_args("s", user="postgres", role="synapse")
    assert "--role=synapse" in args and "--no-owner" in args and "--exit-on-error" in args


def test_create_database_sql():
    sql = pg.create_db_sql("synapse", "synapse_user")
    assert sql == ('CREATE DATABASE "synapse" OWNER "synapse_user" ENCODING \'UTF8\' LC_COLLATE \'C\' '
                   "LC_CTYPE 'C' TEMPLATE template0")
    for bad in ('x"; DROP DATABASE y; --', "", "a b"):
        with pytest.raises(BackupError):
            pg.quote_ident(bad)


@pytest.mark.skipif(not os.path.exists(PG_BIN + "/pg_restore"), reason="no PostgreSQL client in .work (make setup)")
def test_list_dump_rejects_garbage():
    def feed(pipe):
        pipe.write(b"this is not a custom-format dump" * 100)
    with pytest.raises(BackupError, match="pg_restore --list rejected"):
        pg.list_dump(PG_BIN + "/pg_restore", feed)


def test_direct_password_goes_to_environment_only():
    d = pg.DirectPg("127.0.0.1", 5432, "synapse", "s3cret", "synapse", PG_BIN)
    env = d._env()  # pylint: disable=protected-access
    assert env["PGPASSWORD"] == "s3cret" and env["PGUSER"] == "synapse"
    assert "s3cret" not in " ".join(pg.dump_args("synapse"))


def test_pipe_reader_propagates_errors():
    def boom(w):
        w.write(b"abc")
        raise BackupError("decrypt failed")
    r = pg._pipe_reader(boom)  # pylint: disable=protected-access
    assert r.read() == b"abc"
    r.close()
    with pytest.raises(BackupError, match="decrypt failed"):
        r.join()


def test_missing_binary_dir():
    d = pg.DirectPg("127.0.0.1", 1, "u", None, "db", "/nonexistent/bin")
    with pytest.raises(BackupError, match="not found in pg_bin_dir"):
        d.dump()
