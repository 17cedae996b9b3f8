"""`smallfleet eval`: score a specialist on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from smallfleet.cli.options import runtime_option, use_runtime


@click.command("eval")
@click.argument("specialist", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Labelled data (JSONL or CSV).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the metrics here as JSON.")
@click.option("--text-field", help="Text field; default: the one the specialist was trained with.")
@click.option("--label-field", help="Label field (extract: gold values object); default: the one the specialist was trained with.")
@click.option("--tokens-field", help="Extract with BIO data: token list field; default: as trained.")
@click.option("--tags-field", help="Extract with BIO data: BIO tag field; default: as trained.")
@click.option("--input-field", help="Generate: input field; default: the one the specialist was trained with.")
@click.option("--output-field", help="Generate: reference field; default: the one the specialist was trained with.")
@click.option("--limit", type=int, help="Score only the first N rows.")
@click.option("--compare-base", is_flag=True, help="Generate: also score the bare base model zero-shot, side by side.")
@runtime_option
def command(specialist, data, json_out, text_field, label_field, tokens_field, tags_field, input_field, output_field,
            limit, compare_base, runtime):  # fmt: skip
    """Evaluate SPECIALIST on --data.

    For classify specialists: prints accuracy, macro-F1, expected calibration error (ECE), the risk-coverage
    table (accuracy on the most confident 80/90/95/100% of inputs), per-label
    scores and the most confused label pairs. The JSON holds the same numbers:
    `n`, `accuracy`, `macro_f1`, `ece`, `coverage`, `per_label`, `confused`.

    For extract specialists: per-field precision/recall/F1, whole-record exact match,
    schema-valid rate, record ECE and risk-coverage (exact match on the most confident
    records); for BIO data also span-level micro F1 (conlleval/seqeval style). The JSON
    holds `f1` (span micro F1 for BIO data, else field micro F1), `exact_match`,
    `per_field` (field -> F1), `n`, `schema_valid`, `coverage`, `fields`.

    For generate specialists: ROUGE-1/2/L F1 on a 0-1 scale (`rouge1`, `rouge2`, `rougeL`, best of the
    row's `references` list when the file has one, else its output field), `n`, output length, time to
    first token and tokens/s; with --compare-base also `base_zero_shot` with the same numbers.
    """
    from smallfleet.tasks.base import kind_module, load_specialist

    use_runtime(runtime)
    model = load_specialist(specialist)
    extra = {}
    if model.kind == "generate":
        extra = {"text": input_field or text_field, "output": output_field, "compare_base": compare_base}
    elif input_field or output_field or compare_base:
        raise click.UsageError("--input-field, --output-field and --compare-base apply to generate specialists")
    if model.kind == "extract":
        extra = {"tokens": tokens_field, "tags": tags_field}
    elif tokens_field or tags_field:
        raise click.UsageError("--tokens-field and --tags-field apply to extract specialists")
    metrics = kind_module(model.kind).evaluate(
        model, data, Console(), **{"text": text_field, "label": label_field, "limit": limit, **extra}
    )
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
