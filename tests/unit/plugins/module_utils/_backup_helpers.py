"""Shared helpers for the matrix_backup unit tests: build real repositories on disk."""

import hashlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
COLLECTIONS = REPO / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import Repository, MEDIA_INDEX  # noqa: E402


def put_object(repo, content):
    sha = hashlib.sha256(content).hexdigest()
    tmp = repo.object_tmp()
    with open(tmp, "wb") as f:
        f.write(content)
    repo.place_object(tmp, sha)
    return sha


def make_set(repo, set_id, media=None, complete=True):
    """A set with a media index (rel -> bytes) and a dummy file; complete=False leaves it unfinished."""
    repo.init(False)
    tmp = repo.begin_set(set_id)
    entries = []
    for rel, content in (media or {}).items():
        sha = put_object(repo, content)
        entries.append((rel, len(content), sha, sha))
    repo.write_media_index(os.path.join(tmp, MEDIA_INDEX), entries)
    with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
        f.write('{"set_id": "%s"}' % set_id)
    if not complete:
        return tmp
    from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import sha256_file
    files = {}
    for name in (MEDIA_INDEX, "manifest.json"):
        sha, size = sha256_file(os.path.join(tmp, name))
        files[name] = {"size": size, "sha256": sha}
    return repo.commit_set(set_id, tmp, files, {"server_name": "test.local", "encrypted": False})


def new_repo(tmp_path):
    return Repository(str(tmp_path / "repo"))
