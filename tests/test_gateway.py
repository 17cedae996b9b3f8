"""The gateway as a client sees it: a real `smallfleet serve` process on loopback, driven
with the official `openai` client, escalating to a fake OpenAI-protocol upstream."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess, fleet_with_tiers

UPSTREAM_KEY = "sk-test-upstream-secret-123"
TICKET = "I was charged twice for order 88412, please refund the extra payment"
REVIEW = "Stopped charging after a week and support never answered."


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fleet_dir, upstream, tmp_path_factory):
    """support_ticket always answers locally, review_sentiment always escalates: fake upstream, then review."""
    db = tmp_path_factory.mktemp("db") / "log.db"
    args = ["--db", f"sqlite:///{db}", "--escalate-to", upstream.base_url, "--escalate-model", "frontier-model",
            "--escalate-key-env", "UPSTREAM_KEY", "--escalate-input-price", "2.5", "--escalate-output-price", "10",
            "--threshold", "support_ticket=0", "--threshold", "review_sentiment=2", "--threads", "1"]  # fmt: skip
    with GatewayProcess(fleet_dir, *args, env={"UPSTREAM_KEY": UPSTREAM_KEY}) as proc:
        proc.db = db
        yield proc


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def logged_inputs(db, until: str, timeout: float = 10.0) -> list[str]:
    """The `input` of every logged request, once `until` is among them (the ledger writes in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as con:
            inputs = [x for (x,) in con.execute("select input from requests order by id")]
        if until in inputs or time.monotonic() > deadline:
            return inputs
        time.sleep(0.1)


def extra(response) -> dict:
    return response.model_extra["smallfleet"]


def ask(client, model: str, text: str, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_the_models_run_on_the_threads_asked_for(gateway):
    assert "model threads: 1 (--threads)" in gateway.output()


def test_encoder_specialists_and_the_router_answer_on_onnx_int8(gateway):
    out = " ".join(gateway.output().split())  # one line however the terminal wrapped it
    assert "task support_ticket (classify, encoder on onnx int8)" in out
    assert "router: 2 tasks, encoder on onnx int8" in out


def test_accepted_answer_comes_from_the_specialist(client, fleet_dir):
    r = ask(client, "fleet/support_ticket", TICKET)
    sf = extra(r)
    assert r.choices[0].message.content == "billing"
    assert sf["tier"] == "specialist" and sf["task"] == "support_ticket" and not sf["escalated"]
    assert 0 < sf["confidence"] <= 1 and sf["latency_ms"] > 0
    assert sf["cost_usd"] > 0  # self-hosted compute is never free
    assert sf["frontier_cost_usd"] > sf["cost_usd"]  # what frontier-model would have charged
    assert r.usage.completion_tokens >= 1


def test_router_sends_requests_to_their_task_and_out_of_scope_ones_upstream(client, upstream):
    upstream.mode = "echo"
    assert extra(ask(client, "fleet", TICKET))["task"] == "support_ticket"
    assert extra(ask(client, "fleet", "The blender is loud but crushes ice perfectly. Five stars."))["task"] == "review_sentiment"
    r = ask(client, "fleet", "Write a short poem about the first snow of winter.")
    assert extra(r)["task"] is None and extra(r)["escalated"] and extra(r)["tier"] == "escalate"
    assert r.choices[0].message.content.startswith("upstream: Write a short poem")


def test_escalation_asks_upstream_with_the_label_list_and_maps_the_reply(client, upstream):
    upstream.mode = "reply:Negative."
    upstream.calls.clear()
    r = ask(client, "fleet/review_sentiment", REVIEW)
    sf = extra(r)
    assert r.choices[0].message.content == "negative"
    assert sf["escalated"] and sf["tier"] == "escalate" and sf["task"] == "review_sentiment"
    assert sf["cost_usd"] == pytest.approx((100 * 2.5 + 10 * 10) / 1e6, rel=0.05)  # upstream tokens x prices (+ local compute)
    sent = upstream.calls[-1]
    assert sent["body"]["model"] == "frontier-model"
    system = sent["body"]["messages"][0]["content"]
    assert all(label in system for label in ("negative", "neutral", "positive"))
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the key comes from the named environment variable


def test_unusable_reply_falls_through_to_the_review_queue_and_back_into_training_data(client, upstream, gateway, fleet_dir, tmp_path):
    upstream.mode = "reply:I cannot tell, sorry"
    r = ask(client, "fleet/review_sentiment", "It arrived. It is a kettle.")
    sf = extra(r)
    assert sf["tier"] == "human" and sf["review"]["status"] == "pending"
    assert r.choices[0].message.content in ("negative", "neutral", "positive")  # the specialist's best guess
    assert "could not be used" in sf["tried"][0]
    item = str(sf["review"]["id"])
    db = ["--db", f"sqlite:///{gateway.db}"]
    cli = [sys.executable, "-m", "smallfleet", "review"]
    listed = subprocess.run([*cli, "list", str(fleet_dir), *db, "--json"], capture_output=True, text=True, check=True)
    pending = {row["id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert pending[int(item)]["input"] == "It arrived. It is a kettle." and pending[int(item)]["status"] == "pending"
    bad = subprocess.run([*cli, "answer", str(fleet_dir), item, "meh", *db], capture_output=True, text=True)
    assert bad.returncode == 1 and "not a label of task 'review_sentiment'" in bad.stderr
    subprocess.run([*cli, "answer", str(fleet_dir), item, "neutral", *db], check=True, capture_output=True)
    judged = sqlite3.connect(gateway.db).execute("select source, accepted, agrees, answer, reference from judgements "
                                                 "where request_id = ?", (r.id,)).fetchall()  # fmt: skip
    guess = r.choices[0].message.content  # the person's answer is ground truth on the specialist's guess
    assert judged == [("review", 0, int(guess == "neutral"), guess, "neutral")]
    out = tmp_path / "feedback.jsonl"
    subprocess.run([*cli, "export", str(fleet_dir), "--task", "review_sentiment", "--out", str(out), *db], check=True,
                   capture_output=True)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"review": "It arrived. It is a kettle.", "rating_label": "neutral"} in rows


def test_failing_upstream_is_retried_then_the_next_tier_answers(client, upstream):
    upstream.mode = "fail"
    upstream.calls.clear()
    r = ask(client, "fleet/review_sentiment", REVIEW)
    assert extra(r)["tier"] == "human"
    assert len(upstream.calls) == 3  # 1 try + 2 retries (the tier default)
    assert "HTTP 500 (3 attempts)" in extra(r)["tried"][0]


def test_upstream_timeouts_are_retried_then_the_next_tier_answers(fleet_dir, upstream, tmp_path):
    upstream.mode = "slow"
    upstream.calls.clear()
    args = ["--db", f"sqlite:///{tmp_path / 't.db'}", "--escalate-to", upstream.base_url, "--escalate-model", "m",
            "--escalate-timeout", "0.5", "--escalate-retries", "1", "--threshold", "review_sentiment=2"]  # fmt: skip
    with GatewayProcess(fleet_dir, *args) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        sf = extra(ask(c, "fleet/review_sentiment", REVIEW))
    assert sf["tier"] == "human" and sf["tried"] == ["escalate: timed out after 0.5s (2 attempts)"]
    assert len(upstream.calls) == 2


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_hanging_tier_stops_at_its_deadline_and_is_skipped_while_its_circuit_is_open(fleet_dir, upstream, tmp_path):
    upstream.mode = "slow"  # each call hangs for 3 s
    upstream.calls.clear()
    frontier = {"name": "frontier", "kind": "openai", "base_url": upstream.base_url, "model": "frontier-model",
                "timeout": 1.0, "retries": 5, "deadline": 1.5, "breaker_failures": 2, "breaker_seconds": 2}  # fmt: skip
    folder = fleet_with_tiers(fleet_dir, tmp_path / "fleet", [frontier, {"name": "human", "kind": "review"}])
    args = ["--db", f"sqlite:///{tmp_path / 'b.db'}", "--threshold", "review_sentiment=2"]
    try:
        with GatewayProcess(folder, *args) as gw:
            c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            root = gw.base_url[:-3]
            for _ in range(2):  # 1 s, 0.25 s of backoff, 0.25 s: the deadline, not 6 attempts of 1 s plus backoff
                r, took = timed(lambda: ask(c, "fleet/review_sentiment", REVIEW))
                assert extra(r)["tier"] == "human" and 1.4 < took < 2.5, took
                (tried,) = extra(r)["tried"]  # the second attempt had what was left of the deadline, about 0.25 s
                assert tried.startswith("frontier: timed out after 0.2") and tried.endswith("(2 attempts, 1.5s deadline reached)")
            assert len(upstream.calls) == 4
            assert httpx.get(root + "/healthz").json()["circuits"] == {"frontier": "open", "human": "closed"}
            assert 'smallfleet_tier_circuit_open{tier="frontier"} 1.0' in httpx.get(root + "/metrics").text
            r, took = timed(lambda: ask(c, "fleet/review_sentiment", REVIEW))  # open: skipped, no upstream call
            assert extra(r)["tier"] == "human" and took < 0.5, took
            assert "frontier: circuit open after 2 failed requests in a row" in extra(r)["tried"][0]
            with pytest.raises(openai.APIStatusError) as err:  # passthrough has no other tier: 503, at once
                timed(lambda: ask(c, "frontier-model", "hello"))
            assert err.value.status_code == 503 and "circuit open" in err.value.message
            assert len(upstream.calls) == 4
            time.sleep(2.1)  # cool-down over: one trial goes through, fails, and the circuit opens again
            r, took = timed(lambda: ask(c, "fleet/review_sentiment", REVIEW))
            assert "deadline reached" in extra(r)["tried"][0] and len(upstream.calls) == 6
            assert "circuit open" in extra(ask(c, "fleet/review_sentiment", REVIEW))["tried"][0]
            upstream.mode = "reply:Negative."
            time.sleep(2.1)  # the next trial succeeds: the circuit closes
            r = ask(c, "fleet/review_sentiment", REVIEW)
            assert extra(r)["tier"] == "frontier" and r.choices[0].message.content == "negative"
            assert httpx.get(root + "/healthz").json()["circuits"] == {"frontier": "closed", "human": "closed"}
            assert 'smallfleet_tier_circuit_open{tier="frontier"} 0.0' in httpx.get(root + "/metrics").text
    finally:
        upstream.mode = "echo"


def test_a_full_review_queue_passes_requests_to_the_next_tier_or_answers_503(fleet_dir, upstream, tmp_path):
    upstream.mode = "reply:Negative."
    frontier = {"name": "frontier", "kind": "openai", "base_url": upstream.base_url, "model": "frontier-model",
                "retries": 0}  # fmt: skip
    folder = fleet_with_tiers(fleet_dir, tmp_path / "fleet", [{"name": "human", "kind": "review"}, frontier])
    db = tmp_path / "q.db"
    args = ["--db", f"sqlite:///{db}", "--threshold", "review_sentiment=2", "--max-pending-reviews", "2"]
    try:
        with GatewayProcess(folder, *args) as gw:
            c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            assert [extra(ask(c, "fleet/review_sentiment", REVIEW))["tier"] for _ in range(2)] == ["human", "human"]
            r = ask(c, "fleet/review_sentiment", REVIEW)  # the queue is full: the next tier answers
            assert extra(r)["tier"] == "frontier" and r.choices[0].message.content == "negative"
            assert extra(r)["tried"] == ["human: review queue full (2 items pending)"]
            upstream.mode = "fail"
            with pytest.raises(openai.APIStatusError) as err:
                ask(c, "fleet/review_sentiment", REVIEW)
            assert err.value.status_code == 503 and "review queue full" in err.value.message
            cli = [sys.executable, "-m", "smallfleet", "review"]
            subprocess.run([*cli, "answer", str(folder), "1", "negative", "--db", f"sqlite:///{db}"], check=True,
                           capture_output=True)  # a person answers one: room for one more  # fmt: skip
            assert extra(ask(c, "fleet/review_sentiment", REVIEW))["tier"] == "human"
    finally:
        upstream.mode = "echo"
    with sqlite3.connect(db) as con:
        assert con.execute("select status, count(*) from reviews group by status order by status").fetchall() == [
            ("answered", 1), ("pending", 2)]


def test_passthrough_with_a_failing_upstream_is_a_502_that_says_what_was_tried(client, upstream):
    upstream.mode = "fail"
    with pytest.raises(openai.APIStatusError) as err:
        ask(client, "gpt-something", "hello")
    assert err.value.status_code == 502
    assert "escalate: HTTP 500" in err.value.message
    upstream.mode = "echo"
    assert ask(client, "gpt-something", "hello").choices[0].message.content == "upstream: hello"


def test_streaming_gives_the_same_answer_in_chunks(client):
    plain = ask(client, "fleet/support_ticket", TICKET).choices[0].message.content
    chunks = list(ask(client, "fleet/support_ticket", TICKET, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["smallfleet"]["task"] == "support_ticket"


def test_bad_requests_get_a_4xx_with_the_reason(gateway, client):
    url = gateway.base_url + "/chat/completions"
    r = httpx.post(url, content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "fleet"})
    assert r.status_code == 400 and "no messages" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "fleet", "messages": [{"role": "system", "content": "hi"}]})
    assert r.status_code == 400 and "user message" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "fleet", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"x" * 2_000_000)
    assert r.status_code == 413
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, "fleet/nope", "x")
    assert "support_ticket" in err.value.message and "review_sentiment" in err.value.message


