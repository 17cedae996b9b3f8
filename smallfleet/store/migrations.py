"""Append-only, numbered schema migrations. Never edit one that has shipped: add the next.

Each migration is a function taking a Connection; `migrate` applies the missing ones in
order, each in its own transaction, and records it in `schema_migrations`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)

MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = []


def migration(number: int, name: str):
    def register(fn: Callable[[Connection], None]):
        assert not MIGRATIONS or MIGRATIONS[-1][0] == number - 1, "migrations must be numbered consecutively"
        MIGRATIONS.append((number, name, fn))
        return fn

    return register


def _ledger_table(meta: MetaData) -> Table:
    return Table(
        "schema_migrations",
        meta,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("name", String(200), nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )


@migration(1, "request log")
def _requests(conn: Connection) -> None:
    meta = MetaData()
    table = Table(
        "requests",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(64), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("day", String(10), nullable=False),
        Column("api_key", String(100)),
        Column("model", String(200)),
        Column("task", String(100)),
        Column("route_confidence", Float),
        Column("tier", String(100)),
        Column("confidence", Float),
        Column("escalated", Boolean, nullable=False, default=False),
        Column("status", String(20), nullable=False),
        Column("http_status", Integer, nullable=False),
        Column("input", Text),
        Column("output", Text),
        Column("prompt_tokens", Integer),
        Column("completion_tokens", Integer),
        Column("latency_ms", Float),
        Column("cost_usd", Float, nullable=False, default=0.0),
        Column("frontier_cost_usd", Float, nullable=False, default=0.0),
        Column("tried", Text),
        Column("error", Text),
    )
    Index("ix_requests_day", table.c.day)
    Index("ix_requests_task", table.c.task)
    meta.create_all(conn)


@migration(2, "client api keys")
def _keys(conn: Connection) -> None:
    meta = MetaData()
    Table(
        "api_keys",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(100), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("revoked_at", DateTime(timezone=True)),
    )
    meta.create_all(conn)


@migration(3, "human review queue")
def _reviews(conn: Connection) -> None:
    meta = MetaData()
    table = Table(
        "reviews",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(64), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("task", String(100)),
        Column("input", Text, nullable=False),
        Column("guess", Text),
        Column("confidence", Float),
        Column("status", String(20), nullable=False),
        Column("answer", Text),
        Column("answered_at", DateTime(timezone=True)),
        Column("reviewer", String(100)),
    )
    Index("ix_reviews_status", table.c.status)
    meta.create_all(conn)


@migration(4, "judgements: ground truth on served answers")
def _judgements(conn: Connection) -> None:
    meta = MetaData()
    table = Table(
        "judgements",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(64), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("day", String(10), nullable=False),
        Column("task", String(100), nullable=False),
        Column("source", String(20), nullable=False),
        Column("accepted", Boolean, nullable=False),
        Column("agrees", Boolean),
        Column("answer", Text),
        Column("reference", Text),
        Column("tier", String(100)),
        Column("cost_usd", Float, nullable=False, default=0.0),
    )
    Index("ix_judgements_task", table.c.task)
    Index("ix_judgements_request", table.c.request_id)
    meta.create_all(conn)


@migration(5, "key roles; requests found by request id, with the task version that answered")
def _roles(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE api_keys ADD COLUMN role VARCHAR(20) NOT NULL DEFAULT 'client'"))
    conn.execute(text("ALTER TABLE requests ADD COLUMN version VARCHAR(20)"))
    conn.execute(text("CREATE INDEX ix_requests_request_id ON requests (request_id)"))


@migration(6, "shadow answers of candidate versions")
def _shadow(conn: Connection) -> None:
    meta = MetaData()
    table = Table(
        "shadow",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(64), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("day", String(10), nullable=False),
        Column("task", String(100), nullable=False),
        Column("version", String(20), nullable=False),
        Column("served_version", String(20)),
        Column("answer", Text),
        Column("confidence", Float),
        Column("agrees_served", Boolean),
        Column("agrees_final", Boolean),
    )
    Index("ix_shadow_task_version", table.c.task, table.c.version)
    meta.create_all(conn)


@migration(7, "per-key budgets and rate limits, and their usage counters")
def _limits(conn: Connection) -> None:
    for column in ("budget_usd FLOAT", "rpm INTEGER", "tpm INTEGER", "budget_period VARCHAR(10)"):
        conn.execute(text(f"ALTER TABLE api_keys ADD COLUMN {column}"))
    meta = MetaData()
    Table(  # one row per key and metric: the amount used in the window `period_start` (see store/limits.py)
        "key_usage",
        meta,
        Column("key_id", Integer, primary_key=True, autoincrement=False),
        Column("metric", String(10), primary_key=True),
        Column("period_start", String(40), nullable=False),
        Column("amount", Float, nullable=False),
    )
    meta.create_all(conn)


@migration(8, "the triage decision of free-form requests")
def _triage(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE requests ADD COLUMN triage_tier VARCHAR(100)"))
    conn.execute(text("ALTER TABLE requests ADD COLUMN triage TEXT"))


@migration(9, "console: hourly request rollup, requests by time, review items by request")
def _console(conn: Connection) -> None:
    meta = MetaData()
    Table(
        "requests_hourly",
        meta,
        Column("hour", String(13), primary_key=True),  # YYYY-MM-DD HH, UTC
        Column("task", String(100), primary_key=True),  # "" for requests that went to no task
        Column("requests", Integer, nullable=False),
        Column("local", Integer, nullable=False),
        Column("escalated", Integer, nullable=False),
        Column("errors", Integer, nullable=False),
        Column("cost_usd", Float, nullable=False),
        Column("frontier_cost_usd", Float, nullable=False),
    )
    meta.create_all(conn)
    hour = ("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')" if conn.dialect.name == "postgresql"
            else "substr(created_at, 1, 13)")  # fmt: skip
    conn.execute(text(
        f"INSERT INTO requests_hourly SELECT {hour}, coalesce(task, ''), count(*), "
        "sum(CASE WHEN tier = 'specialist' THEN 1 ELSE 0 END), sum(CASE WHEN escalated THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), coalesce(sum(cost_usd), 0), "
        f"coalesce(sum(frontier_cost_usd), 0) FROM requests GROUP BY {hour}, coalesce(task, '')"
    ))  # fmt: skip
    conn.execute(text("CREATE INDEX ix_requests_created_at ON requests (created_at)"))
    conn.execute(text("CREATE INDEX ix_reviews_request_id ON reviews (request_id)"))


@migration(10, "the specialist's own answer on requests another tier answered")
def _guess(conn: Connection) -> None:
    # the predicted-answer mix of drift checks needs the specialist's answer even where a tier replaced it
    conn.execute(text("ALTER TABLE requests ADD COLUMN guess TEXT"))


@migration(11, "the system prompt of each request")
def _system(conn: Connection) -> None:
    # `smallfleet audit` groups pass-through traffic by task, and a system prompt names the task best
    conn.execute(text("ALTER TABLE requests ADD COLUMN system TEXT"))


@migration(12, "console sessions in the database")
def _console_sessions(conn: Connection) -> None:
    # the gateway's workers (serve --workers) and replicas behind one load balancer must all know a session
    meta = MetaData()
    Table(
        "console_sessions",
        meta,
        Column("token_hash", String(64), primary_key=True),  # SHA-256 of the cookie's token, never the token
        Column("name", String(200)),  # the key's name; NULL on an open console (no keys, loopback)
        Column("role", String(20), nullable=False),
        Column("key_hash", String(64)),
        Column("csrf", String(64), nullable=False),
        Column("expires_at", Float, nullable=False),  # seconds since the epoch
    ).create(conn)

def applied(engine: Engine) -> list[int]:
    """Versions already applied to the database behind `engine`."""
    meta = MetaData()
    table = _ledger_table(meta)
    with engine.begin() as conn:
        meta.create_all(conn)
        return [row[0] for row in conn.execute(select(table.c.version).order_by(table.c.version))]


def migrate(engine: Engine) -> list[int]:
    """Apply every missing migration in order; returns the versions applied now."""
    done = set(applied(engine))
    table = _ledger_table(MetaData())
    new = []
    for number, name, fn in MIGRATIONS:
        if number in done:
            continue
        with engine.begin() as conn:
            fn(conn)
            conn.execute(table.insert().values(version=number, name=name, applied_at=datetime.now(UTC)))
        new.append(number)
    return new
