"""The PostgreSQL init script for real, run the way the official image's entrypoint runs it.

site.yml renders the minimal inventory. From the rendered StatefulSet and init ConfigMap, a fresh cluster is
initialised as the image's docker-entrypoint.sh does on an empty data directory, as the `postgres` user, with
its environment: POSTGRES_PASSWORD from POSTGRES_PASSWORD_FILE, `initdb --username=$POSTGRES_USER
--pwfile=<(...) $POSTGRES_INITDB_ARGS`, `host all all all <password_encryption>` appended to pg_hba.conf,
PGPASSWORD exported, a socket-only temporary server started with the container's arguments, then every
/docker-entrypoint-initdb.d/*.sh sourced by bash under `set -Eeo pipefail` (the ConfigMap's files are mode 0444,
not executable, so the image sources them), psql on PATH; then the server is stopped and started for real.
Both passwords hold quotes, a backslash, "$", a colon, spaces and non-ASCII letters (an operator may bring
their own Secret). Then:
- the Synapse database has UTF8 encoding, C collation and ctype, the Synapse role as owner, no PUBLIC access;
- the Synapse role logs in over TCP with that password, stored as SCRAM, through the libpq password file the
  rendered Synapse init container (compose_secrets.py) writes, and a wrong password is refused;
- TCP from 127.0.0.1 (where a port-forward arrives) needs the password too, for the superuser as well.
Only the mount roots, the port, the socket directory and listen_addresses (127.0.0.1, not '*') change.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers.rendered import REAL_PROGRAMS_VARS, first, render_stack
from helpers.services import PG_BIN, free_port, stop_pid, wait_until

pytestmark = pytest.mark.integration

SYNAPSE_PASSWORD = "it's a \"pass\\word\" with $HOME: spaces, ünïcödé € and `cat /etc/passwd`"
SUPERUSER_PASSWORD = "sup3r 'user' \\ $PGDATA:ß"

# The parts of the image's docker-entrypoint.sh that run on an empty data directory, in its order.
ENTRYPOINT = r"""
set -Eeo pipefail
export POSTGRES_PASSWORD="$(< "$POSTGRES_PASSWORD_FILE")"; unset POSTGRES_PASSWORD_FILE
export POSTGRES_DB="$POSTGRES_USER"
eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"
auth="$(postgres -C password_encryption "$@")"
printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@" -c listen_addresses='' -p "$PGPORT")" -w start
process_init_files() {
    local f
    for f; do
        case "$f" in
            *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
            *) echo "unexpected init file $f" >&2; exit 1 ;;
        esac
    done
}
process_init_files "$INITDB_DIR"/*
PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
echo "init process complete"
"""


def as_postgres(argv, env, **kwargs):
    return subprocess.run(["runuser", "-u", "postgres", "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                           *argv], capture_output=True, text=True, timeout=120, check=False, **kwargs)


@pytest.fixture(scope="module")
def initialised(run_playbook):
    objects = render_stack(run_playbook, extra_vars=REAL_PROGRAMS_VARS)
    statefulset = first(o for (k, n), o in objects.items() if k == "StatefulSet" and n.endswith("-postgres"))
    init_cm = first(o for (k, n), o in objects.items() if k == "ConfigMap" and n.endswith("-postgres-init"))
    synapse_cm = first(o for (k, n), o in objects.items() if k == "ConfigMap" and n.endswith("-synapse"))
    spec = statefulset["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}

    root = Path(tempfile.mkdtemp(prefix="matrix-stack-pginit-"))
    root.chmod(0o755)
    server = None
    try:
        def local(path):
            for mount_path in sorted(mount.values(), key=len, reverse=True):
                if path == mount_path or path.startswith(mount_path + "/"):
                    return str(root / mount_path.lstrip("/")) + path[len(mount_path):]
            raise AssertionError(f"{path} is on no volume of the pod")

        for name, path in mount.items():
            Path(local(path)).mkdir(parents=True, exist_ok=True)
            if "emptyDir" in volumes.get(name, {}) or name == "data":
                shutil.chown(local(path), "postgres", "postgres")
        # Secret files: mode 0440, group = fsGroup (the postgres group here).
        secret_dir = Path(local(mount["secrets"]))
        for key, value in {"postgres-password": SUPERUSER_PASSWORD, "password": SYNAPSE_PASSWORD}.items():
            (secret_dir / key).write_text(value)
            shutil.chown(secret_dir / key, "root", "postgres")
            (secret_dir / key).chmod(volumes["secrets"]["secret"]["defaultMode"])
        # Init scripts: the ConfigMap's files, root-owned, the volume's mode, pod paths mapped.
        init_dir = Path(local(mount["init"]))
        for key, script in init_cm["data"].items():
            (init_dir / key).write_text(script.replace(mount["secrets"] + "/", str(secret_dir) + "/"))
            (init_dir / key).chmod(volumes["init"]["configMap"]["defaultMode"])
        assert not any(os.access(p, os.X_OK) for p in init_dir.iterdir()), "the image would execute, not source"

        port, socket_dir = free_port(), local("/var/run/postgresql")
        args = list(container["args"])
        args += ["-c", f"unix_socket_directories={socket_dir}"]
        run_env = {"PATH": f"{PG_BIN}:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
                   "POSTGRES_USER": env["POSTGRES_USER"], "POSTGRES_PASSWORD_FILE": local(env["POSTGRES_PASSWORD_FILE"]),
                   "POSTGRES_INITDB_ARGS": env["POSTGRES_INITDB_ARGS"], "PGDATA": local(env["PGDATA"]),
                   "PGHOST": socket_dir, "PGPORT": str(port), "INITDB_DIR": str(init_dir)}
        init = as_postgres(["bash", "-c", ENTRYPOINT, "entrypoint", *args], run_env, cwd=root)
        assert init.returncode == 0 and "init process complete" in init.stdout, init.stdout[-3000:] + init.stderr[-3000:]
        assert SYNAPSE_PASSWORD not in init.stdout + init.stderr

        # The server for real, with the container's arguments (listening on loopback only).
        log = root / "postgres.log"
        log.touch()
        shutil.chown(log, "postgres", "postgres")
        with open(log, "ab") as out:
            # pylint: disable-next=consider-using-with
            # setpriv execs postgres itself (runuser would stay in between and not pass SIGINT on).
            server = subprocess.Popen(
                ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "env", "-i",
                 *[f"{k}={v}" for k, v in run_env.items()], str(Path(PG_BIN) / "postgres"), "-D", run_env["PGDATA"], *args,
                 "-c", "listen_addresses=127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until("PostgreSQL to accept connections", lambda: subprocess.run(
            [str(Path(PG_BIN) / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True,
            check=False).returncode == 0, 60, server, log)
        database = yaml.safe_load(synapse_cm["data"]["homeserver.yaml"])["database"]["args"]
        yield {"port": port, "socket_dir": socket_dir, "root": root, "database": database,
               "compose_secrets": synapse_cm["data"]["compose_secrets.py"], "secret_dir": secret_dir}
    finally:
        if server is not None:
            stop_pid(server.pid, signal.SIGINT)
        shutil.rmtree(root, ignore_errors=True)


def psql_local(initialised, sql, dbname="postgres"):
    """As the image's `kubectl exec ... psql`: the superuser over the local socket."""
    proc = as_postgres([str(Path(PG_BIN) / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", "postgres",
                        "-h", initialised["socket_dir"], "-p", str(initialised["port"]), "-d", dbname, "-c", sql],
                       {"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def psql_tcp(initialised, user, dbname, **env):
    return subprocess.run([str(Path(PG_BIN) / "psql"), "-X", "-At", "-w", "-c", "SELECT current_user || '@' || current_database()"],
                          env={"PATH": "/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(initialised["port"]),
                               "PGUSER": user, "PGDATABASE": dbname, "PGSSLMODE": "disable", **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_database_encoding_collation_owner(initialised):
    db = initialised["database"]
    row = psql_local(initialised, "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba), "
                                  f"coalesce(datacl::text, '') FROM pg_database WHERE datname = '{db['dbname']}'")
    encoding, collate, ctype, owner, acl = row.split("|")
    assert (encoding, collate, ctype, owner) == ("UTF8", "C", "C", db["user"])
    assert not re.search(r"[{,]=", acl), f"PUBLIC keeps rights on the database: {acl}"
    assert psql_local(initialised, f"SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = '{db['user']}'") \
        == "SCRAM-SHA-256$"


def test_synapse_logs_in_with_the_special_password(initialised, tmp_path):
    db = initialised["database"]
    # The libpq password file, written by the rendered Synapse init container's script from the Secret file.
    script = tmp_path / "compose_secrets.py"
    script.write_text(initialised["compose_secrets"])
    pgpass = tmp_path / "pgpass"
    subprocess.run([sys.executable, str(script), "--pgpass", str(initialised["secret_dir"] / "password"), str(pgpass)],
                   check=True, capture_output=True, timeout=30)
    good = psql_tcp(initialised, db["user"], db["dbname"], PGPASSFILE=str(pgpass))
    assert good.returncode == 0 and good.stdout.strip() == f"{db['user']}@{db['dbname']}", good.stderr
    direct = psql_tcp(initialised, db["user"], db["dbname"], PGPASSWORD=SYNAPSE_PASSWORD)
    assert direct.returncode == 0, direct.stderr

    wrong = psql_tcp(initialised, db["user"], db["dbname"], PGPASSWORD=SYNAPSE_PASSWORD + "x")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr
    # 127.0.0.1 (a port-forward's arrival) is not trusted: the superuser needs its password too.
    nopass = psql_tcp(initialised, "postgres", "postgres", PGPASSFILE=os.devnull)
    assert nopass.returncode != 0 and "password" in nopass.stderr, nopass.stderr
    superuser = psql_tcp(initialised, "postgres", "postgres", PGPASSWORD=SUPERUSER_PASSWORD)
    assert superuser.returncode == 0, superuser.stderr


def test_synapse_init_waits_for_postgres_to_accept_logins(initialised, tmp_path):
    """The rendered init container's wait (Synapse is applied together with PostgreSQL): it returns as soon as the
    real server answers a login, and gives up, naming the address, when nothing listens."""
    db = initialised["database"]
    script = tmp_path / "compose_secrets.py"
    script.write_text(initialised["compose_secrets"])
    started = time.monotonic()
    ready = subprocess.run([sys.executable, str(script), "--wait-for-postgres", "127.0.0.1", str(initialised["port"]),
                            db["user"], db["dbname"], "--wait-timeout", "30"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert ready.returncode == 0 and time.monotonic() - started < 10, ready.stdout + ready.stderr
    closed = free_port()
    absent = subprocess.run([sys.executable, str(script), "--wait-for-postgres", "127.0.0.1", str(closed),
                             db["user"], db["dbname"], "--wait-timeout", "2"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert absent.returncode != 0, absent.stdout + absent.stderr
    assert f"PostgreSQL at 127.0.0.1:{closed} not ready after 2.0 s" in absent.stderr, absent.stderr
