"""Per-key budgets and rate limits, counted in the database so that every gateway sharing it enforces
one limit.

Each limit of a key is one counter row in `key_usage` (migration 7): the amount used in the current
window (`period_start`). Taking from a counter is one conditional UPDATE, atomic on SQLite (one writer)
and on PostgreSQL (a concurrent UPDATE waits for the row and re-checks the WHERE on the row it finds),
so two gateways can never both take the last unit:

    UPDATE key_usage SET amount = <used in this window> + :n, period_start = :window
     WHERE key_id = :key AND metric = :metric AND <used in this window> + :n <= :limit

where <used in this window> is `amount` when the row's window is the current one and 0 when it has
passed: that is how a limit resets, with no clean-up job.

Metrics and their windows (UTC): `requests` (--rpm) and `tokens` (--tpm) per minute; `usd` (--budget-usd)
per budget period: hour, day, week (from Monday) or month. A request's cost is only known once it is
answered (an escalation pays upstream tokens), so admission takes one request and the request's prompt
tokens conditionally and checks that some budget is left; the answer's own tokens and cost are added
after. What a limit can be overshot by is therefore bounded by the requests in flight when it is reached.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, select

from smallfleet.errors import ConfigError
from smallfleet.store.db import Database

PERIODS = ("hour", "day", "week", "month")
METRICS = ("requests", "tokens", "usd")


@dataclass(frozen=True)
class KeyLimits:
    """What one API key may use; None everywhere is a key without limits."""

    budget_usd: float | None = None
    """Most the key may spend per budget period, in USD: specialist compute plus upstream tokens, as logged."""
    rpm: int | None = None
    """Most requests per minute (UTC minute windows)."""
    tpm: int | None = None
    """Most tokens per minute, prompt plus completion (UTC minute windows)."""
    period: str = "month"
    """Budget period, a UTC calendar window: hour, day, week (from Monday) or month; the budget resets at its start."""

    def __post_init__(self):
        if self.period not in PERIODS:
            raise ConfigError(f"unknown budget period {self.period!r} (periods: {', '.join(PERIODS)})")
        for name in ("budget_usd", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, not {value!r} (leave it out for no limit)")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.budget_usd, self.rpm, self.tpm))

    def describe(self) -> str:
        """The limits in a few words, for `keys list`."""
        parts = [f"${self.budget_usd:g}/{self.period}"] if self.budget_usd is not None else []
        parts += [f"{self.rpm} rpm"] if self.rpm is not None else []
        parts += [f"{self.tpm} tpm"] if self.tpm is not None else []
        return ", ".join(parts)


class _Refused(Exception):
    def __init__(self, refusal: Refusal):
        self.refusal = refusal


@dataclass(frozen=True)
class Refusal:
    """A request over one of its key's limits: which limit, why, and in how many seconds its window resets."""

    limit: str
    message: str
    retry_after: int
    window: str
    ends: float
    """Epoch second the limit's window ends."""


def window(metric: str, limits: KeyLimits, now: float) -> tuple[str, float]:
    """The current window of `metric`'s counter: its name and the epoch second it ends."""
    t = datetime.fromtimestamp(now, UTC)
    if metric != "usd":
        start = t.replace(second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H:%M"), (start + timedelta(minutes=1)).timestamp()
    if limits.period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif limits.period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif limits.period == "week":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
        end = start + timedelta(days=7)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=calendar.monthrange(t.year, t.month)[1])
    return f"{limits.period}:{start.isoformat(timespec='minutes')}", end.timestamp()


def _used(usage, window_name: str):
    """The counter's amount in `window_name`: 0 once its row's window has passed."""
    return case((usage.c.period_start == window_name, usage.c.amount), else_=0.0)


def create_counters(conn, db: Database, key_id: int) -> None:
    """The zeroed counter rows of a new key (in the transaction creating it)."""
    conn.execute(db.key_usage.insert(), [{"key_id": key_id, "metric": m, "period_start": "", "amount": 0.0}
                                         for m in METRICS])  # fmt: skip


