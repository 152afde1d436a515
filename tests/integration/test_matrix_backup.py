"""matrix.stack.matrix_backup against a real Synapse on real PostgreSQL with real media, run through Ansible.

Synapse runs as a local process here, so the tests stop and start it around a restore (the module scales a
Kubernetes Deployment when ``synapse.deployment`` is set; that part is covered in test_matrix_backup_kube.py).
"""

import hashlib
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from helpers import matrix_client as mc
from helpers.backup import PG_SEARCH
from helpers.services import default_pg_major

pytestmark = [pytest.mark.integration, pytest.mark.synapse, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "tests" / "integration" / "files" / "matrix_backup_run.yml"
PYTHON = str(REPO / ".work/venv/bin/python")


# ----- helpers ------------------------------------------------------------------------------------

def png(width, height, seed):
    """A real PNG (random RGB pixels) so that Synapse makes thumbnails."""
    rnd = hashlib.sha256(seed.encode()).digest()
    rows = []
    for y in range(height):
        line = bytearray([0])
        for x in range(width):
            b = hashlib.blake2s(rnd + struct.pack(">HH", x // 4, y // 4), digest_size=3).digest()
            line += b
        rows.append(bytes(line))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def tree_hashes(root):
    """{rel path: sha256} of local_content and local_thumbnails."""
    out = {}
    for top in ("local_content", "local_thumbnails"):
        base = Path(root) / top
        if not base.exists():
            continue
        for p in base.rglob("*"):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def descendants(root):
    """PIDs of all descendants of root (from /proc), parents before children."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="utf-8") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(0), []):
            out.append(c)
            todo.append(c)
    return out


class Backups:
    """Runs the module through ansible-playbook (the test playbook saves the result as JSON)."""

    def __init__(self, run_playbook, tmp_path, postgres, synapse):
        self.run_playbook = run_playbook
        self.tmp_path = tmp_path
        self.pg = postgres
        self.syn = synapse
        self.dest = str(tmp_path / "backups")
        self.n = 0

    def args(self, mode, **over):
        a = {
            "mode": mode, "dest": self.dest, "server_name": self.syn.server_name,
            "database": {"host": self.pg.host, "port": self.pg.port, "user": self.pg.superuser,
                         "password": self.pg.password, "name": self.syn.database_name, "pg_bin_search": PG_SEARCH},
            "media": {"path": str(self.syn.media_store)},
            "secrets": {"files": [str(self.syn.signing_key_path)], "allow_unencrypted": True},
            "synapse": {"url": self.syn.base_url},
        }
        for k, v in over.items():
            if v is None:
                a.pop(k, None)
            elif isinstance(v, dict) and isinstance(a.get(k), dict):
                a[k] = {**a[k], **v}
            else:
                a[k] = v
        return a

    def run(self, mode, check=False, expect_ok=True, **over):
        self.n += 1
        result_file = self.tmp_path / ("result-%d.json" % self.n)
        extra_vars = {"mb_args": self.args(mode, **over), "mb_result_file": str(result_file), "ansible_python_interpreter": PYTHON}
        res = self.run_playbook(RUN, extra_vars=extra_vars, check=check)
        assert res.rc == 0, res.stdout[-3000:] + res.stderr[-3000:]
        out = json.loads(result_file.read_text())
        if expect_ok:
            assert not out.get("failed"), out.get("msg")
        else:
            assert out.get("failed"), "expected %s to fail: %s" % (mode, json.dumps(out)[:2000])
        assert self.pg.password not in json.dumps(out)
        return out


def populate(syn, users=3, rooms=2, messages=5, images=4, tag="a"):
    """Create users, rooms, messages and uploads through the client API; return what to compare later."""
    state = {"users": {}, "rooms": {}, "media": {}}
    tokens = {}
    for i in range(users):
        name = "u%s%d%s" % (tag, i, secrets.token_hex(2))
        password = secrets.token_urlsafe(12)
        reg = mc.register_shared_secret(syn.base_url, syn.registration_shared_secret, name, password)
        state["users"][name] = password
        tokens[name] = reg["access_token"]
    names = list(state["users"])
    owner = names[0]
    for r in range(rooms):
        room = mc.create_room(syn.base_url, tokens[owner], "room %s%d" % (tag, r), invite=["@%s:%s" % (n, syn.server_name) for n in names[1:]])
        for n in names[1:]:
            mc.join_room(syn.base_url, tokens[n], room)
        bodies = []
        for m in range(messages):
            sender = names[m % len(names)]
            text = "message %s %d %d %s" % (tag, r, m, secrets.token_hex(4))
            mc.send_message(syn.base_url, tokens[sender], room, text)
            bodies.append(text)
        state["rooms"][room] = bodies
    for i in range(images):
        data = png(64 + 16 * i, 48 + 8 * i, "%s-%d" % (tag, i))
        uri = mc.upload(syn.base_url, tokens[owner], data, "image/png", "img%d.png" % i)
        mc.thumbnail(syn.base_url, tokens[owner], uri, 32, 32)
        state["media"][uri] = hashlib.sha256(data).hexdigest()
    state["owner_token"] = tokens[owner]
    return state


def check_state(syn, state):
    """Every user logs in, every room and message is back, every upload downloads with the same sha256."""
    token = None
    for name, password in state["users"].items():
        token_n = mc.login(syn.base_url, name, password)["access_token"]
        token = token or token_n
        joined = set(mc.joined_rooms(syn.base_url, token_n))
        assert set(state["rooms"]) <= joined, name
    for room, bodies in state["rooms"].items():
        got = [e["content"].get("body") for e in mc.messages(syn.base_url, token, room) if e["type"] == "m.room.message"]
        assert sorted(got) == sorted(bodies)
    for uri, sha in state["media"].items():
        assert hashlib.sha256(mc.download(syn.base_url, token, uri)).hexdigest() == sha, uri


def wipe(syn, pg):
    """Disaster: Synapse stopped, database dropped, media store and signing key deleted."""
    syn.stop()
    pg.drop_database(syn.database_name)
    shutil.rmtree(syn.media_store)
    os.unlink(syn.signing_key_path)


@pytest.fixture(scope="module")
def synapse(synapse_factory):
    return synapse_factory(server_name="backup.test", extra_config={"bcrypt_rounds": 4})


@pytest.fixture
def backups(run_playbook, tmp_path, postgres_server, synapse):
    if synapse.proc is None:
        synapse.start()
    return Backups(run_playbook, tmp_path, postgres_server, synapse)


# ----- tests --------------------------------------------------------------------------------------

def test_round_trip_and_incremental(backups, synapse, postgres_server):
    state = populate(synapse, images=6, tag="rt")
    key_before = Path(synapse.signing_key_path).read_text()
    server_key_before = mc.server_keys(synapse.base_url)["verify_keys"]
    media_before = tree_hashes(synapse.media_store)
    assert any(k.startswith("local_thumbnails/") for k in media_before), "Synapse made no thumbnails"

    plan = backups.run("backup", check=True)
    assert plan["changed"] and plan["plan"]["media"]["files_to_copy"] == len(media_before)
    assert not os.path.exists(os.path.join(backups.dest, "sets"))     # check mode wrote nothing

    first = backups.run("backup")
    st = first["stats"]
    assert st["media"]["files_total"] == len(media_before) == st["media"]["files_copied"]
    assert st["database"]["bytes"] > 0 and st["database"]["seconds"] >= 0 and "throughput_mb_s" in st["database"]
    set1 = first["set_id"]
    marker = json.loads(Path(backups.dest, "sets", set1, "COMPLETE").read_text())
    assert set(marker["files"]) == {"db.dump", "media.idx", "manifest.json", "secrets.json"}
    manifest = json.loads(Path(backups.dest, "sets", set1, "manifest.json").read_text())
    assert manifest["server_name"] == "backup.test"
    # the default inventory's major, dumped with its own pg_dump (found by the module)
    assert manifest["postgresql"]["server_version"].split(".")[0] == str(default_pg_major())
    assert manifest["postgresql"]["pg_dump_version"].split(".")[0] == str(default_pg_major())
    assert manifest["synapse"]["version"] and manifest["synapse"]["schema_version"]
    assert oct(os.stat(Path(backups.dest, "sets", set1, "secrets.json")).st_mode & 0o777) == "0o600"

    # incremental: about 1 % more media -> only the new files are read and stored
    state2 = populate(synapse, users=1, rooms=1, messages=2, images=1, tag="inc")
    media_after = tree_hashes(synapse.media_store)
    new_files = set(media_after) - set(media_before)
    assert new_files
    second = backups.run("backup")
    set2 = second["set_id"]
    assert second["stats"]["media"]["files_copied"] == len(new_files)
    assert second["stats"]["media"]["files_reused"] == len(media_before)
    assert second["stats"]["media"]["bytes_copied"] == sum(os.path.getsize(synapse.media_store / f) for f in new_files)

    verify = backups.run("verify", set="all")
    assert verify["ok"] and [s["set_id"] for s in verify["sets"]] == [set1, set2]
    assert all(s["dump_toc_entries"] > 100 for s in verify["sets"])

    # a restore over the live, non-empty database is refused without force (and changes nothing)
    refused = backups.run("restore", expect_ok=False)
    assert "not empty" in refused["msg"]
    # restore check mode reports the plan
    plan = backups.run("restore", check=True, force=True)
    assert any("pg_restore" in s for s in plan["plan"]) and any("drop database" in s for s in plan["plan"])

    # disaster, then restore the latest set
    wipe(synapse, postgres_server)
    restored = backups.run("restore")
    assert restored["set_id"] == set2
    assert restored["stats"]["media"]["files_restored"] == len(media_after)
    assert Path(synapse.signing_key_path).read_text() == key_before
    assert tree_hashes(synapse.media_store) == media_after
    assert postgres_server.psql("SELECT count(*) FROM e2e_one_time_keys_json", dbname=synapse.database_name).strip() == "0"
    synapse.start()
    check_state(synapse, state)
    check_state(synapse, state2)
    assert mc.server_keys(synapse.base_url)["verify_keys"] == server_key_before

    # the first set restores alone (no chain): its media, not the newer ones
    wipe(synapse, postgres_server)
    backups.run("restore", set=set1)
    assert tree_hashes(synapse.media_store) == media_before
    synapse.start()
    check_state(synapse, state)


def test_encryption_round_trip_and_wrong_key(backups, synapse, postgres_server, tmp_path):
    pyrage = pytest.importorskip("pyrage")
    ident = pyrage.x25519.Identity.generate()
    other = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "age.key"
    key_file.write_text("# test key\n%s\n" % ident)
    key_file.chmod(0o600)
    state = populate(synapse, users=2, rooms=1, messages=3, images=2, tag="enc")
    media_before = tree_hashes(synapse.media_store)
    enc = {"recipients": [str(ident.to_public()), str(other.to_public().__str__())]}
    res = backups.run("backup", secrets={"allow_unencrypted": False}, encryption=enc, media={"encrypt": True})
    set_dir = Path(backups.dest, "sets", res["set_id"])
    names = sorted(p.name for p in set_dir.iterdir())
    assert names == ["COMPLETE", "db.dump.age", "manifest.json.age", "media.idx", "secrets.json.age"]
    assert Path(set_dir, "db.dump.age").read_bytes()[:21] == b"age-encryption.org/v1"
    assert b"ed25519" not in Path(set_dir, "secrets.json.age").read_bytes()
    obj = next(p for p in Path(backups.dest, "media").rglob("*") if p.is_file() and ".tmp" not in p.parts)
    assert obj.read_bytes()[:21] == b"age-encryption.org/v1"

    # verify without a key checks stored checksums only; with the wrong key it fails clearly
    v = backups.run("verify")
    assert v["ok"] and v["sets"][0]["content_verified"] is False
    wrong = tmp_path / "wrong.key"
    wrong.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    v = backups.run("verify", encryption={"identity_file": str(wrong)}, expect_ok=False)
    assert "wrong age identity" in v["msg"]

    wipe(synapse, postgres_server)
    r = backups.run("restore", encryption={"identity_file": str(wrong)}, expect_ok=False)
    assert "wrong age identity" in r["msg"]
    dbs = postgres_server.psql("SELECT datname FROM pg_database")
    assert synapse.database_name not in dbs.split()          # nothing was created
    r = backups.run("restore", encryption={"identity_file": str(key_file)})
    assert r["stats"]["media"]["files_restored"] == len(media_before)
    # the second recipient can decrypt too
    v = backups.run("verify", encryption={"identities": [str(other)]})
    assert v["ok"] and v["sets"][0]["content_verified"] is True
    synapse.start()
    check_state(synapse, state)
    assert tree_hashes(synapse.media_store) == media_before


def test_faults_corruption_and_kill(backups, synapse, postgres_server, tmp_path):
    populate(synapse, users=1, rooms=1, messages=2, images=2, tag="flt")
    good = backups.run("backup")["set_id"]
    events_at_backup = int(postgres_server.psql("SELECT count(*) FROM events", dbname=synapse.database_name))

    # kill a backup mid-way: a big extra media tree keeps it busy for a few seconds
    big = tmp_path / "big_media"
    for i in range(600):
        d = big / "local_content" / ("%02d" % (i % 50)) / "xx"
        d.mkdir(parents=True, exist_ok=True)
        (d / ("f%04d" % i)).write_bytes(os.urandom(512 * 1024))
    media_root = Path(backups.dest, "media")

    def objects():
        return sum(len(os.listdir(media_root / d)) for d in os.listdir(media_root) if len(d) == 2)
    before = objects()
    result_file = tmp_path / "killed.json"
    argv = [str(REPO / ".work/venv/bin/ansible-playbook"), "-i", "localhost,", "-c", "local", str(RUN), "-e",
            json.dumps({"mb_args": backups.args("backup", media={"path": str(big)}), "mb_result_file": str(result_file),
                        "ansible_python_interpreter": PYTHON})]
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".work/collections"),
           "PATH": "%s:%s" % (REPO / ".work/venv/bin", os.environ["PATH"])}
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if objects() >= before + 20:
                break
            assert proc.poll() is None, "backup finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("backup never started writing media")
    finally:
        # ansible-core's workers call setsid(), so kill every descendant of ansible-playbook by PID
        for pid in descendants(proc.pid)[::-1] + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    time.sleep(0.5)
    assert objects() < before + 600, "the backup had finished copying before the kill"
    assert not result_file.exists()
    assert any(p.name.startswith(".tmp-") for p in Path(backups.dest, "sets").iterdir())
    v = backups.run("verify", set="all")
    assert v["ok"] and [s["set_id"] for s in v["sets"]] == [good] and v["incomplete_sets"]

    # the earlier set is intact and restorable (into a fresh database next to the live one)
    other_db = "restored_%s" % secrets.token_hex(3)
    target = tmp_path / "restored_media"
    try:
        r = backups.run("restore", database={"name": other_db}, media={"path": str(target)}, secrets=None)
        assert r["set_id"] == good
        assert int(postgres_server.psql("SELECT count(*) FROM events", dbname=other_db)) == events_at_backup
        assert tree_hashes(target) == {k: v for k, v in tree_hashes(synapse.media_store).items()
                                       if k in {e.split("\t")[3].strip() for e in
                                                Path(backups.dest, "sets", good, "media.idx").read_text().splitlines()}}
    finally:
        postgres_server.drop_database(other_db)

    # flip one byte of the stored dump: verify and restore fail before touching the database
    dump = Path(backups.dest, "sets", good, "db.dump")
    original = dump.read_bytes()
    with open(dump, "r+b") as f:
        f.seek(len(original) // 2)
        f.write(bytes([original[len(original) // 2] ^ 0xFF]))
    v = backups.run("verify", expect_ok=False)
    assert any("db.dump" in p and "checksum" in p for p in v["problems"])
    postgres_server.psql("CREATE TABLE canary_untouched (x int)", dbname=synapse.database_name)
    try:
        r = backups.run("restore", force=True, expect_ok=False)
        assert "failed verification" in r["msg"]
        assert postgres_server.psql("SELECT to_regclass('canary_untouched')", dbname=synapse.database_name).strip() == "canary_untouched"
    finally:
        postgres_server.psql("DROP TABLE canary_untouched", dbname=synapse.database_name)
    dump.write_bytes(original)

    # flip one byte in a media object
    idx = Path(backups.dest, "sets", good, "media.idx").read_text().splitlines()[0].split("\t")
    obj = Path(backups.dest, "media", idx[0][:2], idx[0])
    data = obj.read_bytes()
    obj.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    v = backups.run("verify", expect_ok=False)
    assert any("media object" in p for p in v["problems"])
    obj.write_bytes(data)
    assert backups.run("verify")["ok"]

    # the next backup cleans up what the killed one left behind
    nxt = backups.run("backup")
    assert nxt["cleaned_incomplete"]
    assert not list(Path(backups.dest, "media", ".tmp").iterdir())


def test_disk_full_fails_cleanly(backups, synapse, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    populate(synapse, users=1, rooms=1, messages=1, images=1, tag="full")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        fill = tmp_path / "fill_media"
        for i in range(8):
            d = fill / "local_content" / "aa" / ("%02d" % i)
            d.mkdir(parents=True)
            (d / "blob").write_bytes(os.urandom(1024 * 1024))
        dest = str(small / "repo")
        r = backups.run("backup", dest=dest, media={"path": str(fill)}, expect_ok=False)
        assert "No space left" in r["msg"] or "space" in r["msg"].lower(), r["msg"]
        assert os.listdir(os.path.join(dest, "sets")) == []          # no set, no leftover temp dir
        # after freeing space (smaller media) a backup into the same repository works
        shutil.rmtree(fill)
        ok = backups.run("backup", dest=dest, media={"path": str(synapse.media_store)})
        assert ok["set_id"]
        assert backups.run("verify", dest=dest)["ok"]
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_retention_simulated_calendar(backups, tmp_path):
    """Sets made on a simulated calendar (real files), pruned through the module."""
    import datetime
    import sys
    sys.path.insert(0, str(REPO / ".work/collections"))
    from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import Repository, MEDIA_INDEX
    from ansible_collections.matrix.stack.plugins.module_utils.backup.hashing import sha256_file

    repo = Repository(str(tmp_path / "cal"))
    repo.init(False)
    start = datetime.datetime(2026, 1, 1, 2, 30, tzinfo=datetime.timezone.utc)
    media = {}
    ids = []
    for day in range(120):
        ts = start + datetime.timedelta(days=day)
        sid = ts.strftime("%Y%m%dT%H%M%SZ")
        media["local_content/aa/bb/day%03d" % day] = ("content of day %d" % day).encode()
        if day % 10 == 0:                     # media deleted from Synapse drop out of later sets
            media.pop("local_content/aa/bb/day%03d" % max(0, day - 5), None)
        tmp = repo.begin_set(sid)
        entries = []
        for rel, content in media.items():
            sha = hashlib.sha256(content).hexdigest()
            if not repo.has_object(sha):
                t = repo.object_tmp()
                Path(t).write_bytes(content)
                repo.place_object(t, sha)
            entries.append((rel, len(content), sha, sha))
        repo.write_media_index(os.path.join(tmp, MEDIA_INDEX), entries)
        sha, size = sha256_file(os.path.join(tmp, MEDIA_INDEX))
        repo.commit_set(sid, tmp, {MEDIA_INDEX: {"size": size, "sha256": sha}}, {"server_name": "backup.test"})
        ids.append(sid)
    r = backups.run("prune", dest=repo.root, retention={"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 3})
    # last day is 2026-04-30 (Thursday)
    daily = {"202604%02dT023000Z" % d for d in range(24, 31)}
    weekly = {"20260430T023000Z", "20260426T023000Z", "20260419T023000Z", "20260412T023000Z"}
    monthly = {"20260430T023000Z", "20260331T023000Z", "20260228T023000Z"}
    expected = daily | weekly | monthly
    assert set(r["kept"]) == expected
    assert set(repo.list_sets()) == expected
    assert set(r["deleted"]) == set(ids) - expected
    # every object referenced by a kept set is still there; the unreferenced ones are gone
    refs = repo.referenced_objects(repo.list_sets())
    assert refs and all(repo.has_object(s) for s in refs)
    assert set(repo.all_objects()) == refs
    assert r["media_objects_deleted"] > 0
