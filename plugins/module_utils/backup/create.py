# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mode=backup: the database first, the media copy overlapping the end of the dump, then secrets, manifest, COMPLETE."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time

from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup import media as media_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg as pg_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import secrets as secrets_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup.manifest import DB_FILE, MANIFEST_FILE, SECRETS_FILE, now, rate, stored_name
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError, MEDIA_INDEX, Repository
from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import CHUNK, HashingReader, HashingWriter, sha256_file
from ansible_collections.matrix.stack.plugins.module_utils.common.files import syncfs


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


def pg_facts(pg):
    _rc, out = pg.psql(PG_FACTS_SQL, dbname=pg.dbname)
    version, size, schema = (out.strip().split("|") + ["", "", ""])[:3]
    return {"database": pg.dbname, "source": pg.describe(), "server_version": version,
            "database_size": int(size) if size.isdigit() else None,
            "synapse_schema_version": int(schema) if schema.isdigit() else None}


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
                 "base_set": base, "seconds": round(msecs, 3), "throughput_mb_s": rate(copied_bytes, msecs)}
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
        facts = pg_facts(cfg.pg)
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
        started_at = now().isoformat()
        try:
            files = {}
            manifest = {
                "format": "matrix.stack/backup-set", "version": 1, "set_id": set_id, "server_name": cfg.server_name,
                "started_at": started_at, "encrypted": cfg.encrypted, "recipients": list(cfg.recipient_strings),
                "synapse": {"version": synapse_version(cfg)},
            }
            pgf = pg_facts(cfg.pg)
            manifest["postgresql"] = {"server_version": pgf["server_version"], "database": pgf["database"],
                                      "source": pgf["source"], "database_size": pgf["database_size"],
                                      "pg_dump_version": cfg.pg.client_version("pg_dump")}
            manifest["synapse"]["schema_version"] = pgf["synapse_schema_version"]

            # 1. database first: pg_dump takes its snapshot before it writes its first byte, so once that byte
            #    has arrived every media ID the dump can reference has its file in the store (Synapse writes the
            #    file before the row). Only then does the media copy start; it overlaps the rest of the dump.
            t0 = time.monotonic()
            db_name = stored_name(DB_FILE, cfg.encrypted)
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
                                  "throughput_mb_s": rate(hr.size, db_secs)}}

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
                sname = stored_name(SECRETS_FILE, cfg.encrypted)
                size, sha = _write_blob(os.path.join(tmp, sname), raw, cfg.recipients)
                files[sname] = {"size": size, "sha256": sha}
                manifest["secrets"] = {"file": sname, "encrypted": cfg.encrypted, "sha256": hashlib.sha256(raw).hexdigest(),
                                       "kubernetes": ["%s/%s" % (s["namespace"], s["name"]) for s in bundle["kubernetes"]],
                                       "files": [f["path"] for f in bundle["files"]]}
                stats["secrets"] = {"kubernetes": len(bundle["kubernetes"]), "files": len(bundle["files"])}
            del bundle

            # 4. manifest, then COMPLETE (commit)
            manifest["finished_at"] = now().isoformat()
            mname = stored_name(MANIFEST_FILE, cfg.encrypted)
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
                      + stats.get("media", {}).get("bytes_copied", 0), "throughput_mb_s": rate(total, secs)}
    result.update(changed=True, set_id=set_id, path=repo.set_path(set_id), stats=stats, cleaned_incomplete=cleaned,
                  encrypted=cfg.encrypted)
    return result
