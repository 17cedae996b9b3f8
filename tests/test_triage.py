"""Triage: the per-tier quality model, its RouteLLM-style evaluation, and the gateway sending free-form
requests to the tier whose predicted gain is worth its price (a real gateway process, two fake upstream tiers)."""

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

from smallfleet.triage.model import C_GRID, TriageModel, choose_c
from smallfleet.triage.routing import (evaluate_router, oracle_curve, random_scores, rank_shares, strong_scores, summarize,
                                       sweep)

EASY_TEXT = "My order 55120 arrived with a cracked screen, how do I get a replacement?"
HARD_TEXT = ("Find the maximum possible order for some element of Z_8 x Z_10 x Z_24.\nA. 8\nB. 120\nC. 240\nD. 24\n"
             "Answer:")  # fmt: skip
HOPELESS_TEXT = ("#Person1#: Did you finish the report for Friday?\n#Person2#: Not yet, the figures from sales came in late.\n"
                 "#Person1#: Then let's move the meeting to Monday and tell the manager.")  # fmt: skip


def replay_rows(quickstart_data, shared_datasets, start: int, count: int) -> list[dict]:
    """Real texts in threes: support tickets both tiers answer well, abstract-algebra questions only the frontier
    does, and dialogues neither does (the frontier would be paid for nothing)."""
    tickets = [json.loads(x)["text"] for x in (quickstart_data / "tickets_train.jsonl").read_text().splitlines()]
    mmlu = [json.loads(x) for x in (shared_datasets / "routellm_mmlu" / "all.jsonl").open().readlines()[:400]]
    algebra = [r["prompt"] for r in mmlu if r["subject"] == "abstract_algebra"]
    with (shared_datasets / "dialogsum" / "train.jsonl").open() as f:
        dialogues = [json.loads(next(f))["dialogue"] for _ in range(start + count)]
    easy = [{"text": t, "scores": {"cheap": 1, "frontier": 1}} for t in tickets[start : start + count]]
    hard = [{"text": t, "scores": {"cheap": 0, "frontier": 1}} for t in algebra[start : start + count]]
    hopeless = [{"text": t, "scores": {"cheap": 0, "frontier": 0}} for t in dialogues[start : start + count]]
    return [row for three in zip(easy, hard, hopeless) for row in three]


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def triage_model(tmp_path_factory, quickstart_data, shared_datasets):
    folder = tmp_path_factory.mktemp("triage")
    write_rows(folder / "train.jsonl", replay_rows(quickstart_data, shared_datasets, 0, 30))
    proc = run("triage", "train", "--data", folder / "train.jsonl", "--out", folder / "model", "--min-rows", "20")
    assert "tier cheap: 90 rows, good share 0.333, head, C=" in proc.stderr
    return folder / "model"


def test_train_and_eval_follow_the_command_contract(triage_model, quickstart_data, shared_datasets, tmp_path):
    card = json.loads((triage_model / "triage.json").read_text())
    assert card["tiers"] == ["cheap", "frontier"] and card["per_tier"]["cheap"]["rows"] == 90
    assert card["heads"] == ["cheap", "frontier"] and card["c"] == "cross-validated"
    # 90 rows score both tiers: one C for both heads, chosen by the decision's APGR in cross-validation
    assert card["per_tier"]["cheap"]["c"] == card["per_tier"]["frontier"]["c"] in C_GRID
    assert card["per_tier"]["cheap"]["c_chosen_by"] == "decision"
    assert "| cheap | 90 | 0.333 | yes |" in (triage_model / "README.md").read_text()
    rows = replay_rows(quickstart_data, shared_datasets, 30, 20)
    write_rows(tmp_path / "test.jsonl", rows)
    out = tmp_path / "eval.json"
    proc = run("triage", "eval", triage_model, "--data", tmp_path / "test.jsonl", "--json", out, "--plot", tmp_path / "c.png")
    result = json.loads(out.read_text())
    assert result["n"] == 60 and result["tiers"] == ["cheap", "frontier"]
    assert result["weak_quality"] == pytest.approx(1 / 3, abs=1e-4) and result["strong_quality"] == pytest.approx(2 / 3, abs=1e-4)
    # ranked by predicted gain, the algebra questions (a third of the rows) go to the frontier first
    assert result["apgr"] > 0.8 > 0.6 > result["random"]["apgr"]
    assert result["strong_share_at_95"] < 0.4 < 0.55 < result["random"]["strong_share_at_95"]
    assert "triage" in proc.stdout and (tmp_path / "c.png").stat().st_size > 1000
    # the previous rule (1 - P(cheap good)) on the same predictions pays the frontier for the dialogues too
    predicted = TriageModel.load(triage_model).predict([r["text"] for r in rows])
    quality = np.array([[r["scores"]["cheap"], r["scores"]["frontier"]] for r in rows], dtype=float)
    previous = summarize(sweep(quality, None, 1 - np.array([p["cheap"] for p in predicted])), 1 / 3, 2 / 3)
    assert previous["strong_share_at_95"] > 0.5 > result["strong_share_at_95"] + 0.1


