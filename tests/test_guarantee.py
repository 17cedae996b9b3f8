"""The escalation guarantee: its promise holds over many draws of validation data where the
point-estimate rule's does not, and it says plainly when the data cannot support it."""

from __future__ import annotations

import numpy as np
import pytest

from smallfleet.calibration import ConfidenceCurve
from smallfleet.guarantee import cascade_on, error_upper_bound, guaranteed_threshold, rows_needed


def draw(rng, n):
    """A calibrated specialist's answers: right with probability equal to the confidence."""
    confidence = rng.beta(5, 1, n)
    return confidence, rng.uniform(0, 1, n) < confidence


def test_clopper_pearson_bound_matches_known_values():
    assert error_upper_bound(0, 59, 0.05) == pytest.approx(0.0495, abs=1e-3)  # rule of three: ~3/n
    assert error_upper_bound(5, 100, 0.05) == pytest.approx(0.1024, abs=1e-3)
    assert error_upper_bound(3, 3, 0.05) == 1.0 and error_upper_bound(0, 0, 0.05) == 1.0


@pytest.mark.parametrize("n", [300, 2000])
def test_accepted_quality_misses_the_target_in_at_most_delta_of_draws(n):
    rng = np.random.default_rng(n)
    target, delta, draws = 0.95, 0.1, 200
    missed_guaranteed = missed_point = 0
    for _ in range(draws):
        conf, right = draw(rng, 2 * n)
        valid = ConfidenceCurve.from_predictions(conf[:n], right[:n])
        g = guaranteed_threshold(valid, target, delta)
        point, _ = valid.threshold_for(target)
        live = cascade_on(g, conf[n:], right[n:])
        missed_guaranteed += live["accepted_accuracy"] is not None and live["accepted_accuracy"] < target
        accepted = conf[n:] >= point
        missed_point += right[n:][accepted].mean() < target
    assert missed_guaranteed / draws <= delta
    assert missed_point / draws > 0.3  # the old rule misses about half the time: what the guarantee fixes


def test_a_supported_guarantee_reports_its_bound_and_coverage():
    rng = np.random.default_rng(1)
    conf, right = draw(rng, 5000)
    g = guaranteed_threshold(ConfidenceCurve.from_predictions(conf, right), 0.95, 0.05)
    assert g.supported and g.guaranteed_lower_bound >= 0.95 and g.accepted_quality >= g.guaranteed_lower_bound
    assert 0.05 < g.coverage < 1 and "accept confidence >= " in g.describe()


def test_too_few_rows_escalate_everything_and_name_the_rows_needed():
    conf = np.full(36, 0.99)
    g = guaranteed_threshold(ConfidenceCurve.from_predictions(conf, np.ones(36, bool)), 0.95, 0.05)
    assert not g.supported and g.coverage == 0 and g.threshold > 1  # escalates even a confidence of exactly 1
    assert g.rows_needed == rows_needed(0.95, 0.05, 1.0) and g.rows_needed > 36
    assert f"about {g.rows_needed} validation rows" in g.describe()
    live = cascade_on(g, np.append(conf, 1.0), np.ones(37, bool))
    assert live["coverage"] == 0 and live["accepted_accuracy"] is None
    weak = guaranteed_threshold(ConfidenceCurve.from_predictions(conf, np.arange(36) % 2 == 0), 0.95, 0.05)
    assert not weak.supported and weak.rows_needed is None and "does not reach the target" in weak.describe()
