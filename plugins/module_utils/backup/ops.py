# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup / verify / restore / prune operations behind the matrix_backup module.

Everything here works on plain Python objects (no AnsibleModule), so unit tests and the bench can
drive it directly. ``Config`` carries the resolved options; sources/targets are built by the module.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import threading
import time

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import (
    BackupError, CHUNK, HashingReader, HashingWriter, MEDIA_INDEX, Repository, set_id_time, sha256_file, syncfs, write_json_atomic)
from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup import media as media_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg as pg_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import retention
from ansible_collections.matrix.stack.plugins.module_utils.backup import secrets as secrets_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import ClientFinder, major_of

DB_FILE = "db.dump"
MANIFEST_FILE = "manifest.json"
SECRETS_FILE = "secrets.json"


class Config:
    """Resolved options. Unset attributes default to None/empty."""

    def __init__(self, **kw):
        self.dest = None
        self.server_name = None
        self.set_name = "latest"
        self.pg = None                  # DirectPg / PodPg or None
        self.pg_clients = None          # _pg_clients.ClientFinder for local pg_restore --list (default search)
        self.media = None               # LocalMedia / PodMedia or None
        self.media_encrypt = False
        self.media_rehash = False
        self.verify_media = "checksum"  # checksum | exists
        self.recipients = []            # parsed age recipients
        self.recipient_strings = []
        self.identities = []            # parsed age identities
        self.kube_api = None            # ApiClient for Secrets / scaling
        self.secrets_namespace = None
        self.secrets_selector = None
        self.secret_files = []
        self.allow_unencrypted_secrets = False
        self.synapse_version = None
        self.synapse_url = None
        self.synapse_deployment = None
        self.synapse_namespace = None
        self.synapse_replicas = None
        self.health_url = None
        self.health_timeout = 300
        self.scale_timeout = 300
        self.jobs = 2
        self.parallel = True            # overlap the media copy with the end of the dump
        self.media_workers = 4          # threads copying local media files
        self.force = False
        self.keep = {}
        self.check_mode = False
        self.lock_wait = 0
        self.s3 = None                  # _backup_s3.S3Copy: off-site copy in object storage
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(k)
            setattr(self, k, v)
        if self.pg_clients is None:
            self.pg_clients = ClientFinder()

    @property
    def encrypted(self):
        return bool(self.recipients)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _rate(nbytes, seconds):
    return round(nbytes / seconds / 1e6, 2) if seconds > 0 else None


def _stored_name(name, encrypted):
    return name + ".age" if encrypted else name


def _write_blob(path, data, recipients):
    """Write bytes (encrypted if recipients) with mode 0600; returns (size, sha) of the stored file."""
    with crypto.open_private(path) as f:
        f.write(crypto.encrypt_bytes(data, recipients) if recipients else data)
        f.flush()
        os.fsync(f.fileno())
    sha, size = sha256_file(path)
    return size, sha


def synapse_version(cfg):
    if cfg.synapse_version:
        return cfg.synapse_version
    if not cfg.synapse_url:
        return None
    from ansible.module_utils.urls import open_url
    for path in ("/_matrix/federation/v1/version", "/_synapse/admin/v1/server_version"):
        try:
            with open_url(cfg.synapse_url.rstrip("/") + path, timeout=10, validate_certs=False) as r:
                data = json.loads(r.read())
            return (data.get("server") or {}).get("version") or data.get("server_version")
        except Exception:  # version is informative only
            continue
    return None


# One query (one psql, one exec into a pod): schema_version is read through query_to_xml so that a database
# without Synapse's table answers NULL instead of failing the whole statement.
PG_FACTS_SQL = ("SELECT current_setting('server_version') || '|' || pg_database_size(current_database()) || '|' || "
                "COALESCE(CASE WHEN to_regclass('schema_version') IS NOT NULL THEN (xpath('/row/version/text()', "
                "query_to_xml('SELECT version FROM schema_version', false, true, '')))[1]::text END, '')")


def dump_major(manifest):
    """The PostgreSQL major a set's dump needs: pg_restore and the target server must be at least this major
    (the source server's, or that of the pg_dump that wrote it when newer)."""
    pgm = manifest.get("postgresql") or {}
    majors = [m for m in (major_of(pgm.get("server_version")), major_of(pgm.get("pg_dump_version"))) if m]
    return max(majors) if majors else None


