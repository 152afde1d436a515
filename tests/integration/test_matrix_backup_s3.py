"""matrix_backup's off-site copy (option s3) against a real S3-compatible object store (MinIO on loopback),
with real PostgreSQL and media files: push, incremental push, pull into an empty machine and restore,
interrupted push, corrupted object, prune, check mode, and no secret in the output."""

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import pytest

from helpers.backup import PG_SEARCH, make_small_db, media_tree, run_module

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".work" / "collections"))

# pylint: disable=wrong-import-position
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError, Repository  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.backup import s3 as s3_mod  # noqa: E402


def add_media(root, count, seed):
    for i in range(count):
        mid = hashlib.sha256(("%s-%d" % (seed, i)).encode()).hexdigest()[:24]
        p = Path(root) / "local_content" / mid[:2] / mid[2:4] / mid[4:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(500 + i * 97))


def keys(minio, prefix):
    paginator = minio.client().get_paginator("list_objects_v2")
    return sorted(o["Key"] for page in paginator.paginate(Bucket="backups", Prefix=prefix) for o in page.get("Contents", []))


@pytest.fixture
def small_db(postgres_server):
    name = make_small_db(postgres_server, "s3")
    yield name
    postgres_server.drop_database(name)


def test_off_site_copy_round_trip(run_playbook, tmp_path, postgres_server, small_db, minio_server):
    pyrage = pytest.importorskip("pyrage")
    ident = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.key"
    key_file.write_text(str(ident) + "\n")
    media = tmp_path / "media_store"
    add_media(media, 50, "first")
    s3 = {"bucket": "backups", "prefix": "chat", "endpoint_url": minio_server.endpoint_url,
          "access_key": minio_server.access_key, "secret_key": minio_server.secret_key}
    db = {"host": postgres_server.host, "port": postgres_server.port, "user": "postgres",
          "password": postgres_server.password, "name": small_db, "pg_bin_search": PG_SEARCH}
    base = {"dest": str(tmp_path / "repo"), "server_name": "s3.test", "database": db, "media": {"path": str(media)},
            "encryption": {"recipients": [str(ident.to_public())]}, "s3": s3}

    first, res = run_module(run_playbook, tmp_path, {**base, "mode": "backup"})
    assert first["s3"]["sets_pushed"] == [first["set_id"]] and first["s3"]["objects_uploaded"] == 50
    assert minio_server.secret_key not in res.stdout and minio_server.secret_key not in json.dumps(first)
    assert "chat/sets/%s/COMPLETE" % first["set_id"] in keys(minio_server, "chat/")

    # check mode: nothing to copy for the existing set, and nothing uploaded
    before = keys(minio_server, "chat/")
    planned, _res = run_module(run_playbook, tmp_path, {**base, "mode": "backup"}, check=True)
    assert planned["s3"]["sets_pushed"] == [] and keys(minio_server, "chat/") == before

    # incremental: one file gone, two new ones; only the two new objects travel
    victim = sorted(media_tree(media))[0]
    (media / victim).unlink()
    add_media(media, 2, "second")
    second, _res = run_module(run_playbook, tmp_path, {**base, "mode": "backup"})
    assert second["s3"]["sets_pushed"] == [second["set_id"]] and second["s3"]["objects_uploaded"] == 2
    assert len(keys(minio_server, "chat/media/")) == 52

    # disaster recovery: a new machine with an empty dest restores the newest set from the bucket
    target_db, target_media = "s3_restored_%s" % secrets.token_hex(3), tmp_path / "restored_media"
    try:
        restored, _res = run_module(run_playbook, tmp_path, {
            "mode": "restore", "dest": str(tmp_path / "new-machine"), "server_name": "s3.test", "s3": s3,
            "database": {**db, "name": target_db}, "media": {"path": str(target_media)},
            "encryption": {"identity_file": str(key_file)}})
        assert restored["set_id"] == second["set_id"] and restored["s3"]["objects_downloaded"] == 51
        assert postgres_server.psql("SELECT count(*) FROM t", dbname=target_db).strip() == "100"
        assert postgres_server.psql("SELECT count(*) FROM e2e_one_time_keys_json", dbname=target_db).strip() == "0"
        assert media_tree(target_media) == media_tree(media)
    finally:
        postgres_server.drop_database(target_db)

    # the older set alone, verified after its download
    verified, _res = run_module(run_playbook, tmp_path, {
        "mode": "verify", "dest": str(tmp_path / "other-machine"), "set": first["set_id"], "s3": s3,
        "database": {"pg_bin_search": PG_SEARCH}, "encryption": {"identity_file": str(key_file)}})
    assert verified["ok"] and verified["s3"]["objects_downloaded"] == 50

    # prune here and there: the first set and the object only it referenced go from the bucket too
    pruned, _res = run_module(run_playbook, tmp_path, {"mode": "prune", "dest": base["dest"], "s3": s3,
                                                       "retention": {"keep_last": 1}})
    assert pruned["deleted"] == [first["set_id"]] and pruned["s3"]["deleted"] == [first["set_id"]]
    assert pruned["s3"]["media_objects_deleted"] == 1
    assert not [k for k in keys(minio_server, "chat/sets/") if first["set_id"] in k]
    assert len(keys(minio_server, "chat/media/")) == 51


