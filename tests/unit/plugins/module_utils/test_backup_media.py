"""Unit tests for the media store source and the incremental object copy (real files)."""

import hashlib
import os

import pytest

from ._backup_helpers import make_set, new_repo
from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup import media
from ansible_collections.matrix.stack.plugins.module_utils.backup import create
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError


def write(root, rel, content):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(content)


@pytest.fixture
def store(tmp_path):
    root = str(tmp_path / "media_store")
    write(root, "local_content/ab/cd/efghij", b"image bytes")
    write(root, "local_thumbnails/ab/cd/efghij/32-32-image-jpeg-crop", b"thumb")
    for cache in ("remote_content/matrix.org/aa/bb/cc", "remote_thumbnail/matrix.org/aa/bb/cc/1",
                  "remote_thumbnails/x/y", "url_cache/aa/bb/cc", "url_cache_thumbnails/aa/bb/cc/1"):
        write(root, cache, b"cache")
    os.symlink("/etc/passwd", os.path.join(root, "local_content/ab/cd/link"))
    return root


def test_scan_only_local_media(store):
    files = dict(media.LocalMedia(store).scan())
    assert files == {"local_content/ab/cd/efghij": 11, "local_thumbnails/ab/cd/efghij/32-32-image-jpeg-crop": 5}


def test_scan_missing_store(tmp_path):
    with pytest.raises(BackupError, match="does not exist"):
        list(media.LocalMedia(str(tmp_path / "nope")).scan())


def test_safe_rel():
    for bad in ("../etc/passwd", "/abs", "remote_content/x", "local_content/../../x", "local_content/a\nb"):
        with pytest.raises(BackupError):
            media._safe_rel(bad)  # pylint: disable=protected-access


def test_plan_is_incremental(tmp_path, store):
    repo = new_repo(tmp_path)
    src = media.LocalMedia(store)
    base, reused, to_copy = create.plan_media(repo, src)
    assert base is None and not reused and len(to_copy) == 2
    make_set(repo, "20260101T000000Z", media={"local_content/ab/cd/efghij": b"image bytes",
                                              "local_thumbnails/ab/cd/efghij/32-32-image-jpeg-crop": b"thumb"})
    write(store, "local_content/ab/cd/new", b"new")
    base, reused, to_copy = create.plan_media(repo, src)
    assert base == "20260101T000000Z"
    assert [r for r, _s in to_copy] == ["local_content/ab/cd/new"]
    assert len(reused) == 2
    # an object that vanished from the repository is copied again
    sha = hashlib.sha256(b"thumb").hexdigest()
    os.unlink(repo.object_path(sha))
    _b, reused, to_copy = create.plan_media(repo, src)
    assert sorted(r for r, _s in to_copy) == ["local_content/ab/cd/new", "local_thumbnails/ab/cd/efghij/32-32-image-jpeg-crop"]
    # rehash ignores the index
    _b, reused, to_copy = create.plan_media(repo, src, rehash=True)
    assert not reused and len(to_copy) == 3


def test_store_object_plain_and_encrypted(tmp_path):
    repo = new_repo(tmp_path)
    repo.init(False)
    src = tmp_path / "f"
    src.write_bytes(os.urandom(200000))
    with open(src, "rb") as f:
        sha, size, stored, new = media.store_object(repo, f, None)
    assert sha == stored == hashlib.sha256(src.read_bytes()).hexdigest() and size == 200000 and new
    with open(src, "rb") as f:
        assert media.store_object(repo, f, None)[3] is False     # dedup

    erepo = new_repo(tmp_path / "enc")
    erepo.init(True)
    secret, public = crypto.generate_identity()
    with open(src, "rb") as f:
        sha2, size2, stored2, _new = media.store_object(erepo, f, crypto.parse_recipients([public]))
    assert sha2 == sha and size2 == size and stored2 != sha
    raw = open(erepo.object_path(sha), "rb").read()
    assert hashlib.sha256(raw).hexdigest() == stored2
    assert crypto.decrypt_bytes(raw, crypto.parse_identities([secret])) == src.read_bytes()
    assert os.listdir(erepo.media_tmp) == []


def test_local_restore_checks_objects(tmp_path):
    repo = new_repo(tmp_path)
    content = {"local_content/aa/bb/one": b"1" * 10, "local_content/aa/bb/two": b"2" * 20}
    make_set(repo, "20260101T000000Z", media=content)
    items = [(rel, size, sha, repo.object_path(sha)) for rel, size, sha, _st in repo.read_media_index("20260101T000000Z")]
    target = media.LocalMedia(str(tmp_path / "restored"))
    stats = {"files_restored": 0, "bytes_restored": 0, "files_skipped": 0}
    target.restore(items, [], False, stats)
    assert stats == {"files_restored": 2, "bytes_restored": 30, "files_skipped": 0}
    assert (tmp_path / "restored/local_content/aa/bb/two").read_bytes() == b"2" * 20
    target.restore(items, [], False, stats)
    assert stats["files_skipped"] == 2

    # a flipped byte in an object is caught and nothing half-written stays behind
    sha = items[0][2]
    with open(repo.object_path(sha), "r+b") as f:
        f.write(b"X")
    other = media.LocalMedia(str(tmp_path / "other"))
    with pytest.raises(BackupError, match="does not match its checksum"):
        other.restore(items, [], False, {"files_restored": 0, "bytes_restored": 0, "files_skipped": 0})
    leftovers = [n for _d, _s, fs in os.walk(tmp_path / "other") for n in fs]
    assert not any(n.startswith(".restore-") for n in leftovers)
    assert not (tmp_path / "other" / items[0][0]).exists()
