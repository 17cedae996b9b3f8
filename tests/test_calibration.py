import numpy as np
import torch

from smallfleet.calibration import ConfidenceCurve, expected_calibration_error, fit_temperature


def test_temperature_fixes_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    n, k = 4000, 5
    labels = torch.randint(0, k, (n,), generator=g)
    true_logits = torch.randn(n, k, generator=g)
    true_logits[torch.arange(n), labels] += 1.5
    # sample labels from the calibrated model, then make the network 4x over-confident
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    t = fit_temperature(true_logits * 4, labels)
    assert 3.3 < t < 4.7
    probs = torch.softmax(true_logits * 4, -1)
    before = expected_calibration_error(probs.max(-1).values.numpy(), (probs.argmax(-1) == labels).numpy())
    probs_t = torch.softmax(true_logits * 4 / t, -1)
    after = expected_calibration_error(probs_t.max(-1).values.numpy(), (probs_t.argmax(-1) == labels).numpy())
    assert after < before / 3


def test_ece_zero_when_confidence_matches_accuracy():
    conf = np.full(1000, 0.7)
    correct = np.arange(1000) < 700
    assert expected_calibration_error(conf, correct) < 1e-9
    assert abs(expected_calibration_error(np.full(10, 0.9), np.zeros(10)) - 0.9) < 1e-9


def test_threshold_is_lowest_meeting_target_and_coverage_table():
    conf = np.array([0.99, 0.95, 0.9, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    curve = ConfidenceCurve.from_predictions(conf[::-1], correct[::-1])  # order must not matter
    # top 6 (>=0.7): 5/6=0.833; top 5 (>=0.8): 4/5=0.8; cut between the two 0.9s is not allowed
    assert curve.threshold_for(0.8) == (0.7, 6 / 8)
    assert curve.threshold_for(0.85) == (0.95, 2 / 8)
    threshold, coverage = curve.threshold_for(1.01)
    assert coverage == 0 and threshold > 0.99
    table = curve.coverage_table()
    assert table["1.0"] == 5 / 8 and table["0.8"] == 5 / 6
    again = ConfidenceCurve.from_dict(curve.to_dict())
    assert again.threshold_for(0.8) == curve.threshold_for(0.8)