def check_restore_major(pg, manifest, set_id):
    """Refuse, before anything is changed, a dump of a newer major than the target server or its pg_restore."""
    need = dump_major(manifest)
    server = pg.server_version()
    facts = {"dump_major": need, "server_version": server}
    if need is None:
        return facts
    if major_of(server) < need:
        raise BackupError("set %s holds a dump of PostgreSQL %d (source server %s), but the target %s runs PostgreSQL "
                          "%s: a dump restores only into a server of the same or a newer major. Nothing was changed. "
                          "Restore it into a PostgreSQL %d (or newer) server; see docs/upgrading.md"
                          % (set_id, need, (manifest.get("postgresql") or {}).get("server_version"), pg.describe(),
                             server, need))
    facts["pg_restore_version"] = pg.client_version("pg_restore")
    if (major_of(facts["pg_restore_version"]) or 0) < need:
        raise BackupError("set %s holds a dump of PostgreSQL %d, but the pg_restore that would restore it into %s is "
                          "version %s and cannot read it. Nothing was changed."
                          % (set_id, need, pg.describe(), facts["pg_restore_version"]))
    return facts


def _pg_facts(pg):
    _rc, out = pg.psql(PG_FACTS_SQL, dbname=pg.dbname)
    version, size, schema = (out.strip().split("|") + ["", "", ""])[:3]
    return {"database": pg.dbname, "source": pg.describe(), "server_version": version,
            "database_size": int(size) if size.isdigit() else None,
            "synapse_schema_version": int(schema) if schema.isdigit() else None}


# ---------------------------------------------------------------------------------------------
# backup
# ---------------------------------------------------------------------------------------------
class _Digest:
    def __init__(self, sha, size):
        self.size = size
        self._sha = sha

    @property
    def sha(self):
        return self

    def hexdigest(self):
        return self._sha


class _PrefixReader:
    def __init__(self, prefix, raw):
        self.prefix, self.raw = prefix, raw

    def read(self, n=-1):
        if self.prefix:
            if n is None or n < 0:
                n = len(self.prefix)
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            return out
        return self.raw.read(n)


class _MediaJob:
    """The incremental media copy, run in a thread next to the end of the dump (or inline)."""

    def __init__(self, cfg, repo, info, tmp):
        self.cfg, self.repo, self.info, self.tmp = cfg, repo, info, tmp
        self._thread = None
        self._result = None
        self._error = None
        self._cancel = threading.Event()

    @property
    def pending(self):
        return self._thread is None and self._result is None and self._error is None

    def start(self):
        self._thread = threading.Thread(target=self.run, name="media-backup", daemon=True)
        self._thread.start()

    def cancel(self):
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()

    def result(self):
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def run(self):
        try:
            self._result = self._copy()
        except BaseException as e:  # re-raised in the main thread by result()
            self._error = e

    def _store(self, to_copy, recipients):
        """Yield (rel, store_object result). Local files are copied by a small thread pool (file creation
        latency dominates with many small media); a pod's tar stream is read in order."""
        cfg, repo = self.cfg, self.repo

        def check():
            if self._cancel.is_set():
                raise BackupError("media copy cancelled")
        if cfg.media.kind == "local" and cfg.media_workers > 1 and len(to_copy) > 1:
            from concurrent.futures import ThreadPoolExecutor

            def one(rel):
                check()
                with cfg.media.open(rel) as f:
                    return rel, media_mod.store_object(repo, f, recipients)
            with ThreadPoolExecutor(cfg.media_workers, thread_name_prefix="media") as pool:
                try:
                    yield from pool.map(one, (r for r, _s in to_copy))
                except BaseException:
                    self._cancel.set()
                    raise
            return
        for rel, reader in cfg.media.fetch(r for r, _s in to_copy):
            check()
            yield rel, media_mod.store_object(repo, reader, recipients)

    def _copy(self):
        cfg, repo, info = self.cfg, self.repo, self.info
        t0 = time.monotonic()
        base, entries, to_copy = plan_media(repo, cfg.media, cfg.media_rehash)
        reused = len(entries)
        copied_files = copied_bytes = new_objects = 0
        media_recipients = cfg.recipients if info.get("media_encrypted") else None
        if info.get("media_encrypted") and not media_recipients:
            raise BackupError("this repository encrypts media: age recipients are required")
        for rel, (sha, size, stored, new) in self._store(to_copy, media_recipients):
            entries.append((rel, size, sha, stored))
            copied_files += 1
            copied_bytes += size
            new_objects += int(new)
        if copied_files != len(to_copy):
            raise BackupError("media source returned %d of %d new files" % (copied_files, len(to_copy)))
        idx_path = os.path.join(self.tmp, MEDIA_INDEX)
        count = repo.write_media_index(idx_path, entries)
        isha, isize = sha256_file(idx_path)
        total_bytes = sum(e[1] for e in entries)
        msecs = time.monotonic() - t0
        manifest = {"source": cfg.media.describe(), "dirs": list(media_mod.MEDIA_DIRS), "files": count,
                    "bytes": total_bytes, "base_set": base, "new_files": copied_files, "new_bytes": copied_bytes,
                    "encrypted": bool(info.get("media_encrypted")), "index_sha256": isha,
                    "started_after_dump_snapshot": True}
        stats = {"files_total": count, "bytes_total": total_bytes, "files_copied": copied_files,
                 "bytes_copied": copied_bytes, "files_reused": reused, "new_objects": new_objects,
                 "base_set": base, "seconds": round(msecs, 3), "throughput_mb_s": _rate(copied_bytes, msecs)}
        return {"size": isize, "sha256": isha}, manifest, stats


