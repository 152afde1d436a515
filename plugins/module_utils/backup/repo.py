# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup repository layout: sets, completion markers, media object store, locking.

Layout of a repository (``dest``)::

    repo.json                     format marker and repository-wide settings
    .lock                         flock()ed by every operation (exclusive for backup/prune)
    media/<aa>/<sha256>           media objects, content addressed by the sha256 of the plaintext,
                                  shared by all sets (age-encrypted when the repo encrypts media)
    media/.tmp/                   objects being written
    sets/<set_id>/                one completed backup set
        manifest.json[.age]       server name, versions, sizes, checksums, timestamps
        db.dump[.age]             pg_dump -Fc output
        secrets.json[.age]        Kubernetes Secrets and secret files (0600)
        media.idx                 one line per media file: sha256 size stored_sha256 path
        COMPLETE                  written last; lists every stored file with size and sha256
    sets/.tmp-<set_id>/           a set being written (never listed)

A set is only listed, verified, restored or counted when its directory name is a valid set id and
its COMPLETE marker exists and parses.  The set directory is renamed into place after COMPLETE is
written and fsynced, so a crash at any point leaves either a complete set or an ignored temp dir.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import itertools
import shutil
import threading
import time

from ansible_collections.matrix.stack.plugins.module_utils.common.files import atomic_write, fsync_dir

FORMAT = "matrix.stack/backup"
FORMAT_VERSION = 1
COMPLETE = "COMPLETE"
MEDIA_INDEX = "media.idx"
SET_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")
_TMP_COUNTER = itertools.count()


class BackupError(Exception):
    """An error the module reports with fail_json."""


