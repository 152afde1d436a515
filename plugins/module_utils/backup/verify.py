# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mode=verify: every stored checksum, the dump read through pg_restore --list, the media objects; never writes
(but for downloading the set from the off-site copy first)."""

from __future__ import annotations

import hashlib
import os
import time

from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg as pg_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup.manifest import DB_FILE, dump_major, load_manifest, public_manifest, rate
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError, MEDIA_INDEX, Repository
from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import HashingWriter, sha256_file


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
                if hashlib.sha256(raw).hexdigest() != sec.get("sha256"):
                    problems.append("secrets: plaintext checksum differs from the manifest")
            except BackupError as e:
                problems.append("secrets: %s" % e)
        details["content_verified"] = True
        details["manifest"] = public_manifest(manifest)

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
    details["throughput_mb_s"] = rate(details["bytes_checked"], details["seconds"])
    return problems, details


def pull_from_s3(cfg):
    """Download the requested set from the off-site copy into dest (a local cache repository) so that verify and
    restore work on it like on a local set. Returns (the config naming that set, what was pulled); (cfg, None) without
    s3."""
    if cfg.s3 is None:
        return cfg, None
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
    return cfg.replace(set_name=stats["set_id"]), stats


def on_pulled_set(cfg, run_local, download_plan):
    """Run ``run_local(cfg)`` on the requested set, downloaded from the off-site copy first when s3 is set. In check
    mode a set not yet downloaded cannot be read: the result is then ``download_plan(pulled)``."""
    cfg, pulled = pull_from_s3(cfg)
    if pulled is not None and not pulled["already_local"] and cfg.check_mode:
        return dict(download_plan(pulled), set_id=pulled["set_id"], s3=pulled)
    result = run_local(cfg)
    if pulled is not None:
        result["s3"] = pulled
    return result


def verify(cfg):
    return on_pulled_set(cfg, _verify_local, lambda pulled: {
        "changed": False, "ok": True, "problems": [], "sets": [],
        "plan": ["download set %s from %s, then verify it" % (pulled["set_id"], pulled["source"])]})


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