def _previous_index(repo):
    sets = repo.list_sets()
    if not sets:
        return None, {}
    latest = sets[-1]
    return latest, {rel: (size, sha, stored) for rel, size, sha, stored in repo.read_media_index(latest)}


def plan_media(repo, source, rehash=False):
    """Split the source's files into (reused entries, files to copy)."""
    base, prev = _previous_index(repo) if repo.exists() else (None, {})
    objects = repo.object_set() if prev else set()
    reused, to_copy = [], []
    for rel, size in source.scan():
        p = prev.get(rel)
        if p and p[0] == size and not rehash and p[1] in objects:
            reused.append((rel, size, p[1], p[2]))
        else:
            to_copy.append((rel, size))
    return base, reused, to_copy


def backup(cfg):
    if not cfg.server_name:
        raise BackupError("server_name is required for a backup")
    if cfg.pg is None:
        raise BackupError("a database source is required for a backup")
    has_secrets = bool(cfg.secret_files) or (cfg.kube_api is not None and cfg.secrets_namespace)
    if has_secrets and not cfg.encrypted and not cfg.allow_unencrypted_secrets:
        raise BackupError("refusing to store secrets (signing key) unencrypted: set encryption recipients, "
                          "or allow_unencrypted_secrets=true to store them with mode 0600")
    repo = Repository(cfg.dest)
    started = time.monotonic()
    result = {"changed": False, "dest": repo.root}

    if cfg.check_mode:
        facts = _pg_facts(cfg.pg)
        plan = {"database": {"name": cfg.pg.dbname, "estimated_bytes": facts.get("database_size")}}
        if cfg.media is not None:
            base, reused, to_copy = plan_media(repo, cfg.media, cfg.media_rehash)
            plan["media"] = {"base_set": base, "files_total": len(reused) + len(to_copy),
                             "bytes_total": sum(e[1] for e in reused) + sum(s for _r, s in to_copy),
                             "files_to_copy": len(to_copy), "bytes_to_copy": sum(s for _r, s in to_copy)}
        plan["secrets"] = {"files": list(cfg.secret_files), "kubernetes_namespace": cfg.secrets_namespace}
        result.update(changed=True, plan=plan, set_id=None)
        if cfg.s3 is not None and repo.exists():
            result["s3"] = cfg.s3.push(repo, check_mode=True)
        return result

    info = repo.init(cfg.media_encrypt)
    with repo.lock(exclusive=True, wait=cfg.lock_wait):
        cleaned = repo.remove_incomplete()
        set_id = repo.unique_set_id()
        tmp = repo.begin_set(set_id)
        started_at = _now().isoformat()
        try:
            files = {}
            manifest = {
                "format": "matrix.stack/backup-set", "version": 1, "set_id": set_id, "server_name": cfg.server_name,
                "started_at": started_at, "encrypted": cfg.encrypted, "recipients": list(cfg.recipient_strings),
                "synapse": {"version": synapse_version(cfg)},
            }
            pgf = _pg_facts(cfg.pg)
            manifest["postgresql"] = {"server_version": pgf["server_version"], "database": pgf["database"],
                                      "source": pgf["source"], "database_size": pgf["database_size"],
                                      "pg_dump_version": cfg.pg.client_version("pg_dump")}
            manifest["synapse"]["schema_version"] = pgf["synapse_schema_version"]

            # 1. database first: pg_dump takes its snapshot before it writes its first byte, so once that byte
            #    has arrived every media ID the dump can reference has its file in the store (Synapse writes the
            #    file before the row). Only then does the media copy start; it overlaps the rest of the dump.
            t0 = time.monotonic()
            db_name = _stored_name(DB_FILE, cfg.encrypted)
            db_path = os.path.join(tmp, db_name)
            media_job = None
            if cfg.media is not None:
                media_job = _MediaJob(cfg, repo, info, tmp)
            if not cfg.encrypted and cfg.pg.kind == "direct":
                # pg_dump writes the file itself (no Python in the data path), hashed afterwards
                try:
                    cfg.pg.dump_to_file(db_path, on_first_byte=media_job.start if media_job and cfg.parallel else None)
                except BaseException:
                    if media_job is not None:
                        media_job.cancel()
                    raise
                sha, size = sha256_file(db_path)
                hr = hw = _Digest(sha, size)
            else:
                stream = cfg.pg.dump()
                try:
                    first = stream.read(CHUNK)
                    if media_job is not None and cfg.parallel:
                        media_job.start()
                    with crypto.open_private(db_path) as out:
                        hw = HashingWriter(out)
                        hr = HashingReader(_PrefixReader(first, stream))
                        if cfg.encrypted:
                            crypto.encrypt_stream(hr, hw, cfg.recipients)
                        else:
                            crypto.copy_stream(hr, hw)
                        out.flush()
                except BaseException:
                    stream.kill()
                    if media_job is not None:
                        media_job.cancel()
                    raise
                stream.wait()
            if hr.size == 0:
                raise BackupError("pg_dump produced no output")
            db_secs = time.monotonic() - t0
            files[db_name] = {"size": hw.size, "sha256": hw.sha.hexdigest()}
            manifest["database"] = {"file": db_name, "size": hr.size, "sha256": hr.sha.hexdigest(), "format": "custom",
                                    "excluded_table_data": list(pg_mod.EXCLUDE_DATA), "seconds": round(db_secs, 3)}
            stats = {"database": {"bytes": hr.size, "stored_bytes": hw.size, "seconds": round(db_secs, 3),
                                  "throughput_mb_s": _rate(hr.size, db_secs)}}

            # 2. media (incremental)
            if media_job is not None:
                if media_job.pending:          # sequential mode, or the dump finished before the first poll
                    media_job.run()
                files_entry, manifest["media"], stats["media"] = media_job.result()
                files[MEDIA_INDEX] = files_entry

            # 3. secrets
            bundle = {"kubernetes": [], "files": []}
            if cfg.kube_api is not None and cfg.secrets_namespace:
                bundle["kubernetes"] = secrets_mod.collect_kubernetes(cfg.kube_api, cfg.secrets_namespace, cfg.secrets_selector)
            bundle["files"] = secrets_mod.collect_files(cfg.secret_files)
            if bundle["kubernetes"] or bundle["files"]:
                raw = json.dumps(bundle, sort_keys=True).encode("utf-8")
                sname = _stored_name(SECRETS_FILE, cfg.encrypted)
                size, sha = _write_blob(os.path.join(tmp, sname), raw, cfg.recipients)
                files[sname] = {"size": size, "sha256": sha}
                import hashlib
                manifest["secrets"] = {"file": sname, "encrypted": cfg.encrypted, "sha256": hashlib.sha256(raw).hexdigest(),
                                       "kubernetes": ["%s/%s" % (s["namespace"], s["name"]) for s in bundle["kubernetes"]],
                                       "files": [f["path"] for f in bundle["files"]]}
                stats["secrets"] = {"kubernetes": len(bundle["kubernetes"]), "files": len(bundle["files"])}
            del bundle

            # 4. manifest, then COMPLETE (commit)
            manifest["finished_at"] = _now().isoformat()
            mname = _stored_name(MANIFEST_FILE, cfg.encrypted)
            size, sha = _write_blob(os.path.join(tmp, mname), json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"),
                                    cfg.recipients)
            files[mname] = {"size": size, "sha256": sha}
            syncfs(repo.root)
            repo.commit_set(set_id, tmp, files, {"server_name": cfg.server_name, "encrypted": cfg.encrypted,
                                                 "media_encrypted": bool(info.get("media_encrypted")),
                                                 "started_at": started_at})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if cfg.s3 is not None:
            try:
                result["s3"] = cfg.s3.push(repo)
            except BackupError as e:
                raise BackupError("set %s is complete in %s, but copying it to %s failed (the next backup copies every "
                                  "set the bucket lacks): %s" % (set_id, repo.root, cfg.s3.describe(), e)) from e
    secs = time.monotonic() - started
    total = stats["database"]["bytes"] + stats.get("media", {}).get("bytes_copied", 0)
    stats["total"] = {"seconds": round(secs, 3), "bytes_written": sum(f["size"] for f in files.values())
                      + stats.get("media", {}).get("bytes_copied", 0), "throughput_mb_s": _rate(total, secs)}
    result.update(changed=True, set_id=set_id, path=repo.set_path(set_id), stats=stats, cleaned_incomplete=cleaned,
                  encrypted=cfg.encrypted)
    return result


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------
class _TeeToPipe(HashingWriter):
    """Writer that hashes everything and forwards it to a pipe until the reader goes away."""

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        if self.raw is not None:
            try:
                self.raw.write(data)
            except (BrokenPipeError, ValueError, OSError):
                self.raw = None
        return len(data)

    def flush(self):
        pass


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


