"""Real PostgreSQL, Synapse and coturn processes for the tests, on 127.0.0.1 only.

Every service remembers the PID it started and stops exactly that process.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / ".work"
# PostgreSQL binaries of every supported major, laid out by scripts/setup-postgres.
PG_ROOT = WORK / "postgresql"


def default_pg_major():
    """The major the default inventory deploys (postgres_image_tag in roles/postgres/defaults/main.yml)."""
    tag = yaml.safe_load((REPO / "roles" / "postgres" / "defaults" / "main.yml").read_text())["postgres_image_tag"]
    return int(str(tag).split(".", 1)[0].split("-", 1)[0])


def pg_bin(major=None):
    """bin/ of PostgreSQL `major` (default: MATRIX_STACK_PG_BIN, else the default inventory's major)."""
    if major is None and os.environ.get("MATRIX_STACK_PG_BIN"):
        return Path(os.environ["MATRIX_STACK_PG_BIN"])
    return PG_ROOT / str(major or default_pg_major()) / "bin"


PG_BIN = pg_bin()
SYNAPSE_PYTHON = WORK / "venv-synapse" / "bin" / "python"
TURNSERVER = Path("/usr/bin/turnserver")
MINIO = WORK / "tools" / "minio"


def free_port():
    """A free loopback port. Under pytest-xdist each worker takes only the ports whose remainder modulo the number of
    workers is its index, so two workers never hand out the same port between its check and its use."""
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) % count if worker[2:].isdigit() else 0
    for _attempt in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))  # the kernel's pick (Linux hands bind() odd ports by preference)
            port = sock.getsockname()[1]
        port += (index - port) % count  # the next port of this worker's class
        if port > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port for worker %s of %d" % (worker, count))


