# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which PostgreSQL client binaries (psql, pg_dump, pg_restore) to run for a given PostgreSQL major.

``pg_dump`` must be at least the server's major, ``pg_restore`` at least the major of the ``pg_dump`` that wrote
the archive. The binaries of exactly the needed major are preferred, else the oldest newer ones. Search order:

1. an explicit directory (the module's ``database.pg_bin_dir``), used as given and refused when too old;
2. each pattern of the search list with ``{major}`` replaced (default ``DEFAULT_SEARCH``: Debian/Ubuntu and the
   PGDG apt packages, the PGDG RPM packages, the backup image's ``/opt/postgresql/<major>``);
3. the directories of ``PATH``.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError

DEFAULT_SEARCH = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin", "/opt/postgresql/{major}/bin")
TOOLS = ("psql", "pg_dump", "pg_restore")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.\d+)?")


def major_of(version):
    """17 for '17.11', '17.6 (Debian 17.6-1.pgdg120+1)', '17beta1' or 170011; None when unknown."""
    text = str(version or "").strip()
    if text.isdigit() and len(text) >= 5:        # server_version_num
        return int(text) // 10000
    m = re.match(r"(\d+)", text)
    return int(m.group(1)) if m else None


def parse_client_version(text):
    """(major, version) from a client's ``--version`` output ('pg_dump (PostgreSQL) 17.11'), or None."""
    m = _VERSION_RE.search(text or "")
    return (int(m.group(1)), m.group(0).split(None, 1)[1]) if m else None


def install_hint(major):
    return ("install the PostgreSQL %(m)s client on the host that runs matrix_backup (Debian/Ubuntu: apt-get install "
            "postgresql-client-%(m)s, from the PGDG apt repository when the release lacks it; RHEL/Fedora: dnf install "
            "postgresql%(m)s from the PGDG repository; the backup image: build it with --build-arg POSTGRES_MAJOR=%(m)s), "
            "or point database.pg_bin_dir at its bin directory" % {"m": major})


class ClientFinder:
    def __init__(self, pg_bin_dir=None, search=None, path=None):
        self.pg_bin_dir = pg_bin_dir or None
        self.search = list(DEFAULT_SEARCH if search is None else search)
        self.path = os.environ.get("PATH", "") if path is None else path
        self._versions = {}

    def version(self, binary):
        """(major, version text) of one binary, from ``binary --version``; None if it does not run."""
        if binary not in self._versions:
            try:
                p = subprocess.run([binary, "--version"], capture_output=True, check=False, timeout=30)
                got = parse_client_version(p.stdout.decode("utf-8", "replace")) if p.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                got = None
            self._versions[binary] = got
        return self._versions[binary]

    def _dir_major(self, directory, tools):
        """The major of the tools in directory, or None when one is missing or does not run."""
        paths = [os.path.join(directory, t) for t in tools]
        if not all(os.path.isfile(p) and os.access(p, os.X_OK) for p in paths):
            return None
        majors = {(self.version(p) or (None,))[0] for p in paths}
        return majors.pop() if len(majors) == 1 else None

    def searched(self, major):
        return [p.format(major=major) for p in self.search] + ["PATH"]

    def candidates(self):
        """Directories in search order, each pattern expanded to every major installed there, newest first."""
        seen = set()
        dirs = []
        for pattern in self.search:
            if "{major}" in pattern:
                found = glob.glob(pattern.replace("{major}", "*"))
                head, _sep, tail = pattern.partition("{major}")
                found = [d for d in found if d[len(head):len(d) - len(tail)].isdigit()]
                dirs += sorted(found, key=lambda d: -int(d[len(head):len(d) - len(tail)]))
            else:
                dirs.append(pattern)
        dirs += [d for d in self.path.split(os.pathsep) if d]
        for d in dirs:
            real = os.path.realpath(d)
            if real not in seen and os.path.isdir(real):
                seen.add(real)
                yield d

    def _explicit(self, major, tools, why):
        for tool in tools:
            if not os.path.isfile(os.path.join(self.pg_bin_dir, tool)):
                raise BackupError("%s not found in pg_bin_dir %s" % (tool, self.pg_bin_dir))
        got = self._dir_major(self.pg_bin_dir, tools)
        if got is None:
            raise BackupError("the PostgreSQL client binaries in pg_bin_dir %s (%s) do not run or are of different "
                              "versions" % (self.pg_bin_dir, ", ".join(tools)))
        if major is not None and got < major:
            raise BackupError("pg_bin_dir %s has PostgreSQL %d client binaries, but %s needs PostgreSQL %d or newer: %s "
                              "(or leave pg_bin_dir unset to search %s)"
                              % (self.pg_bin_dir, got, why, major, install_hint(major), ", ".join(self.searched(major))))
        return self.pg_bin_dir

    def find(self, major, tools=TOOLS, why=None):
        """Directory holding ``tools`` of PostgreSQL ``major`` (else the oldest newer major; the newest when major
        is None); BackupError if none."""
        why = why or "this server"
        if self.pg_bin_dir:
            return self._explicit(major, tools, why)
        if major is None:
            return self._newest(tools)
        others = []
        for d in self.candidates():
            got = self._dir_major(d, tools)
            if got == major:
                return d
            if got is not None:
                others.append((got, d))
        newer = [o for o in others if o[0] > major]
        if newer:
            return min(newer, key=lambda o: o[0])[1]
        found = "; found only %s" % ", ".join("PostgreSQL %d in %s" % o for o in others) if others else ""
        raise BackupError("PostgreSQL %d client binaries (%s) not found for %s: searched %s%s. To fix it, %s"
                          % (major, ", ".join(tools), why, ", ".join(self.searched(major)), found, install_hint(major)))

    def _newest(self, tools):
        best = None
        for d in self.candidates():
            got = self._dir_major(d, tools)
            if got is not None and (best is None or got > best[0]):
                best = (got, d)
        if best is None:
            raise BackupError("no PostgreSQL client binaries (%s) found (searched %s): install the PostgreSQL client "
                              "of your server's major, or set database.pg_bin_dir"
                              % (", ".join(tools), ", ".join(self.searched("<major>"))))
        return best[1]

    def psql_dir(self):
        """The directory of the newest psql available (to ask a server its version before its own major's
        binaries are chosen)."""
        if self.pg_bin_dir:
            return self._explicit(None, ("psql",), "")
        return self._newest(("psql",))
