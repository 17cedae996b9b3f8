"""The request log and cost ledger: a background writer the gateway hands rows to, and
the queries behind `smallfleet logs` and `smallfleet costs`.

Rows are queued in memory and written in batches by one thread, so a response never
waits for the database; a failing write is retried rather than dropped, and `close()`
flushes everything still queued. With a `Journal` (the gateway always has one), each row
is also appended to a local file before `record` returns, so a row survives a `kill -9`
between the response and the database write: the next start-up replays it (see
`store/journal.py`).

Nothing a request carries may stop the log: a batch the database refuses is written row
by row, a row it refuses is stored again in a safe form (see `safe_row`), and the writer
thread survives any exception.
"""

from __future__ import annotations

import json
from collections import OrderedDict
import logging
import queue
import threading
import time
from datetime import UTC, datetime

from sqlalchemy import Connection, Integer, Table, case, func, select, text
from sqlalchemy.exc import OperationalError

from smallfleet.store.db import Database
from smallfleet.store.journal import Journal, orphans

log = logging.getLogger("smallfleet.ledger")
BATCH = 512
RETRY_SECONDS = 0.5
SPECIALIST_TIER = "specialist"
"""The `tier` of a logged request that a specialist answered (other tiers go by their names)."""
RECENT = 10_000  # rows kept in memory for `find`
CLOSE_RETRY = 30.0  # at shutdown, how long to keep retrying an unreachable database
REPLAY_CHUNK = 500


def new_row(**values) -> dict:
    """A request-log row with the time fields filled in."""
    now = datetime.now(UTC)
    row = {"created_at": now, "day": now.strftime("%Y-%m-%d"), "escalated": False, "cost_usd": 0.0,
           "frontier_cost_usd": 0.0, **values}  # fmt: skip
    if isinstance(row.get("tried"), list):
        row["tried"] = json.dumps(row["tried"])
    return row


class Ledger:
    """Writes request rows in the background; call `close()` to flush."""

    def __init__(self, db: Database, journal: Journal | None = None):
        """Start the writer; with a journal, first store the rows of gateways that stopped abruptly.

        Args:
            db: The request log.
            journal: This process's journal; each row is appended to it before `record` returns.
        """
        self.db = db
        self.journal = journal
        self.replayed = self._replay() if journal else 0
        """Rows recovered from dead gateways' journals at start-up."""
        self._queue: queue.Queue[tuple[int, dict] | None] = queue.Queue()
        self._order = threading.Lock()  # journal order = queue order, so "stored up to N" is exact
        self._recent: OrderedDict[str, dict] = OrderedDict()  # request id -> row, so feedback never races the writer
        self._thread = threading.Thread(target=self._run, name="smallfleet-ledger", daemon=True)
        self._thread.start()

    def record(self, row: dict) -> None:
        """Journal one row (see `new_row`), when there is a journal, and queue it for writing."""
        if row.get("request_id"):
            self._recent[row["request_id"]] = row
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        with self._order:
            seq = self.journal.append(row) if self.journal else 0
            self._queue.put((seq, row))

    def find(self, request_id: str) -> dict | None:
        """One of the last RECENT rows recorded, written yet or not."""
        return self._recent.get(request_id)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self.journal:
            self.journal.close()

    def _replay(self) -> int:
        """Store the rows of dead gateways' journals that the database lacks (by request id): exactly once."""
        r, done = self.db.requests, 0
        for rows in orphans(self.journal.root, self.db.url):
            for start in range(0, len(rows), REPLAY_CHUNK):
                chunk = rows[start : start + REPLAY_CHUNK]
                with self.db.engine.connect() as conn:
                    ids = [row["request_id"] for row in chunk]
                    present = set(conn.scalars(select(r.c.request_id).where(r.c.request_id.in_(ids))))
                missing = [row for row in chunk if row["request_id"] not in present]
                if missing and not self._write(missing, give_up=time.monotonic() + CLOSE_RETRY):
                    raise OSError("the request log database is unreachable; the journal is kept for the next start")
                done += len(missing)
        if done:
            log.warning("request log: %d row(s) of a gateway that stopped abruptly were replayed from its journal",
                        done)  # fmt: skip
        return done

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            items = [item for item in batch if item is not None]
            rows = [row for _, row in items]
            kept = not rows
            try:
                kept = kept or self._write(rows, give_up=time.monotonic() + (CLOSE_RETRY if stop else 1e12))
            except Exception:  # the writer must outlive any bug: report the rows in full and go on
                log.exception("request log writer failed on a batch of %d rows", len(rows))
                for row in rows:
                    log.error("request log row could not be stored: %s", _dump(row))
            if self.journal and items and kept:  # rows the database never got stay journaled for the next start
                self.journal.stored(items[-1][0])
            for _ in batch:
                self._queue.task_done()

    def _write(self, rows: list[dict], give_up: float) -> bool:
        """Insert `rows`; retry while the database is unreachable or locked, row by row when some row is refused,
        and a refused row once more in its safe form. False when the database stayed unreachable past `give_up`
        (a row the database refuses even in its safe form goes to the server log, and counts as dealt with)."""
        try:
            if not self._insert(rows, give_up):
                for row in rows:  # unreachable past `give_up`: never silently lost, the row goes to the server log
                    log.error("request log row could not be stored (database unreachable): %s", _dump(row))
                return False
            return True
        except Exception as exc:  # a driver may refuse a value with any error (UnicodeEncodeError...)
            refused = exc
        if len(rows) > 1:  # store the others, isolate the bad one
            return all([self._write([row], give_up) for row in rows])
        (row,) = rows
        safe = safe_row(row, self.db.requests)
        if safe != row:
            try:
                if self._insert([safe], give_up):
                    log.warning("request log row stored in a safe form (%s): %s", _reason(refused), _dump(row))
                    return True
            except Exception as exc:  # reported with the row just below
                refused = exc
        log.error("request log row could not be stored (%s): %s", _reason(refused), _dump(row))
        return True

    def _insert(self, rows: list[dict], give_up: float) -> bool:
        """Insert `rows` in one transaction, retrying while the database is unreachable or locked (OperationalError)
        until `give_up`; False when it gave up. Any other error is raised."""
        columns = {name: None for row in rows for name in row}  # executemany binds the first row's keys only
        rows = [{**columns, **row} for row in rows]
        while True:
            try:
                with self.db.engine.begin() as conn:
                    write_requests(self.db, conn, rows)
                return True
            except OperationalError:  # database down or locked: keep the rows and retry
                if time.monotonic() > give_up:
                    return False
                log.exception("request log write failed; retrying in %.1fs", RETRY_SECONDS)
                time.sleep(RETRY_SECONDS)


