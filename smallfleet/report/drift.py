"""Drift seen from the request log: a task that escalates clearly more often than its
validation data predicted is being sent inputs unlike those it was trained on (or its
inputs changed). The check needs no labels, so it speaks before live quality can."""

from __future__ import annotations

DRIFT_LEVEL = 0.01
"""Significance at which a higher escalation rate counts as drift."""
MIN_REQUESTS = 20
"""Fewer requests than this give no verdict."""


def escalation_drift(escalated: int, requests: int, expected: float | None, level: float = DRIFT_LEVEL) -> dict:
    """Whether `escalated` of `requests` is significantly above the `expected` rate (1 - validation coverage).

    Returns:
        {verdict: "drifting" | "steady" | "too few requests" | "escalates everything", rate, expected, p_value}; p_value is
        P(at least `escalated` escalations | the expected rate), an exact one-sided binomial test.
    """
    rate = escalated / requests if requests else None
    out = {"rate": rate, "expected": expected, "p_value": None}
    if expected is None or expected >= 1:
        return {**out, "verdict": "escalates everything"}
    if requests < MIN_REQUESTS:
        return {**out, "verdict": "too few requests"}
    from scipy.stats import binom

    p = float(binom.sf(escalated - 1, requests, expected))
    return {**out, "p_value": p, "verdict": "drifting" if p < level else "steady"}
