"""The triage decision rule, and scoring a router on replay data the way RouteLLM does.

The rule (shared by the gateway and the evaluation): each tier t has a predicted quality p_t
(P(good-enough answer)) and a price c_t, as a share of the dearest tier's price. A request goes to
the tier with the highest p_t - lam * c_t, lam = 1 - willingness_to_pay: a dearer tier is worth
it when its predicted *gain* over a cheaper one, per extra share of the frontier price, is at
least lam. With two tiers this ranks requests by P(strong right) - P(weak right), not by
P(weak right) alone: a question both tiers will miss does not go to the frontier for nothing.

Each replay row carries every tier's quality (cheapest tier first, the strongest last). A router
gives each row a strong score (for the rule above: the largest lam at which the row still goes
to the strongest tier); RouteLLM's sweep cuts the scores at their 0, 10, ..., 100 % quantiles
(`pd.qcut(scores, 10)`), sends a row to the strong tier when its score is at or above the cut
(strictly above for the last cut), and measures quality against the share of strong calls.
A row below the cut goes to the cheaper tier the rule picks at lam = the cut. On that curve:
- PGR (performance gap recovered) = (quality - weak) / (strong - weak), weak being the cheapest tier;
- APGR = the area under PGR over the strong-call share (RouteLLM's `apgr_metric`, trapezoids);
- the strong share needed to reach a quality: the first crossing of the curve, linearly interpolated.
"""

from __future__ import annotations

import numpy as np

NUM_RESULTS = 10
"""Cuts of RouteLLM's sweep (`--num-results`, default 10)."""


def price_shares(costs: list[float] | np.ndarray) -> np.ndarray:
    """Each tier's price as a share of the dearest one's (all 0 when no tier has a price)."""
    costs = np.asarray(costs, dtype=np.float64)
    top = costs.max() if len(costs) else 0.0
    return costs / top if top > 0 else np.zeros_like(costs)


def rank_shares(tiers: int) -> np.ndarray:
    """Price shares for replay rows, which carry no prices: evenly spaced by rank (1/T, 2/T, ..., 1)."""
    return np.arange(1, tiers + 1) / tiers