def write_requests(db: Database, conn: Connection, rows: list[dict]) -> None:
    """Insert request rows (each with every key the first has) and add them to the hourly rollup
    (`requests_hourly`, what the console's figures are summed from), in the caller's transaction."""
    conn.execute(db.requests.insert(), rows)
    buckets: dict[tuple[str, str], list] = {}
    for row in rows:
        moment = row["created_at"]
        moment = moment.astimezone(UTC) if moment.tzinfo else moment
        b = buckets.setdefault((moment.strftime("%Y-%m-%d %H"), row.get("task") or ""), [0, 0, 0, 0, 0.0, 0.0])
        b[0] += 1
        b[1] += row.get("tier") == SPECIALIST_TIER
        b[2] += bool(row.get("escalated"))
        b[3] += row.get("status") == "error"
        b[4] += float(row.get("cost_usd") or 0)
        b[5] += float(row.get("frontier_cost_usd") or 0)
    # an upsert both SQLite (3.24+) and PostgreSQL understand
    conn.execute(text(
        "INSERT INTO requests_hourly (hour, task, requests, local, escalated, errors, cost_usd, frontier_cost_usd) "
        "VALUES (:hour, :task, :requests, :local, :escalated, :errors, :cost, :frontier) ON CONFLICT (hour, task) DO "
        "UPDATE SET requests = requests_hourly.requests + excluded.requests, local = requests_hourly.local + "
        "excluded.local, escalated = requests_hourly.escalated + excluded.escalated, errors = requests_hourly.errors + "
        "excluded.errors, cost_usd = requests_hourly.cost_usd + excluded.cost_usd, frontier_cost_usd = "
        "requests_hourly.frontier_cost_usd + excluded.frontier_cost_usd"
    ), [{"hour": h, "task": t, "requests": b[0], "local": b[1], "escalated": b[2], "errors": b[3], "cost": b[4],
         "frontier": b[5]} for (h, t), b in buckets.items()])  # fmt: skip


