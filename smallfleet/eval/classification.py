"""Metrics for a classifier's answers: accuracy, macro-F1, per-label scores,
most-confused pairs, calibration error and the risk-coverage table."""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from smallfleet.calibration import ConfidenceCurve, expected_calibration_error
from smallfleet.tasks.base import Prediction

TOP_CONFUSED = 10


def classification_metrics(gold: list[str], predictions: list[Prediction]) -> dict:
    """Score `predictions` against `gold` labels.

    Returns a dict with `n`, `accuracy`, `macro_f1`, `ece`, `coverage` (share of most
    confident inputs -> accuracy on them), `per_label` and `confused` (most frequent
    gold -> predicted mistakes).
    """
    predicted = [p.label for p in predictions]
    confidence = np.array([p.confidence for p in predictions], dtype=float)
    correct = np.array([g == p for g, p in zip(gold, predicted)], dtype=bool)
    labels = sorted(set(gold) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    gold_labels = set(gold)
    macro_f1 = float(np.mean([f for lab, f in zip(labels, f1) if lab in gold_labels])) if gold else 0.0
    confused = Counter((g, p) for g, p in zip(gold, predicted) if g != p)
    curve = ConfidenceCurve.from_predictions(confidence, correct)
    return {
        "n": len(gold),
        "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "macro_f1": macro_f1,
        "ece": expected_calibration_error(confidence, correct),
        "coverage": curve.coverage_table(),
        "per_label": {
            lab: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for lab, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confused": [{"gold": g, "predicted": p, "count": c} for (g, p), c in confused.most_common(TOP_CONFUSED)],
    }
