"""`smallfleet audit`: pass-through traffic logged by a real gateway on loopback (a stand-in frontier
answering with real datasets' gold labels), clustered by task, with kinds, consistency and savings."""

from __future__ import annotations

import json
import random

import openai
import pytest
from cli_process import run
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess

from smallfleet.audit import MIN_REQUESTS, audit
from smallfleet.audit.analysis import Assumptions
from smallfleet.audit.templates import Template, find_templates
from smallfleet.audit.traffic import Exchange
from smallfleet.models.embed import SentenceEmbedder
from smallfleet.tasks import get_kind

SPAM_SYSTEM = "You filter SMS messages. Reply with one word: spam or ham."
SLOTS_PREFIX = "Extract the slots of this request as JSON: "


def _rows(datasets, name: str, n: int, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (datasets / name).read_text().splitlines()[:2000]]
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
