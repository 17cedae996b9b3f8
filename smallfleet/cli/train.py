"""`smallfleet train`: one specialist from flags, or every task of a fleet.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console

from smallfleet.config import FieldMap, FleetSpec, TaskSpec, TrainSettings
from smallfleet.errors import ConfigError

_DEFAULTS = TrainSettings()


@click.command("train")
@click.argument("fleet", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["classify", "extract"]), default="classify", show_default=True, help="Task kind: classify (text -> label) or extract (text -> JSON object of fields).")
@click.option("--train", "train_file", type=click.Path(path_type=Path), help="Training data (JSONL or CSV).")
@click.option("--valid", "valid_file", type=click.Path(path_type=Path), help="Validation data; default: a seeded stratified split of --train.")
@click.option("--test", "test_file", type=click.Path(path_type=Path), help="Test data, evaluated after training.")
@click.option("--text-field", default="text", show_default=True, help="Field/column holding the input text.")
@click.option("--label-field", default="label", show_default=True, help="Field/column holding the label; for extract, the JSON object of gold values (rows without `label` may use `fields`).")
@click.option("--schema", type=click.Path(dir_okay=False, path_type=Path), help="Extract: JSON Schema of the output object (properties typed string, number, integer, date or enum; `required`). Optional with BIO data.")
@click.option("--tokens-field", help="Extract with BIO data: field holding the token list.")
@click.option("--tags-field", help="Extract with BIO data: field holding one BIO tag per token (B-<field>, I-<field>, O).")
@click.option("--base", default="minilm", show_default=True, help="Base model: packaged name (see `smallfleet models`), local folder or .gguf, or hub id.")
@click.option("--name", help="Task name recorded in the specialist; default: the --out folder name.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder. Single task: the specialist. Fleet: one subfolder per task (default runs/<fleet name>).")
@click.option("--force", is_flag=True, help="Replace specialists already in the output folder.")
@click.option("--epochs", type=int, help=f"Maximum epochs [default: {_DEFAULTS.epochs}].")
@click.option("--batch-size", type=int, help=f"Batch size [default: {_DEFAULTS.batch_size}].")
@click.option("--learning-rate", type=float, help=f"Encoder peak learning rate [default: {_DEFAULTS.learning_rate}].")
@click.option("--head-learning-rate", type=float, help=f"Head peak learning rate [default: {_DEFAULTS.head_learning_rate}].")
@click.option("--label-smoothing", type=float, help=f"Label smoothing [default: {_DEFAULTS.label_smoothing}].")
@click.option("--max-length", type=int, help=f"Max tokens per text; extract cuts longer texts into overlapping windows of this size [default: {_DEFAULTS.max_length}].")
@click.option("--patience", type=int, help=f"Early-stopping patience in epochs [default: {_DEFAULTS.patience}].")
@click.option("--seed", type=int, help=f"Random seed [default: {_DEFAULTS.seed}].")
@click.option("--valid-fraction", type=float, help=f"Held-out share when no --valid [default: {_DEFAULTS.valid_fraction}].")
def command(
    fleet, kind, train_file, valid_file, test_file, text_field, label_field, schema, tokens_field, tags_field,
    base, name, out, force, **settings
):
    """Fine-tune specialists.

    \b
    One specialist:  smallfleet train --kind classify --train data.jsonl --out DIR
    Extraction:      smallfleet train --kind extract --train data.jsonl --schema schema.json --out DIR
    BIO extraction:  smallfleet train --kind extract --train data.jsonl --tokens-field tokens --tags-field tags --out DIR
    A whole fleet:   smallfleet train fleet.yaml [--out DIR]

    Training writes to a temporary folder and moves it into place only when done:
    an interrupted run never damages a specialist that was already there. Settings
    given as flags override the fleet file's for every task.
    """
    from smallfleet.fleet import train_fleet, train_task

    console = Console(stderr=True)
    if fleet is not None:
        if train_file is not None:
            raise ConfigError("give either a fleet file or --train, not both")
        spec = FleetSpec.from_file(fleet)
        train_fleet(spec, out or Path("runs") / spec.name, force=force, console=console, **settings)
        return
    if train_file is None or out is None:
        raise click.UsageError("give a fleet file, or --train FILE and --out DIR")
    task = TaskSpec(
        name=name or re.sub(r"[^\w-]", "_", out.resolve().name),
        kind=kind,
        train=train_file,
        valid=valid_file,
        test=test_file,
        fields=FieldMap(text=text_field, label=label_field, tokens=tokens_field, tags=tags_field),
        base=base,
        training=TrainSettings().replace(**settings),
        schema=schema,
    )
    metrics = train_task(task, out, force, console)
    if "test" in metrics:
        from smallfleet.tasks.base import kind_module

        kind_module(kind).print_report(metrics["test"], console, title=f"{task.name}: test ({test_file})")
    console.print(f"[green]saved[/] {out}  (model card: {out / 'README.md'})")