def test_refused_requests_are_logged_with_their_status_and_reason(gateway, client):
    url = gateway.base_url + "/chat/completions"
    marker = "refused-request-marker"
    sent = [
        (httpx.post(url, content=b'{"model": "fleet/support_ticket", "messages": [' + marker.encode()), 400),
        (httpx.post(url, json={"model": "fleet/support_ticket", "messages": [{"role": "user", "content": marker}],
                               "max_tokens": 10**6}), 400),  # fmt: skip
        (httpx.post(url, json={"model": "fleet/nope", "messages": [{"role": "user", "content": marker}]}), 404),
        (httpx.post(url, content=b"x" * 2_000_000), 413),
    ]
    assert [r.status_code for r, _ in sent] == [status for _, status in sent]
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(gateway.db) as con:
            rows = con.execute("select model, status, http_status, error, input, tier from requests "
                               "where http_status in (400, 404, 413) order by id").fetchall()  # fmt: skip
        ours = [r for r in rows if r[2] == 413 or (r[4] and marker in r[4])]
        if len(ours) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    by_status = {}
    for model, status, http_status, error, text, _tier in ours:
        assert status == "error" and error
        by_status.setdefault(http_status, []).append((model, error, text))
    bad_json, over_limit = by_status[400][-2:]
    assert bad_json[0] is None and "not valid JSON" in bad_json[1] and marker in bad_json[2]
    assert over_limit[0] == "fleet/support_ticket" and "max_tokens" in over_limit[1] and marker in over_limit[2]
    assert by_status[404][-1][0] == "fleet/nope" and "no task 'nope'" in by_status[404][-1][1]
    assert "byte limit" in by_status[413][-1][1] and not by_status[413][-1][2]  # an oversized body is not kept
    metrics = httpx.get(gateway.base_url[:-3] + "/metrics").text
    assert 'smallfleet_requests_total{status="error",task="none",tier="error"}' in metrics


