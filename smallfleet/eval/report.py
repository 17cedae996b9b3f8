"""Print evaluation results as tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


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
