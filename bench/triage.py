"""Triage on RouteLLM's MMLU replay data: how few GPT-4 calls keep 95 % of GPT-4's quality?

14,037 decontaminated MMLU questions (../shared/datasets/routellm_mmlu), each with whether
Mixtral-8x7B (weak, the cheap tier) and GPT-4-1106 (strong) answered it correctly. Every
router gives each question a strong score out of fold (5-fold cross-validation, seed 13);
RouteLLM's sweep (cuts at the 0, 10, ..., 100 % quantiles of the scores) turns the scores
into the quality vs GPT-4-call-share curve, scored by APGR and by the GPT-4 share needed for
95 % of GPT-4's quality. The random router and the oracle are scored on the same rows.

Routers, all on frozen MiniLM embeddings of the question text only (computed once and cached
outside the repo, see triage_cache.py):
- triage: smallfleet's model and decision as shipped (`smallfleet.triage.train.fit_heads`, the
  gateway's rule `routing.strong_scores`): a logistic head per tier, their L2 strength C chosen
  by the decision's APGR in 3-fold cross-validation inside the training folds only
  (`triage.tuning`); strong score = the predicted gain P(GPT-4 right) - P(Mixtral right);
- the same heads with C fixed at 1; the previous decision rule (strong score = 1 - P(Mixtral
  right), the cheapest tier predicted good enough); a head on the gap target (P(GPT-4 right and
  Mixtral wrong)); the gain read from a kNN over embeddings; the mean of the logistic and kNN gains.
The MMLU subject is a field of the dataset, not of the request, so no router reads it.
Then the learning curve: triage trained on 500, 2,000 and 10,000 labelled rows per fold.

    python bench/triage.py            # about 3 min once the embeddings are cached
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import HERE, machine, update_results, write_json
from rich.console import Console
from rich.table import Table
from triage_cache import cached_embeddings

from smallfleet.settings import datasets_dir
from smallfleet.triage.model import TriageModel, fit_head
from smallfleet.triage.routing import evaluate_router, plot_curves, rank_shares, strong_scores, summarize, sweep
from smallfleet.triage.rows import TriageRow
from smallfleet.triage.train import fit_heads

SEED = 13
FOLDS = 5
SIZES = (500, 2000, 10_000)
RANDOM_SEEDS = 20
ROUTELLM_PUBLISHED = 0.55  # RouteLLM: 95 % of GPT-4's MMLU quality at a 45 % cost cut, i.e. ~55 % GPT-4 calls
GOAL = 0.45
TIERS = ["Mixtral-8x7B", "GPT-4"]
MAIN = "triage (shipped): predicted gain, C cross-validated on the decision"
FIXED = "predicted gain, C=1"
PREVIOUS = "previous rule: 1 - P(Mixtral right), C=1"
PREVIOUS_CV = "previous rule, C cross-validated"
GAP = "gap head: P(GPT-4 right, Mixtral wrong), C=1"
KNN = "kNN gain (k=50, cosine)"
ENSEMBLE = "mean of the C=1 logistic and kNN gains"


def load() -> tuple[list[TriageRow], np.ndarray]:
    raw = [json.loads(x) for x in (datasets_dir() / "routellm_mmlu" / "all.jsonl").open(encoding="utf-8")]
    rows = [TriageRow(r["prompt"], {TIERS[0]: float(r["weak_correct"]), TIERS[1]: float(r["strong_correct"])},
                      f"routellm_mmlu:{i + 1}") for i, r in enumerate(raw)]  # fmt: skip
    quality = np.array([[r.scores[t] for t in TIERS] for r in rows], dtype=float)
    return rows, quality


def folds(n: int) -> np.ndarray:
    return np.random.default_rng(SEED).permutation(n) % FOLDS


def logistic(X, y, c=1.0):
    w, b = fit_head(X, y.astype(float), np.ones(len(y)), c=c)
    return lambda Z: 1 / (1 + np.exp(-(Z @ w + b)))


def knn(X, y, k=50):
    def predict(Z):
        out = np.empty((len(Z), y.shape[1]))
        for s in range(0, len(Z), 512):
            sims = Z[s : s + 512] @ X.T
            top = np.argpartition(-sims, k, axis=1)[:, :k]
            out[s : s + 512] = y[top].mean(1)
        return out

    return predict


def out_of_fold(fit, X, fold, size=None, width=None) -> np.ndarray:
    """Each row's prediction from `fit(train_index)` on the other folds (`size` rows of them when given)."""
    pred = np.empty((len(X), width)) if width else np.empty(len(X))
    rng = np.random.default_rng(SEED + 1)
    for f in range(FOLDS):
        train = np.flatnonzero(fold != f)
        if size is not None:
            train = rng.choice(train, size=size, replace=False)
        pred[fold == f] = fit(train)(X[fold == f])
    return pred


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    console = Console()
    rows, quality = load()
    started = time.perf_counter()
    X = cached_embeddings([r.text for r in rows])
    embed_s = time.perf_counter() - started
    fold = folds(len(rows))
    weak_ok, gap = quality[:, 0], (quality[:, 1] > quality[:, 0]).astype(float)
    weak, strong = float(weak_ok.mean()), float(quality[:, 1].mean())
    shares = rank_shares(len(TIERS))
    timings, chosen_c = {}, []

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    def shipped(c, size=None):
        def fit(train):
            heads, per_tier = fit_heads([rows[i] for i in train], X[train], TIERS, c=c, validate=False)
            if c is None and size is None:
                chosen_c.append({t: per_tier[t]["c"] for t in TIERS})
            model = TriageModel(TIERS, heads, "minilm")
            return lambda Z: np.stack([model.predict_embedded(Z)[t] for t in TIERS], axis=1)

        return out_of_fold(fit, X, fold, size=size, width=len(TIERS))

    probs = {"cv": timed("shipped (C cross-validated)", lambda: shipped(None)),
             "c1": timed("heads C=1", lambda: shipped(1.0))}  # fmt: skip
    knn_probs = timed("knn", lambda: out_of_fold(lambda tr: knn(X[tr], quality[tr]), X, fold, width=len(TIERS)))
    scores = {
        MAIN: strong_scores(probs["cv"], shares),
        FIXED: strong_scores(probs["c1"], shares),
        PREVIOUS: 1 - probs["c1"][:, 0],
        PREVIOUS_CV: 1 - probs["cv"][:, 0],
        GAP: timed("gap", lambda: out_of_fold(lambda tr: logistic(X[tr], gap[tr]), X, fold)),
        KNN: strong_scores(knn_probs, shares),
        ENSEMBLE: strong_scores((probs["c1"] + knn_probs) / 2, shares),
    }
    results = {name: summarize(sweep(quality, None, s), weak, strong) for name, s in scores.items()}
    full = evaluate_router(quality, None, scores[MAIN])
    randoms = [summarize(sweep(quality, None, np.random.default_rng(s).random(len(rows))), weak, strong)
               for s in range(RANDOM_SEEDS)]  # fmt: skip
    random_mean = {"apgr": float(np.mean([r["apgr"] for r in randoms])),
                   "strong_share_at_95": float(np.mean([r["strong_share_at_95"] for r in randoms]))}  # fmt: skip
    curve, curve_previous = {}, {}
    for size in SIZES:
        p = timed(f"n={size}", lambda: shipped(None, size))
        curve[size] = summarize(sweep(quality, None, strong_scores(p, shares)), weak, strong)
        curve_previous[size] = summarize(sweep(quality, None, 1 - p[:, 0]), weak, strong)

    full["extra"] = {PREVIOUS: results[PREVIOUS]}
    plot = HERE / "results" / "triage.png"
    plot_curves(full, plot, "RouteLLM MMLU replay: Mixtral-8x7B -> GPT-4 (5-fold CV)", TIERS)

    def pct(x):
        return "never" if x is None else f"{100 * x:.1f}%"

    table = Table(title=f"triage on routellm_mmlu ({len(rows)} questions, 5-fold CV)")
    for col in ("router", "APGR", "GPT-4 share @95% quality", "@50% gap", "@95% gap"):
        table.add_column(col)
    lines = [(n, r) for n, r in results.items()] + [("random (seed 0)", full["random"]), ("oracle", full["oracle"])]
    for name, r in lines:
        table.add_row(name, f"{r['apgr']:.3f}", pct(r["strong_share_at_95"]), pct(r["strong_share_at_50_gap"]),
                      pct(r["strong_share_at_95_gap"]))  # fmt: skip
    console.print(table)
    lc = Table(title="learning curve: triage (shipped) trained on N labelled rows per fold")
    for col in ("labelled rows", "APGR", "GPT-4 share @95% quality", "previous rule: APGR", "previous rule @95%"):
        lc.add_column(col)
    for size in SIZES:
        r, q = curve[size], curve_previous[size]
        lc.add_row(f"{size:,}", f"{r['apgr']:.3f}", pct(r["strong_share_at_95"]), f"{q['apgr']:.3f}",
                   pct(q["strong_share_at_95"]))  # fmt: skip
    console.print(lc)
    console.print(f"C chosen per fold (inside the training folds): {chosen_c}")

    payload = {
        "machine": machine(), "rows": len(rows), "folds": FOLDS, "seed": SEED, "weak_quality": round(weak, 4),
        "strong_quality": round(strong, 4), "oracle_quality": full["oracle_quality"], "routers": results,
        "random": full["random"], "random_mean_of_20_seeds": random_mean, "oracle": full["oracle"],
        "learning_curve": {str(k): v for k, v in curve.items()},
        "learning_curve_previous_rule": {str(k): v for k, v in curve_previous.items()},
        "c_chosen_per_fold": chosen_c, "published_routellm_strong_share_at_95": ROUTELLM_PUBLISHED,
        "goal_strong_share_at_95": GOAL, "fit_seconds": timings, "embedding_seconds_or_cache": round(embed_s, 1),
    }  # fmt: skip
    path = write_json("triage", payload)
    console.print(f"wrote {path} and {plot}")
    section(payload, results, curve, curve_previous, full, random_mean)