def test_rows_naming_unknown_tiers_are_reported_and_short_tiers_fall_back(tmp_path, quickstart_data, shared_datasets):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "fleet.json").write_text(json.dumps({"name": "f", "tasks": {}, "tiers": [{"name": "cheap"}, {"name": "frontier"}]}))
    rows = replay_rows(quickstart_data, shared_datasets, 0, 5)
    rows[4]["scores"]["mystery"] = 1
    write_rows(tmp_path / "rows.jsonl", rows)
    # wide enough that the console does not cut the file's path (long under pytest-xdist) in two
    proc = run("triage", "train", "--data", tmp_path / "rows.jsonl", "--fleet", fleet, "--out", tmp_path / "m", columns=400)
    said = " ".join(proc.stderr.split())  # the console wraps long lines
    assert f"tier 'mystery' is not in the fleet (tiers: cheap, frontier): 1 row(s), e.g. {tmp_path / 'rows.jsonl'}:5" in said
    assert "tier cheap: 15 rows, good share 0.333, no head: too few labelled rows, falls back to the tier order" in said
    model = TriageModel.load(tmp_path / "m")
    decision = model.decide({}, ["cheap", "frontier"], 0.5)
    assert decision.tier is None and "too few labelled rows for tier(s) cheap" in decision.fallback
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "scores": {"cheap": 2}}\n')
    proc = run("triage", "train", "--data", bad, "--out", tmp_path / "m2", check=False, columns=400)
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


