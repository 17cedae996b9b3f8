"""The gateway database: numbered migrations, the background ledger, rollups, keys, and the
same log shared by two gateway processes on a real PostgreSQL server."""

from __future__ import annotations

import time

import openai
import pytest
from gateway_process import GatewayProcess
from sqlalchemy import inspect

from smallfleet.errors import ConfigError
from smallfleet.store import Database
from smallfleet.store.keys import active_keys, create_key, hash_key, keys_required, list_keys, open_gateway, revoke_key
from smallfleet.store.ledger import Ledger, new_row, recent, rollup
from smallfleet.store.limits import KeyLimits
from smallfleet.store.migrations import MIGRATIONS


def test_migrations_apply_once_in_order_on_a_fresh_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = Database(url)
    assert first.applied_now == [n for n, _, _ in MIGRATIONS] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    tables = {"requests", "api_keys", "reviews", "judgements", "schema_migrations"}
    assert tables <= set(inspect(first.engine).get_table_names())
    assert Database(url).applied_now == []  # reopening applies nothing
    with first.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_ledger_writes_every_row_and_rolls_up_by_task_and_day(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    ledger = Ledger(db)
    for i in range(250):
        ledger.record(new_row(request_id=f"r{i}", status="ok", http_status=200, task="a" if i % 5 else "b",
                              escalated=i % 10 == 0, cost_usd=0.001, frontier_cost_usd=0.01, latency_ms=float(i)))  # fmt: skip
    ledger.close()
    totals = rollup(db)
    assert totals["requests"] == 250 and totals["escalated"] == 25
    assert totals["by_task"]["b"]["requests"] == 50
    assert totals["cost_usd"] == pytest.approx(0.25) and totals["saving_usd"] == pytest.approx(2.25)
    assert totals["saving_pct"] == pytest.approx(90.0)
    assert list(totals["by_day"]) == [time.strftime("%Y-%m-%d", time.gmtime())]


def test_keys_are_stored_hashed_and_revocable(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    key = create_key(db, "svc")
    assert active_keys(db) == {hash_key(key): "svc"}
    assert key.encode() not in (tmp_path / "k.db").read_bytes()
    revoke_key(db, "svc")
    assert active_keys(db) == {}


def test_revoking_the_last_key_keeps_keys_required_until_the_gateway_is_opened(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    assert not keys_required(db)  # a fresh gateway is open
    create_key(db, "a")
    create_key(db, "b")
    revoke_key(db, "a")
    with pytest.raises(ConfigError, match="'b' is still active"):
        open_gateway(db)
    revoke_key(db, "b")
    assert active_keys(db) == {} and keys_required(db)  # every key revoked: still closed
    assert open_gateway(db) == ["a", "b"]  # the explicit opening forgets the revoked keys
    assert not keys_required(db) and list_keys(db) == []
    create_key(db, "a")  # a revoked key's name can be used again after the opening
    assert keys_required(db)


REFUSED = {  # request id -> values some database or driver refuses as they are
    "surrogate": {"input": "x \ud800 y", "output": "\udfff"},
    "nul": {"input": "a\x00b", "error": "\x00"},
    "long-model": {"model": "m" * 300, "task": "t" * 150},
}


def check_refused_rows_are_stored_in_a_safe_form(url: str) -> None:
    db = Database(url)
    ledger = Ledger(db)
    ledger.record(new_row(request_id="before", status="ok", http_status=200, input="fine"))
    for request_id, values in REFUSED.items():
        ledger.record(new_row(request_id=request_id, status="ok", http_status=200, **values))
    time.sleep(0.5)  # the next row comes in a later batch, after the writer met the bad ones
    ledger.record(new_row(request_id="after", status="ok", http_status=200, input="fine"))
    ledger.close()
    rows = {r["request_id"]: r for r in recent(db, limit=10)}
    assert set(rows) == {"before", *REFUSED, "after"}  # nothing dropped, and the writer kept going
    assert (rows["surrogate"]["input"], rows["surrogate"]["output"]) == ("x \\ud800 y", "\\udfff")
    assert rows["nul"]["input"] in ("a\x00b", "a\\x00b")  # PostgreSQL refuses NUL: it is escaped there
    assert rows["long-model"]["model"].startswith("m" * 150) and len(rows["long-model"]["model"]) <= 300
    assert rollup(db)["requests"] == 5


def test_rows_the_database_refuses_are_stored_in_a_safe_form_sqlite(tmp_path):
    check_refused_rows_are_stored_in_a_safe_form(f"sqlite:///{tmp_path / 'safe.db'}")


def test_rows_the_database_refuses_are_stored_in_a_safe_form_postgresql(postgres):
    check_refused_rows_are_stored_in_a_safe_form(postgres)
    rows = {r["request_id"]: r for r in recent(Database(postgres), limit=10)}
    assert rows["nul"]["input"] == "a\\x00b" and len(rows["long-model"]["model"]) == 200


def test_two_gateways_share_one_postgresql_log_and_one_rate_limit(postgres, fleet_dir):
    db = Database(postgres)
    assert db.applied_now == [n for n, _, _ in MIGRATIONS]
    key = create_key(db, "shared", limits=KeyLimits(rpm=3))  # rpm windows are UTC minutes: all in one
    with GatewayProcess(fleet_dir, "--db", postgres) as a, GatewayProcess(fleet_dir, "--db", postgres) as b:
        left = 60 - time.time() % 60
        if left < 25:
            time.sleep(left + 0.1)
        answered, refused = 0, []
        for gw in (a, b, a, b, a, b):
            client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
            try:
                client.chat.completions.create(model="fleet/support_ticket", messages=[{"role": "user", "content": "refund me"}])
                answered += 1
            except openai.RateLimitError as err:
                refused.append(err.message)
    assert answered == 3 and len(refused) == 3  # one limit across both gateways
    assert all("3 requests per minute (rpm)" in m for m in refused)
    totals = rollup(db)
    assert totals["requests"] == 6 and totals["errors"] == 3  # both gateways' rows, the refused ones included
    assert totals["by_task"]["support_ticket"]["requests"] == 3


def test_a_row_the_database_refuses_does_not_block_the_others(tmp_path, caplog):
    db = Database(f"sqlite:///{tmp_path / 'bad.db'}")
    ledger = Ledger(db)
    ledger.record(new_row(request_id="good-1", status="ok", http_status=200))
    ledger.record(new_row(request_id="bad", status=None, http_status=200))  # violates NOT NULL
    ledger.record(new_row(request_id="good-2", status="ok", http_status=200))
    ledger.close()
    assert rollup(db)["requests"] == 2
    assert any("could not be stored" in r.message and '"bad"' in r.message for r in caplog.records)


def test_rows_of_one_batch_keep_every_field_they_carry(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'mixed.db'}")
    ledger = Ledger(db)  # two rows in one batch, the second with a field the first lacks (a stream that failed)
    ledger.record(new_row(request_id="ok", status="ok", http_status=200, output="billing"))
    ledger.record(new_row(request_id="failed", status="error", http_status=200, output="bill",
                          error="generation failed"))
    ledger.close()
    rows = {r["request_id"]: r for r in recent(db)}
    assert (rows["ok"]["output"], rows["failed"]["error"]) == ("billing", "generation failed")


def test_closing_an_idle_ledger_reports_no_failure(tmp_path, caplog):
    ledger = Ledger(Database(f"sqlite:///{tmp_path / 'idle.db'}"))
    ledger.record(new_row(request_id="one", status="ok", http_status=200))
    time.sleep(0.5)  # written: the queue is empty when the close marker comes
    ledger.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert rollup(ledger.db)["requests"] == 1