def verify_set(cfg, repo, set_id):
    """Return (problems, details). Never modifies anything."""
    problems = []
    details = {"set_id": set_id, "files_checked": 0, "media_checked": 0, "bytes_checked": 0}
    marker = repo.read_complete(set_id)
    path = repo.set_path(set_id)
    t0 = time.monotonic()
    for name, meta in sorted(marker["files"].items()):
        fp = os.path.join(path, name)
        if not os.path.isfile(fp):
            problems.append("%s: missing" % name)
            continue
        sha, size = sha256_file(fp)
        details["files_checked"] += 1
        details["bytes_checked"] += size
        if size != meta.get("size") or sha != meta.get("sha256"):
            problems.append("%s: checksum mismatch (stored file altered or corrupt)" % name)
    if problems:
        details["seconds"] = round(time.monotonic() - t0, 3)
        return problems, details

    encrypted = bool(marker.get("encrypted"))
    if encrypted and not cfg.identities:
        details["content_verified"] = False
        details["warning"] = "set is encrypted and no age identity was given: only stored checksums were verified"
    else:
        try:
            manifest = load_manifest(repo, set_id, cfg.identities)
        except (BackupError, ValueError) as e:
            problems.append("manifest: %s" % e)
            return problems, details
        details["server_name"] = manifest.get("server_name")
        db = manifest.get("database") or {}
        dbp = os.path.join(path, db.get("file", DB_FILE))

        def feed(pipe):
            tee = _TeeToPipe(pipe)
            with open(dbp, "rb") as f:
                if encrypted:
                    crypto.decrypt_stream(f, tee, cfg.identities, what="database dump")
                else:
                    crypto.copy_stream(f, tee)
            feed.tee = tee
        need = dump_major(manifest)
        pg_restore = os.path.join(cfg.pg_clients.find(need, ("pg_restore",), why="the dump of set %s (PostgreSQL %s)"
                                                      % (set_id, need)), "pg_restore")
        try:
            entries = pg_mod.list_dump(pg_restore, feed)
            details["dump_toc_entries"] = entries
            tee = feed.tee
            if tee.sha.hexdigest() != db.get("sha256") or tee.size != db.get("size"):
                problems.append("database dump: plaintext checksum differs from the manifest")
            if entries == 0:
                problems.append("database dump: pg_restore --list shows no entries")
        except BackupError as e:
            problems.append("database dump: %s" % e)
        sec = manifest.get("secrets")
        if sec:
            try:
                with open(os.path.join(path, sec["file"]), "rb") as f:
                    raw = f.read()
                raw = crypto.decrypt_bytes(raw, cfg.identities, what="secrets") if sec.get("encrypted") else raw
                import hashlib
                if hashlib.sha256(raw).hexdigest() != sec.get("sha256"):
                    problems.append("secrets: plaintext checksum differs from the manifest")
            except BackupError as e:
                problems.append("secrets: %s" % e)
        details["content_verified"] = True
        details["manifest"] = _public_manifest(manifest)

    # media: every referenced object present (and intact when verify_media=checksum)
    if MEDIA_INDEX in marker["files"]:
        seen = set()
        for rel, _size, sha, stored in repo.read_media_index(set_id):
            details["media_checked"] += 1
            if sha in seen:
                continue
            seen.add(sha)
            op = repo.object_path(sha)
            if not os.path.isfile(op):
                problems.append("media object missing for %s" % rel)
                continue
            if cfg.verify_media == "checksum":
                osha, osize = sha256_file(op)
                details["bytes_checked"] += osize
                if osha != stored:
                    problems.append("media object for %s: checksum mismatch" % rel)
            if len(problems) > 50:
                problems.append("... too many problems, stopping")
                break
    details["seconds"] = round(time.monotonic() - t0, 3)
    details["throughput_mb_s"] = _rate(details["bytes_checked"], details["seconds"])
    return problems, details


