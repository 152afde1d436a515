# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL dump / restore for Synapse, following Synapse's backup guidance.

* dump: ``pg_dump -Fc --exclude-table-data=e2e_one_time_keys_json``, streamed (no temp copy);
* restore: fresh database ``ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0``,
  ``pg_restore`` (``--jobs`` when reading a plain local file), then ``TRUNCATE e2e_one_time_keys_json``.

Two kinds of source/target: ``DirectPg`` (host/port/user/password; the PostgreSQL client binaries
run here, those of the server's major, found by ``_pg_clients``) and ``PodPg`` (the pod's own binaries run
inside the PostgreSQL pod, reached through the Kubernetes exec API with local-socket authentication; data is
streamed over the websocket).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError
from ansible_collections.matrix.stack.plugins.module_utils.backup.pod import PodEndpoint
from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import ClientFinder, major_of, parse_client_version
from ansible_collections.matrix.stack.plugins.module_utils.common.streams import ReadStream

EXCLUDE_DATA = ["e2e_one_time_keys_json"]
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def quote_ident(name):
    if not IDENT_RE.match(name or ""):
        raise BackupError("unsupported PostgreSQL identifier %r" % name)
    return '"%s"' % name


def dump_args(dbname, user=None, compress=None):
    args = ["pg_dump", "-Fc", "--no-password"]
    args += ["--exclude-table-data=%s" % t for t in EXCLUDE_DATA]
    if compress is not None:
        args.append("--compress=%d" % compress)
    if user:
        args += ["-U", user]
    args += ["-d", dbname]
    return args


def restore_args(dbname, user=None, role=None, jobs=None, path=None):
    args = ["pg_restore", "--no-password", "--no-owner", "--no-acl", "--exit-on-error", "-d", dbname]
    if user:
        args += ["-U", user]
    if role:
        args += ["--role=%s" % role]
    if jobs and jobs > 1 and path:
        args += ["--jobs=%d" % jobs]
    if path:
        args.append(path)
    return args


def create_db_sql(dbname, owner):
    return ("CREATE DATABASE %s OWNER %s ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            % (quote_ident(dbname), quote_ident(owner)))


SERVER_VERSION_SQL = "SHOW server_version"

EMPTY_SQL = ("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
             "WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') "
             "AND n.nspname NOT LIKE 'pg_toast%'")


class _ProcStream(ReadStream):
    """Reader over a local process's stdout; wait() raises BackupError on failure."""

    def __init__(self, args, env, what):
        self.what = what
        self.err = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, env=env)
        except OSError as e:
            raise BackupError("cannot run %s: %s" % (args[0], e.strerror)) from e

    def read(self, n=-1):
        return self.proc.stdout.read(n)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def wait(self):
        self.proc.stdout.close()
        rc = self.proc.wait()
        self.err.seek(0)
        err = self.err.read().decode("utf-8", "replace")
        self.err.close()
        if rc != 0:
            raise BackupError("%s failed (rc=%d): %s" % (self.what, rc, err.strip()[-2000:]))
        return err