def write_json_atomic(path, data, mode=0o644):
    with atomic_write(path, mode=mode) as f:
        f.write((json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def new_set_id(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def set_id_time(set_id):
    m = SET_ID_RE.match(set_id)
    if not m:
        raise ValueError("not a set id: %s" % set_id)
    return datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def parse_media_index(lines):
    """Yield (rel_path, size, sha256, stored_sha256) from the lines of a media index."""
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        sha, size, stored, rel = line.split("\t", 3)
        yield rel, int(size), sha, stored


def read_media_index_file(path):
    """parse_media_index of a file; nothing when the set has no media index."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        yield from parse_media_index(f)


class Lock:
    """flock() on <repo>/.lock; exclusive for writers, shared for readers."""

    def __init__(self, repo, exclusive, wait=0):
        self.path = os.path.join(repo, ".lock")
        self.exclusive = exclusive
        self.wait = wait
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        op = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, op)
                return self
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise BackupError("backup repository %s is locked by another operation" % self.path) from e
                time.sleep(0.5)

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Repository:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.sets_dir = os.path.join(self.root, "sets")
        self.media_dir = os.path.join(self.root, "media")
        self.media_tmp = os.path.join(self.media_dir, ".tmp")
        self.info_path = os.path.join(self.root, "repo.json")

    # -- repository -----------------------------------------------------------------------------
    def exists(self):
        return os.path.isfile(self.info_path)

    def info(self):
        if not self.exists():
            return None
        with open(self.info_path, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("format") != FORMAT:
            raise BackupError("%s is not a matrix.stack backup repository" % self.root)
        if info.get("version", 0) > FORMAT_VERSION:
            raise BackupError("backup repository format %s is newer than this module supports (%s)" % (info.get("version"), FORMAT_VERSION))
        return info

    def init(self, media_encrypted):
        """Create the repository if needed; return its info. Refuses to change the media encryption."""
        info = self.info()
        if info is not None:
            if bool(info.get("media_encrypted")) != bool(media_encrypted):
                raise BackupError(
                    "repository %s was created with media encryption %s; it cannot be changed (use a new destination)"
                    % (self.root, "on" if info.get("media_encrypted") else "off"))
            return info
        for d in (self.root, self.sets_dir, self.media_dir, self.media_tmp):
            os.makedirs(d, mode=0o700, exist_ok=True)
        info = {"format": FORMAT, "version": FORMAT_VERSION, "media_encrypted": bool(media_encrypted)}
        write_json_atomic(self.info_path, info)
        return info

    def lock(self, exclusive, wait=0):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        return Lock(self.root, exclusive, wait)

    # -- sets -----------------------------------------------------------------------------------
    def set_path(self, set_id):
        return os.path.join(self.sets_dir, set_id)

    def read_complete(self, set_id):
        path = os.path.join(self.set_path(set_id), COMPLETE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("set_id") != set_id or not isinstance(data.get("files"), dict):
            return None
        return data

    def list_sets(self):
        """Completed sets, oldest first. Sets without a valid COMPLETE marker are ignored."""
        if not os.path.isdir(self.sets_dir):
            return []
        out = []
        for name in sorted(os.listdir(self.sets_dir)):
            if not SET_ID_RE.match(name):
                continue
            if self.read_complete(name) is not None:
                out.append(name)
        return out

    def incomplete_sets(self):
        if not os.path.isdir(self.sets_dir):
            return []
        return sorted(n for n in os.listdir(self.sets_dir)
                      if n.startswith(".tmp-") or n.startswith(".del-")
                      or (SET_ID_RE.match(n) and self.read_complete(n) is None))

    def resolve_set(self, name):
        sets = self.list_sets()
        if not sets:
            raise BackupError("no completed backup set in %s" % self.root)
        if name in (None, "", "latest"):
            return sets[-1]
        if name not in sets:
            raise BackupError("backup set %s not found (or not complete) in %s" % (name, self.root))
        return name

    def unique_set_id(self, now=None):
        base = new_set_id(now)
        candidate = base
        n = 1
        while os.path.exists(self.set_path(candidate)) or os.path.exists(os.path.join(self.sets_dir, ".tmp-" + candidate)):
            candidate = "%s-%d" % (base, n)
            n += 1
        return candidate

    def begin_set(self, set_id):
        tmp = os.path.join(self.sets_dir, ".tmp-" + set_id)
        os.makedirs(tmp, mode=0o700)
        return tmp

    def commit_set(self, set_id, tmp, files, meta):
        """fsync every file, write COMPLETE last, rename into place, fsync parent."""
        for name in files:
            fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        marker = dict(meta)
        marker["set_id"] = set_id
        marker["files"] = files
        marker["completed_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        write_json_atomic(os.path.join(tmp, COMPLETE), marker, mode=0o600)
        fsync_dir(tmp)
        final = self.set_path(set_id)
        os.rename(tmp, final)
        fsync_dir(self.sets_dir)
        return final

    def delete_set(self, set_id):
        """Unlist atomically (rename) then remove."""
        src = self.set_path(set_id)
        dst = os.path.join(self.sets_dir, ".del-" + set_id)
        os.rename(src, dst)
        fsync_dir(self.sets_dir)
        shutil.rmtree(dst)

    def remove_incomplete(self):
        removed = []
        for name in self.incomplete_sets():
            shutil.rmtree(os.path.join(self.sets_dir, name), ignore_errors=True)
            removed.append(name)
        if os.path.isdir(self.media_tmp):
            for name in os.listdir(self.media_tmp):
                try:
                    os.unlink(os.path.join(self.media_tmp, name))
                except OSError:
                    pass
        return removed

    # -- media objects --------------------------------------------------------------------------
    def object_path(self, sha):
        return os.path.join(self.media_dir, sha[:2], sha)

    def has_object(self, sha):
        return os.path.isfile(self.object_path(sha))

    def object_tmp(self):
        os.makedirs(self.media_tmp, mode=0o700, exist_ok=True)
        return os.path.join(self.media_tmp, "obj-%d-%d-%d" % (os.getpid(), threading.get_ident(), next(_TMP_COUNTER)))

    def place_object(self, tmp_path, sha):
        """Move a fully written temp object into place (no-op if it already exists)."""
        dest = self.object_path(sha)
        if os.path.exists(dest):
            os.unlink(tmp_path)
            return False
        d = os.path.dirname(dest)
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.rename(tmp_path, dest)
        return True

    def object_set(self):
        """Names of all objects (one listdir per prefix directory instead of a stat per object)."""
        return set(self.all_objects())

    def all_objects(self):
        if not os.path.isdir(self.media_dir):
            return
        for sub in os.listdir(self.media_dir):
            if len(sub) != 2:
                continue
            yield from os.listdir(os.path.join(self.media_dir, sub))

    # -- media index ----------------------------------------------------------------------------
    @staticmethod
    def write_media_index(path, entries):
        """entries: iterable of (rel_path, size, sha256, stored_sha256). Returns count."""
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for rel, size, sha, stored in sorted(entries):
                if "\n" in rel or "\t" in rel:
                    raise BackupError("unsupported media file name %r" % rel)
                f.write("%s\t%d\t%s\t%s\n" % (sha, size, stored, rel))
                n += 1
            f.flush()
            os.fsync(f.fileno())
        return n

    def read_media_index(self, set_id):
        """Yield (rel_path, size, sha256, stored_sha256)."""
        yield from read_media_index_file(os.path.join(self.set_path(set_id), MEDIA_INDEX))

    def referenced_objects(self, set_ids):
        refs = set()
        for s in set_ids:
            for _rel, _size, sha, _stored in self.read_media_index(s):
                refs.add(sha)
        return refs