def _public_manifest(m):
    """Manifest without anything sensitive (it has no secret values, but keep the result small)."""
    keep = ("set_id", "server_name", "started_at", "finished_at", "synapse", "postgresql", "database", "media", "encrypted")
    out = {k: m.get(k) for k in keep if k in m}
    if "secrets" in m:
        out["secrets"] = {"kubernetes": m["secrets"].get("kubernetes"), "files": m["secrets"].get("files")}
    return out


def pull_from_s3(cfg):
    """Download the requested set from the off-site copy into dest (a local cache repository) so that verify and
    restore work on it like on a local set; the requested name then means that set. None without s3."""
    if cfg.s3 is None:
        return None
    if cfg.set_name == "all":
        raise BackupError("set: all is not supported with s3: name one set or use latest")
    repo = Repository(cfg.dest)
    if cfg.check_mode:
        set_id = cfg.s3.resolve(cfg.set_name)
        local = repo.exists() and repo.read_complete(set_id) is not None
        stats = {"source": cfg.s3.describe(), "set_id": set_id, "already_local": local}
    else:
        with repo.lock(exclusive=True, wait=cfg.lock_wait):
            stats = cfg.s3.pull(repo, cfg.set_name)
    cfg.set_name = stats["set_id"]
    return stats


def verify(cfg):
    pulled = pull_from_s3(cfg)
    if pulled is not None and not pulled["already_local"] and cfg.check_mode:
        return {"changed": False, "ok": True, "problems": [], "sets": [], "set_id": pulled["set_id"], "s3": pulled,
                "plan": ["download set %s from %s, then verify it" % (pulled["set_id"], pulled["source"])]}
    result = _verify_local(cfg)
    if pulled is not None:
        result["s3"] = pulled
    return result


