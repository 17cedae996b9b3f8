"""Load shedding: a request whose task has more than serving.max_wait_seconds of work queued goes straight to
the escalation tiers (`busy`) instead of waiting; off by default."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess, metric

from smallfleet.serve.batching import Batcher

TICKET = "I was charged twice for order 88412, please refund the extra payment"


def test_the_batcher_estimates_the_wait_from_its_queue_and_recent_seconds_per_item():
    release = threading.Event()

    def slow(texts, _options):
        release.wait(5)
        time.sleep(0.05)
        return [t.upper() for t in texts]

    async def scenario():
        batcher = Batcher(slow, "test", max_batch=1)
        assert batcher.expected_wait() == 0  # nothing has run: no estimate yet, nobody is turned away
        release.set()
        assert (await batcher.submit("a"))[0] == "A"
        release.clear()
        jobs = [asyncio.ensure_future(batcher.submit(t)) for t in "bcde"]
        await asyncio.sleep(0.2)  # one running (held), three queued
        waiting = batcher.expected_wait()
        release.set()
        assert [r[0] for r in await asyncio.gather(*jobs)] == list("BCDE")
        batcher.close()
        return waiting

    waiting = asyncio.run(scenario())
    assert 4 * 0.04 < waiting < 4 * 0.2, waiting


def burst(url: str, n: int) -> list[dict]:
    def one(_):
        r = httpx.post(f"{url}/chat/completions", timeout=60,
                       json={"model": "fleet/support_ticket", "messages": [{"role": "user", "content": TICKET}]})
        assert r.status_code == 200, r.text
        return r.json()["smallfleet"]

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        fake.mode = "reply:billing"
        yield fake


@pytest.mark.parametrize("limit", [None, "0.000001"])
def test_a_burst_past_the_wait_limit_goes_upstream_as_busy_and_nothing_fails(fleet_dir, upstream, tmp_path, limit):
    db = tmp_path / "log.db"
    args = ["--db", f"sqlite:///{db}", "--escalate-to", upstream.base_url, "--escalate-model", "frontier-model",
            "--threshold", "support_ticket=0", "--threads", "1", *(["--max-wait-seconds", limit] if limit else [])]
    with GatewayProcess(fleet_dir, *args) as gateway:
        burst(gateway.base_url, 1)  # the specialist has answered once: the batcher knows its seconds per item
        calls = len(upstream.calls)
        answers = burst(gateway.base_url, 24)
        shed = [a for a in answers if a.get("escalation_reason") == ["busy"]]
        page = httpx.get(gateway.base_url.removesuffix("/v1") + "/metrics").text
        if not limit:  # the default: every request waits its turn and the specialist answers it
            assert not shed and all(a["tier"] == "specialist" for a in answers)
            assert len(upstream.calls) == calls
            assert "load shedding" not in gateway.output()
            return
        assert "load shedding: a request whose task has more than 1e-06 s of work queued" in gateway.output()
        assert shed, answers  # 24 at once on one thread: most find work queued
        assert all(a["tier"] == "escalate" and a["escalated"] and a["confidence"] is None for a in shed)
        assert len(upstream.calls) - calls == len(shed)  # the shed ones, and only they, went upstream
        assert metric(page, 'smallfleet_shed_total{task="support_ticket"}') == len(shed)
    with sqlite3.connect(db) as con:
        rows = dict(con.execute("select request_id, escalated from requests"))
    assert all(rows[a["request_id"]] == 1 for a in shed)  # logged as escalated, like any other escalation