def stop_pid(pid, sig=signal.SIGTERM, timeout=30):
    """Stop one process we started, escalating to SIGKILL; never touches other PIDs."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished = os.waitpid(pid, os.WNOHANG)[0]
        except ChildProcessError:
            finished = pid if not Path(f"/proc/{pid}").exists() else 0
        if finished:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def wait_until(what, predicate, timeout, proc=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class PostgresServer:
    """A throwaway PostgreSQL cluster run by the `postgres` user (it refuses root)."""

    superuser = "postgres"
    host = "127.0.0.1"

    def __init__(self, bin_dir=None, major=None):
        self.bin_dir = Path(bin_dir) if bin_dir else pg_bin(major)
        self.password = secrets.token_urlsafe(24)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="matrix-stack-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.proc = None

    def _as_postgres(self, argv, **kwargs):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], check=True,
                              capture_output=True, text=True, **kwargs)

    def start(self):
        self.socket_dir.mkdir(parents=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        self._as_postgres([self.bin_dir / "initdb", "-D", self.data_dir, "-U", self.superuser,
                           "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"])
        pwfile.unlink()
        with open(self.log_path, "ab") as log:
            shutil.chown(self.log_path, "postgres", "postgres")
            # pylint: disable-next=consider-using-with
            self.proc = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                 "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.socket_dir),
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until("PostgreSQL to accept connections", self._ready, 60, self.proc, self.log_path)
        return self

    def _ready(self):
        return subprocess.run([str(self.bin_dir / "pg_isready"), "-h", self.host, "-p", str(self.port)],
                              capture_output=True, check=False).returncode == 0

    @property
    def env(self):
        return {**os.environ, "PGPASSWORD": self.password, "PGHOST": self.host, "PGPORT": str(self.port),
                "PGUSER": self.superuser}

    def psql(self, sql, dbname="postgres"):
        return subprocess.run([str(self.bin_dir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", dbname,
                               "-c", sql], env=self.env, check=True, capture_output=True, text=True).stdout

    def create_role(self, name, password):
        self.psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")

    def create_database(self, name, owner=None):
        owner_sql = f' OWNER "{owner}"' if owner else ""
        self.psql(f"CREATE DATABASE \"{name}\"{owner_sql} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                  "TEMPLATE template0")

    def drop_database(self, name):
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self):
        if self.proc is not None:
            # SIGINT: PostgreSQL's fast shutdown, sent to the postmaster we started (runuser does not forward
            # SIGINT, only SIGTERM: a smart shutdown that waits for clients); then runuser exits.
            try:
                os.kill(int((self.data_dir / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
            except (OSError, ValueError, IndexError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_pid(self.proc.pid, signal.SIGTERM)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


class SynapseServer:
    """Synapse from PyPI (its own venv), started from a generated homeserver.yaml."""

    def __init__(self, server_name, root, postgres=None, database="postgres", extra_config=None):
        self.server_name = server_name
        self.root = Path(root)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = self.root / "data"
        self.media_store = self.data_dir / "media_store"
        self.config_path = self.root / "homeserver.yaml"
        self.log_path = self.root / "homeserver.log"
        self.signing_key_path = self.root / "signing.key"
        self.registration_shared_secret = secrets.token_urlsafe(32)
        self.database_name = None
        self.proc = None
        self.postgres = postgres
        self._write_config(database, extra_config or {})

    def _write_config(self, database, extra_config):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if database == "sqlite":
            db = {"name": "sqlite3", "args": {"database": str(self.data_dir / "homeserver.db")}}
        else:
            self.database_name = f"synapse_{secrets.token_hex(4)}"
            self.postgres.create_database(self.database_name)
            db = {"name": "psycopg2", "args": {
                "user": self.postgres.superuser, "password": self.postgres.password, "host": self.postgres.host,
                "port": self.postgres.port, "database": self.database_name, "cp_min": 1, "cp_max": 5}}
        log_config = self.root / "log.yaml"
        log_config.write_text(yaml.safe_dump({
            "version": 1,
            "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                  "filename": str(self.log_path)}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))
        generous = {"per_second": 1000, "burst_count": 1000}
        config = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "pid_file": str(self.root / "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                           "x_forwarded": False, "resources": [{"names": ["client", "federation"], "compress": False}]}],
            "database": db,
            "log_config": str(log_config),
            "media_store_path": str(self.media_store),
            "signing_key_path": str(self.signing_key_path),
            "registration_shared_secret": self.registration_shared_secret,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
            "rc_registration": generous,
            "rc_message": generous,
            "rc_joins": {"local": generous, "remote": generous},
            "rc_admin_redaction": generous,
            "rc_media_create": generous,
            "media_retention": {},
            "url_preview_enabled": False,
        }
        config.update(extra_config)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if not Path(config["signing_key_path"]).exists():
            subprocess.run([str(SYNAPSE_PYTHON), "-m", "synapse._scripts.generate_signing_key",
                            "-o", config["signing_key_path"]], check=True, capture_output=True)

    def _healthy(self):
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, extra_args=(), timeout=120):
        if not SYNAPSE_PYTHON.exists():
            raise RuntimeError(f"{SYNAPSE_PYTHON} missing: run scripts/setup")
        with open(self.log_path.with_suffix(".stdout"), "ab") as out:
            # pylint: disable-next=consider-using-with
            self.proc = subprocess.Popen(
                [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.config_path), *extra_args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root)
        wait_until(f"Synapse {self.server_name} /health", self._healthy, timeout, self.proc,
                   self.log_path.with_suffix(".stdout"))
        return self

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None

    def destroy(self):
        self.stop()
        if self.database_name and self.postgres is not None and self.postgres.proc is not None:
            self.postgres.drop_database(self.database_name)
        shutil.rmtree(self.root, ignore_errors=True)


class CoturnServer:
    """coturn on loopback, from a given turnserver.conf; listening and relay settings are the test's."""

    CONTROLLED = ("listening-port", "listening-ip", "relay-ip", "external-ip", "pidfile", "log-file",
                  "tls-listening-port", "alt-listening-port", "alt-tls-listening-port", "cli-port", "prometheus-port")

    def __init__(self, config_text, root, relay_ports=(49160, 49200), tls=False):
        """tls: keep the config's cert=/pkey= and listen for TLS on a free port (self.tls_port)."""
        self.root = Path(root)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.config_path = self.root / "turnserver.conf"
        self.log_path = self.root / "turnserver.log"
        self.proc = None
        lines = [line for line in config_text.splitlines()
                 if line.split("=", 1)[0].strip() not in self.CONTROLLED]
        lines += [f"listening-port={self.port}", "listening-ip=127.0.0.1", "relay-ip=127.0.0.1",
                  f"pidfile={self.root / 'turnserver.pid'}", f"log-file={self.log_path}", "no-cli", "simple-log"]
        lines += [f"tls-listening-port={self.tls_port}"] if tls else ["no-tls", "no-dtls"]
        if not any(line.startswith("min-port") for line in lines):
            lines += [f"min-port={relay_ports[0]}", f"max-port={relay_ports[1]}"]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config_path.chmod(0o600)

    def _listening(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self):
        with open(self.root / "turnserver.stdout", "ab") as out:
            # pylint: disable-next=consider-using-with
            self.proc = subprocess.Popen([str(TURNSERVER), "-c", str(self.config_path)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until("coturn to listen", self._listening, 30, self.proc, self.root / "turnserver.stdout")
        return self

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None


class MinioServer:
    """MinIO (an S3-compatible object store, built by scripts/setup) on loopback, data in root."""

    def __init__(self, root):
        self.root = Path(root)
        self.port = free_port()
        self.access_key = "matrix-stack-test"
        self.secret_key = secrets.token_urlsafe(24)
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "minio.log"
        self.proc = None

    def _live(self):
        try:
            with urllib.request.urlopen(self.endpoint_url + "/minio/health/live", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self):
        env = {**os.environ, "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key,
               "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "MINIO_CONFIG_ENV_FILE": ""}
        with open(self.log_path, "ab") as out:
            # pylint: disable-next=consider-using-with
            self.proc = subprocess.Popen([str(MINIO), "server", "--quiet", "--address", f"127.0.0.1:{self.port}",
                                          "--console-address", f"127.0.0.1:{free_port()}", str(self.root / "data")],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        wait_until("MinIO to answer", self._live, 60, self.proc, self.log_path)
        return self

    def client(self):
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}))

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None


def load_json(path):
    return json.loads(Path(path).read_text())
