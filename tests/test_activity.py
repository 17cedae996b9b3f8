"""The console's figures (store/activity.py) against the request log itself: the hourly rollup
the ledger keeps, windows that start mid-hour, and the rollup migration filling in the rows
logged before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData, case, create_engine, func, select

from smallfleet.store import Database
from smallfleet.store.activity import by_day, by_hour, totals
from smallfleet.store.ledger import Ledger, new_row, write_requests
from smallfleet.store.migrations import MIGRATIONS, migrate

NOW = datetime.now(UTC)


def rows(n: int = 60) -> list[dict]:
    out = []
    for i in range(n):
        at = NOW - timedelta(minutes=37 * i)  # spread over about a day and a half, across hour and day boundaries
        row = new_row(request_id=f"r{i}", task=["a", "b", None][i % 3], tier="specialist" if i % 4 else "frontier",
                      escalated=not i % 4, status="error" if i % 7 == 0 else "ok", http_status=200,
                      cost_usd=0.001 * (i % 5), frontier_cost_usd=0.01)  # fmt: skip
        out.append({**row, "created_at": at, "day": at.strftime("%Y-%m-%d")})
    return out


def raw(db: Database, since: datetime | None = None) -> tuple[int, int, int]:
    r = db.requests
    where = [r.c.created_at >= since] if since else []
    with db.engine.connect() as conn:
        query = select(func.count(), func.sum(case((r.c.escalated, 1), else_=0)),
                       func.sum(case((r.c.status == "error", 1), else_=0))).where(*where)  # fmt: skip
        return tuple(conn.execute(query).one())


def check(db: Database) -> None:
    for since in (None, NOW - timedelta(minutes=50), NOW - timedelta(hours=7, minutes=13), NOW - timedelta(days=1)):
        got = totals(db, since)
        assert (got["requests"], got["escalated"], got["errors"]) == raw(db, since), since
    assert sum(h["requests"] for h in by_hour(db, NOW - timedelta(days=3))) == raw(db)[0]
    days = by_day(db, (NOW - timedelta(days=3)).strftime("%Y-%m-%d"), task=True)
    assert sum(d["requests"] for d in days) == raw(db)[0] and {d["task"] for d in days} == {"a", "b", None}


def test_the_ledger_keeps_the_hourly_rollup_the_console_sums(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    ledger = Ledger(db)
    for row in rows():
        ledger.record(row)
    ledger.close()
    check(db)
    assert totals(db)["cost_usd"] == sum(r["cost_usd"] for r in rows())


def test_the_rollup_migration_counts_the_rows_logged_before_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    saved = list(MIGRATIONS)
    MIGRATIONS[:] = [m for m in saved if m[0] < 7]  # a database as an older smallfleet left it
    try:
        migrate(engine)
    finally:
        MIGRATIONS[:] = saved
    meta = MetaData()
    meta.reflect(engine, only=["requests"])
    with engine.begin() as conn:
        conn.execute(meta.tables["requests"].insert(), rows())
    db = Database(url)
    assert db.applied_now == [7]
    check(db)
    with db.engine.begin() as conn:  # and new rows add to the same buckets
        write_requests(db, conn, rows(5))
    check(db)
