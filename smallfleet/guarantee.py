"""Escalation thresholds with a finite-sample guarantee.

The point-estimate rule (`ConfidenceCurve.threshold_for`) takes the lowest threshold whose
accepted validation answers reach the target; on a few hundred rows it often overshoots, and
nothing says by how much. Here the threshold comes with a bound: with probability at least
1 - delta over the validation sample, the quality of the answers accepted at the threshold is
at least `guaranteed_lower_bound`, which is >= the target.

Method: Selection with Guaranteed Risk (SGR; Geifman & El-Yaniv, "Selective classification
for deep neural networks", NeurIPS 2017). A binary search over the sorted validation
confidences tests at most ceil(log2 n) thresholds; each one's selective error gets an exact
one-sided Clopper-Pearson upper bound at level delta / ceil(log2 n), so by the union bound
all the bounds hold together with probability >= 1 - delta. The lowest tested threshold
whose bound meets the target is chosen (the most answers kept local).

"Quality" is whatever the kind's calibration curve records as right: accuracy for classify,
exact record match for extract, a good answer (ROUGE-L >= quality bar) for generate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from smallfleet.calibration import ConfidenceCurve

METHOD = "SGR (Geifman & El-Yaniv 2017): binary search, Clopper-Pearson bounds at delta / ceil(log2 n)"
DEFAULT_DELTA = 0.05
ESCALATE_ALL = 1.0 + 1e-6
"""The threshold when nothing can be promised: above any confidence, so every request escalates."""


def error_upper_bound(errors: int, n: int, level: float) -> float:
    """One-sided Clopper-Pearson upper bound on an error rate: P(true rate > bound) <= `level`."""
    from scipy.stats import beta

    if n == 0:
        return 1.0
    if errors >= n:
        return 1.0
    return float(beta.ppf(1 - level, errors + 1, n - errors))


@dataclass
class Guarantee:
    """An escalation threshold and what can be promised about the answers it accepts."""

    target: float
    """Quality the accepted answers must reach."""
    delta: float
    """Allowed probability that the promise fails (over the draw of the validation rows)."""
    threshold: float
    """Accept answers with confidence >= threshold; ESCALATE_ALL (above 1) when nothing can be promised."""
    coverage: float
    """Share of validation answers accepted at the threshold (the expected share answered locally)."""
    accepted_quality: float | None
    """Quality of the accepted validation answers."""
    guaranteed_lower_bound: float | None
    """With probability >= 1 - delta, accepted quality is at least this (>= target when supported)."""
    supported: bool
    """False when the validation data cannot support the target at any threshold: everything escalates."""
    rows: int
    """Validation rows the guarantee rests on."""
    rows_needed: int | None = None
    """When unsupported: about how many validation rows would support it, at the quality of the most
    confident half; None when even that half misses the target."""
    method: str = METHOD

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """One line for start-up logs and cards."""
        if self.supported:
            return (f"accept confidence >= {self.threshold:.3f}: {self.coverage:.0%} of validation answered locally; "
                    f"accepted quality >= {self.guaranteed_lower_bound:.3f} (target {self.target:.0%}) with "
                    f"probability {1 - self.delta:.0%} ({self.rows} validation rows)")  # fmt: skip
        needed = (f"about {self.rows_needed} validation rows would support it" if self.rows_needed
                  else "the specialist's most confident half does not reach the target")  # fmt: skip
        return (f"cannot guarantee {self.target:.0%} with probability {1 - self.delta:.0%} on {self.rows} validation "
                f"rows: every request escalates ({needed})")  # fmt: skip


def guaranteed_threshold(curve: ConfidenceCurve, target: float, delta: float = DEFAULT_DELTA) -> Guarantee:
    """The lowest threshold whose accepted quality is >= `target` with probability >= 1 - delta (SGR).

    Args:
        curve: validation confidences (sorted high to low) and whether each answer was right.
        target: required quality of accepted answers, in (0, 1].
        delta: allowed failure probability, in (0, 1).
    """
    n = len(curve.confidence)
    alpha = 1 - target
    none = Guarantee(target, delta, ESCALATE_ALL, 0.0, None, None, False, n,
                     rows_needed(target, delta, _top_half_quality(curve)))  # fmt: skip
    if n == 0:
        return none
    tests = max(1, math.ceil(math.log2(n)))
    level = delta / tests
    right = np.cumsum(curve.correct)
    # accepting the top k answers is only possible at a cut between distinct confidences
    cuts = np.flatnonzero(np.append(curve.confidence[1:] < curve.confidence[:-1], True)) + 1  # candidate k's
    lo, hi, best = 0, len(cuts) - 1, None
    for _ in range(tests):
        if lo > hi:
            break
        mid = (lo + hi) // 2
        k = int(cuts[mid])
        bound = error_upper_bound(int(k - right[k - 1]), k, level)
        if bound <= alpha:
            best, lo = (k, bound), mid + 1  # holds: try accepting more
        else:
            hi = mid - 1
    if best is None:
        return none
    k, bound = best
    return Guarantee(target, delta, float(curve.confidence[k - 1]), k / n, float(right[k - 1] / k), 1 - bound, True, n)


def _top_half_quality(curve: ConfidenceCurve) -> float:
    return curve.accuracy_at_coverage(0.5) if len(curve.confidence) else 0.0


def rows_needed(target: float, delta: float, quality: float, limit: int = 10_000_000) -> int | None:
    """About how many validation rows (half of them accepted at `quality`) would support `target` at `delta`."""
    if not quality > target:
        return None

    def enough(n: int) -> bool:
        accepted = max(1, n // 2)
        errors = int(math.floor((1 - quality) * accepted))
        return error_upper_bound(errors, accepted, delta / max(1, math.ceil(math.log2(n)))) <= 1 - target

    n = 2
    while not enough(n):
        n *= 2
        if n > limit:
            return None
    lo, hi = n // 2, n
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def cascade_on(guarantee: Guarantee, confidence, correct) -> dict:
    """What the guaranteed threshold does on new labelled answers: share accepted and their quality.

    Returns `eval --json`'s `cascade` section: target, delta, threshold, coverage, accepted_accuracy
    (the kind's quality measure on the accepted answers; None when none is accepted),
    guaranteed_lower_bound, supported, validation_coverage, method.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    accepted = confidence >= guarantee.threshold
    return {
        "target": guarantee.target,
        "delta": guarantee.delta,
        "threshold": round(guarantee.threshold, 6),
        "coverage": float(accepted.mean()) if len(accepted) else 0.0,
        "accepted_accuracy": float(correct[accepted].mean()) if accepted.any() else None,
        "guaranteed_lower_bound": guarantee.guaranteed_lower_bound,
        "supported": guarantee.supported,
        "validation_coverage": guarantee.coverage,
        "rows_needed": guarantee.rows_needed,
        "method": guarantee.method,
    }
