"""Choosing the heads' L2 strength for the decision they serve, on the training rows only.

Triage ranks requests by the predicted gain of a dearer tier over a cheaper one, a difference of
two heads. Each head's own log-loss is a poor guide to that difference: on MMLU it picks weaker
regularisation than the routing needs. So when enough training rows score every tier, one C
for all heads is chosen by the APGR of the decision itself (RouteLLM's sweep, see routing.py) in
k-fold cross-validation on those rows; otherwise each head's C is chosen by its own log-loss
(`model.choose_c`).
"""

from __future__ import annotations

import numpy as np

from smallfleet.triage.model import C_FOLDS, C_GRID, fit_head, training_arrays
from smallfleet.triage.routing import rank_shares, strong_scores, summarize, sweep
from smallfleet.triage.rows import TriageRow

MIN_COMPLETE_ROWS = 60
"""Fewest rows scoring every tier for the decision-based choice (fewer: per-head log-loss)."""


def choose_shared_c(rows: list[TriageRow], vectors: np.ndarray, tiers: list[str], grid: tuple[float, ...] = C_GRID,
                    folds: int = C_FOLDS, seed: int = 13) -> float | None:  # fmt: skip
    """The C of `grid` whose heads, fitted in `folds`-fold cross-validation on the rows scoring every tier of
    `tiers` (cheapest first), give the decision the highest APGR; None when too few such rows, or when the
    cheapest and the dearest tier are equally good on them (nothing to route)."""
    complete = [i for i, r in enumerate(rows) if all(t in r.scores for t in tiers)]
    if len(tiers) < 2 or len(complete) < MIN_COMPLETE_ROWS:
        return None
    sub = [rows[i] for i in complete]
    X = vectors[complete]
    quality = np.array([[r.scores[t] for t in tiers] for r in sub], dtype=np.float64)
    weak, strong = float(quality[:, 0].mean()), float(quality[:, -1].mean())
    if weak == strong:
        return None
    fold = np.random.default_rng(seed).permutation(len(sub)) % folds
    shares = rank_shares(len(tiers))
    scores = []
    for c in grid:
        probs = np.empty(quality.shape)
        for f in range(folds):
            train = np.flatnonzero(fold != f)
            test = fold == f
            for j, tier in enumerate(tiers):
                w, b = fit_head(*training_arrays([sub[i] for i in train], X[train], tier), c=c)
                probs[test, j] = 1 / (1 + np.exp(-(X[test] @ w + b)))
        scores.append(summarize(sweep(quality, probs, strong_scores(probs, shares)), weak, strong)["apgr"])
    best = max(scores)  # ties (e.g. rows the heads separate at any C) go to the weakest L2: the sharpest probabilities
    return float(max(c for c, score in zip(grid, scores) if score >= best - 1e-9))