def _verify_local(cfg):
    repo = Repository(cfg.dest)
    if not repo.exists():
        raise BackupError("%s is not a backup repository" % repo.root)
    with repo.lock(exclusive=False, wait=cfg.lock_wait):
        targets = repo.list_sets() if cfg.set_name == "all" else [repo.resolve_set(cfg.set_name)]
        if not targets:
            raise BackupError("no completed backup set in %s" % repo.root)
        all_problems, sets = [], []
        for s in targets:
            problems, details = verify_set(cfg, repo, s)
            details["problems"] = problems
            sets.append(details)
            all_problems += ["%s: %s" % (s, p) for p in problems]
    return {"changed": False, "ok": not all_problems, "problems": all_problems, "sets": sets,
            "set_id": targets[-1], "incomplete_sets": repo.incomplete_sets()}


# ---------------------------------------------------------------------------------------------
# restore
# ---------------------------------------------------------------------------------------------
def _apps(cfg):
    from kubernetes import client
    return client.AppsV1Api(cfg.kube_api), client.CoreV1Api(cfg.kube_api)


def _scale(cfg, replicas, wait_gone):
    from kubernetes import client
    apps, core = _apps(cfg)
    name, ns = cfg.synapse_deployment, cfg.synapse_namespace
    try:
        dep = apps.read_namespaced_deployment(name, ns)
        apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": replicas}})
    except client.exceptions.ApiException as e:
        raise BackupError("cannot scale Deployment %s/%s: %s" % (ns, name, e.reason)) from e
    if wait_gone:
        sel = ",".join("%s=%s" % kv for kv in sorted((dep.spec.selector.match_labels or {}).items()))
        deadline = time.monotonic() + cfg.scale_timeout
        while time.monotonic() < deadline:
            pods = core.list_namespaced_pod(ns, label_selector=sel).items
            if not pods:
                return
            time.sleep(1)
        raise BackupError("Synapse pods of %s/%s still present after %ss" % (ns, name, cfg.scale_timeout))


def _current_replicas(cfg):
    apps, _core = _apps(cfg)
    dep = apps.read_namespaced_deployment(cfg.synapse_deployment, cfg.synapse_namespace)
    return dep.spec.replicas


def wait_health(url, timeout):
    from ansible.module_utils.urls import open_url
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with open_url(url, timeout=5, validate_certs=False) as r:
                if r.status == 200:
                    return round(timeout - (deadline - time.monotonic()), 1)
        except Exception as e:  # keep polling until the deadline
            last = e
        time.sleep(1)
    raise BackupError("Synapse did not become healthy at %s within %ss (%s)" % (url, timeout, last))


def _db_state(pg):
    _rc, out = pg.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % pg.dbname.replace("'", ""))
    if out.strip() != "1":
        return "absent", 0
    _rc, n = pg.psql(pg_mod.EMPTY_SQL, dbname=pg.dbname)
    n = int(n or 0)
    return ("empty" if n == 0 else "non-empty"), n


