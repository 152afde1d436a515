"""Unit tests of the choice of PostgreSQL client binaries by major (fake binaries that print a version; the real
binaries of every major are exercised by tests/integration/test_matrix_backup_majors.py)."""

import os

import pytest

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg_clients as pgc
from ansible_collections.matrix.stack.plugins.module_utils.backup import restore
from ansible_collections.matrix.stack.plugins.module_utils.backup.manifest import dump_major
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError


def fake_clients(directory, version, tools=pgc.TOOLS):
    os.makedirs(directory, exist_ok=True)
    for tool in tools:
        path = os.path.join(directory, tool)
        with open(path, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\necho '%s (PostgreSQL) %s'\n" % (tool, version))
        os.chmod(path, 0o755)
    return str(directory)


@pytest.mark.parametrize("text,major", [("17.11", 17), ("15.18 (Debian 15.18-0+deb12u1)", 15), ("18beta1", 18),
                                        ("170011", 17), ("", None), (None, None)])
def test_major_of(text, major):
    assert pgc.major_of(text) == major


def test_parse_client_version():
    assert pgc.parse_client_version("pg_dump (PostgreSQL) 17.11\n") == (17, "17.11")
    assert pgc.parse_client_version("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == (15, "15.18")
    assert pgc.parse_client_version("bash: pg_dump: not found") is None


def test_exact_major_first_in_search_order_then_path(tmp_path):
    pattern = str(tmp_path / "pg" / "{major}" / "bin")
    for major, version in ((15, "15.18"), (16, "16.15"), (17, "17.11"), (18, "18.6")):
        fake_clients(pattern.format(major=major), version)
    on_path = fake_clients(tmp_path / "path", "17.2")
    finder = pgc.ClientFinder(search=[pattern], path=on_path)
    for major in (15, 16, 17, 18):
        assert finder.find(major) == pattern.format(major=major)
    # only on PATH: found there
    assert pgc.ClientFinder(search=[], path=on_path).find(17) == on_path
    # the newest psql asks the server its version
    assert finder.psql_dir() == pattern.format(major=18)


def test_oldest_newer_major_when_the_exact_one_is_missing(tmp_path):
    pattern = str(tmp_path / "pg" / "{major}" / "bin")
    fake_clients(pattern.format(major=18), "18.6")
    fake_clients(pattern.format(major=17), "17.11")
    assert pgc.ClientFinder(search=[pattern], path="").find(16) == pattern.format(major=17)
    assert pgc.ClientFinder(search=[pattern], path="").find(None) == pattern.format(major=18)


def test_missing_major_names_it_and_what_to_install(tmp_path):
    pattern = str(tmp_path / "pg" / "{major}" / "bin")
    fake_clients(pattern.format(major=15), "15.18")
    with pytest.raises(BackupError) as err:
        pgc.ClientFinder(search=[pattern], path="").find(17, why="the server db:5432 (PostgreSQL 17.11)")
    msg = str(err.value)
    assert "PostgreSQL 17 client binaries" in msg and "PostgreSQL 17.11" in msg
    assert "postgresql-client-17" in msg and "POSTGRES_MAJOR=17" in msg and "database.pg_bin_dir" in msg
    assert "found only PostgreSQL 15" in msg and pattern.format(major=17) in msg
    # positive twin: the same finder finds 15
    assert pgc.ClientFinder(search=[pattern], path="").find(15) == pattern.format(major=15)


def test_a_directory_missing_a_tool_is_skipped(tmp_path):
    pattern = str(tmp_path / "pg" / "{major}" / "bin")
    fake_clients(pattern.format(major=17), "17.11", tools=("psql", "pg_restore"))
    finder = pgc.ClientFinder(search=[pattern], path="")
    assert finder.find(17, ("pg_restore",)) == pattern.format(major=17)
    with pytest.raises(BackupError, match="PostgreSQL 17 client binaries"):
        finder.find(17)


def test_explicit_dir_is_used_as_given_but_refused_when_too_old(tmp_path):
    old = fake_clients(tmp_path / "old", "15.18")
    new = fake_clients(tmp_path / "new", "18.6")
    assert pgc.ClientFinder(pg_bin_dir=new).find(17) == new
    assert pgc.ClientFinder(pg_bin_dir=old).find(15) == old
    with pytest.raises(BackupError, match=r"pg_bin_dir .*old has PostgreSQL 15 client binaries, but the dump needs "
                                          r"PostgreSQL 17 or newer"):
        pgc.ClientFinder(pg_bin_dir=old).find(17, why="the dump")
    with pytest.raises(BackupError, match="(psql|pg_dump) not found in pg_bin_dir"):
        pgc.ClientFinder(pg_bin_dir=str(tmp_path / "nothing")).find(17)


def test_default_search_covers_debian_pgdg_and_the_image():
    assert pgc.DEFAULT_SEARCH == ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin", "/opt/postgresql/{major}/bin")


@pytest.mark.parametrize("pgm,major", [({"server_version": "17.11"}, 17),
                                       ({"server_version": "16.4", "pg_dump_version": "18.6"}, 18),
                                       ({"server_version": "15.18 (Debian 15.18-0+deb12u1)"}, 15), ({}, None)])
def test_dump_major_from_the_manifest(pgm, major):
    assert dump_major({"postgresql": pgm}) == major


class _Target:
    def __init__(self, server, pg_restore):
        self.server, self.pg_restore = server, pg_restore

    def server_version(self):
        return self.server

    def client_version(self, tool):
        assert tool == "pg_restore"
        return self.pg_restore

    def describe(self):
        return "target"


def test_restore_into_an_older_major_is_refused():
    manifest = {"postgresql": {"server_version": "18.6", "pg_dump_version": "18.6"}}
    with pytest.raises(BackupError, match=r"set S holds a dump of PostgreSQL 18 .*target runs PostgreSQL 17.11.*"
                                          r"Nothing was changed"):
        restore.check_restore_major(_Target("17.11", "17.11"), manifest, "S")
    with pytest.raises(BackupError, match="pg_restore .* is version 17.11 and cannot read it"):
        restore.check_restore_major(_Target("18.6", "17.11"), manifest, "S")
    # positive twins: same and newer majors
    assert restore.check_restore_major(_Target("18.6", "18.6"), manifest, "S")["dump_major"] == 18
    assert restore.check_restore_major(_Target("19.0", "19.0"), manifest, "S")["pg_restore_version"] == "19.0"


def _default_postgres_major():
    import yaml  # pylint: disable=import-outside-toplevel
    tag = yaml.safe_load((REPO / "roles" / "postgres" / "defaults" / "main.yml").read_text())["postgres_image_tag"]
    return pgc.major_of(tag)


def test_backup_image_defaults_to_the_default_postgres_major_and_it_is_pinned():
    import re  # pylint: disable=import-outside-toplevel
    containerfile = (REPO / "roles" / "backup" / "files" / "Containerfile").read_text()
    arg = re.search(r"^ARG POSTGRES_MAJOR=(\d+)$", containerfile, re.M)
    assert arg and int(arg.group(1)) == _default_postgres_major()
    pins = (REPO / "roles" / "backup" / "files" / "postgresql-binaries.txt").read_text().splitlines()
    assert _default_postgres_major() in [int(line.split()[0]) for line in pins if line[:1].isdigit()]


def test_no_client_path_or_package_of_one_major_is_hardcoded():
    import re  # pylint: disable=import-outside-toplevel
    pattern = re.compile(r"/usr/lib/postgresql/\d|postgresql-client-\d|pgsql-\d")
    assert pattern.search("pg_bin_dir: /usr/lib/postgresql/15/bin") and pattern.search("apt-get install postgresql-client-17")
    offenders, scanned = [], 0
    for top in ("plugins", "roles", "playbooks", "inventories"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and path.suffix in ("", ".py", ".yml", ".yaml", ".j2", ".json"):
                scanned += 1
                offenders += ["%s: %s" % (path.relative_to(REPO), m.group(0))
                              for m in pattern.finditer(path.read_text(errors="replace"))]
    assert scanned > 50 and offenders == []