def choose_tiers(probs: np.ndarray, shares: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """Per row, the index of the tier with the highest predicted quality - lam * price share (ties: the cheaper).

    Args:
        probs: (n, T) predicted quality of each tier, cheapest first; NaN for a tier that must not be chosen.
        shares: (T,) price shares (see `price_shares`).
        lam: the price of quality, 1 - willingness_to_pay; a scalar or one per row.
    """
    lam = np.asarray(lam, dtype=np.float64).reshape(-1, 1)
    utility = np.where(np.isnan(probs), -np.inf, probs - lam * shares[None, :])
    return utility.argmax(1)


def strong_scores(probs: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The largest lam at which each row still goes to the strongest (last) tier: the least, over the cheaper
    tiers, predicted gain of the strongest per extra price share. Two tiers: a monotone function of
    P(strong good) - P(weak good), so RouteLLM's quantile sweep ranks rows by the predicted gain."""
    gain = probs[:, -1:] - probs[:, :-1]
    extra = shares[-1] - shares[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(extra > 0, gain / np.where(extra > 0, extra, 1), np.where(gain >= 0, np.inf, -np.inf))
    per = np.where(np.isnan(probs[:, :-1]), np.inf, per)  # a tier that cannot be chosen does not compete
    return per.min(1) if per.shape[1] else np.full(len(probs), np.inf)


def sweep(quality: np.ndarray, probs: np.ndarray | None, strong_score: np.ndarray,
          num_results: int = NUM_RESULTS, shares: np.ndarray | None = None) -> list[dict]:  # fmt: skip
    """RouteLLM's threshold sweep.

    Args:
        quality: (n, T) quality of each tier's answer, cheapest tier first, strongest last.
        probs: (n, T) predicted quality of every tier, or None when every row below the cut goes to the
            cheapest tier (two tiers, or a router that only scores the strongest).
        strong_score: (n,) the router's score for sending a row to the strongest tier.
        num_results: quantile cuts of the scores.
        shares: (T,) price shares for choosing among the cheaper tiers (default `rank_shares`).

    Returns:
        One point per distinct cut: threshold, strong_share, quality, and each tier's share.
    """
    n, t = quality.shape
    shares = rank_shares(t) if shares is None else shares
    finite = strong_score[np.isfinite(strong_score)]
    cuts = np.quantile(finite if len(finite) else np.zeros(1), np.linspace(0, 1, num_results + 1))
    points = []
    for i, cut in enumerate(cuts):
        strong = strong_score >= cut if i != len(cuts) - 1 else strong_score > cut
        if probs is None or t == 2:
            chosen = np.where(strong, t - 1, 0)
        else:
            chosen = np.where(strong, t - 1, choose_tiers(probs[:, :-1], shares[:-1], cut))
        got = quality[np.arange(n), chosen]
        points.append({"threshold": float(cut), "strong_share": float(strong.mean()), "quality": float(got.mean()),
                       "tier_shares": np.bincount(chosen, minlength=t).astype(float) / n})  # fmt: skip
    for p in points:
        p["tier_shares"] = [round(float(s), 6) for s in p["tier_shares"]]
    return sorted(points, key=lambda p: (p["strong_share"], p["quality"]))


def oracle_curve(quality: np.ndarray, steps: int = NUM_RESULTS) -> list[dict]:
    """RouteLLM's optimal router (`get_optimal_accuracy`): at each strong share, the strong tier answers the
    rows where it gains most over the best cheaper tier."""
    n = len(quality)
    best_cheaper = quality[:, :-1].max(1)
    gains = np.sort(np.clip(quality[:, -1] - best_cheaper, 0, None))[::-1]
    points = []
    for share in np.linspace(0, 1, steps + 1):
        calls = int(round(share * n))
        points.append({"threshold": None, "strong_share": float(share),
                       "quality": float((best_cheaper.sum() + gains[:calls].sum()) / n)})  # fmt: skip
    return points


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    """A random router's strong scores (RouteLLM's `random` router draws uniformly, seeded 0)."""
    return np.random.default_rng(seed).random(n)


def apgr(points: list[dict], weak: float, strong: float) -> float:
    """RouteLLM's APGR: (area under the quality curve - the weak tier's) / (the strong tier's - the weak tier's)."""
    x = np.array([p["strong_share"] for p in points])
    y = np.array([p["quality"] for p in points])
    span = np.trapezoid(np.full_like(x, strong), x) - np.trapezoid(np.full_like(x, weak), x)
    return float((np.trapezoid(y, x) - np.trapezoid(np.full_like(x, weak), x)) / span) if span else float("nan")


def share_at(points: list[dict], target: float) -> float | None:
    """The strong share at which the curve first reaches `target` quality (linear between points); None if never."""
    prev = None
    for p in points:
        if p["quality"] >= target:
            if prev is None or p["quality"] == prev["quality"]:
                return p["strong_share"]
            f = (target - prev["quality"]) / (p["quality"] - prev["quality"])
            return prev["strong_share"] + f * (p["strong_share"] - prev["strong_share"])
        prev = p
    return None


def summarize(points: list[dict], weak: float, strong: float) -> dict:
    """APGR and the strong shares for 50 % / 95 % of the gap and of the strong tier's quality."""
    def rounded(x):
        return None if x is None else round(x, 4)

    return {
        "apgr": round(apgr(points, weak, strong), 4),
        "strong_share_at_95": rounded(share_at(points, 0.95 * strong)),
        "strong_share_at_50": rounded(share_at(points, 0.50 * strong)),
        "strong_share_at_95_gap": rounded(share_at(points, weak + 0.95 * (strong - weak))),
        "strong_share_at_50_gap": rounded(share_at(points, weak + 0.50 * (strong - weak))),
        "curve": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in p.items()} for p in points],
    }


def evaluate_router(quality: np.ndarray, probs: np.ndarray | None, strong_score: np.ndarray,
                    num_results: int = NUM_RESULTS, seed: int = 0) -> dict:  # fmt: skip
    """The router's, a random router's and the oracle's curves and metrics on the same rows."""
    weak, strong = float(quality[:, 0].mean()), float(quality[:, -1].mean())
    t = quality.shape[1]
    rnd = random_scores(len(quality), seed)
    rnd_probs = None if t == 2 else np.random.default_rng(seed + 1).random((len(quality), t))
    if rnd_probs is not None:
        rnd = strong_scores(rnd_probs, rank_shares(t))
    router = summarize(sweep(quality, probs, strong_score, num_results), weak, strong)
    return {
        "n": int(len(quality)),
        "weak_quality": round(weak, 4),
        "strong_quality": round(strong, 4),
        "oracle_quality": round(float(quality.max(1).mean()), 4),
        **router,
        "random": summarize(sweep(quality, rnd_probs, rnd, num_results), weak, strong),
        "oracle": summarize(oracle_curve(quality, num_results), weak, strong),
    }


def plot_curves(result: dict, path, title: str, tiers: list[str]) -> None:
    """Quality vs strong-call share: the router, random and oracle lines, and each end tier's quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = [("triage", result), *((k, v) for k, v in result.get("extra", {}).items()),
             ("random", result["random"]), ("oracle", result["oracle"])]  # fmt: skip
    for name, part in lines:
        xs = [100 * p["strong_share"] for p in part["curve"]]
        ys = [100 * p["quality"] for p in part["curve"]]
        ax.plot(xs, ys, marker=".", label=f"{name} (APGR {part['apgr']:.3f})")
    ax.axhline(100 * result["weak_quality"], color="grey", linestyle="--", label=f"{tiers[0]} alone")
    ax.axhline(100 * result["strong_quality"], color="black", linestyle="--", label=f"{tiers[-1]} alone")
    ax.axhline(95 * result["strong_quality"], color="black", linestyle=":", linewidth=0.8,
               label=f"95% of {tiers[-1]}")  # fmt: skip
    ax.set_xlabel(f"calls to {tiers[-1]} (%)")
    ax.set_ylabel("quality (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