def restore(cfg):
    pulled = pull_from_s3(cfg)
    if pulled is not None and not pulled["already_local"] and cfg.check_mode:
        return {"changed": True, "set_id": pulled["set_id"], "s3": pulled,
                "plan": ["download set %s from %s" % (pulled["set_id"], pulled["source"]),
                         "verify it, then restore (run without check mode once downloaded to see every step)"]}
    result = _restore_local(cfg)
    if pulled is not None:
        result["s3"] = pulled
    return result


def _restore_local(cfg):
    repo = Repository(cfg.dest)
    if not repo.exists():
        raise BackupError("%s is not a backup repository" % repo.root)
    t_start = time.monotonic()
    with repo.lock(exclusive=False, wait=cfg.lock_wait):
        set_id = repo.resolve_set(cfg.set_name)
        marker = repo.read_complete(set_id)
        if marker.get("encrypted") and not cfg.identities:
            raise BackupError("set %s is encrypted: an age identity is required to restore it" % set_id)
        # 1. verify first: nothing is touched when the set is damaged
        problems, vdetails = verify_set(cfg, repo, set_id)
        if problems:
            err = BackupError("set %s failed verification, nothing was restored: %s" % (set_id, "; ".join(problems[:10])))
            err.problems = problems
            raise err
        manifest = load_manifest(repo, set_id, cfg.identities)
        if cfg.server_name and manifest.get("server_name") != cfg.server_name and not cfg.force:
            raise BackupError("set %s is for server %r, not %r (use force to override)"
                              % (set_id, manifest.get("server_name"), cfg.server_name))
        if not cfg.server_name and not cfg.force:
            raise BackupError("server_name of the target is required for a restore (or force)")
        steps = []
        db_state = None
        pg_facts = None
        if cfg.pg is not None:
            pg_facts = check_restore_major(cfg.pg, manifest, set_id)
            db_state, ntables = _db_state(cfg.pg)
            if db_state == "non-empty" and not cfg.force:
                raise BackupError("database %s is not empty (%d tables): refusing to restore over it without force"
                                  % (cfg.pg.dbname, ntables))
        media_target = cfg.media
        media_pod_first = media_target is not None and media_target.kind == "pod"
        scale = bool(cfg.synapse_deployment and cfg.kube_api is not None)
        if media_pod_first and manifest.get("media"):
            steps.append("restore media into %s (additive; before scaling down, the pod mounts the volume)" % media_target.describe())
        if scale:
            steps.append("scale Deployment %s/%s to 0" % (cfg.synapse_namespace, cfg.synapse_deployment))
        if cfg.pg is not None:
            if db_state != "absent":
                steps.append("drop database %s (%s)" % (cfg.pg.dbname, db_state))
            steps.append("create database %s (UTF8, C collation, template0)" % cfg.pg.dbname)
            steps.append("pg_restore %s (PostgreSQL %s dump, pg_restore %s, server %s)"
                         % (manifest["database"]["file"], pg_facts["dump_major"], pg_facts.get("pg_restore_version"),
                            pg_facts["server_version"]))
            steps.append("TRUNCATE e2e_one_time_keys_json")
        if media_target is not None and not media_pod_first and manifest.get("media"):
            steps.append("restore media into %s" % media_target.describe())
        sec = manifest.get("secrets")
        if sec:
            if sec.get("kubernetes") and cfg.kube_api is not None:
                steps.append("restore Secrets %s" % ", ".join(sec["kubernetes"]))
            if sec.get("files"):
                steps.append("restore secret files %s" % ", ".join(sec["files"]))
        if scale:
            steps.append("scale Deployment back up")
        if cfg.health_url:
            steps.append("wait for %s" % cfg.health_url)
        result = {"changed": True, "set_id": set_id, "plan": steps, "server_name": manifest.get("server_name"),
                  "verify": {"seconds": vdetails.get("seconds"), "bytes_checked": vdetails.get("bytes_checked")},
                  "manifest": _public_manifest(manifest)}
        if pg_facts is not None:
            result["postgresql"] = pg_facts
        if cfg.check_mode:
            return result

        stats = {"media": {"files_restored": 0, "bytes_restored": 0, "files_skipped": 0}}
        index = [(rel, size, sha, repo.object_path(sha)) for rel, size, sha, _st in repo.read_media_index(set_id)]
        media_encrypted = bool(marker.get("media_encrypted"))

        def do_media():
            t0 = time.monotonic()
            media_target.restore(index, cfg.identities, media_encrypted, stats["media"])
            stats["media"]["seconds"] = round(time.monotonic() - t0, 3)
            stats["media"]["throughput_mb_s"] = _rate(stats["media"]["bytes_restored"], stats["media"]["seconds"])

        if media_pod_first and manifest.get("media"):
            do_media()
        replicas = None
        if scale:
            replicas = cfg.synapse_replicas if cfg.synapse_replicas is not None else (_current_replicas(cfg) or 1)
            _scale(cfg, 0, wait_gone=True)
        if cfg.pg is not None:
            t0 = time.monotonic()
            pg = cfg.pg
            qdb = pg_mod.quote_ident(pg.dbname)
            if db_state != "absent":
                pg.psql("DROP DATABASE %s WITH (FORCE)" % qdb)
            pg.psql(pg_mod.create_db_sql(pg.dbname, pg.owner))
            db = manifest["database"]
            dbp = os.path.join(repo.set_path(set_id), db["file"])
            if marker.get("encrypted"):
                def feed(pipe):
                    with open(dbp, "rb") as f:
                        crypto.decrypt_stream(f, pipe, cfg.identities, what="database dump")
                pg.restore(db["size"], reader=feed, jobs=1)
                jobs = 1
            else:
                jobs = cfg.jobs if pg.kind == "direct" else 1
                pg.restore(db["size"], path=dbp, jobs=jobs)
            pg.psql("TRUNCATE e2e_one_time_keys_json", dbname=pg.dbname)
            secs = time.monotonic() - t0
            stats["database"] = {"bytes": db["size"], "seconds": round(secs, 3), "jobs": jobs,
                                 "throughput_mb_s": _rate(db["size"], secs)}
        if media_target is not None and not media_pod_first and manifest.get("media"):
            do_media()
        if sec:
            spath = os.path.join(repo.set_path(set_id), sec["file"])
            with open(spath, "rb") as f:
                raw = f.read()
            raw = crypto.decrypt_bytes(raw, cfg.identities, what="secrets") if sec.get("encrypted") else raw
            bundle = json.loads(raw)
            del raw
            restored = {"kubernetes": [], "files": []}
            if bundle.get("kubernetes") and cfg.kube_api is not None:
                restored["kubernetes"] = secrets_mod.restore_kubernetes(cfg.kube_api, bundle["kubernetes"], cfg.secrets_namespace)
            if bundle.get("files"):
                restored["files"] = secrets_mod.restore_files(bundle["files"])
            del bundle
            stats["secrets"] = restored
        if scale:
            _scale(cfg, replicas, wait_gone=False)
            stats["scaled_to"] = replicas
        if cfg.health_url:
            stats["health_wait_seconds"] = wait_health(cfg.health_url, cfg.health_timeout)
    stats["total_seconds"] = round(time.monotonic() - t_start, 3)
    result["stats"] = stats
    return result


