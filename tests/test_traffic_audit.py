"""`smallfleet audit`: pass-through traffic logged by a real gateway on loopback (a stand-in frontier
answering with real datasets' gold labels), clustered by task, with kinds, consistency and savings."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest
from cli_process import run
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess

from smallfleet.audit import MIN_REQUESTS, audit
from smallfleet.audit.analysis import Assumptions
from smallfleet.audit.templates import Template, find_templates
from smallfleet.audit.traffic import Exchange
from smallfleet.flywheel.shadow_gate import first_look
from smallfleet.models.embed import SentenceEmbedder
from smallfleet.tasks import get_kind

SPAM_SYSTEM = "You filter SMS messages. Reply with one word: spam or ham."
SLOTS_PREFIX = "Extract the slots of this request as JSON: "


def _rows(datasets, name: str, n: int, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (datasets / name).read_text().split("\n")[:2000] if line.strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _slots(row: dict) -> dict:
    slots: dict[str, str] = {}
    for token, tag in zip(row["tokens"], row["tags"], strict=True):
        if tag.startswith("B-"):
            slots[tag[2:]] = token
        elif tag.startswith("I-") and tag[2:] in slots:
            slots[tag[2:]] += " " + token
    return slots


@pytest.fixture(scope="module")
def traffic(shared_datasets) -> list[tuple[list[dict], str]]:
    """(messages, gold answer): sms_spam behind a system prompt, snips behind a prompt template, free-form questions."""
    out = [([{"role": "system", "content": SPAM_SYSTEM}, {"role": "user", "content": r["text"]}], r["label"])
           for r in _rows(shared_datasets, "sms_spam/all.jsonl", 40)]  # fmt: skip
    out += [([{"role": "user", "content": SLOTS_PREFIX + r["text"]}], json.dumps(_slots(r)))
            for r in _rows(shared_datasets, "snips/train.jsonl", 30)]  # fmt: skip
    out += [([{"role": "user", "content": r["text"]}], r["response"])
            for r in _rows(shared_datasets, "bitext_support/all.jsonl", 6)]  # fmt: skip
    random.Random(1).shuffle(out)
    return out


def test_audit_of_logged_pass_through_traffic_finds_each_task_its_kind_and_template(tmp_path, traffic):
    gold = {m[-1]["content"]: answer for m, answer in traffic}
    folder = tmp_path / "new-fleet"
    folder.mkdir()
    with FakeUpstream() as upstream:
        upstream.mode = "answer"
        upstream.answer = lambda body: gold[body["messages"][-1]["content"]]
        with GatewayProcess(folder, "--escalate-to", upstream.base_url, "--escalate-model", "gpt-4o-mini",
                            "--escalate-input-price", "0.15", "--escalate-output-price", "0.6") as gw:  # fmt: skip
            client = openai.OpenAI(base_url=gw.base_url, api_key="none")
            for messages, answer in traffic:
                r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                assert r.choices[0].message.content == answer
                assert r.model_extra["smallfleet"]["tier"] != "specialist"
    out = tmp_path / "audit.json"
    printed = run("audit", folder, "--json", out).stdout
    result = json.loads(out.read_text())
    assert result["requests"] == len(traffic)
    for c in result["clusters"]:
        assert {"id", "requests", "share", "kind", "consistency", "examples"} <= set(c)
    spam = next(c for c in result["clusters"] if (c["template"] or {}).get("system") == SPAM_SYSTEM)
    assert (spam["requests"], spam["kind"], spam["distinct_answers"]) == (40, "classify", 2)
    slots = next(c for c in result["clusters"] if (c["template"] or {}).get("prefix") == SLOTS_PREFIX)
    assert (slots["requests"], slots["kind"]) == (30, "extract")
    assert slots["examples"][0].startswith(SLOTS_PREFIX)
    assert abs(spam["share"] - 40 / len(traffic)) < 1e-3
    assert spam["spend_usd"] > 0 and spam["monthly_saving_usd"] > 0
    assert result["break_even"]["assumptions"]["host_usd_month"] == 30.0
    assert "break-even" in printed or "pays off" in printed
    saved = (folder / "_audit" / f"cluster-{spam['id']}.jsonl").read_text().splitlines()
    assert len(saved) == 40 and set(json.loads(saved[0])) == {"ref", "input", "answer"}
    run("report", folder, "--out", tmp_path / "report.html")  # a pass-through-only folder has a report too
    page = (tmp_path / "report.html").read_text()
    assert 'id="traffic-audit"' in page and f"{len(traffic)} requests a frontier model answered" in page


def test_an_empty_log_says_how_many_requests_the_audit_needs(tmp_path):
    proc = run("audit", tmp_path, check=False)
    assert proc.returncode == 1
    assert f"at least {MIN_REQUESTS} pass-through requests and found 0" in proc.stderr


def test_a_bad_export_row_is_named_by_file_and_line(tmp_path):
    export = tmp_path / "export.jsonl"
    export.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "response": "hello"}) + "\n"
                      + json.dumps({"messages": [{"role": "system", "content": "x"}], "response": "y"}) + "\n")  # fmt: skip
    proc = run("audit", tmp_path / "fleet", "--from", export, check=False)
    assert proc.returncode == 1 and f"{export}:2" in proc.stderr


def test_a_cluster_the_frontier_answers_inconsistently_is_flagged_with_its_disagreement_rate(shared_datasets):
    rng = random.Random(0)
    texts = [r["text"] for r in _rows(shared_datasets, "sms_spam/all.jsonl", 20)]
    steady = [Exchange(f"s{i}", "Is this spam? Reply spam or ham.", t, label)
              for i, (t, label) in enumerate((r["text"], r["label"]) for r in _rows(shared_datasets, "sms_spam/all.jsonl", 20, 1))
              for _ in range(2)]  # fmt: skip
    coin = [Exchange(f"c{i}", "Rate the urgency: high or low.", t, rng.choice(["high", "low"]))
            for i, t in enumerate(texts * 2)]  # every input asked twice, answered by a coin
    result, _ = audit(steady + coin, Assumptions(), embedder=SentenceEmbedder())
    by_system = {c["template"]["system"]: c for c in result["clusters"]}
    flaky, good = by_system["Rate the urgency: high or low."], by_system["Is this spam? Reply spam or ham."]
    assert good["consistency"] == 1.0 and good["candidate"]
    assert not flaky["candidate"] and flaky["disagreement"] > 0.2
    assert f"disagrees with itself on {flaky['disagreement']:.0%}" in " ".join(flaky["flags"])


def test_templates_are_found_and_stripped_at_word_boundaries():
    turns = [f"Translate to French: {w} please.\nKeep it short." for w in ("hello there", "good night", "I am", "see you")]
    turns += ["What is the weather like?", "Tell me a joke about cats"]
    ((prefix, suffix, members),) = find_templates(turns, min_size=3)
    assert (prefix, suffix, members) == ("Translate to French: ", " please.\nKeep it short.", [0, 1, 2, 3])
    t = Template(None, prefix, suffix)
    assert t.strip(turns[2]) == "I am" and t.matches(None, turns[0]) and not t.matches(None, turns[4])
    assert not t.matches("a system prompt", turns[0])


def test_each_kind_scores_the_answer_shapes_it_fits():
    inputs = [f"order {i} from Paris" for i in range(20)]
    labels = ["billing", "shipping"] * 10
    records = [json.dumps({"city": "Paris", "order": str(i)}) for i in range(20)]
    prose = [f"Thanks for writing; we will look into order {i} and reply within {i + 1} days." for i in range(20)]
    spans = [f"order {i}" for i in range(20)]
    score = {k: get_kind(k).looks_like for k in ("classify", "extract", "generate")}
    assert score["classify"](inputs, labels) == 1.0 > score["extract"](inputs, labels)
    assert score["extract"](inputs, records) == 1.0 > score["classify"](inputs, records)
    assert score["extract"](inputs, spans) == 1.0
    assert max(score["classify"](inputs, prose), score["extract"](inputs, prose)) < score["generate"](inputs, prose)


def test_distill_refuses_a_cluster_too_small_with_the_number_needed(tmp_path, shared_datasets):
    export = tmp_path / "export.jsonl"
    rows = _rows(shared_datasets, "sms_spam/all.jsonl", 40)
    export.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SPAM_SYSTEM},
                                                       {"role": "user", "content": r["text"]}],
                                          "response": r["label"]}) + "\n" for r in rows))  # fmt: skip
    run("audit", tmp_path / "fleet", "--from", export)
    proc = run("distill", tmp_path / "fleet", "--cluster", "1", "--name", "spam", check=False)
    assert proc.returncode == 1
    assert "cluster 1 has 40 requests; distilling needs at least 60 (20 more)" in proc.stderr


def test_extract_answers_become_records_checked_against_an_inferred_schema_the_user_can_edit(tmp_path):
    kind = get_kind("extract")
    inputs = [f"ship order {i} to {city}" for i, city in enumerate(["Paris", "Oslo"] * 10)]
    answers = [json.dumps({"order": i, "city": city}) for i, city in enumerate(["Paris", "Oslo"] * 10)]
    rows, options = kind.distill_rows(inputs, answers + [], tmp_path)
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert schema == {"type": "object", "properties": {"order": {"type": "integer"}, "city": {"enum": ["Oslo", "Paris"]}},
                      "required": ["order", "city"]}  # fmt: skip
    assert rows[1] == {"text": inputs[1], "fields": {"order": 1, "city": "Oslo"}}
    assert options["settings"]["schema"] == tmp_path / "schema.json"
    (tmp_path / "schema.json").write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}))
    kind.distill_rows(inputs, answers, tmp_path)  # the user's edit is kept
    assert "order" not in (tmp_path / "schema.json").read_text()


@contextmanager
def spam_gateway(folder, gold: dict[str, str]) -> Iterator[GatewayProcess]:
    """A gateway on `folder` whose upstream tier answers each request's last message with `gold`, the spam task's
    threshold set to 0.5."""
    with FakeUpstream() as upstream:
        upstream.mode = "answer"
        upstream.answer = lambda body: gold[body["messages"][-1]["content"]]
        with GatewayProcess(folder, "--escalate-to", upstream.base_url, "--escalate-model", "gpt-4o-mini",
                            "--threshold", "spam=0.5") as gw:  # fmt: skip
            yield gw


def test_a_distilled_task_shadows_then_after_promote_answers_its_template_for_the_same_model_name(
        tmp_path, shared_datasets):  # fmt: skip
    spam = _rows(shared_datasets, "sms_spam/all.jsonl", 110, seed=3)
    free = _rows(shared_datasets, "bitext_support/all.jsonl", 4, seed=3)
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SPAM_SYSTEM},
                                                       {"role": "user", "content": r["text"]}],
                                          "response": r["label"].upper() if r["label"] == "spam" else r["label"]})
                              + "\n" for r in spam[:100]))  # fmt: skip
    folder = tmp_path / "fleet"
    run("audit", folder, "--from", export)
    printed = run("distill", folder, "--cluster", "1", "--name", "spam", "--epochs", "2", "--max-length", "48").stdout
    assert "on 20 held-back requests it agrees with the frontier" in printed and "in shadow" in printed
    labels = set(json.loads((folder / "spam" / "specialist.json").read_text())["labels"])
    assert labels == {"SPAM", "ham"}  # the frontier's own strings
    gold = {r["text"]: ("SPAM" if r["label"] == "spam" else "ham") for r in spam} | {r["text"]: r["response"] for r in free}
    requests = [[{"role": "system", "content": SPAM_SYSTEM}, {"role": "user", "content": r["text"]}] for r in spam[100:]]
    with spam_gateway(folder, gold) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="none")
        before = [client.chat.completions.create(model="gpt-4o-mini", messages=m) for m in requests[:4]]
        assert {r.model_extra["smallfleet"]["tier"] for r in before} != {"specialist"}  # in shadow: upstream
        run("promote", folder, "--task", "spam", "--version", "v1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "spam: now answering" not in gw.output():
            time.sleep(0.2)
        after = [client.chat.completions.create(model="gpt-4o-mini", messages=m) for m in requests]
        tiers = [r.model_extra["smallfleet"]["tier"] for r in after]
        assert tiers.count("specialist") >= 8
        assert {r.choices[0].message.content for r in after} <= {"SPAM", "ham"}
        assert all(r.model_extra["smallfleet"]["task"] == "spam" for r in after)
        for r in free:  # no template: still upstream, answered by no task
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": r["text"]}])
            assert reply.model_extra["smallfleet"]["tier"] != "specialist" and reply.model_extra["smallfleet"]["task"] is None
    from smallfleet.store import Database, database_url

    db = Database(database_url(folder))
    with db.engine.connect() as conn:
        shadowed = conn.execute(db.shadow.select()).fetchall()
    assert len(shadowed) == 4 and {row.served_version for row in shadowed} == {"upstream"}


def test_auto_promote_waits_for_live_shadow_agreement_when_the_held_back_rows_cannot_prove_it(
        tmp_path, shared_datasets):  # fmt: skip
    """The held-back rows cannot prove 80% agreement at 95% confidence here (too few validation rows for a
    threshold), so the task stays in shadow with its goal; the gateway promotes it once enough of its live shadow
    answers agree with the frontier (at 96% agreement, the second or third look passes)."""
    spam = _rows(shared_datasets, "sms_spam/all.jsonl", 300, seed=5)
    gold = {r["text"]: r["label"] for r in spam}
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SPAM_SYSTEM},
                                                       {"role": "user", "content": r["text"]}],
                                          "response": r["label"]}) + "\n" for r in spam[:100]))  # fmt: skip
    folder = tmp_path / "fleet"
    run("audit", folder, "--from", export)
    printed = run("distill", folder, "--cluster", "1", "--name", "spam", "--epochs", "2", "--max-length", "48",
                  "--target", "0.8", "--auto-promote").stdout  # fmt: skip
    assert "held-back rows do not prove 0.8 agreement" in printed, printed
    entry = json.loads((folder / "fleet.json").read_text())["tasks"]["spam"]
    assert entry["shadow_only"] and entry["auto_promote"] == {"target": 0.8, "delta": 0.05}
    live = [[{"role": "system", "content": SPAM_SYSTEM}, {"role": "user", "content": r["text"]}] for r in spam[100:]]
    with spam_gateway(folder, gold) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="none")
        tiers = []
        deadline = time.monotonic() + 120  # the gateway checks a task at most every 5 s
        for messages in live * 3:
            tiers.append(client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                         .model_extra["smallfleet"]["tier"])  # fmt: skip
            if tiers.count("specialist") >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # traffic at a client's pace, not a burst finished before the first check is due
        assert "promoted on live shadow agreement" in gw.output(), gw.output()
        first = tiers.index("specialist")
        assert first >= first_look(0.8, 0.05) and set(tiers[:first]) == {"escalate"}  # upstream until a look passes
    promoted = json.loads((folder / "fleet.json").read_text())["tasks"]["spam"]
    assert "shadow_only" not in promoted and promoted["served"] == "v1"


INTENT_PREFIX = "Which banking request is this? Answer with its intent: "


def test_a_second_distilled_task_gets_the_fleet_a_router_that_sends_its_shadow_traffic_upstream(
        tmp_path, shared_datasets):  # fmt: skip
    spam = _rows(shared_datasets, "sms_spam/all.jsonl", 80, seed=5)
    labels = {"card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"}
    banking = [r for r in _rows(shared_datasets, "banking77/train.jsonl", 2000, seed=5) if r["label"] in labels][:90]
    export = tmp_path / "export.jsonl"
    rows = [({"role": "system", "content": SPAM_SYSTEM}, r["text"], r["label"]) for r in spam]
    rows += [(None, INTENT_PREFIX + r["text"], r["label"]) for r in banking[:80]]
    export.write_text("".join(json.dumps({"messages": [m for m in (system, {"role": "user", "content": text}) if m],
                                          "response": answer}) + "\n" for system, text, answer in rows))  # fmt: skip
    folder = tmp_path / "fleet"
    out = tmp_path / "audit.json"
    run("audit", folder, "--from", export, "--json", out)
    clusters = json.loads(out.read_text())["clusters"]
    spam_id = next(c["id"] for c in clusters if (c["template"] or {}).get("system") == SPAM_SYSTEM)
    intent_id = next(c["id"] for c in clusters if (c["template"] or {}).get("prefix") == INTENT_PREFIX)
    first = run("distill", folder, "--cluster", spam_id, "--name", "spam", "--epochs", "2", "--max-length", "48").stdout
    assert "router:" not in first and "router" not in json.loads((folder / "fleet.json").read_text())  # one task
    second = run("distill", folder, "--cluster", intent_id, "--name", "intent", "--epochs", "3",
                 "--max-length", "48").stdout  # fmt: skip
    assert "router: refit with intent" in second
    index = json.loads((folder / "fleet.json").read_text())
    assert index["router"]["refit"]["why"].startswith("task intent distilled") and (folder / index["router"]["folder"]).is_dir()
    gold = {r["text"]: r["label"] for r in banking}
    with FakeUpstream() as upstream:
        upstream.mode = "answer"
        upstream.answer = lambda body: gold.get(body["messages"][-1]["content"], "ham")
        with GatewayProcess(folder, "--escalate-to", upstream.base_url, "--escalate-model", "gpt-4o-mini",
                            "--threshold", "intent=0") as gw:  # 64 rows cannot support a 95% guarantee: set by hand
            client = openai.OpenAI(base_url=gw.base_url, api_key="none")
            ask = lambda r: client.chat.completions.create(  # noqa: E731
                model="fleet", messages=[{"role": "user", "content": r["text"]}]).model_extra["smallfleet"]
            shadowed = [ask(r) for r in banking[80:85]]  # the router may pick `intent`, still in shadow: upstream
            assert all(s["tier"] != "specialist" for s in shadowed)
            run("promote", folder, "--task", "intent", "--version", "v1")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "intent: now answering" not in gw.output():
                time.sleep(0.2)
            answered = [ask(r) for r in banking[80:90]]
    assert sum(s["tier"] == "specialist" and s["task"] == "intent" for s in answered) >= 5, answered
    from smallfleet.store import Database, database_url

    db = Database(database_url(folder))
    with db.engine.connect() as conn:
        followed = conn.execute(db.shadow.select()).fetchall()
    assert {row.task for row in followed} == {"intent"} and len(followed) >= 3  # the shadow answered what the router sent
