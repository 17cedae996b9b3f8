"""The gateway's API fuzzed from its own OpenAPI schema (schemathesis, a bounded number of cases), and
the hostile or careless bodies a client really sends, written by hand. Target: no 5xx, every 4xx says
why, and every chat request lands in the request log."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest
import schemathesis
from gateway_process import GatewayProcess, fleet_with_tiers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

TICKET = "I was charged twice for order 88412, please refund the extra payment"
CHAT = "/v1/chat/completions"
CASES = {  # operation -> cases per generation mode (positive: valid by the schema, negative: invalid)
    ("POST", CHAT): 60,
    ("POST", "/v1/feedback"): 15,
    ("GET", "/v1/models"): 3,
    ("GET", "/healthz"): 3,
    ("GET", "/metrics"): 3,
}
MODELS = [None, "fleet", "fleet/support_ticket", "fleet/review_sentiment"]  # None: the model the fuzzer chose


@pytest.fixture(scope="module")
def fuzz_gateway(fleet_dir, tmp_path_factory):
    """The test fleet with no escalation tier: every request ends in the gateway itself (a fuzzer must not fill a
    review queue or reach an upstream)."""
    folder = fleet_with_tiers(fleet_dir, tmp_path_factory.mktemp("fuzz") / "fleet", [])
    db = folder.parent / "fuzz.db"
    with GatewayProcess(folder, "--db", f"sqlite:///{db}") as gw:
        gw.db = db
        gw.root = gw.base_url[: -len("/v1")]
        yield gw


def logged(db) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from requests").fetchone()[0]


def wait_logged(db, count: int, timeout: float = 15.0) -> int:
    """The request log's row count once it reaches `count` (the ledger writes in the background) or the timeout."""
    deadline = time.monotonic() + timeout
    while (n := logged(db)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


def check_response(response, what: str) -> None:
    """No 5xx; a 4xx carries the OpenAI error shape with a reason."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        message = response.json()["error"]["message"]
        assert isinstance(message, str) and message.strip(), f"{what}: a {response.status_code} without a reason"


def test_fuzzing_from_the_openapi_schema_finds_no_5xx_and_every_4xx_has_a_reason(fuzz_gateway):
    raw = httpx.get(fuzz_gateway.root + "/openapi.json").json()
    body = raw["paths"][CHAT]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}  # fuzzers see the body, not just {}
    schema = schemathesis.openapi.from_dict(raw)
    before, chats = logged(fuzz_gateway.db), 0
    for (method, path), examples in CASES.items():
        operation = schema[path][method]
        # a route without a body or parameters has no invalid request to make
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if method == "POST" else (GenerationMode.POSITIVE,):

            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), model=st.sampled_from(MODELS))
            def run(case, model):
                nonlocal chats
                if model and isinstance(case.body, dict):  # some cases reach the specialists, not only a 404
                    case.body["model"] = model
                response = case.call(base_url=fuzz_gateway.root, timeout=60)
                check_response(response, f"{method} {path} {mode.value}: {repr(case.body)[:300]}")
                chats += path == CHAT

            run()
    assert httpx.get(fuzz_gateway.root + "/healthz").status_code == 200
    assert chats > 100 and wait_logged(fuzz_gateway.db, before + chats) == before + chats  # every one logged


def post(gw, content: bytes | None = None, **body) -> httpx.Response:
    if content is None:
        content = json.dumps(body).encode()
    return httpx.post(gw.base_url + "/chat/completions", content=content, headers={"content-type": "application/json"},
                      timeout=60)  # fmt: skip


def user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


def test_hostile_and_careless_bodies(fuzz_gateway):
    gw = fuzz_gateway
    before = logged(gw.db)
    # 10 MB of content: refused before it is parsed, and the next request is answered
    r = post(gw, model="fleet/support_ticket", messages=user("refund " * 1_500_000))
    assert r.status_code == 413 and "byte limit" in r.json()["error"]["message"]
    # NUL bytes are text: answered, and logged as they came
    r = post(gw, model="fleet/support_ticket", messages=user("refund\x00 me \x00" + TICKET))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "billing"
    # invalid UTF-8 is not JSON text
    r = post(gw, b'{"model":"fleet","messages":[{"role":"user","content":"caf\xe9 \xff\xfe"}]}')
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    # content as OpenAI's list of parts: the text parts are the input; an image part is ignored
    parts = [{"type": "text", "text": "I was charged twice for order 88412,"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
             {"type": "text", "text": "please refund the extra payment"}]  # fmt: skip
    r = post(gw, model="fleet/support_ticket", messages=user(parts))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "billing"
    r = post(gw, model="fleet/support_ticket", messages=user([{"type": "image_url", "image_url": {"url": "x"}}]))
    assert r.status_code == 400 and "user message with text" in r.json()["error"]["message"]
    # negative or zero max_tokens
    for bad in (-1, 0, -(10**30)):
        r = post(gw, model="fleet/support_ticket", messages=user(TICKET), max_tokens=bad)
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"], (bad, r.text)
    # unknown fields (newer clients send fields this gateway does not know): accepted and ignored
    r = post(gw, model="fleet/support_ticket", messages=user(TICKET), seed=7, user="u-1", logprobs=False,
             metadata={"a": "b"}, frobnicate=[1, {"x": None}])  # fmt: skip
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "billing"
    # path tricks in `model`: a model is a name, never a path
    for model in ("fleet/../fleet/support_ticket", "fleet/support_ticket/../../../etc/passwd", "../support_ticket",
                  "/etc/passwd", "fleet/%2e%2e/support_ticket", "fleet\\support_ticket", "fleet/", "fleet//support_ticket",
                  "fleet/support_ticket\x00", "file:///etc/passwd"):  # fmt: skip
        r = post(gw, model=model, messages=user(TICKET))
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", (model, r.text)
        assert "support_ticket" in r.json()["error"]["message"]  # the reason lists what is served
    assert wait_logged(gw.db, before + 19) == before + 19  # every one of them is in the log
    with sqlite3.connect(gw.db) as con:
        inputs = [x for (x,) in con.execute("select input from requests where http_status = 200")]
    assert "refund\x00 me \x00" + TICKET in inputs
