"""Metrics for a classifier's answers (accuracy, macro-F1, per-label scores, most-confused
pairs, calibration error, the risk-coverage table) and the printed report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import precision_recall_fscore_support

from smallfleet.calibration import ConfidenceCurve, expected_calibration_error

TOP_CONFUSED = 10


def classification_metrics(gold: list[str], predictions: list) -> dict:
    """Score `predictions` (objects with `label` and `confidence`) against `gold` labels.

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


def print_classification_report(metrics: dict, console: Console, title: str = "evaluation") -> None:
    """Summary, risk-coverage, per-label and most-confused tables for one classifier."""
    summary = Table(title=title, show_header=True)
    for col in ("n", "accuracy", "macro-F1", "ECE"):
        summary.add_column(col, justify="right")
    summary.add_row(str(metrics["n"]), f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}", f"{metrics['ece']:.4f}")
    console.print(summary)

    coverage = Table(title="risk-coverage: accuracy on the most confident share", show_header=True)
    for level in metrics["coverage"]:
        coverage.add_column(f"{float(level):.0%}", justify="right")
    coverage.add_row(*(f"{acc:.4f}" for acc in metrics["coverage"].values()))
    console.print(coverage)

    per_label = Table(title="per label", show_header=True)
    for col in ("label", "precision", "recall", "F1", "support"):
        per_label.add_column(col, justify="left" if col == "label" else "right")
    for label, m in sorted(metrics["per_label"].items(), key=lambda kv: kv[1]["f1"]):
        per_label.add_row(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(per_label)

    if metrics["confused"]:
        confused = Table(title="most confused (gold -> predicted)", show_header=True)
        for col in ("gold", "predicted", "count"):
            confused.add_column(col, justify="right" if col == "count" else "left")
        for row in metrics["confused"]:
            confused.add_row(row["gold"], row["predicted"], str(row["count"]))
        console.print(confused)


def evaluate_file(specialist, data: Path, console: Console, fields: dict[str, str], limit: int | None = None) -> dict:
    """Score a classify specialist on the labelled file `data` and print the report.

    Args:
        fields: `text` / `label` field names overriding those the specialist was trained with.
        limit: score only the first N rows.
    """
    from smallfleet.data import load_examples
    from smallfleet.data.validate import check_rows

    trained = specialist.manifest.get("fields", {})
    text_field = fields.get("text") or trained.get("text", "text")
    label_field = fields.get("label") or trained.get("label", "label")
    examples = load_examples(data, text_field, label_field)[: limit or None]
    check_rows(examples, str(data))
    predictions = specialist.predict([ex.text for ex in examples])
    metrics = classification_metrics([ex.label for ex in examples], predictions)
    metrics["data"] = str(data)
    metrics["answers"] = {"confidence": [p.confidence for p in predictions],
                          "correct": [p.label == ex.label for p, ex in zip(predictions, examples)]}  # fmt: skip
    print_classification_report(metrics, console, title=f"{specialist.name} on {data}")
    return metrics