def safe_row(row: dict, table: Table) -> dict:
    """`row` in a form every supported database stores: text with surrogates and NUL bytes escaped
    (`\\ud800`, `\\x00`), cut to its column's length, and values for unknown columns left out.

    Args:
        row: A request-log row (see `new_row`).
        table: The table it goes to.
    """
    safe = {}
    for name, value in row.items():
        if name not in table.c:
            continue
        if isinstance(value, str):
            value = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
            length = getattr(table.c[name].type, "length", None)
            value = value[:length] if length else value
        safe[name] = value
    return safe


def _dump(row: dict) -> str:
    """The row for the server log, in full; ASCII, so surrogates and NUL bytes print as escapes."""
    try:
        return json.dumps(row, default=repr)
    except ValueError:  # a circular value: still say what the row held
        return ascii(row)


def _reason(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[:1]
    return f"{type(exc).__name__}: {first[0][:200]}" if first else type(exc).__name__


def rollup(db: Database, since: str | None = None) -> dict:
    """Totals, and the same by task, by day and by triage decision (the tier triage chose for free-form
    requests): requests, escalations, spend, all-frontier spend, saving."""
    r = db.requests

    def summarize(row) -> dict:
        cost, frontier = float(row.cost_usd or 0), float(row.frontier_cost_usd or 0)
        return {
            "requests": int(row.requests),
            "escalated": int(row.escalated or 0),
            "escalation_rate": round((row.escalated or 0) / row.requests, 4) if row.requests else 0.0,
            "errors": int(row.errors or 0),
            "cost_usd": round(cost, 6),
            "frontier_cost_usd": round(frontier, 6),
            "saving_usd": round(frontier - cost, 6),
            "saving_pct": round(100 * (frontier - cost) / frontier, 2) if frontier else None,
            "p50_latency_ms": None,
        }

    columns = [
        func.count().label("requests"),
        func.sum(r.c.escalated.cast(Integer)).label("escalated"),
        func.sum(case((r.c.status == "error", 1), else_=0)).label("errors"),
        func.sum(r.c.cost_usd).label("cost_usd"),
        func.sum(r.c.frontier_cost_usd).label("frontier_cost_usd"),
    ]
    where = [r.c.day >= since] if since else []
    with db.engine.connect() as conn:
        total = summarize(conn.execute(select(*columns).where(*where)).one())
        by_task = {
            (row.task or "(none)"): summarize(row)
            for row in conn.execute(select(r.c.task, *columns).where(*where).group_by(r.c.task).order_by(r.c.task))
        }
        by_day = {
            row.day: summarize(row)
            for row in conn.execute(select(r.c.day, *columns).where(*where).group_by(r.c.day).order_by(r.c.day))
        }
        triaged = select(r.c.triage_tier, *columns).where(*where, r.c.triage.is_not(None))
        by_triage = {
            (row.triage_tier or "(tier order)"): summarize(row)
            for row in conn.execute(triaged.group_by(r.c.triage_tier).order_by(r.c.triage_tier))
        }
        latencies = sorted(x for (x,) in conn.execute(select(r.c.latency_ms).where(*where)) if x is not None)
    if latencies:
        total["p50_latency_ms"] = round(latencies[len(latencies) // 2], 2)
    for part in [*by_task.values(), *by_day.values(), *by_triage.values()]:
        part.pop("p50_latency_ms")
    return {**total, "by_task": by_task, "by_day": by_day, "by_triage": by_triage}


def recent(db: Database, limit: int = 20, task: str | None = None, tier: str | None = None,
           escalated: bool | None = None, errors: bool = False) -> list[dict]:  # fmt: skip
    """The latest request rows, newest first, filtered as asked."""
    r = db.requests
    query = filtered(select(r).order_by(r.c.id.desc()).limit(limit), r, task, tier, escalated, errors)
    with db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def filtered(query, r: Table, task: str | None = None, tier: str | None = None, escalated: bool | None = None,
             errors: bool = False):  # fmt: skip
    """`query` on the requests table `r`, kept to one task, one tier, escalated (or not) requests, or errors."""
    if task:
        query = query.where(r.c.task == task)
    if tier:
        query = query.where(r.c.tier == tier)
    if escalated is not None:
        query = query.where(r.c.escalated == escalated)
    if errors:
        query = query.where(r.c.status == "error")
    return query
