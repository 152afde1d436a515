# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention policy (keep_last / keep_daily / keep_weekly / keep_monthly), pure functions.

Semantics (same as borg/restic): walking the sets from newest to oldest, ``keep_daily: N`` keeps the
newest set of each of the N most recent calendar days (UTC) that have a set; weekly uses ISO weeks,
monthly calendar months. ``keep_last: N`` keeps the N newest sets. A set kept by any rule is kept.
The newest set is always kept, so a prune never leaves the repository empty.
"""

from __future__ import annotations


def _period(ts, rule):
    if rule == "daily":
        return (ts.year, ts.month, ts.day)
    if rule == "weekly":
        iso = ts.isocalendar()
        return (iso[0], iso[1])
    if rule == "monthly":
        return (ts.year, ts.month)
    raise ValueError(rule)


def select(sets, keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0):
    """sets: list of (set_id, datetime). Returns (keep: dict set_id -> [reasons], delete: [set_id])."""
    ordered = sorted(sets, key=lambda s: (s[1], s[0]), reverse=True)
    keep = {}
    for i, (sid, _ts) in enumerate(ordered):
        if i < (keep_last or 0):
            keep.setdefault(sid, []).append("last")
    for rule, count in (("daily", keep_daily), ("weekly", keep_weekly), ("monthly", keep_monthly)):
        if not count:
            continue
        seen = []
        for sid, ts in ordered:
            p = _period(ts, rule)
            if p in seen:
                continue
            seen.append(p)
            keep.setdefault(sid, []).append(rule)
            if len(seen) >= count:
                break
    if ordered and ordered[0][0] not in keep:
        keep[ordered[0][0]] = ["newest"]
    delete = [sid for sid, _ts in sorted(ordered, key=lambda s: (s[1], s[0])) if sid not in keep]
    return keep, delete