def test_a_lone_surrogate_is_answered_and_the_log_keeps_every_request(gateway):
    url = gateway.base_url + "/chat/completions"
    raw = b'{"model":"fleet/support_ticket","messages":[{"role":"user","content":"refund me x \\ud800"}]}'
    r = httpx.post(url, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text  # answered, the surrogate read as U+FFFD (what a UTF-8 decoder does)
    after = TICKET + " (sent after a lone surrogate)"
    r = httpx.post(url, json={"model": "fleet/support_ticket", "messages": [{"role": "user", "content": after}]})
    assert r.status_code == 200
    inputs = logged_inputs(gateway.db, until=after)
    assert "refund me x \ufffd" in inputs and after in inputs


def test_hostile_bodies_get_a_400_with_the_reason(gateway):
    url = gateway.base_url + "/chat/completions"
    head = b'{"model":"fleet/support_ticket","messages":[{"role":"user","content":"refund me"}],'
    for depth in (200, 1_000, 10_000):
        for body in (head + b'"x":' + b"[" * depth + b"]" * depth + b"}",
                     b'{"model":"fleet","messages":[{"role":"user","content":' + b"[" * depth + b"]" * depth + b"}]}"):
            r = httpx.post(url, content=body)
            assert r.status_code == 400 and "nested" in r.json()["error"]["message"], (depth, r.text[:200])
    for digits in (50, 4_000, 5_000):
        r = httpx.post(url, content=head + b'"max_tokens":' + b"9" * digits + b"}")
        assert r.status_code == 400 and "digits" in r.json()["error"]["message"], (digits, r.text[:200])
        assert len(r.text) < 1_000
    r = httpx.post(url, content=head + b'"max_tokens":1e999}')
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = httpx.post(url, content=head + b'"max_tokens":12}')  # an ordinary body still works
    assert r.status_code == 200, r.text


def test_upstream_errors_never_echo_the_upstream_key(gateway, client, upstream):
    upstream.mode = "echo-headers"
    try:
        with pytest.raises(openai.APIStatusError) as err:
            ask(client, "frontier-model", "which headers did you get?")
        escalated = extra(ask(client, "fleet/review_sentiment", REVIEW))  # the failure is kept in `tried`
    finally:
        upstream.mode = "echo"
    message = err.value.message
    assert err.value.status_code == 502 and "escalate: HTTP 400" in message and "headers were" in message
    assert "Authorization: Bearer [redacted]" in message
    assert escalated["tier"] == "human" and "HTTP 400" in escalated["tried"][0]
    logged = logged_inputs(gateway.db, until="which headers did you get?")
    assert "which headers did you get?" in logged
    with sqlite3.connect(gateway.db) as con:
        rows = json.dumps(con.execute("select * from requests").fetchall())
    for secret in (UPSTREAM_KEY, UPSTREAM_KEY[:8], "upstream-secret"):
        assert secret not in message and secret not in json.dumps(escalated) and secret not in rows
        assert secret not in gateway.output()


def test_models_health_and_metrics(gateway, client):
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["fleet", "fleet/support_ticket", "fleet/review_sentiment"] and "frontier-model" in ids
    assert httpx.get(gateway.base_url[:-3] + "/healthz").json()["tiers"] == ["escalate", "human"]
    ask(client, "fleet/support_ticket", TICKET)
    metrics = httpx.get(gateway.base_url[:-3] + "/metrics").text
    assert 'smallfleet_requests_total{status="ok",task="support_ticket",tier="specialist"}' in metrics
    assert "smallfleet_escalations_total" in metrics and "smallfleet_request_latency_seconds_bucket" in metrics


def test_ledger_rows_and_totals_match_the_responses(fleet_dir, upstream, tmp_path):
    upstream.mode = "reply:positive"
    db = tmp_path / "ledger.db"
    args = ["--db", f"sqlite:///{db}", "--escalate-to", upstream.base_url, "--escalate-model", "m",
            "--escalate-input-price", "2.5", "--escalate-output-price", "10", "--threshold", "review_sentiment=2",
            "--threshold", "support_ticket=0"]  # 36 validation rows cannot guarantee 95%: accept by hand  # fmt: skip
    with GatewayProcess(fleet_dir, *args) as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        answers = [extra(ask(c, "fleet/support_ticket", TICKET)) for _ in range(3)]
        answers += [extra(ask(c, "fleet/review_sentiment", REVIEW)) for _ in range(2)]
    costs = json.loads(subprocess.run([sys.executable, "-m", "smallfleet", "costs", str(fleet_dir), "--db",
                                       f"sqlite:///{db}", "--json"], capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert costs["requests"] == 5 and costs["escalated"] == 2
    assert costs["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in answers), rel=1e-3)
    assert costs["frontier_cost_usd"] == pytest.approx(sum(a["frontier_cost_usd"] for a in answers), rel=1e-3)
    assert costs["by_task"]["support_ticket"]["requests"] == 3
    assert costs["saving_usd"] > 0
    rows = sqlite3.connect(db).execute("select task, tier, status, input, output, latency_ms from requests").fetchall()
    assert len(rows) == 5 and all(r[2] == "ok" and r[5] > 0 for r in rows)
    assert ("support_ticket", "specialist", "ok", TICKET, "billing") in [r[:5] for r in rows]
    out = tmp_path / "flywheel.jsonl"
    subprocess.run([sys.executable, "-m", "smallfleet", "logs", str(fleet_dir), "--db", f"sqlite:///{db}", "--task",
                    "review_sentiment", "--export", str(out)], check=True, capture_output=True)  # fmt: skip
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"review": REVIEW, "rating_label": "positive"}] * 2


def test_keys_auth_and_restart_keep_the_log(fleet_dir, tmp_path):
    db = f"sqlite:///{tmp_path / 'auth.db'}"
    cli = [sys.executable, "-m", "smallfleet", "keys"]
    key = subprocess.run([*cli, "create", str(fleet_dir), "ci", "--db", db], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert key.startswith("sf-")
    listed = subprocess.run([*cli, "list", str(fleet_dir), "--db", db], capture_output=True, text=True, check=True)
    assert "ci" in listed.stdout and key not in listed.stdout
    for round_ in (1, 2):  # the second round is a restart on the same database
        with GatewayProcess(fleet_dir, "--db", db) as gw:
            with pytest.raises(openai.AuthenticationError):
                ask(openai.OpenAI(base_url=gw.base_url, api_key="sf-wrong", max_retries=0), "fleet", TICKET)
            good = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
            assert ask(good, "fleet/support_ticket", TICKET).choices[0].message.content == "billing"
        con = sqlite3.connect(tmp_path / "auth.db")
        answered = "select count(*), min(api_key), max(api_key) from requests where http_status = 200"
        assert con.execute(answered).fetchone() == (round_, "ci", "ci")
        refused = con.execute("select api_key, model, input, status, error from requests where http_status = 401")
        assert refused.fetchall() == [(None, None, None, "error", "invalid or revoked API key")] * round_  # no body
        assert not con.execute("select count(*) from api_keys where key_hash = ?", (key,)).fetchone()[0]
        assert key not in gw.output()
    subprocess.run([*cli, "revoke", str(fleet_dir), "ci", "--db", db], check=True, capture_output=True)
    with GatewayProcess(fleet_dir, "--db", db) as gw:  # the only key revoked: the gateway stays closed
        for api_key in (key, "x"):
            with pytest.raises(openai.AuthenticationError):
                ask(openai.OpenAI(base_url=gw.base_url, api_key=api_key, max_retries=0), "fleet/support_ticket", TICKET)
        assert httpx.get(gw.base_url + "/models").status_code == 401
        subprocess.run([*cli, "open", str(fleet_dir), "--db", db, "--yes"], check=True, capture_output=True)
        deadline = time.monotonic() + 10  # the running gateway sees the opening within seconds, as it sees a revoke
        while (status := httpx.get(gw.base_url + "/models").status_code) == 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
        assert ask(openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0), "fleet/support_ticket", TICKET)


def test_a_single_specialist_folder_serves_as_a_one_task_fleet(ticket_specialist, tmp_path):
    with GatewayProcess(ticket_specialist, "--db", f"sqlite:///{tmp_path / 'one.db'}") as gw:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        r = ask(c, "fleet", TICKET)
        assert r.choices[0].message.content == "billing" and extra(r)["task"] == "support_ticket"
        # its 36 validation rows cannot guarantee the 95% target: start-up says so and nothing is accepted
        # (with no tier to escalate to, the specialist's answer is returned, marked not accepted)
        assert "cannot guarantee 95%" in " ".join(gw.output().split()) and extra(r)["accepted"] is False
        assert [m.id for m in c.models.list()] == ["fleet", "fleet/support_ticket"]