def section(payload, results, curve, curve_previous, full, random_mean) -> None:
    def pct(x):
        return "never" if x is None else f"{100 * x:.1f}%"

    m = payload["machine"]
    ours, before = results[MAIN], results[PREVIOUS]
    cs = sorted({c for fold in payload["c_chosen_per_fold"] for c in fold.values()})
    body = [
        "## Triage on RouteLLM's MMLU replay (`bench/triage.py`)",
        "",
        f"{payload['rows']:,} decontaminated MMLU questions with Mixtral-8x7B's (weak, {payload['weak_quality']:.3f}) "
        f"and GPT-4-1106's (strong, {payload['strong_quality']:.3f}) correctness; oracle {payload['oracle_quality']:.3f}. "
        "Every router scores each question out of fold (5-fold CV, seed 13) from frozen MiniLM embeddings of the "
        "question text (the MMLU subject is a dataset field, not part of the request: no router reads it); "
        "RouteLLM's sweep (cuts at the score deciles) gives the quality vs GPT-4-call curve. 95% of GPT-4's quality "
        f"is {0.95 * payload['strong_quality']:.3f}. The shipped triage is `smallfleet.triage` as the gateway runs "
        "it: a logistic head per tier whose L2 strength C is chosen by the decision's APGR in 3-fold cross-validation "
        f"inside the training folds (chosen: C = {', '.join(str(c) for c in cs)}), and the decision by predicted gain "
        "(P(GPT-4 right) - P(Mixtral right); over N tiers, the best predicted quality minus "
        "(1 - willingness_to_pay) x price share).",
        "",
        "| router | APGR | GPT-4 calls for 95% of GPT-4 quality | for 50% of the gap | for 95% of the gap |",
        "|---|---|---|---|---|",
    ]
    for name, r in [*results.items(), ("random router (seed 0)", full["random"]), ("oracle", full["oracle"])]:
        body.append(f"| {name} | {r['apgr']:.3f} | {pct(r['strong_share_at_95'])} | {pct(r['strong_share_at_50_gap'])} "
                    f"| {pct(r['strong_share_at_95_gap'])} |")  # fmt: skip
    body += [
        f"| random, mean of 20 seeds | {random_mean['apgr']:.3f} | {pct(random_mean['strong_share_at_95'])} | | |",
        f"| RouteLLM published (issue's reading) | | ~{pct(ROUTELLM_PUBLISHED)} | | |",
        "",
        "Learning curve (the shipped triage, C chosen inside the N rows, trained on N labelled rows drawn "
        "from each fold's training part; the previous rule on the same heads beside it):",
        "",
        "| labelled rows | APGR | GPT-4 calls for 95% of GPT-4 quality | previous rule: APGR "
        "| previous rule: GPT-4 calls |",
        "|---|---|---|---|---|",
        *[f"| {k:,} | {v['apgr']:.3f} | {pct(v['strong_share_at_95'])} | {curve_previous[k]['apgr']:.3f} | "
          f"{pct(curve_previous[k]['strong_share_at_95'])} |" for k, v in curve.items()],
        f"| ~11,230 (all of the other folds) | {ours['apgr']:.3f} | {pct(ours['strong_share_at_95'])} | "
        f"{results[PREVIOUS_CV]['apgr']:.3f} | {pct(results[PREVIOUS_CV]['strong_share_at_95'])} |",
        "",
        f"Goal: at most {pct(GOAL)} GPT-4 calls at 95% of GPT-4 quality. smallfleet's triage: "
        f"{pct(ours['strong_share_at_95'])} (APGR {ours['apgr']:.3f}); the previous rule: "
        f"{pct(before['strong_share_at_95'])}; random {pct(random_mean['strong_share_at_95'])} (mean of 20 seeds). "
        "Plot: `bench/results/triage.png`.",
        "",
        "Reading: ranking by the predicted gain rather than by P(Mixtral right) alone stops sending questions both "
        "models miss to GPT-4 for nothing; most of the improvement comes from that rule. Choosing C for the "
        "decision (the APGR of the gain ranking, inside the training folds) adds the rest: it picks strong "
        "regularisation, which smooths the difference of two noisy heads (MMLU difficulty is a weak signal in a "
        "frozen MiniLM embedding). The oracle's "
        "APGR is above 1 because it beats GPT-4 alone (Mixtral is right on questions GPT-4 misses).",
        "",
        f"Machine: {m['cpu_count']} CPU cores, torch {m['torch']} ({m['threads']} threads), Python {m['python']}, "
        f"{m['date']}. Fit times (s, all 5 folds): {payload['fit_seconds']}.",
    ]
    update_results("triage", "\n".join(body))


if __name__ == "__main__":
    main()
