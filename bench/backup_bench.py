"""bench/backup: matrix_backup vs the replaced chart's backup method, side by side in one run.

Dataset (generated, bounded):
  * a Synapse database (schema created by a real Synapse 1.163 start) grown to >= 100,000 events by
    duplicating real events in SQL (events + event_json rows with fresh IDs and orderings);
  * a media store with >= 20,000 files and >= 1 GB: local_content (images: most 20-300 KB, some photos
    0.5-4 MB, a few videos 8-25 MB) and local_thumbnails (4-40 KB), incompressible bytes like real
    JPEG/PNG/MP4, plus remote caches that must be skipped.
The media store lives on its own tmpfs ("the source volume"), so the peak extra disk used at the source
is measured exactly (statvfs sampled every 20 ms). The destination is on the normal disk.

Measured:
  old        pg_dump | gzip > db.sql.gz; tar czf media.tgz of the media store (both written next to the media,
             as the chart did inside the pod), then a copy of both to the destination
  full       matrix_backup mode=backup into an empty repository (pg_dump -Fc streamed, media objects + index)
  incr       matrix_backup after adding 1 % new media files
  restore    matrix_backup mode=restore of the latest set into a new database and an empty media dir
Options: --files N --gb X --events N --keep (keep the work dir) --workdir DIR --profile (of the incremental run)
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / ".work" / "collections"))
sys.path.insert(0, str(REPO / "tests"))

# pylint: disable=wrong-import-position
from helpers.services import PG_BIN as _PG_BIN, PostgresServer, SynapseServer  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.backup import create, restore, verify  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.backup.config import Config  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg as pgm  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.backup import media as mm  # noqa: E402
from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import ClientFinder  # noqa: E402
from helpers import matrix_client as mc  # noqa: E402

PG_BIN = str(_PG_BIN)      # the client of the test server's major (the default inventory's)


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class PeakUsage:
    """Samples used bytes of a file system; .peak is the maximum above the baseline."""

    def __init__(self, path):
        self.path = path
        self.base = self.used()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def used(self):
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used() - self.base)
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.used() - self.base)


def size_plan(n_files, total_bytes, rnd):
    """Realistic spread, then scaled to total_bytes: ~45 % thumbnails (4-40 KB), ~52 % images (log-normal,
    median ~40 KB), ~2.5 % photos (0.2-2 MB), ~0.1 % videos (3-12 MB)."""
    sizes = []
    for _i in range(n_files):
        r = rnd.random()
        if r < 0.45:
            sizes.append(("thumb", rnd.randint(4_000, 40_000)))
        elif r < 0.974:
            sizes.append(("image", int(rnd.lognormvariate(10.6, 0.7))))
        elif r < 0.999:
            sizes.append(("photo", rnd.randint(200_000, 2_000_000)))
        else:
            sizes.append(("video", rnd.randint(3_000_000, 12_000_000)))
    scale = total_bytes / sum(s for _k, s in sizes)
    return [(k, max(1, int(s * scale))) for k, s in sizes]


def media_id(rnd):
    return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _i in range(24))


def write_media(root, sizes, rnd, blob):
    n = 0
    for kind, size in sizes:
        mid = media_id(rnd)
        if kind == "thumb":
            rel = "local_thumbnails/%s/%s/%s/96-96-image-jpeg-crop" % (mid[:2], mid[2:4], mid[4:])
        else:
            rel = "local_content/%s/%s/%s" % (mid[:2], mid[2:4], mid[4:])
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        off = rnd.randrange(0, len(blob) - 1)
        with open(p, "wb") as f:
            left = size
            while left:
                chunk = blob[off:off + left]
                if not chunk:
                    off = 0
                    continue
                f.write(chunk)
                left -= len(chunk)
                off = 0
        n += size
    return n


def grow_events(pg, dbname, target):
    """Duplicate real events in SQL until there are >= target rows in events (and event_json)."""
    def q(sql):
        return pg.psql(sql, dbname=dbname).strip()
    have = int(q("SELECT count(*) FROM events"))
    cols = q("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns "
             "WHERE table_name='events' AND table_schema='public'").split(",")
    jcols = q("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns "
              "WHERE table_name='event_json' AND table_schema='public'").split(",")
    tmpl = q("SELECT event_id FROM events WHERE type='m.room.message' ORDER BY stream_ordering DESC LIMIT 1")
    need = target - have
    log("events: %d real, adding %d copies of %s" % (have, need, tmpl))
    ev_sel = []
    for c in cols:
        if c == "event_id":
            ev_sel.append("'$bench' || g || '_' || md5(g::text)")
        elif c in ("stream_ordering",):
            ev_sel.append("(SELECT max(stream_ordering) FROM events) + g")
        elif c in ("topological_ordering", "depth"):
            ev_sel.append("e.%s + g" % c)
        else:
            ev_sel.append("e." + c)
    js_sel = []
    for c in jcols:
        if c == "event_id":
            js_sel.append("'$bench' || g || '_' || md5(g::text)")
        elif c == "json":
            js_sel.append("replace(j.json, '\"body\":\"', '\"body\":\"bench ' || g || ' ' || md5(g::text) || ' ')")
        else:
            js_sel.append("j." + c)
    pg.psql("INSERT INTO event_json (%s) SELECT %s FROM event_json j, generate_series(1, %d) g WHERE j.event_id = '%s'"
            % (",".join(jcols), ",".join(js_sel), need, tmpl), dbname=dbname)
    pg.psql("INSERT INTO events (%s) SELECT %s FROM events e, generate_series(1, %d) g WHERE e.event_id = '%s'"
            % (",".join(cols), ",".join(ev_sel), need, tmpl), dbname=dbname)
    pg.psql("ANALYZE", dbname=dbname)
    return int(q("SELECT count(*) FROM events"))


def du(path):
    total = 0
    for dirpath, _d, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--gb", type=float, default=1.1)
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print where the incremental backup spends its time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/backup mounts a tmpfs for the source volume: run it as root")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="matrix-backup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "source"
    src.mkdir(exist_ok=True)
    tmpfs_size = int(args.gb * 1.15 * 2 ** 30 * 2.3) + (256 << 20)       # media + old method's archives
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % tmpfs_size, "tmpfs", str(src)], check=True)
    pg = PostgresServer()
    syn = None
    results = {}
    try:
        pg.start()
        log("PostgreSQL on port %d" % pg.port)
        syn = SynapseServer("bench.test", work / "synapse", postgres=pg, extra_config={"bcrypt_rounds": 4})
        syn.start()
        tok = mc.register_shared_secret(syn.base_url, syn.registration_shared_secret, "bench", "bench-pw-123")["access_token"]
        room = mc.create_room(syn.base_url, tok, "bench")
        for i in range(20):
            mc.send_message(syn.base_url, tok, room, "seed message %d with some ordinary chat text" % i)
        syn.stop()
        dbname = syn.database_name
        n_events = grow_events(pg, dbname, args.events)
        db_size = int(pg.psql("SELECT pg_database_size('%s')" % dbname))
        log("database %s: %d events, %.1f MB" % (dbname, n_events, db_size / 1e6))
        env = {**os.environ, "PGPASSWORD": pg.password}
        for level in ("default", "1"):
            t0 = time.monotonic()
            z = [] if level == "default" else ["--compress=%s" % level]
            subprocess.run([PG_BIN + "/pg_dump", "-Fc", *z, "-h", pg.host, "-p", str(pg.port), "-U", "postgres",
                            dbname], check=True, env=env, stdout=subprocess.DEVNULL)
            log("probe: pg_dump -Fc compression %s: %.1fs" % (level, time.monotonic() - t0))

        media = src / "media_store"
        rnd = random.Random(42)
        blob = os.urandom(64 << 20)
        t0 = time.monotonic()
        sizes = size_plan(args.files, int(args.gb * 2 ** 30), rnd)
        total = write_media(str(media), sizes, rnd, blob)
        for cache in ("remote_content/matrix.org/aa/bb", "url_cache/aa/bb"):
            os.makedirs(media / cache, exist_ok=True)
            (media / cache / "cached").write_bytes(blob[:1 << 20])
        log("media: %d files, %.2f GB in %.1fs" % (len(sizes), total / 2 ** 30, time.monotonic() - t0))
        subprocess.run(["sync"], check=True)

        dest_root = work / "dest"
        dest_root.mkdir(exist_ok=True)
        env = {**os.environ, "PGPASSWORD": pg.password}

        # --- old method: pg_dump | gzip, tar czf (archives at the source, like the chart's /tmp), copy -----
        old_dest = dest_root / "old"
        old_dest.mkdir()
        with PeakUsage(str(src)) as peak:
            t0 = time.monotonic()
            stage = src / "tmp-backup"
            stage.mkdir()
            subprocess.run("%s/pg_dump -h %s -p %d -U postgres %s | gzip > %s/db.sql.gz"
                           % (PG_BIN, pg.host, pg.port, dbname, stage), shell=True, check=True, env=env)
            t_db = time.monotonic() - t0
            subprocess.run(["tar", "czf", str(stage / "media.tgz"), "-C", str(media), "."], check=True)
            t_tar = time.monotonic() - t0 - t_db
            for f in ("db.sql.gz", "media.tgz"):
                shutil.copyfile(stage / f, old_dest / f)
            subprocess.run(["sync"], check=True)
            old_secs = time.monotonic() - t0
            shutil.rmtree(stage)
        results["old"] = {"seconds": old_secs, "peak_source_extra": peak.peak, "dest_bytes": du(old_dest),
                          "detail": "db %.1fs, tar %.1fs, copy %.1fs" % (t_db, t_tar, old_secs - t_db - t_tar)}
        log("old method: %.1fs (%s), peak extra at source %.0f MB" % (old_secs, results["old"]["detail"], peak.peak / 1e6))

        # --- matrix_backup full -----------------------------------------------------------------------------
        repo = str(dest_root / "repo")

        def cfg(**kw):
            base = dict(dest=repo, server_name="bench.test",
                        pg=pgm.DirectPg(pg.host, pg.port, "postgres", pg.password, dbname, PG_BIN),
                        pg_clients=ClientFinder(PG_BIN), media=mm.LocalMedia(str(media)), synapse_version="1.163.2")
            base.update(kw)
            return Config(**base)
        subprocess.run(["sync"], check=True)
        with PeakUsage(str(src)) as peak:
            t0 = time.monotonic()
            full = create.backup(cfg())
            full_secs = time.monotonic() - t0
        results["full"] = {"seconds": full_secs, "peak_source_extra": peak.peak, "dest_bytes": du(repo), "stats": full["stats"]}
        log("matrix_backup full: %.1fs, %d files, peak extra at source %d bytes"
            % (full_secs, full["stats"]["media"]["files_copied"], peak.peak))

        # --- 1 % new media, incremental ------------------------------------------------------------------
        extra = size_plan(max(1, args.files // 100), int(args.gb * 2 ** 30 / 100), random.Random(7))
        write_media(str(media), extra, random.Random(8), blob)
        subprocess.run(["sync"], check=True)

        def bare_dump():
            t0 = time.monotonic()
            subprocess.run([PG_BIN + "/pg_dump", "-Fc", "--exclude-table-data=e2e_one_time_keys_json", "-h", pg.host,
                            "-p", str(pg.port), "-U", "postgres", dbname], check=True, env=env, stdout=subprocess.DEVNULL)
            return time.monotonic() - t0
        floor = [bare_dump()]
        profiler = None
        if args.profile:
            import cProfile  # pylint: disable=import-outside-toplevel
            profiler = cProfile.Profile()
        with PeakUsage(str(src)) as peak:
            t0 = time.monotonic()
            if profiler is not None:
                profiler.enable()
            inc = create.backup(cfg())
            inc_secs = time.monotonic() - t0
        if profiler is not None:
            import pstats  # pylint: disable=import-outside-toplevel
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        floor.append(bare_dump())
        results["floor"] = min(floor)
        results["incr"] = {"seconds": inc_secs, "peak_source_extra": peak.peak, "stats": inc["stats"]}
        log("matrix_backup incremental: %.1fs, %d new files (%.1f MB)"
            % (inc_secs, inc["stats"]["media"]["files_copied"], inc["stats"]["media"]["bytes_copied"] / 1e6))

        # --- verify + restore ------------------------------------------------------------------------------
        t0 = time.monotonic()
        ver = verify.verify(cfg())
        ver_secs = time.monotonic() - t0
        assert ver["ok"], ver["problems"]
        target_db = "restored_bench"
        target_media = dest_root / "restored_media"
        t0 = time.monotonic()
        rest = restore.restore(cfg(pg=pgm.DirectPg(pg.host, pg.port, "postgres", pg.password, target_db, PG_BIN),
                               media=mm.LocalMedia(str(target_media))))
        rest_secs = time.monotonic() - t0
        restored_events = int(pg.psql("SELECT count(*) FROM events", dbname=target_db))
        assert restored_events == n_events, (restored_events, n_events)
        results["verify"] = {"seconds": ver_secs}
        results["restore"] = {"seconds": rest_secs, "stats": rest["stats"]}
        log("verify %.1fs, restore %.1fs (%d events back)" % (ver_secs, rest_secs, restored_events))

        # --- report -------------------------------------------------------------------------------------
        o, f, i, r = results["old"], results["full"], results["incr"], results["restore"]
        media_files = full["stats"]["media"]["files_total"]
        print()
        print("dataset: %d media files, %.2f GB media, %d events, database %.0f MB (pg_dump -Fc %.0f MB)"
              % (media_files, full["stats"]["media"]["bytes_total"] / 2 ** 30, n_events, db_size / 1e6,
                 full["stats"]["database"]["bytes"] / 1e6))
        print("%-34s %9s %14s %12s" % ("method", "seconds", "peak src extra", "dest size"))
        row = "%-34s %9.1f %11.0f MB %9.0f MB"
        print(row % ("old: pg_dump|gzip + tar czf + copy", o["seconds"], o["peak_source_extra"] / 1e6, o["dest_bytes"] / 1e6))
        print(row % ("matrix_backup full", f["seconds"], f["peak_source_extra"] / 1e6, f["dest_bytes"] / 1e6))
        added = "+%.0f MB" % (i["stats"]["media"]["bytes_copied"] / 1e6)
        print("%-34s %9.1f %11.0f MB %12s" % ("matrix_backup incremental (+1 %)", i["seconds"], i["peak_source_extra"] / 1e6, added))
        print("%-34s %9.1f" % ("matrix_backup verify", results["verify"]["seconds"]))
        print("%-34s %9.1f" % ("matrix_backup restore (db + media)", r["seconds"]))
        print()
        print("full vs old:          %.1fx faster (aim >= 3x)" % (o["seconds"] / f["seconds"]))
        print("incremental / full:   %.1f %% (aim < 5 %%)" % (100 * i["seconds"] / f["seconds"]))
        print("  of which media:     %.1f %% of the full media phase (%.2fs / %.2fs)"
              % (100 * i["stats"]["media"]["seconds"] / f["stats"]["media"]["seconds"], i["stats"]["media"]["seconds"],
                 f["stats"]["media"]["seconds"]))
        print("  floor:              incremental = %.2fx a bare 'pg_dump -Fc > /dev/null' of the same database (%.2fs), "
              "which every logical backup pays in full" % (i["seconds"] / results["floor"], results["floor"]))
        print("peak extra disk at the source: old %.0f MB, matrix_backup %d bytes (aim 0)"
              % (o["peak_source_extra"] / 1e6, max(f["peak_source_extra"], i["peak_source_extra"])))
        print("old method detail: %s" % o["detail"])
        print("matrix_backup full detail: db %.1fs (%.0f MB/s), media %.1fs (%.0f MB/s)"
              % (f["stats"]["database"]["seconds"], f["stats"]["database"]["throughput_mb_s"] or 0,
                 f["stats"]["media"]["seconds"], f["stats"]["media"]["throughput_mb_s"] or 0))
        print("incremental detail: db %.1fs, media %.1fs (%d files reused, %d copied)"
              % (i["stats"]["database"]["seconds"], i["stats"]["media"]["seconds"], i["stats"]["media"]["files_reused"],
                 i["stats"]["media"]["files_copied"]))
        print("restore detail: db %.1fs (jobs %d), media %.1fs (%d files)"
              % (r["stats"]["database"]["seconds"], r["stats"]["database"]["jobs"], r["stats"]["media"]["seconds"],
                 r["stats"]["media"]["files_restored"]))
    finally:
        if syn is not None:
            syn.stop()
        pg.stop()
        subprocess.run(["umount", str(src)], check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
