"""`smallfleet eval`: score a specialist on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console


@click.command("eval")
@click.argument("specialist", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Labelled data (JSONL or CSV).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the metrics here as JSON.")
@click.option("--text-field", help="Text field; default: the one the specialist was trained with.")
@click.option("--label-field", help="Label field; default: the one the specialist was trained with.")
def command(specialist, data, json_out, text_field, label_field):
    """Evaluate SPECIALIST on --data.

    For classify specialists: prints accuracy, macro-F1, expected calibration error (ECE), the risk-coverage
    table (accuracy on the most confident 80/90/95/100% of inputs), per-label
    scores and the most confused label pairs. The JSON holds the same numbers:
    `n`, `accuracy`, `macro_f1`, `ece`, `coverage`, `per_label`, `confused`.
    """
    from smallfleet.tasks.base import kind_module, load_specialist

    model = load_specialist(specialist)
    metrics = kind_module(model.kind).evaluate(model, data, Console(), text=text_field, label=label_field)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
