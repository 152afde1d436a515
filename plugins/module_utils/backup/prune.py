# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mode=prune: the retention policy over complete sets, then the media objects no kept set references."""

from __future__ import annotations

import os

from ansible_collections.matrix.stack.plugins.module_utils.backup import retention
from ansible_collections.matrix.stack.plugins.module_utils.backup.manifest import now
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError, Repository, set_id_time, write_json_atomic


def prune(cfg):
    repo = Repository(cfg.dest)
    if not repo.exists():
        raise BackupError("%s is not a backup repository" % repo.root)
    keep = cfg.keep or {}
    if not any(keep.get(k) for k in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")):
        raise BackupError("prune needs at least one of keep_last, keep_daily, keep_weekly, keep_monthly")
    with repo.lock(exclusive=True, wait=cfg.lock_wait):
        sets = repo.list_sets()
        rules = {k: keep.get(k) or 0 for k in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")}
        kept, delete = retention.select([(s, set_id_time(s)) for s in sets], **rules)
        incomplete = repo.incomplete_sets()
        refs = repo.referenced_objects([s for s in sets if s in kept])
        orphans = [o for o in repo.all_objects() if o not in refs]
        freed = sum(os.path.getsize(repo.object_path(o)) for o in orphans)
        changed = bool(delete or orphans or incomplete)
        result = {"changed": changed, "kept": {s: kept[s] for s in sorted(kept)}, "deleted": delete,
                  "media_objects_deleted": len(orphans), "media_bytes_freed": freed, "incomplete_removed": incomplete}
        if not cfg.check_mode:
            _delete_sets_and_orphans(repo, delete, orphans)
    if cfg.s3 is not None:
        result["s3"] = cfg.s3.prune(lambda remote: retention.select([(s, set_id_time(s)) for s in remote], **rules)[1],
                                    check_mode=cfg.check_mode)
        result["changed"] = result["changed"] or bool(result["s3"]["deleted"] or result["s3"]["media_objects_deleted"])
    return result


def _delete_sets_and_orphans(repo, delete, orphans):
    for s in delete:
        repo.delete_set(s)
    repo.remove_incomplete()
    # recompute references from what is on disk now, so an object is only deleted if no set uses it
    refs = repo.referenced_objects(repo.list_sets())
    for o in orphans:
        if o not in refs:
            os.unlink(repo.object_path(o))
    write_json_atomic(os.path.join(repo.root, "last-prune.json"), {"at": now().isoformat(), "deleted": delete})
