"""`smallfleet predict`: answer one text, or a whole file, with any kind of specialist."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import track

from smallfleet.cli.options import runtime_option, use_runtime


@click.command("predict")
@click.argument("specialist", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--text", "texts", multiple=True, help="A text to answer (repeatable).")
@click.option("--input", "input_file", type=click.Path(path_type=Path), help="JSONL or CSV file of texts.")
@click.option("--output", type=click.Path(path_type=Path), help="JSONL output for --input ('-' for stdout).")
@click.option("--text-field", help="Text field of --input; default: the one the specialist was trained with.")
@click.option("--batch-size", default=64, show_default=True, help="Texts per step for --input.")
@runtime_option
def command(specialist, texts, input_file, output, text_field, batch_size, runtime):
    """Answer texts with SPECIALIST (any kind).

    \b
    smallfleet predict DIR --text "where is my parcel?"
    smallfleet predict DIR --input in.jsonl --output out.jsonl

    Each output line is one JSON object with a calibrated `confidence` and the answer in the
    kind's own keys: classify `label` and `top_k` (with the input as `text`); extract `fields`
    (the JSON object), `valid` and `field_confidence` (with the input as `text`); generate `text`
    (with the input as `input`).
    """
    use_runtime(runtime)
    from smallfleet.data import load_examples
    from smallfleet.data.validate import check_rows
    from smallfleet.tasks import load_specialist

    if bool(texts) == bool(input_file):
        raise click.UsageError("give --text or --input (not both)")
    if input_file and not output:
        raise click.UsageError("--input needs --output (use '-' for stdout)")
    model = load_specialist(specialist)
    if texts:
        for text, answer in zip(texts, model.answer(list(texts))):
            click.echo(json.dumps(model.prediction(text, answer), ensure_ascii=False))
        return
    field = text_field or model.manifest.get("fields", {}).get("text", "text")
    examples = load_examples(input_file, field, None)
    check_rows(examples, str(input_file), need_labels=False)
    sink = sys.stdout if str(output) == "-" else None
    if sink is None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".partial")
        sink = tmp.open("w", encoding="utf-8")
    steps = range(0, len(examples), batch_size)
    for start in track(steps, description="predicting", console=Console(stderr=True), disable=sink is sys.stdout):
        chunk = examples[start : start + batch_size]
        for ex, answer in zip(chunk, model.answer([ex.text for ex in chunk])):
            sink.write(json.dumps(model.prediction(ex.text, answer), ensure_ascii=False) + "\n")
    if sink is not sys.stdout:
        sink.close()
        tmp.replace(output)
        Console(stderr=True).print(f"wrote {len(examples)} predictions to {output}")