def make_local_set(repo_dir, files):
    """A complete local set with the given media contents (through the real repository code)."""
    from ansible_collections.matrix.stack.plugins.module_utils.backup import media as media_mod  # noqa: E402
    repo = Repository(str(repo_dir))
    repo.init(False)
    set_id = repo.unique_set_id()
    tmp = repo.begin_set(set_id)
    entries = []
    for i, content in enumerate(files):
        src = Path(repo_dir).parent / ("src-%s-%d" % (set_id, i))
        src.write_bytes(content)
        with open(src, "rb") as f:
            sha, size, stored, _new = media_mod.store_object(repo, f, None)
        entries.append(("local_content/aa/bb/%s-%d" % (set_id, i), size, sha, stored))
    idx = os.path.join(tmp, "media.idx")
    repo.write_media_index(idx, entries)
    with open(idx, "rb") as f:
        data = f.read()
    repo.commit_set(set_id, tmp, {"media.idx": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
                    {"server_name": "s3.test", "encrypted": False, "media_encrypted": False})
    return repo, set_id


def copy_for(minio_server, prefix):
    return s3_mod.S3Copy("backups", endpoint_url=minio_server.endpoint_url, prefix=prefix,
                         access_key=minio_server.access_key, secret_key=minio_server.secret_key)


def test_interrupted_push_never_looks_complete_and_resumes(tmp_path, minio_server):
    repo, first = make_local_set(tmp_path / "repo", [os.urandom(1000) for i in range(3)])
    copy = copy_for(minio_server, "resume")
    assert copy.push(repo)["sets_pushed"] == [first]
    _repo, second = make_local_set(tmp_path / "repo", [os.urandom(1000) for i in range(6)])

    uploads = []
    real_upload = copy._upload  # pylint: disable=protected-access

    def failing_upload(path, rel):
        if len(uploads) == 4:
            raise BackupError("network gone")
        uploads.append(rel)
        real_upload(path, rel)
    copy._upload = failing_upload  # pylint: disable=protected-access
    with pytest.raises(BackupError, match="network gone"):
        copy.push(repo)
    assert copy.remote_sets() == [first]          # the half-copied set is not listed
    copy._upload = real_upload  # pylint: disable=protected-access
    resumed = copy.push(repo)
    assert resumed["sets_pushed"] == [second] and resumed["objects_uploaded"] == 2
    assert copy.remote_sets() == [first, second]
    pulled = copy.pull(Repository(str(tmp_path / "elsewhere")), "latest")
    assert pulled["set_id"] == second and pulled["objects_downloaded"] == 6


def test_corrupted_object_in_the_bucket_is_refused(tmp_path, minio_server):
    repo, set_id = make_local_set(tmp_path / "repo", [os.urandom(2000) for i in range(3)])
    copy = copy_for(minio_server, "corrupt")
    copy.push(repo)
    victim = keys(minio_server, "corrupt/media/")[1]
    minio_server.client().put_object(Bucket="backups", Key=victim, Body=os.urandom(2000))
    target = Repository(str(tmp_path / "elsewhere"))
    with pytest.raises(BackupError, match="does not match its checksum"):
        copy.pull(target, set_id)
    assert target.list_sets() == [] and target.incomplete_sets() == []


def test_wrong_credentials_are_reported(tmp_path, minio_server):
    repo, _set_id = make_local_set(tmp_path / "repo", [b"x" * 100])
    copy = s3_mod.S3Copy("backups", endpoint_url=minio_server.endpoint_url, access_key=minio_server.access_key,
                         secret_key="not-the-secret")
    with pytest.raises(BackupError) as err:
        copy.push(repo)
    assert "SignatureDoesNotMatch" in str(err.value) or "AccessDenied" in str(err.value)
    assert "not-the-secret" not in str(err.value)
