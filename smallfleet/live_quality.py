"""Is the promise holding on live traffic?

The guarantee (`guarantee.py`) is a statement about validation data. Live traffic is checked
against it with judgements (`store/judgements.py`): ground truth on accepted answers, from
people, client feedback, or a live audit by the first upstream tier. This module turns
"k of n judged answers were right" into an exact (Clopper-Pearson) interval and a one-sided
binomial test against the bound the guarantee promised.

Agreement with a frontier model is a proxy: where the frontier itself is wrong, agreement
understates the specialist. A person's or a client's word, when present, replaces it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

INTERVAL = 0.95
"""Confidence of the reported interval."""
ALERT_LEVEL = 0.05
"""Significance at which live quality counts as below the promised bound."""


@dataclass
class LiveQuality:
    """Live accepted-answer quality of one task, and whether it breaks the promise."""

    judged: int
    """Accepted answers with a judgement."""
    agreed: int
    """Of those, the ones judged right."""
    rate: float | None
    """agreed / judged; None before any judgement."""
    low: float | None
    """Lower end of the exact 95% interval of the live quality."""
    high: float | None
    """Upper end of the exact 95% interval."""
    bound: float | None
    """The promised quality: the guaranteed lower bound (or the target of a threshold set by hand)."""
    p_value: float | None
    """P(at most `agreed` right of `judged` | quality at the bound): small means the promise is broken."""
    alert: bool
    """p_value < level: live quality is below the bound with significance."""
    level: float = ALERT_LEVEL

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        if not self.judged:
            return "no judged answers yet"
        text = f"{self.agreed}/{self.judged} right ({self.rate:.1%}, 95% interval {self.low:.1%}-{self.high:.1%})"
        if self.bound is not None:
            verdict = "BELOW" if self.alert else "consistent with"
            text += f", {verdict} the promised {self.bound:.1%} (p={self.p_value:.3g})"
        return text


def interval(agreed: int, judged: int, confidence: float = INTERVAL) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval of a binomial proportion."""
    from scipy.stats import beta

    if judged == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if agreed == 0 else float(beta.ppf(tail, agreed, judged - agreed + 1))
    high = 1.0 if agreed == judged else float(beta.ppf(1 - tail, agreed + 1, judged - agreed))
    return low, high


def assess(agreed: int, judged: int, bound: float | None, level: float = ALERT_LEVEL) -> LiveQuality:
    """Live quality from `agreed` right answers of `judged`, tested one-sided against `bound`.

    The test is re-run as judgements arrive, so over a long life some false alarms are expected at
    `level`; an alert is a reason to look (at the judged requests, and at drift), not proof.
    """
    from scipy.stats import binom

    if judged == 0:
        return LiveQuality(0, 0, None, None, None, bound, None, False, level)
    low, high = interval(agreed, judged)
    p_value = None if bound is None else float(binom.cdf(agreed, judged, bound))
    alert = p_value is not None and p_value < level
    return LiveQuality(judged, agreed, agreed / judged, low, high, bound, p_value, alert, level)