def test_the_sweep_cuts_scores_at_routellm_quantiles_and_ranks_rows_by_predicted_gain():
    scores = np.arange(11) / 10  # RouteLLM cuts at the 0, 10, ..., 100 % quantiles (pd.qcut(scores, 10)): here 0, 0.1, ..., 1
    points = sweep(np.ones((11, 2)), None, scores)
    assert sorted(p["threshold"] for p in points) == pytest.approx(list(scores))
    # strong when the score is at or above the cut (all rows at the lowest), strictly above for the last cut (none)
    assert points[0]["strong_share"] == 0 and points[-1]["strong_share"] == 1 and len(points) == 11
    # two tiers: the strong score orders rows by P(strong good) - P(weak good), not by 1 - P(weak good)
    probs = np.array([[0.1, 0.15], [0.1, 0.9], [0.8, 0.95]])  # both miss / only strong / both right
    assert list(np.argsort(-strong_scores(probs, rank_shares(2)))) == [1, 2, 0]
    # three tiers (price shares 1/3, 2/3, 1): a row goes to the tier with the best P - cut x share
    quality = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=float)
    probs = np.array([[0.3, 0.9, 0.95], [0.95, 0.9, 0.95], [0.1, 0.2, 0.9]])
    # row 0: the frontier gains 0.05 over mid for 1/3 of its price: 0.15; row 1: nothing over cheap; row 2: 0.7 / (1/3)
    # over mid, 0.8 / (2/3) over cheap: 1.2
    assert strong_scores(probs, rank_shares(3)) == pytest.approx([0.15, 0.0, 1.2])
    (mid,) = [p for p in sweep(quality, probs, strong_scores(probs, rank_shares(3)), num_results=3)
              if p["strong_share"] == pytest.approx(1 / 3)]  # fmt: skip
    assert mid["quality"] == 1.0 and mid["tier_shares"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert oracle_curve(quality)[0]["quality"] == pytest.approx(2 / 3)


def test_the_decision_pays_for_a_dearer_tier_only_when_its_predicted_gain_is_worth_its_price():
    tiers, costs = ["cheap", "mid", "frontier"], [0.1, 1.0, 10.0]  # price shares 0.01, 0.1, 1
    model = TriageModel(tiers, {t: (np.zeros(4, dtype=np.float32), 0.0) for t in tiers}, "minilm")

    def chosen(predicted, wtp, costs=costs):
        return model.decide(dict(zip(tiers, predicted)), tiers, wtp, costs).tier

    assert chosen([0.3, 0.8, 0.9], 0.5) == "mid"  # mid gains 0.5 for 0.09 of the frontier's price; the frontier 0.1 for 0.9
    assert chosen([0.3, 0.8, 0.9], 0.95) == "frontier"  # paying 0.05 of quality per frontier price: the frontier is worth it
    assert chosen([0.3, 0.8, 0.9], 0.0) == "mid"  # even at 0: a gain of 0.5 for 0.09 of the price
    assert chosen([0.3, 0.8, 0.9], 0.0, [1, 9, 10]) == "cheap"  # ... but not for 0.8 of it
    assert chosen([0.3, 0.32, 0.33], 0.5) == "cheap"  # small gains are not worth paying for
    assert chosen([0.1, 0.1, 0.12], 1.0) == "frontier"  # at 1 the tier predicted best answers, whatever its price
    # the previous rule (cheapest tier with P >= 0.5, else the frontier) sent this one to the frontier: no tier will
    # answer it well, so the cheapest answers
    assert chosen([0.1, 0.1, 0.12], 0.5) == "cheap"
    # a fleet tier the model does not know is never chosen, even when predicted best
    assert model.decide({"cheap": 0.1, "other": 0.99, "frontier": 0.12}, ["cheap", "other", "frontier"], 1.0).tier == "frontier"
    short = TriageModel(["cheap", "frontier"], {"cheap": (np.zeros(4, dtype=np.float32), 0.0)}, "minilm")
    # the dearest tier without a head (too few rows) is taken to be good enough
    assert short.decide({"cheap": 0.3}, ["cheap", "frontier"], 0.5, [0.1, 10]).tier == "frontier"
    assert short.decide({"cheap": 0.7}, ["cheap", "frontier"], 0.5, [0.1, 10]).tier == "cheap"
    fallback = TriageModel(["cheap", "frontier"], {"frontier": (np.zeros(4, dtype=np.float32), 0.0)}, "minilm")
    decision = fallback.decide({"frontier": 0.9}, ["cheap", "frontier"], 0.5)
    assert decision.tier is None and "too few labelled rows for tier(s) cheap" in decision.fallback


def test_each_heads_l2_strength_is_chosen_by_cross_validation_on_the_training_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ones = np.ones(len(X))
    clean = (X[:, 0] > 0).astype(float)  # learnable: little regularisation wins
    noise = rng.integers(0, 2, len(X)).astype(float)  # nothing to learn: stronger regularisation wins
    assert choose_c(X, noise, ones) < 1.0 <= choose_c(X, clean, ones)


def logged(db, count: int, timeout: float = 10.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as con:
            rows = con.execute("select model, tier, triage_tier, triage, cost_usd, frontier_cost_usd from requests "
                               "order by id").fetchall()  # fmt: skip
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_gateway_sends_easy_and_hopeless_requests_to_the_cheap_tier_and_hard_ones_to_the_frontier(fleet_dir, triage_model,
                                                                                                   tmp_path):
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
            assert hard["triage"]["predicted"]["cheap"] < 0.5 < hard["triage"]["predicted"]["frontier"]
            hopeless = extra(ask(c, "auto", HOPELESS_TEXT))  # neither tier will answer it well: the frontier gains nothing
            assert hopeless["tier"] == "cheap" and hopeless["triage"]["tier"] == "cheap"
            assert hopeless["triage"]["predicted"]["frontier"] < hard["triage"]["predicted"]["frontier"]
            free = extra(ask(c, "fleet", HARD_TEXT))  # the router marks it `none`: triage picks the tier
            assert free["task"] is None and free["tier"] == "frontier" and free["triage"]["tier"] == "frontier"
            cheap.mode = "fail"  # the chosen tier fails: the cascade moves on
            moved = extra(ask(c, "auto", EASY_TEXT))
            assert moved["triage"]["tier"] == "cheap" and moved["tier"] == "frontier" and moved["escalated"]
            assert moved["tried"] == ["cheap: HTTP 500 (1 attempt)"]
        rows = logged(db, 5)
        assert [(m, t, tt) for m, t, tt, *_ in rows] == [("auto", "cheap", "cheap"), ("auto", "frontier", "frontier"),
                                                         ("auto", "cheap", "cheap"), ("fleet", "frontier", "frontier"),
                                                         ("auto", "frontier", "cheap")]  # fmt: skip
        assert json.loads(rows[0][3])["willingness_to_pay"] == 0.5
        costs = json.loads(run("costs", folder, "--db", f"sqlite:///{db}", "--json").stdout)
        assert {t: g["requests"] for t, g in costs["by_triage"].items()} == {"cheap": 3, "frontier": 2}
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
