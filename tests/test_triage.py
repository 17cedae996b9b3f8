"""Triage: the per-tier quality model, its RouteLLM-style evaluation, and the gateway sending free-form
requests to the cheapest tier predicted good enough (a real gateway process, two fake upstream tiers)."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import openai
import pytest
from cli_process import run
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess
from test_gateway import ask, extra, fleet_with_tiers

from smallfleet.triage.model import TriageModel
from smallfleet.triage.routing import evaluate_router, oracle_curve, random_scores, summarize, sweep

EASY_TEXT = "My order 55120 arrived with a cracked screen, how do I get a replacement?"
HARD_TEXT = ("Find the maximum possible order for some element of Z_8 x Z_10 x Z_24.\nA. 8\nB. 120\nC. 240\nD. 24\n"
             "Answer:")  # fmt: skip


def replay_rows(quickstart_data, shared_datasets, start: int, count: int) -> list[dict]:
    """Real texts: support tickets the cheap tier answers well, abstract-algebra questions only the frontier does."""
    tickets = [json.loads(x)["text"] for x in (quickstart_data / "tickets_train.jsonl").read_text().splitlines()]
    mmlu = [json.loads(x) for x in (shared_datasets / "routellm_mmlu" / "all.jsonl").open().readlines()[:400]]
    algebra = [r["prompt"] for r in mmlu if r["subject"] == "abstract_algebra"]
    easy = [{"text": t, "scores": {"cheap": 1, "frontier": 1}} for t in tickets[start : start + count]]
    hard = [{"text": t, "scores": {"cheap": 0, "frontier": 1}} for t in algebra[start : start + count]]
    return [row for pair in zip(easy, hard) for row in pair]


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def triage_model(tmp_path_factory, quickstart_data, shared_datasets):
    folder = tmp_path_factory.mktemp("triage")
    write_rows(folder / "train.jsonl", replay_rows(quickstart_data, shared_datasets, 0, 30))
    proc = run("triage", "train", "--data", folder / "train.jsonl", "--out", folder / "model", "--min-rows", "20")
    assert "tier cheap: 60 rows, good share 0.500, head" in proc.stderr
    return folder / "model"


def test_train_and_eval_follow_the_command_contract(triage_model, quickstart_data, shared_datasets, tmp_path):
    card = json.loads((triage_model / "triage.json").read_text())
    assert card["tiers"] == ["cheap", "frontier"] and card["per_tier"]["cheap"]["rows"] == 60
    assert card["heads"] == ["cheap"]  # the frontier is right on every row: nothing to learn, and never needed
    assert "| cheap | 60 | 0.500 | yes |" in (triage_model / "README.md").read_text()
    write_rows(tmp_path / "test.jsonl", replay_rows(quickstart_data, shared_datasets, 30, 20))
    out = tmp_path / "eval.json"
    proc = run("triage", "eval", triage_model, "--data", tmp_path / "test.jsonl", "--json", out, "--plot", tmp_path / "c.png")
    result = json.loads(out.read_text())
    assert result["n"] == 40 and result["tiers"] == ["cheap", "frontier"]
    assert result["weak_quality"] == 0.5 and result["strong_quality"] == 1.0
    # tickets and algebra questions are easy to tell apart: the frontier is needed for the questions only
    assert result["apgr"] > 0.7 > result["random"]["apgr"]
    assert result["strong_share_at_95"] < 0.6 < result["random"]["strong_share_at_95"]
    assert "triage" in proc.stdout and (tmp_path / "c.png").stat().st_size > 1000


def test_rows_naming_unknown_tiers_are_reported_and_short_tiers_fall_back(tmp_path, quickstart_data, shared_datasets):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "fleet.json").write_text(json.dumps({"name": "f", "tasks": {}, "tiers": [{"name": "cheap"}, {"name": "frontier"}]}))
    rows = replay_rows(quickstart_data, shared_datasets, 0, 5)
    rows[3]["scores"]["mystery"] = 1
    write_rows(tmp_path / "rows.jsonl", rows)
    proc = run("triage", "train", "--data", tmp_path / "rows.jsonl", "--fleet", fleet, "--out", tmp_path / "m")
    said = " ".join(proc.stderr.split())  # the console wraps long lines
    assert f"tier 'mystery' is not in the fleet (tiers: cheap, frontier): 1 row(s), e.g. {tmp_path / 'rows.jsonl'}:4" in said
    assert "tier cheap: 10 rows, good share 0.500, no head: too few labelled rows, falls back to the tier order" in said
    model = TriageModel.load(tmp_path / "m")
    decision = model.decide({}, ["cheap", "frontier"], 0.5)
    assert decision.tier is None and "too few labelled rows for tier(s) cheap" in decision.fallback
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "scores": {"cheap": 2}}\n')
    proc = run("triage", "train", "--data", bad, "--out", tmp_path / "m2", check=False)
    assert proc.returncode == 1 and f"{bad}:1: score of tier 'cheap' must be 0, 1 or a number in [0, 1]" in " ".join(proc.stderr.split())


def gap_fixture(n: int = 1000) -> np.ndarray:
    """Weak right on half the rows; strong gains g = 0.2 of the rows over weak and loses l = g*g/2 = 0.02:
    then the oracle's APGR is (g - g*g/2) / (g - l) = 1 exactly."""
    quality = np.zeros((n, 2))
    quality[:500, 0] = 1
    quality[20:500, 1] = 1  # strong loses rows 0-19 (0.02)
    quality[500:700, 1] = 1  # and gains rows 500-699 (0.2)
    return quality


