# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of a backup set and its manifest: names, reading, the public summary, the PostgreSQL major it needs."""

from __future__ import annotations

import datetime
import json
import os

from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import major_of

DB_FILE = "db.dump"
MANIFEST_FILE = "manifest.json"
SECRETS_FILE = "secrets.json"


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def rate(nbytes, seconds):
    """MB/s, rounded; None when no time passed."""
    return round(nbytes / seconds / 1e6, 2) if seconds > 0 else None


def stored_name(name, encrypted):
    return name + ".age" if encrypted else name


def dump_major(manifest):
    """The PostgreSQL major a set's dump needs: pg_restore and the target server must be at least this major
    (the source server's, or that of the pg_dump that wrote it when newer)."""
    pgm = manifest.get("postgresql") or {}
    majors = [m for m in (major_of(pgm.get("server_version")), major_of(pgm.get("pg_dump_version"))) if m]
    return max(majors) if majors else None


def load_manifest(repo, set_id, identities):
    marker = repo.read_complete(set_id)
    path = repo.set_path(set_id)
    if marker.get("encrypted"):
        with open(os.path.join(path, MANIFEST_FILE + ".age"), "rb") as f:
            raw = crypto.decrypt_bytes(f.read(), identities, what="manifest of set %s" % set_id)
    else:
        with open(os.path.join(path, MANIFEST_FILE), "rb") as f:
            raw = f.read()
    return json.loads(raw)


def public_manifest(m):
    """Manifest without anything sensitive (it has no secret values, but keep the result small)."""
    keep = ("set_id", "server_name", "started_at", "finished_at", "synapse", "postgresql", "database", "media", "encrypted")
    out = {k: m.get(k) for k in keep if k in m}
    if "secrets" in m:
        out["secrets"] = {"kubernetes": m["secrets"].get("kubernetes"), "files": m["secrets"].get("files")}
    return out
