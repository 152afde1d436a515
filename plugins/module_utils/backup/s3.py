# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An off-site copy of a backup repository in S3-compatible object storage.

The bucket holds the repository's own layout under a prefix (``repo.json``, ``media/<aa>/<sha>``,
``sets/<set_id>/...``), so a copy can be pulled back into an empty directory and restored with the same
code as a local set. Object storage has no rename, so atomicity comes from the order of writes:

* push: the media objects a set references, then its files, then its ``COMPLETE`` marker last. A set is
  only listed when its marker exists, so an interrupted push leaves nothing that looks complete, and the
  next push completes it (only what is missing is uploaded);
* delete (prune): the ``COMPLETE`` marker first, so the set disappears from listings at once, then its
  files, then the media objects no remaining set references;
* pull: every file is checked against the sha256 recorded in the marker (media objects against the
  stored sha256 of the set's index) before the set is committed locally.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import (
    BackupError, COMPLETE, MEDIA_INDEX, SET_ID_RE, parse_media_index, read_media_index_file)
from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import CHUNK

try:
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError
    HAS_BOTO3 = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_BOTO3 = False
    BotoCoreError = ClientError = Exception

UPLOAD_WORKERS = 4


def _error_text(exc):
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return "%s: %s" % (err.get("Code"), err.get("Message"))
    return str(exc)