def test_apgr_is_one_for_the_oracle_and_one_half_for_a_random_router():
    quality = gap_fixture()
    result = evaluate_router(quality, None, random_scores(len(quality), seed=3))
    assert result["weak_quality"] == 0.5 and result["strong_quality"] == 0.68
    assert result["oracle"]["apgr"] == pytest.approx(1.0)
    assert result["oracle_quality"] == 0.7
    assert result["apgr"] == pytest.approx(0.5, abs=0.06)
    # random: quality grows linearly, so 95% of the strong tier's 0.68 (0.646) needs about (0.646-0.5)/0.18 = 81%
    assert result["strong_share_at_95"] == pytest.approx(0.81, abs=0.08)
    assert result["oracle"]["strong_share_at_95"] == pytest.approx(0.146)  # the oracle's first 0.146 of the gains
    gains = quality[:, 1] - quality[:, 0]  # the oracle as a router: scores its rows by what the strong tier gains
    as_router = summarize(sweep(quality, None, gains + 1e-6 * random_scores(len(quality))), 0.5, 0.68)
    assert as_router["apgr"] > 0.9 and as_router["strong_share_at_95"] < 0.2


def test_the_sweep_cuts_scores_at_routellm_quantiles_and_picks_the_cheapest_tier_clearing_the_bar():
    scores = np.arange(11) / 10  # RouteLLM cuts at the 0, 10, ..., 100 % quantiles (pd.qcut(scores, 10)): here 0, 0.1, ..., 1
    points = sweep(np.ones((11, 2)), None, scores)
    assert sorted(p["threshold"] for p in points) == pytest.approx(list(scores))
    # strong when the score is at or above the cut (all rows at the lowest), strictly above for the last cut (none)
    assert points[0]["strong_share"] == 0 and points[-1]["strong_share"] == 1 and len(points) == 11
    # three tiers: a row goes to the cheapest tier whose predicted quality clears the bar 1 - cut
    quality = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=float)
    probs = np.array([[0.3, 0.9], [0.95, 0.9], [0.1, 0.2]])
    (mid,) = [p for p in sweep(quality, probs, 1 - probs.max(1), num_results=3) if p["strong_share"] == pytest.approx(1 / 3)]
    assert mid["quality"] == 1.0 and mid["tier_shares"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert oracle_curve(quality)[0]["quality"] == pytest.approx(2 / 3)


def logged(db, count: int, timeout: float = 10.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as con:
            rows = con.execute("select model, tier, triage_tier, triage, cost_usd, frontier_cost_usd from requests "
                               "order by id").fetchall()  # fmt: skip
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_gateway_sends_easy_requests_to_the_cheap_tier_and_hard_ones_to_the_frontier(fleet_dir, triage_model, tmp_path):
    with FakeUpstream() as cheap, FakeUpstream() as frontier:
        cheap.mode, frontier.mode = "reply:cheap answer", "reply:frontier answer"
        tiers = [{"name": "frontier", "kind": "openai", "base_url": frontier.base_url, "model": "big", "input_price": 10,
                  "output_price": 30, "retries": 0},
                 {"name": "cheap", "kind": "openai", "base_url": cheap.base_url, "model": "small", "input_price": 0.1,
                  "output_price": 0.4, "retries": 0}]  # fmt: skip
        folder = fleet_with_tiers(fleet_dir, tmp_path / "fleet", tiers)  # listed expensive first: price decides
        db = tmp_path / "log.db"
        args = ["--db", f"sqlite:///{db}", "--triage", str(triage_model), "--willingness-to-pay", "0.5"]
        with GatewayProcess(folder, *args) as gw:
            c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            assert "auto" in [m.id for m in c.models.list()]
            easy = ask(c, "auto", EASY_TEXT)
            sf = extra(easy)
            assert easy.choices[0].message.content == "cheap answer" and sf["tier"] == "cheap" and not sf["escalated"]
            assert sf["triage"]["tier"] == "cheap" and sf["triage"]["predicted"]["cheap"] > 0.5
            assert sf["frontier_cost_usd"] > 10 * sf["cost_usd"]  # the saving against all-frontier is counted
            hard = extra(ask(c, "auto", HARD_TEXT))
            assert hard["tier"] == "frontier" and hard["triage"]["tier"] == "frontier"
            assert hard["triage"]["predicted"]["cheap"] < 0.5
            free = extra(ask(c, "fleet", HARD_TEXT))  # the router marks it `none`: triage picks the tier
            assert free["task"] is None and free["tier"] == "frontier" and free["triage"]["tier"] == "frontier"
            cheap.mode = "fail"  # the chosen tier fails: the cascade moves on
            moved = extra(ask(c, "auto", EASY_TEXT))
            assert moved["triage"]["tier"] == "cheap" and moved["tier"] == "frontier" and moved["escalated"]
            assert moved["tried"] == ["cheap: HTTP 500 (1 attempt)"]
        rows = logged(db, 4)
        assert [(m, t, tt) for m, t, tt, *_ in rows] == [("auto", "cheap", "cheap"), ("auto", "frontier", "frontier"),
                                                         ("fleet", "frontier", "frontier"), ("auto", "frontier", "cheap")]  # fmt: skip
        assert json.loads(rows[0][3])["willingness_to_pay"] == 0.5
        costs = json.loads(run("costs", folder, "--db", f"sqlite:///{db}", "--json").stdout)
        assert {t: g["requests"] for t, g in costs["by_triage"].items()} == {"cheap": 2, "frontier": 2}
        assert costs["by_triage"]["cheap"]["saving_usd"] > 0  # counted for free-form traffic too


def test_rows_from_the_log_score_the_tiers_that_answered_against_reviews_and_feedback(tmp_path):
    from smallfleet.store import Database
    from smallfleet.store.judgements import new_judgement, record
    from smallfleet.store.ledger import new_row
    from smallfleet.triage.from_log import rows_from_log

    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    requests = [
        new_row(request_id="r1", input="refund please", output="billing", tier="cheap", task="t", status="ok",
                escalated=True),  # a person's review says billing: cheap was right
        new_row(request_id="r2", input="what is a group", output="delivery", tier="frontier", task="t", status="ok",
                escalated=True, tried=["cheap: reply could not be used for task t"]),  # feedback: billing
        new_row(request_id="r3", input="accepted locally", output="billing", tier="specialist", task="t", status="ok"),
        new_row(request_id="r4", input="never judged", output="billing", tier="cheap", task="t", status="ok", escalated=True),
    ]  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(db.requests.insert(), [{"tried": None, "http_status": 200, **r} for r in requests])
    record(db, new_judgement("r1", "t", "review", accepted=False, agrees=False, reference="Billing"))
    record(db, new_judgement("r2", "t", "feedback", accepted=False, agrees=None, reference="billing"))
    record(db, new_judgement("r3", "t", "audit", accepted=True, agrees=True, reference="shipping", tier="frontier"))
    record(db, new_judgement("r3", "t", "review", accepted=True, agrees=True, reference="billing"))
    rows = rows_from_log(db, "fleet")
    assert [(r.text, r.scores) for r in rows] == [
        ("refund please", {"cheap": 1.0}),
        ("what is a group", {"cheap": 0.0, "frontier": 0.0}),
        ("accepted locally", {"frontier": 0.0}),  # the audit's frontier answer was wrong by the review
    ]
    assert rows[0].where == "fleet request r1"


def test_triage_settings_load_from_the_fleet_file_and_are_checked(tmp_path):
    from smallfleet.config import FleetSpec
    from smallfleet.errors import ConfigError

    path = tmp_path / "fleet.yaml"
    path.write_text("name: f\ntasks:\n  - {name: a, train: x.jsonl}\nserving: {triage: _triage, willingness_to_pay: 0.7}\n")
    serving = FleetSpec.from_file(path).serving
    assert (serving.triage, serving.willingness_to_pay) == ("_triage", 0.7)
    path.write_text("name: f\ntasks:\n  - {name: a, train: x.jsonl}\nserving: {willingness_to_pay: 1.5}\n")
    with pytest.raises(ConfigError, match="willingness_to_pay must be in \\[0, 1\\], got 1.5"):
        FleetSpec.from_file(path)
