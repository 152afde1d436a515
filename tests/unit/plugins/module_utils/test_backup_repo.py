"""Unit tests for backup/repo.py: atomic sets, completion markers, locking, media index (real files)."""

import json
import os

import pytest

from ._backup_helpers import make_set, new_repo, put_object
from ansible_collections.matrix.stack.plugins.module_utils.backup import repo as br
from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import sha256_file


def test_only_completed_sets_are_listed(tmp_path):
    repo = new_repo(tmp_path)
    make_set(repo, "20260101T000000Z")
    make_set(repo, "20260102T000000Z", complete=False)          # .tmp-... dir
    # a directory with a set-like name but no COMPLETE marker (e.g. copied by hand, or marker lost)
    os.makedirs(repo.set_path("20260103T000000Z"))
    # a corrupt marker
    make_set(repo, "20260104T000000Z")
    with open(os.path.join(repo.set_path("20260104T000000Z"), br.COMPLETE), "w", encoding="utf-8") as f:
        f.write("{not json")
    assert repo.list_sets() == ["20260101T000000Z"]
    assert repo.resolve_set("latest") == "20260101T000000Z"
    assert set(repo.incomplete_sets()) == {".tmp-20260102T000000Z", "20260103T000000Z", "20260104T000000Z"}
    with pytest.raises(br.BackupError):
        repo.resolve_set("20260103T000000Z")


def test_marker_must_name_its_set(tmp_path):
    repo = new_repo(tmp_path)
    make_set(repo, "20260101T000000Z")
    os.rename(repo.set_path("20260101T000000Z"), repo.set_path("20260105T000000Z"))
    assert repo.list_sets() == []


def test_commit_writes_marker_with_checksums(tmp_path):
    repo = new_repo(tmp_path)
    path = make_set(repo, "20260101T000000Z", media={"local_content/aa/bb/c": b"hello"})
    marker = json.loads(open(os.path.join(path, br.COMPLETE), encoding="utf-8").read())
    assert marker["set_id"] == "20260101T000000Z"
    assert set(marker["files"]) == {"media.idx", "manifest.json"}
    assert oct(os.stat(os.path.join(path, br.COMPLETE)).st_mode & 0o777) == "0o600"
    sha, size = sha256_file(os.path.join(path, "media.idx"))
    assert marker["files"]["media.idx"] == {"size": size, "sha256": sha}
    assert not [n for n in os.listdir(repo.sets_dir) if n.startswith(".tmp-")]


def test_media_index_roundtrip_and_refs(tmp_path):
    repo = new_repo(tmp_path)
    make_set(repo, "20260101T000000Z", media={"local_content/aa/bb/c": b"one", "local_thumbnails/aa/bb/c/32-32-image-png-crop": b"t"})
    make_set(repo, "20260102T000000Z", media={"local_content/aa/bb/c": b"one", "local_content/aa/bb/d": b"two"})
    idx = sorted(repo.read_media_index("20260102T000000Z"))
    assert [e[0] for e in idx] == ["local_content/aa/bb/c", "local_content/aa/bb/d"]
    assert idx[0][1] == 3
    assert len(repo.referenced_objects(["20260101T000000Z", "20260102T000000Z"])) == 3
    assert len(list(repo.all_objects())) == 3


def test_index_refuses_newlines(tmp_path):
    with pytest.raises(br.BackupError):
        br.Repository.write_media_index(str(tmp_path / "idx"), [("local_content/a\nb", 1, "0" * 64, "0" * 64)])


def test_object_dedup(tmp_path):
    repo = new_repo(tmp_path)
    repo.init(False)
    a = put_object(repo, b"same")
    b = put_object(repo, b"same")
    assert a == b
    assert list(repo.all_objects()) == [a]
    assert os.listdir(repo.media_tmp) == []


def test_media_encryption_is_fixed(tmp_path):
    repo = new_repo(tmp_path)
    repo.init(False)
    with pytest.raises(br.BackupError, match="cannot be changed"):
        repo.init(True)


def test_foreign_directory_is_rejected(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "repo.json").write_text('{"format": "something-else"}')
    with pytest.raises(br.BackupError, match="not a matrix.stack backup repository"):
        br.Repository(str(tmp_path / "repo")).info()


def test_exclusive_lock_blocks_second_writer(tmp_path):
    repo = new_repo(tmp_path)
    with repo.lock(exclusive=True):
        # flock locks are per open file description: a second open in the same process conflicts too
        with pytest.raises(br.BackupError, match="locked"):
            with repo.lock(exclusive=False):
                pass
    with repo.lock(exclusive=False):
        with repo.lock(exclusive=False):
            pass


def test_unique_set_ids(tmp_path):
    repo = new_repo(tmp_path)
    import datetime
    now = datetime.datetime(2026, 1, 1, 3, 0, 0, tzinfo=datetime.timezone.utc)
    make_set(repo, br.new_set_id(now))
    second = repo.unique_set_id(now)
    assert second == "20260101T030000Z-1"
    assert br.set_id_time(second) == now


def test_delete_and_remove_incomplete(tmp_path):
    repo = new_repo(tmp_path)
    make_set(repo, "20260101T000000Z")
    make_set(repo, "20260102T000000Z", complete=False)
    stale = repo.object_tmp()
    open(stale, "wb").close()
    repo.delete_set("20260101T000000Z")
    assert repo.list_sets() == []
    assert repo.remove_incomplete() == [".tmp-20260102T000000Z"]
    assert os.listdir(repo.media_tmp) == []