# ---------------------------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------------------------
def prune(cfg):
    repo = Repository(cfg.dest)
    if not repo.exists():
        raise BackupError("%s is not a backup repository" % repo.root)
    keep = cfg.keep or {}
    if not any(keep.get(k) for k in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")):
        raise BackupError("prune needs at least one of keep_last, keep_daily, keep_weekly, keep_monthly")
    with repo.lock(exclusive=True, wait=cfg.lock_wait):
        sets = repo.list_sets()
        rules = {k: keep.get(k) or 0 for k in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")}
        kept, delete = retention.select([(s, set_id_time(s)) for s in sets], **rules)
        incomplete = repo.incomplete_sets()
        refs = repo.referenced_objects([s for s in sets if s in kept])
        orphans = [o for o in repo.all_objects() if o not in refs]
        freed = sum(os.path.getsize(repo.object_path(o)) for o in orphans)
        changed = bool(delete or orphans or incomplete)
        result = {"changed": changed, "kept": {s: kept[s] for s in sorted(kept)}, "deleted": delete,
                  "media_objects_deleted": len(orphans), "media_bytes_freed": freed, "incomplete_removed": incomplete}
        if not cfg.check_mode:
            _delete_sets_and_orphans(repo, delete, orphans)
    if cfg.s3 is not None:
        result["s3"] = cfg.s3.prune(lambda remote: retention.select([(s, set_id_time(s)) for s in remote], **rules)[1],
                                    check_mode=cfg.check_mode)
        result["changed"] = result["changed"] or bool(result["s3"]["deleted"] or result["s3"]["media_objects_deleted"])
    return result


def _delete_sets_and_orphans(repo, delete, orphans):
    for s in delete:
        repo.delete_set(s)
    repo.remove_incomplete()
    # recompute references from what is on disk now, so an object is only deleted if no set uses it
    refs = repo.referenced_objects(repo.list_sets())
    for o in orphans:
        if o not in refs:
            os.unlink(repo.object_path(o))
    write_json_atomic(os.path.join(repo.root, "last-prune.json"), {"at": _now().isoformat(), "deleted": delete})
