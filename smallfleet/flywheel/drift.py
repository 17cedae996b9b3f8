"""Drift tests: is recent traffic still like what a specialist was trained and calibrated on?

Each signal is one two-sample or goodness-of-fit test and gives a statistic, a p-value and a
verdict (drift when p < alpha):

- **input**: maximum mean discrepancy (MMD) between sentence embeddings of recent inputs and
  of a sample of training inputs, with an RBF kernel whose bandwidth is the median pairwise
  distance, and a permutation p-value. This is the test of Gretton et al. (2012) as
  alibi-detect's `MMDDrift` runs it, and the two-sample test Rabanser et al. ("Failing
  Loudly", 2019) found the most reliable on embeddings.
- **confidence**: two-sample Kolmogorov-Smirnov test of recent confidences against the
  validation confidences the threshold was chosen from.
- **escalation_rate**: exact two-sided binomial test of the share of recent answers below the
  threshold against the share of validation answers below it.
- **router_none_rate**: the same binomial test for the router's `none` routes.
- **answer_mix**: chi-square goodness-of-fit of recent predicted answers against the training
  answers' mix (kinds whose answers are categories, e.g. labels).

A signal that cannot be computed (too few requests, no baseline in an older folder, a kind
without answer categories) says why and counts as no drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

OTHER = "(other)"
RARE = "(rare)"
MIN_EXPECTED = 5.0  # chi-square's usual rule: pool categories expected fewer than 5 times


@dataclass
class Signal:
    """One drift test's outcome."""

    name: str
    """Which signal: input, confidence, escalation_rate, router_none_rate, answer_mix."""
    test: str
    """The test run, e.g. `MMD permutation test`."""
    statistic: float | None = None
    """The test statistic (None when not computed)."""
    p_value: float | None = None
    """Its p-value (None when not computed)."""
    drift: bool | None = None
    """True when p_value < alpha; None when not computed."""
    n: int = 0
    """Recent requests the test used."""
    detail: dict = field(default_factory=dict)
    """Figures behind the test, e.g. the expected and observed rates."""
    reason: str = ""
    """Why the signal was not computed."""

    def to_dict(self) -> dict:
        return asdict(self)


def not_computed(name: str, test: str, reason: str, n: int = 0) -> Signal:
    return Signal(name=name, test=test, n=n, reason=reason)


def _verdict(signal: Signal, alpha: float) -> Signal:
    signal.drift = bool(signal.p_value is not None and signal.p_value < alpha)
    return signal


def mmd_test(recent: np.ndarray, baseline: np.ndarray, alpha: float, permutations: int = 200, seed: int = 0) -> Signal:
    """MMD between two sets of embeddings (rows), with a permutation p-value.

    Args:
        recent: (m, d) embeddings of recent inputs.
        baseline: (n, d) embeddings of training inputs.
        alpha: significance level of the verdict.
        permutations: random relabellings of the pooled sample.
        seed: of the permutations.
    """
    pooled = np.concatenate([baseline, recent]).astype(np.float64)
    n = len(baseline)
    norms = (pooled**2).sum(1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2 * pooled @ pooled.T, 0.0)
    bandwidth = float(np.median(squared[np.triu_indices(len(pooled), 1)])) or 1.0
    kernel = np.exp(-squared / bandwidth)
    rng = np.random.default_rng(seed)

    def statistic(order: np.ndarray) -> float:
        a, b = order[:n], order[n:]
        kaa, kbb, kab = kernel[np.ix_(a, a)], kernel[np.ix_(b, b)], kernel[np.ix_(a, b)]
        # unbiased MMD^2: the within-sample means leave out the diagonal
        within_a = (kaa.sum() - np.trace(kaa)) / (len(a) * (len(a) - 1))
        within_b = (kbb.sum() - np.trace(kbb)) / (len(b) * (len(b) - 1))
        return float(within_a + within_b - 2 * kab.mean())

    observed = statistic(np.arange(len(pooled)))
    null = [statistic(rng.permutation(len(pooled))) for _ in range(permutations)]
    p = (1 + sum(s >= observed for s in null)) / (1 + permutations)
    signal = Signal("input", "MMD permutation test on sentence embeddings", observed, float(p), n=len(recent),
                    detail={"baseline": n, "permutations": permutations, "bandwidth": bandwidth})  # fmt: skip
    return _verdict(signal, alpha)


def ks_test(recent: np.ndarray, baseline: np.ndarray, alpha: float) -> Signal:
    """Two-sample Kolmogorov-Smirnov test of recent confidences against validation confidences."""
    from scipy.stats import ks_2samp

    result = ks_2samp(recent, baseline)
    signal = Signal("confidence", "two-sample Kolmogorov-Smirnov test", float(result.statistic), float(result.pvalue),
                    n=len(recent), detail={"baseline": len(baseline), "recent_mean": float(np.mean(recent)),
                                           "baseline_mean": float(np.mean(baseline))})  # fmt: skip
    return _verdict(signal, alpha)


def rate_test(name: str, hits: int, n: int, expected: float, alpha: float) -> Signal:
    """Exact two-sided binomial test of `hits` out of `n` against the rate `expected`."""
    from scipy.stats import binomtest

    p = float(binomtest(hits, n, min(max(expected, 0.0), 1.0)).pvalue)
    signal = Signal(name, "exact binomial test", hits / n, p, n=n, detail={"observed": hits / n, "expected": expected})
    return _verdict(signal, alpha)


def mix_test(recent: list[str], baseline: dict[str, int], alpha: float) -> Signal:
    """Chi-square goodness-of-fit of recent answers against the training mix `baseline` (answer -> count).

    Answers the training data never had count as OTHER; categories expected fewer than
    MIN_EXPECTED times are pooled (RARE) so the chi-square approximation holds.
    """
    from scipy.stats import chi2

    total = sum(baseline.values())
    n = len(recent)
    observed: dict[str, int] = {}
    for answer in recent:
        key = answer if answer in baseline else OTHER
        observed[key] = observed.get(key, 0) + 1
    # half a count of smoothing, so an answer the training data never had is unlikely but not impossible
    categories = sorted(baseline) + [OTHER]
    shares = {c: (baseline.get(c, 0) + 0.5) / (total + 0.5 * len(categories)) for c in categories}
    cells: dict[str, list[float]] = {}
    for c in categories:
        key = c if shares[c] * n >= MIN_EXPECTED else RARE
        cell = cells.setdefault(key, [0.0, 0.0])
        cell[0] += observed.get(c, 0)
        cell[1] += shares[c] * n
    if len(cells) < 2:
        return not_computed("answer_mix", "chi-square goodness of fit",
                            f"{n} recent answers are too few to test the mix of {len(baseline)} answers", n)  # fmt: skip
    obs = np.array([v[0] for v in cells.values()])
    exp = np.array([v[1] for v in cells.values()])
    stat = float(((obs - exp) ** 2 / exp).sum())
    p = float(chi2.sf(stat, len(cells) - 1))
    top = sorted(cells, key=lambda c: -abs(cells[c][0] - cells[c][1]))[:5]
    detail = {"cells": len(cells), "most_changed": {c: {"observed": int(cells[c][0]), "expected": round(cells[c][1], 1)}
                                                    for c in top}}  # fmt: skip
    return _verdict(Signal("answer_mix", "chi-square goodness of fit", stat, p, n=n, detail=detail), alpha)
