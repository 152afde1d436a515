"""Unit tests for the retention policy with a simulated calendar."""

import datetime

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils.backup import retention as ret

UTC = datetime.timezone.utc


def calendar(days, start=datetime.datetime(2026, 1, 1, 3, 0, tzinfo=UTC), per_day=1):
    out = []
    for d in range(days):
        for k in range(per_day):
            ts = start + datetime.timedelta(days=d, hours=k * 6)
            out.append((ts.strftime("%Y%m%dT%H%M%SZ"), ts))
    return out


def test_daily_keeps_newest_of_each_day():
    sets = calendar(10, per_day=3)
    keep, delete = ret.select(sets, keep_daily=3)
    kept = sorted(keep)
    assert kept == ["20260108T150000Z", "20260109T150000Z", "20260110T150000Z"]
    assert len(delete) == 27


def test_daily_weekly_monthly_over_a_year():
    sets = calendar(365)       # one set per day of 2026, 03:00 UTC
    keep, delete = ret.select(sets, keep_daily=7, keep_weekly=4, keep_monthly=6)
    expected_daily = {"202612%02dT030000Z" % d for d in range(25, 32)}
    # ISO weeks: the newest set of each of the last 4 weeks (Sundays), 2026-12-31 is a Thursday
    expected_weekly = {"20261231T030000Z", "20261227T030000Z", "20261220T030000Z", "20261213T030000Z"}
    expected_monthly = {"20261231T030000Z", "20261130T030000Z", "20261031T030000Z", "20260930T030000Z",
                        "20260831T030000Z", "20260731T030000Z"}
    assert set(keep) == expected_daily | expected_weekly | expected_monthly
    assert len(keep) + len(delete) == 365
    assert "daily" in keep["20261231T030000Z"] and "weekly" in keep["20261231T030000Z"]
    assert keep["20260731T030000Z"] == ["monthly"]


def test_keep_last_and_newest_always_kept():
    sets = calendar(5)
    keep, delete = ret.select(sets, keep_last=2)
    assert sorted(keep) == [sets[3][0], sets[4][0]]
    assert delete == [s for s, _ts in sets[:3]]
    keep, delete = ret.select(sets, keep_monthly=0)
    assert list(keep) == [sets[-1][0]]


def test_gaps_count_periods_with_sets_only():
    # sets on Jan 1, Jan 5, Jan 20: keep_daily=2 keeps the two newest days that have a set
    sets = [(s, datetime.datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC))
            for s in ("20260101T000000Z", "20260105T000000Z", "20260120T000000Z")]
    keep, delete = ret.select(sets, keep_daily=2)
    assert sorted(keep) == ["20260105T000000Z", "20260120T000000Z"]
    assert delete == ["20260101T000000Z"]


def test_empty():
    assert ret.select([], keep_daily=3) == ({}, [])
