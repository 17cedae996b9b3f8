"""Per-key budgets and rate limits: the database counters (atomic under concurrent takers, reset on
their period), and a real gateway answering 429 with Retry-After through the `openai` client. Two
gateways sharing one limit on PostgreSQL: tests/test_store.py (it shares that server's log too)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime

import openai
import pytest
from cli_process import run
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess

from smallfleet.errors import ConfigError
from smallfleet.store import Database
from smallfleet.store.keys import create_key, key_limits, list_keys, open_gateway, revoke_key
from smallfleet.store.limits import KeyLimits, admit, charge, usage

TICKET = "I was charged twice for order 88412, please refund the extra payment"
REVIEW = "Stopped charging after a week and support never answered."
NOON = datetime(2026, 3, 11, 12, 0, 5, tzinfo=UTC).timestamp()  # a Wednesday, 5 s into a minute


def ask(client, model: str, text: str):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def fresh_minute(needed: float = 25.0) -> None:
    """Wait for the next minute when fewer than `needed` seconds are left in this one (rpm windows are UTC minutes),
    so the requests of one check all fall into one window."""
    left = 60 - time.time() % 60
    if left < needed:
        time.sleep(left + 0.1)


def test_concurrent_takers_never_get_more_than_the_limit(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    create_key(db, "k", limits=KeyLimits(rpm=10))
    key_id, limits = key_limits(db)["k"]
    admitted = []

    def take():  # each thread its own engine, as separate gateways have
        own = Database(db.url)
        for _ in range(5):
            admitted.append(admit(own, key_id, limits, 10, NOON) is None)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 10 and len(admitted) == 30
    refusal = admit(db, key_id, limits, 10, NOON)
    assert refusal.limit == "rpm" and "10 requests per minute (rpm)" in refusal.message and refusal.retry_after == 55
    assert admit(db, key_id, limits, 10, NOON + 55) is None  # the next minute counts from zero


def test_budget_admits_while_any_is_left_and_resets_on_its_period(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    create_key(db, "k", limits=KeyLimits(budget_usd=0.01, tpm=100, period="day"))
    create_key(db, "free")
    assert set(key_limits(db)) == {"k"}  # a key without limits is never looked up
    key_id, limits = key_limits(db)["k"]
    assert admit(db, key_id, limits, 30, NOON) is None
    charge(db, key_id, limits, tokens=20, usd=0.006, now=NOON)
    assert admit(db, key_id, limits, 30, NOON) is None  # 0.006 spent: some budget is left
    charge(db, key_id, limits, tokens=0, usd=0.006, now=NOON)
    assert usage(db, key_id, limits, NOON) == {"tokens": 80.0, "usd": pytest.approx(0.012)}
    refusal = admit(db, key_id, limits, 10, NOON)
    assert refusal.limit == "budget_usd" and "$0.01 per day (budget_usd)" in refusal.message
    assert refusal.retry_after == 12 * 3600 - 5  # until midnight UTC
    assert usage(db, key_id, limits, NOON)["tokens"] == 80.0  # a refused request takes nothing
    next_day = NOON + 12 * 3600
    assert admit(db, key_id, limits, 30, next_day) is None
    assert usage(db, key_id, limits, next_day) == {"tokens": 30.0, "usd": 0.0}
    too_big = admit(db, key_id, limits, 101, next_day)
    assert too_big.limit == "tpm" and "~101 tokens are over the key's 100 tokens per minute" in too_big.message
    with pytest.raises(ConfigError, match="budget_usd must be positive"):
        KeyLimits(budget_usd=-1)
    revoke_key(db, "k")
    revoke_key(db, "free")
    open_gateway(db)  # forgets the revoked keys and their counters
    with db.engine.connect() as conn:
        assert conn.execute(db.key_usage.select()).fetchall() == []


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def limited_gateway(fleet_dir, upstream, tmp_path_factory):
    """A gateway whose review_sentiment always escalates to the fake upstream, with three keys: 2 rpm, a tiny
    budget, and no limit."""
    path = tmp_path_factory.mktemp("limits") / "limits.db"
    db = f"sqlite:///{path}"
    keys = {name: run("keys", "create", fleet_dir, name, "--db", db, *flags).stdout.strip()
            for name, flags in [("slow", ["--rpm", "2"]), ("thrifty", ["--budget-usd", "0.0002"]), ("free", [])]}  # fmt: skip
    args = ["--db", db, "--escalate-to", upstream.base_url, "--escalate-model", "frontier-model",
            "--escalate-input-price", "2.5", "--escalate-output-price", "10",
            "--threshold", "support_ticket=0", "--threshold", "review_sentiment=2"]  # fmt: skip
    with GatewayProcess(fleet_dir, *args) as gw:
        gw.db, gw.keys = path, keys
        yield gw


def client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def test_over_the_rpm_limit_a_client_gets_429_naming_the_limit_with_retry_after(limited_gateway):
    fresh_minute()
    slow = client(limited_gateway, limited_gateway.keys["slow"])
    for _ in range(2):
        assert ask(slow, "fleet/support_ticket", TICKET).choices[0].message.content == "billing"
    for _ in range(2):  # the second refusal comes from the gateway's memory of the spent window: the same answer
        with pytest.raises(openai.RateLimitError) as err:
            ask(slow, "fleet/support_ticket", TICKET)
        assert "2 requests per minute (rpm)" in err.value.message and err.value.code == "rate_limit_exceeded"
        assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    free = client(limited_gateway, limited_gateway.keys["free"])
    assert ask(free, "fleet/support_ticket", TICKET).choices[0].message.content == "billing"  # others are not limited
    time.sleep(1.0)  # the ledger writes in the background
    rows = sqlite3.connect(limited_gateway.db).execute(
        "select http_status, model, error from requests where api_key = 'slow' order by id").fetchall()
    assert [r[0] for r in rows] == [200, 200, 429, 429]
    assert rows[2][1] == "fleet/support_ticket" and "rpm" in rows[2][2]


def test_an_escalated_request_spends_the_budget_with_its_upstream_tokens(limited_gateway, upstream):
    upstream.mode = "reply:positive"
    thrifty = client(limited_gateway, limited_gateway.keys["thrifty"])
    first = ask(thrifty, "fleet/review_sentiment", REVIEW)
    sf = first.model_extra["smallfleet"]
    assert sf["tier"] == "escalate" and sf["cost_usd"] > 0.0002  # upstream tokens took it over the budget
    with pytest.raises(openai.RateLimitError) as err:
        ask(thrifty, "fleet/support_ticket", TICKET)  # even a local answer: the budget is spent
    assert "budget exhausted" in err.value.message and "$0.0002 per month (budget_usd)" in err.value.message
    assert int(err.value.response.headers["retry-after"]) > 0
    db = Database(f"sqlite:///{limited_gateway.db}")
    key_id, limits = key_limits(db)["thrifty"]
    spent = usage(db, key_id, limits)["usd"]
    time.sleep(1.0)
    logged = sqlite3.connect(limited_gateway.db).execute(
        "select sum(cost_usd) from requests where api_key = 'thrifty' and http_status = 200").fetchone()[0]
    assert spent == pytest.approx(logged) and spent == pytest.approx(sf["cost_usd"])  # specialist compute + upstream
    assert {k["name"]: k["limits"].describe() for k in list_keys(db)}["thrifty"] == "$0.0002/month"  # `keys list`