def admit(db: Database, key_id: int, limits: KeyLimits, prompt_tokens: int, now: float | None = None) -> Refusal | None:
    """Take one request and its prompt tokens from the key's counters, all or nothing; the refusal when a limit is
    reached (then nothing is taken).

    Args:
        db: The gateway database.
        key_id: The key's row id.
        limits: The key's limits.
        prompt_tokens: The request's estimated prompt tokens (counted against tpm).
        now: Epoch seconds (default: now).
    """
    now = time.time() if now is None else now
    u = db.key_usage
    wanted = [("requests", limits.rpm, 1.0), ("tokens", limits.tpm, float(prompt_tokens)), ("usd", limits.budget_usd, 0.0)]
    try:
        with db.engine.begin() as conn:
            for metric, limit, amount in wanted:
                if limit is None:
                    continue
                name, ends = window(metric, limits, now)
                used = _used(u, name)
                fits = used < limit if metric == "usd" else used + amount <= limit  # a budget admits while any is left
                done = conn.execute(u.update().where(u.c.key_id == key_id, u.c.metric == metric, fits)
                                    .values(amount=used + amount, period_start=name))  # fmt: skip
                if done.rowcount == 0:  # leaving the block with it rolls back what earlier counters took
                    raise _Refused(_refusal(metric, limits, prompt_tokens, name, ends, now))
    except _Refused as refused:
        return refused.refusal
    return None


def charge(db: Database, key_id: int, limits: KeyLimits, tokens: int, usd: float, now: float | None = None) -> None:
    """Add an answered request's further tokens and its cost to the key's counters (unconditionally: it is done).

    Args:
        db: The gateway database.
        key_id: The key's row id.
        limits: The key's limits.
        tokens: Tokens not taken at admission (the completion's, and prompt tokens an upstream counted beyond them).
        usd: What the request cost (the request log's cost_usd).
        now: Epoch seconds (default: now).
    """
    now = time.time() if now is None else now
    u = db.key_usage
    with db.engine.begin() as conn:
        for metric, limit, amount in (("tokens", limits.tpm, float(tokens)), ("usd", limits.budget_usd, usd)):
            if limit is None or amount <= 0:
                continue
            name, _ = window(metric, limits, now)
            used = _used(u, name)
            conn.execute(u.update().where(u.c.key_id == key_id, u.c.metric == metric)
                         .values(amount=used + amount, period_start=name))  # fmt: skip


def usage(db: Database, key_id: int, limits: KeyLimits, now: float | None = None) -> dict[str, float]:
    """metric -> amount used in its current window, for each limit the key has."""
    now = time.time() if now is None else now
    u = db.key_usage
    with db.engine.connect() as conn:
        rows = {m: (w, a) for m, w, a in conn.execute(select(u.c.metric, u.c.period_start, u.c.amount)
                                                      .where(u.c.key_id == key_id))}  # fmt: skip
    out = {}
    for metric, limit in (("requests", limits.rpm), ("tokens", limits.tpm), ("usd", limits.budget_usd)):
        if limit is not None:
            stored, amount = rows.get(metric, ("", 0.0))
            out[metric] = amount if stored == window(metric, limits, now)[0] else 0.0
    return out


def _refusal(metric: str, limits: KeyLimits, prompt_tokens: int, name: str, ends: float, now: float) -> Refusal:
    retry = max(1, math.ceil(ends - now))
    if metric == "requests":
        message = f"rate limit reached: this key may send {limits.rpm} requests per minute (rpm)"
    elif metric == "tokens" and prompt_tokens > (limits.tpm or 0):
        message = f"token limit: this request's ~{prompt_tokens} tokens are over the key's {limits.tpm} tokens per minute (tpm)"
    elif metric == "tokens":
        message = f"token limit reached: this key may use {limits.tpm} tokens per minute (tpm)"
    else:
        message = f"budget exhausted: this key may spend ${limits.budget_usd:g} per {limits.period} (budget_usd)"
    return Refusal(limit={"requests": "rpm", "tokens": "tpm", "usd": "budget_usd"}[metric],
                   message=f"{message}; try again in {retry} s", retry_after=retry, window=name, ends=ends)  # fmt: skip