class S3Copy:
    def __init__(self, bucket, endpoint_url=None, prefix="", region="us-east-1", access_key=None, secret_key=None,
                 ca_bundle=None, validate_certs=True):
        if not HAS_BOTO3:
            raise BackupError("the s3 option needs the boto3 Python library on the host that runs the module")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        verify = ca_bundle if ca_bundle else bool(validate_certs)
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, verify=verify,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}))

    def describe(self):
        where = self.endpoint_url or "AWS S3"
        return "s3://%s/%s (%s)" % (self.bucket, self.prefix, where)

    def _key(self, rel):
        return "%s/%s" % (self.prefix, rel) if self.prefix else rel

    def _call(self, what, func, **kw):
        try:
            return func(Bucket=self.bucket, **kw)
        except (BotoCoreError, ClientError) as e:
            raise BackupError("%s on %s failed: %s" % (what, self.describe(), _error_text(e))) from e

    def _list(self, rel_prefix):
        """Yield the keys (relative to the prefix) under rel_prefix."""
        strip = len(self._key(""))
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(rel_prefix)):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except (BotoCoreError, ClientError) as e:
            raise BackupError("listing %s failed: %s" % (self.describe(), _error_text(e))) from e

    def _get_bytes(self, rel, missing_ok=False):
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"]
        except (BotoCoreError, ClientError) as e:
            if missing_ok and getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise BackupError("reading %s on %s failed: %s" % (rel, self.describe(), _error_text(e))) from e
        try:
            return body.read()
        finally:
            body.close()

    def _download(self, rel, path, sha, size=None):
        """Download to path, checking the sha256 (and the size when known); the file is removed when they differ."""
        body = self._call("reading %s" % rel, self.client.get_object, Key=self._key(rel))["Body"]
        digest, got = hashlib.sha256(), 0
        try:
            with open(path, "wb") as out:
                for block in iter(lambda: body.read(CHUNK), b""):
                    digest.update(block)
                    got += len(block)
                    out.write(block)
        finally:
            body.close()
        if (size is not None and got != size) or digest.hexdigest() != sha:
            os.unlink(path)
            raise BackupError("%s in %s does not match its checksum (got %d bytes)" % (rel, self.describe(), got))

    def _upload(self, path, rel):
        # the server checks the sha256 of what it received before it stores the object
        with open(path, "rb") as f:
            self._call("uploading %s" % rel, self.client.put_object, Key=self._key(rel), Body=f, ChecksumAlgorithm="SHA256")

    # -- listing ----------------------------------------------------------------------------------
    def remote_sets(self):
        """Sets whose COMPLETE marker is in the bucket, oldest first."""
        out = []
        for rel in self._list("sets/"):
            parts = rel.split("/")
            if len(parts) == 3 and parts[2] == COMPLETE and SET_ID_RE.match(parts[1]):
                out.append(parts[1])
        return sorted(out)

    def remote_objects(self):
        return {rel.rsplit("/", 1)[-1] for rel in self._list("media/")}

    def read_marker(self, set_id):
        try:
            marker = json.loads(self._get_bytes("sets/%s/%s" % (set_id, COMPLETE)))
        except ValueError as e:
            raise BackupError("the COMPLETE marker of set %s in %s is not valid JSON" % (set_id, self.describe())) from e
        if marker.get("set_id") != set_id or not isinstance(marker.get("files"), dict):
            raise BackupError("the COMPLETE marker of set %s in %s is not valid" % (set_id, self.describe()))
        return marker

    def _remote_refs(self, set_id):
        """The media objects a remote set references."""
        raw = self._get_bytes("sets/%s/%s" % (set_id, MEDIA_INDEX), missing_ok=True)
        return {sha for _rel, _size, sha, _stored in parse_media_index((raw or b"").decode("utf-8").splitlines())}

    # -- push -------------------------------------------------------------------------------------
    def push(self, repo, check_mode=False):
        """Upload every complete local set the bucket lacks. Returns stats."""
        t0 = time.monotonic()
        stats = {"target": self.describe(), "sets_pushed": [], "objects_uploaded": 0, "bytes_uploaded": 0}
        local_info = repo.info()
        remote_info = self._remote_info()
        if remote_info is not None and bool(remote_info.get("media_encrypted")) != bool(local_info.get("media_encrypted")):
            raise BackupError("%s holds a repository with media encryption %s, unlike %s"
                              % (self.describe(), "on" if remote_info.get("media_encrypted") else "off", repo.root))
        remote = set(self.remote_sets())
        missing_sets = [s for s in repo.list_sets() if s not in remote]
        have = self.remote_objects() if missing_sets else set()
        uploads = []
        for set_id in missing_sets:
            for _rel, _size, sha, _stored in repo.read_media_index(set_id):
                if sha not in have:
                    have.add(sha)
                    uploads.append(sha)
        stats["sets_pushed"] = missing_sets
        stats["objects_uploaded"] = len(uploads)
        stats["bytes_uploaded"] = sum(os.path.getsize(repo.object_path(sha)) for sha in uploads)
        if check_mode or not missing_sets:
            stats["seconds"] = round(time.monotonic() - t0, 3)
            return stats
        if remote_info is None:
            self._upload(repo.info_path, "repo.json")
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="s3-upload") as pool:
            list(pool.map(lambda sha: self._upload(repo.object_path(sha), "media/%s/%s" % (sha[:2], sha)), uploads))
        for set_id in missing_sets:
            marker = repo.read_complete(set_id)
            for name, meta in marker["files"].items():
                self._upload(os.path.join(repo.set_path(set_id), name), "sets/%s/%s" % (set_id, name))
                stats["bytes_uploaded"] += meta["size"]
            # the marker last: until it is there, the set does not exist for a reader of the bucket
            self._upload(os.path.join(repo.set_path(set_id), COMPLETE), "sets/%s/%s" % (set_id, COMPLETE))
        stats["seconds"] = round(time.monotonic() - t0, 3)
        return stats

    def _remote_info(self):
        raw = self._get_bytes("repo.json", missing_ok=True)
        return None if raw is None else json.loads(raw)

    # -- pull -------------------------------------------------------------------------------------
    def resolve(self, name):
        sets = self.remote_sets()
        if not sets:
            raise BackupError("no completed backup set in %s" % self.describe())
        if name in (None, "", "latest"):
            return sets[-1]
        if name not in sets:
            raise BackupError("backup set %s not found (or not complete) in %s" % (name, self.describe()))
        return name

    def pull(self, repo, name):
        """Download a set (and the media objects the local repository lacks) into repo, checked, then
        committed locally like a set made here. Returns stats."""
        t0 = time.monotonic()
        set_id = self.resolve(name)
        stats = {"source": self.describe(), "set_id": set_id, "already_local": False, "objects_downloaded": 0,
                 "bytes_downloaded": 0}
        if repo.read_complete(set_id) is not None:
            stats["already_local"] = True
            return stats
        remote_info = self._remote_info()
        if remote_info is None:
            raise BackupError("%s has no repo.json: not a matrix.stack backup copy" % self.describe())
        repo.init(bool(remote_info.get("media_encrypted")))
        marker = self.read_marker(set_id)
        tmp = repo.begin_set(set_id)
        try:
            for fname, meta in marker["files"].items():
                if "/" in fname or fname.startswith("."):
                    raise BackupError("unexpected file name %r in set %s" % (fname, set_id))
                self._download("sets/%s/%s" % (set_id, fname), os.path.join(tmp, fname), meta["sha256"], meta["size"])
                stats["bytes_downloaded"] += meta["size"]
            local = repo.object_set()
            objects = {(sha, stored) for _rel, _size, sha, stored in read_media_index_file(os.path.join(tmp, MEDIA_INDEX))}
            for sha, stored in sorted(objects):
                if sha in local:
                    continue
                obj_tmp = repo.object_tmp()
                self._download("media/%s/%s" % (sha[:2], sha), obj_tmp, stored)
                stats["bytes_downloaded"] += os.path.getsize(obj_tmp)
                repo.place_object(obj_tmp, sha)
                local.add(sha)
                stats["objects_downloaded"] += 1
            meta = {k: v for k, v in marker.items() if k not in ("set_id", "files", "completed_at")}
            repo.commit_set(set_id, tmp, marker["files"], meta)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        stats["seconds"] = round(time.monotonic() - t0, 3)
        return stats

    # -- prune ------------------------------------------------------------------------------------
    def prune(self, select_func, check_mode=False):
        """Delete the remote sets select_func(set_ids) -> delete list names, then unreferenced objects."""
        sets = self.remote_sets()
        delete = select_func(sets)
        kept = [s for s in sets if s not in delete]
        refs = set()
        for set_id in kept:
            refs |= self._remote_refs(set_id)
        orphans = sorted(self.remote_objects() - refs)
        stats = {"target": self.describe(), "deleted": delete, "media_objects_deleted": len(orphans)}
        if check_mode:
            return stats
        for set_id in delete:
            self._call("deleting set %s" % set_id, self.client.delete_object, Key=self._key("sets/%s/%s" % (set_id, COMPLETE)))
            for rel in list(self._list("sets/%s/" % set_id)):
                self._call("deleting %s" % rel, self.client.delete_object, Key=self._key(rel))
        for sha in orphans:
            self._call("deleting object %s" % sha[:12], self.client.delete_object, Key=self._key("media/%s/%s" % (sha[:2], sha)))
        return stats
