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

    Prints accuracy, macro-F1, expected calibration error (ECE), the risk-coverage
    table (accuracy on the most confident 80/90/95/100% of inputs), per-label
    scores and the most confused label pairs. The JSON holds the same numbers:
    `n`, `accuracy`, `macro_f1`, `ece`, `coverage`, `per_label`, `confused`.
    """
    from smallfleet.data import load_examples
    from smallfleet.data.validate import check_rows
    from smallfleet.eval.classification import classification_metrics
    from smallfleet.eval.report import print_classification_report
    from smallfleet.tasks import load_specialist

    model = load_specialist(specialist)
    fields = model.manifest.get("fields", {})
    examples = load_examples(data, text_field or fields.get("text", "text"), label_field or fields.get("label", "label"))
    check_rows(examples, str(data))
    metrics = classification_metrics([ex.label for ex in examples], model.predict([ex.text for ex in examples]))
    metrics["data"] = str(data)
    print_classification_report(metrics, Console(), title=f"{model.name} on {data}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
