#!/usr/bin/env python
"""Compose the secret-bearing files Synapse needs, in memory, at pod start.

Synapse reads most secrets from files (``*_path`` options), but two cannot be given
that way: the PostgreSQL password (handled by a libpq password file, PGPASSFILE) and
``email.smtp_pass``. This script, run by an init container, writes both from the
mounted Secret files into an in-memory emptyDir with mode 0600. It also copies the
PostgreSQL client key there with mode 0600, owned by the user Synapse runs as (libpq
refuses a key file that others can read). Secrets are passed as *file paths* only,
never as values on a command line.

Usage:
  compose_secrets.py [--pgpass PASSWORD_FILE OUT_FILE]
                     [--fragment TEMPLATE OUT_FILE --inject DOTTED.KEY=SECRET_FILE ...]
                     [--private-copy SOURCE OUT_FILE]
                     [--wait-for-postgres HOST PORT USER DATABASE [--wait-timeout SECONDS]]
"""
import argparse
import os
import socket
import struct
import sys
import time

import yaml


def read_secret(path):
    with open(path, encoding="utf-8") as handle:
        value = handle.read()
    # Secrets may end with one newline when created by hand; never strip anything else.
    if value.endswith("\n"):
        value = value[:-1]
    if not value:
        sys.exit(f"compose_secrets: secret file {path} is empty")
    return value


def write_private(path, content):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, 0o600)


def pgpass_escape(value):
    return value.replace("\\", "\\\\").replace(":", "\\:")


def postgres_state(host, port, user, database, timeout=5.0):
    """What PostgreSQL answers a startup message (as pg_isready does): "ready" once it can authenticate or refuse
    the login, "starting" while it starts or shuts down, otherwise the connection error."""
    params = b"".join(key + b"\0" + value.encode() + b"\0" for key, value in ((b"user", user), (b"database", database)))
    body = struct.pack("!I", 196608) + params + b"\0"  # protocol 3.0
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(struct.pack("!I", len(body) + 4) + body)
            kind = conn.recv(1)
            if kind == b"E":
                error = conn.recv(4096)
                if b"57P03" in error:  # cannot_connect_now: starting up, shutting down, in recovery
                    return "starting"
            return "ready" if kind else "closed the connection"
    except OSError as exc:
        return str(exc) or type(exc).__name__


def wait_for_postgres(host, port, user, database, timeout):
    """Return once PostgreSQL accepts logins; exit (the pod restarts) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    reported = None
    while True:
        state = postgres_state(host, port, user, database)
        if state == "ready":
            return
        if state != reported:
            print(f"compose_secrets: waiting for PostgreSQL at {host}:{port}: {state}", flush=True)
            reported = state
        if time.monotonic() >= deadline:
            sys.exit(f"compose_secrets: PostgreSQL at {host}:{port} not ready after {timeout} s: {state}")
        time.sleep(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pgpass", nargs=2, metavar=("PASSWORD_FILE", "OUT_FILE"))
    parser.add_argument("--fragment", nargs=2, metavar=("TEMPLATE", "OUT_FILE"))
    parser.add_argument("--inject", action="append", default=[], metavar="DOTTED.KEY=SECRET_FILE")
    parser.add_argument("--private-copy", nargs=2, metavar=("SOURCE", "OUT_FILE"))
    parser.add_argument("--wait-for-postgres", nargs=4, metavar=("HOST", "PORT", "USER", "DATABASE"),
                        help="wait until PostgreSQL accepts logins (Synapse exits when it cannot reach it at start)")
    parser.add_argument("--wait-timeout", type=float, default=600.0, metavar="SECONDS")
    args = parser.parse_args(argv)

    if args.pgpass:
        password = read_secret(args.pgpass[0])
        write_private(args.pgpass[1], f"*:*:*:*:{pgpass_escape(password)}\n")

    if args.fragment:
        with open(args.fragment[0], encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        for item in args.inject:
            dotted, _sep, path = item.partition("=")
            if not dotted or not path:
                sys.exit(f"compose_secrets: bad --inject {item!r}")
            node = config
            keys = dotted.split(".")
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = read_secret(path)
        write_private(args.fragment[1], yaml.safe_dump(config, default_flow_style=False))
    elif args.inject:
        sys.exit("compose_secrets: --inject needs --fragment")

    if args.private_copy:
        with open(args.private_copy[0], encoding="utf-8") as handle:
            content = handle.read()
        if not content.strip():
            sys.exit(f"compose_secrets: file {args.private_copy[0]} is empty")
        write_private(args.private_copy[1], content)

    if args.wait_for_postgres:
        wait_for_postgres(*args.wait_for_postgres, timeout=args.wait_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