class DirectPg:
    kind = "direct"

    def __init__(self, host, port, user, password, dbname, bin_dir=None, owner=None, compress=None, search=None):
        self.host, self.port, self.user, self.password = host, port, user, password
        self.dbname = dbname
        self.owner = owner or user
        self.clients = ClientFinder(bin_dir, search)
        self.compress = compress
        self._bin_dir = None
        self._server_version = None

    def _env(self):
        env = dict(os.environ)
        env.update({"PGHOST": self.host or "127.0.0.1", "PGPORT": str(self.port or 5432), "PGUSER": self.user or "postgres",
                    "PGCONNECT_TIMEOUT": "15", "PGAPPNAME": "matrix_backup"})
        if self.password:
            env["PGPASSWORD"] = self.password
        else:
            env.pop("PGPASSWORD", None)
        return env

    def server_version(self):
        """The server's version (asked with the newest psql at hand, before its own major's clients are chosen)."""
        if self._server_version is None:
            psql = os.path.join(self.clients.psql_dir(), "psql")
            rc, out = self._run_psql(psql, SERVER_VERSION_SQL, self.dbname, False)
            if rc != 0:       # the database may not exist yet (restore)
                out = self._run_psql(psql, SERVER_VERSION_SQL, "postgres", True)[1]
            self._server_version = out
        return self._server_version

    def _bin(self, name):
        if self._bin_dir is None:
            self._bin_dir = self.clients.find(major_of(self.server_version()),
                                              why="the server %s (PostgreSQL %s)" % (self.describe(), self.server_version()))
        return os.path.join(self._bin_dir, name)

    def client_version(self, tool):
        got = self.clients.version(self._bin(tool))
        return got[1] if got else None

    def psql(self, sql, dbname="postgres", check=True):
        return self._run_psql(self._bin("psql"), sql, dbname, check)

    def _run_psql(self, psql, sql, dbname, check):
        args = [psql, "--no-password", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-d", dbname, "-c", sql]
        try:
            p = subprocess.run(args, env=self._env(), capture_output=True, check=False)
        except OSError as e:
            raise BackupError("cannot run %s: %s" % (psql, e.strerror)) from e
        if check and p.returncode != 0:
            raise BackupError("psql failed: %s" % p.stderr.decode("utf-8", "replace").strip()[-2000:])
        return p.returncode, p.stdout.decode("utf-8", "replace").strip()

    def dump(self):
        args = dump_args(self.dbname, compress=self.compress)
        args[0] = self._bin("pg_dump")
        return _ProcStream(args, self._env(), "pg_dump")

    def dump_to_file(self, path, on_first_byte=None, poll=0.01):
        """pg_dump straight into a new 0600 file. on_first_byte() is called once the file is not empty
        (pg_dump has taken its snapshot by then)."""
        args = dump_args(self.dbname, compress=self.compress)
        args[0] = self._bin("pg_dump")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(args, stdout=out, stderr=err, env=self._env())
            except OSError as e:
                raise BackupError("cannot run pg_dump: %s" % e.strerror) from e
            try:
                while on_first_byte is not None and proc.poll() is None:
                    if os.fstat(out.fileno()).st_size > 0:
                        on_first_byte()
                        break
                    time.sleep(poll)
                rc = proc.wait()
            except BaseException:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise
            err.seek(0)
            msg = err.read().decode("utf-8", "replace").strip()
            if rc != 0:
                raise BackupError("pg_dump failed (rc=%d): %s" % (rc, msg[-2000:]))
            out.flush()
            os.fsync(out.fileno())

    def restore(self, size, path=None, reader=None, jobs=1):
        """Restore from a plain local file (parallel) or a stream (a local pipe needs no size: it closes)."""
        del size
        role = self.owner if self.owner != self.user else None
        args = restore_args(self.dbname, role=role, jobs=jobs, path=path)
        args[0] = self._bin("pg_restore")
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(args, stdin=subprocess.PIPE if path is None else subprocess.DEVNULL,
                                        stdout=err, stderr=err, env=self._env())
            except OSError as e:
                raise BackupError("cannot run pg_restore: %s" % e.strerror) from e
            feed_error = _feed(proc, reader, "pg_restore") if path is None else None
            rc = proc.wait()
            err.seek(0)
            msg = err.read().decode("utf-8", "replace").strip()
        if feed_error is not None:
            raise feed_error
        if rc != 0:
            raise BackupError("pg_restore failed (rc=%d): %s" % (rc, msg[-2000:]))

    def describe(self):
        return "postgresql://%s@%s:%s/%s" % (self.user, self.host, self.port, self.dbname)


class PodPg(PodEndpoint):
    def __init__(self, api_client, namespace, pod, container, user, dbname, owner=None, compress=None, timeout=600):
        super().__init__(api_client, namespace, pod, container, timeout)
        self.user = user or "postgres"
        self.dbname = dbname
        self.owner = owner or self.user
        self.compress = compress

    def psql(self, sql, dbname="postgres", check=True):
        from ansible_collections.matrix.stack.plugins.module_utils.kube import pod_exec as _kube_exec
        ex = self._exec(["psql", "--no-password", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-U", self.user, "-d", dbname, "-c", sql])
        out = b"".join(iter(ex.read, b""))
        try:
            rc = ex.wait(check=check)
        except _kube_exec.ExecError as e:
            raise BackupError("psql in %s failed: %s" % (self.pod, e.stderr.strip()[-2000:] or e)) from e
        return rc, out.decode("utf-8", "replace").strip()

    def server_version(self):
        return self.psql(SERVER_VERSION_SQL)[1]

    def client_version(self, tool):
        """Version of the pod's own client binary (the pod's binaries do the dump and the restore)."""
        ex = self._exec([tool, "--version"])
        out = b"".join(iter(ex.read, b"")).decode("utf-8", "replace")
        self.finish(ex, "%s --version in %s failed" % (tool, self.pod))
        got = parse_client_version(out)
        return got[1] if got else None

    def dump(self):
        ex = self._exec(dump_args(self.dbname, user=self.user, compress=self.compress))
        endpoint = self

        class _Stream(ReadStream):
            def read(self, n=-1):
                return ex.read(n)

            def kill(self):
                ex.close()

            def wait(self):
                endpoint.finish(ex, "pg_dump in pod failed")
                return ex.stderr
        return _Stream()

    def restore(self, size, path=None, reader=None, jobs=1):
        """Stream the dump (size bytes) into pg_restore's stdin inside the pod (no parallelism: stdin is not
        seekable)."""
        role = self.owner if self.owner != self.user else None
        if path is not None:
            src = open(path, "rb")  # pylint: disable=consider-using-with
        else:
            src = _pipe_reader(reader)
        try:
            ex = self._exec(restore_args(self.dbname, user=self.user, role=role), stdin=src, stdin_size=size)
            self.finish(ex, "pg_restore in pod failed")
        finally:
            src.close()
            if hasattr(src, "join"):
                src.join()

    def describe(self):
        return "pod %s/%s database %s" % (self.namespace, self.pod, self.dbname)


class _PipeReader:
    def __init__(self, fileobj, thread, errors):
        self._f, self._t, self._errors = fileobj, thread, errors

    def read(self, n=-1):
        return self._f.read(n)

    def close(self):
        self._f.close()

    def join(self):
        self._t.join()
        if self._errors:
            raise self._errors[0]


def _pipe_reader(writer_func):
    """Turn a function that writes into a file object into a reader (thread + OS pipe)."""
    import threading
    r, w = os.pipe()
    errors = []

    def run():
        with os.fdopen(w, "wb") as wf:
            try:
                writer_func(wf)
            except BrokenPipeError:
                pass
            except Exception as e:  # surfaced by join()
                errors.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return _PipeReader(os.fdopen(r, "rb"), t, errors)


def _feed(proc, writer_func, what):
    """writer_func(proc.stdin), then close stdin. Returns the error to report: ours (a BackupError, such as a
    failed decryption) or a write error while the process still runs; not the broken pipe of a process that
    exited, whose own status says why."""
    try:
        writer_func(proc.stdin)
    except BrokenPipeError:
        pass
    except BackupError as e:
        return e
    except Exception as e:  # pylint: disable=broad-except
        if proc.poll() is None:
            return BackupError("feeding %s failed: %s" % (what, e))
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    return None


def list_dump(pg_restore, reader_func):
    """Run ``pg_restore --list`` over a dump fed by reader_func(stdin). Returns the number of TOC entries."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen([pg_restore, "--list"], stdin=subprocess.PIPE, stdout=out, stderr=err)
        except OSError as e:
            raise BackupError("cannot run %s: %s" % (pg_restore, e.strerror)) from e
        feed_error = _feed(proc, reader_func, "pg_restore --list")
        rc = proc.wait()
        if feed_error is not None:
            raise feed_error
        err.seek(0)
        out.seek(0)
        if rc != 0:
            raise BackupError("pg_restore --list rejected the dump: %s" % err.read().decode("utf-8", "replace").strip()[-1000:])
        entries = sum(1 for line in out if line.strip() and not line.startswith(b";"))
        return entries
