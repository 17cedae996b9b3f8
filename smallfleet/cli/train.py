"""`smallfleet train`: one specialist from flags, or every task of a fleet.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console

from smallfleet.cli.options import runtime_option, use_runtime
from smallfleet.config import DEFAULT_BASE, FieldMap, FleetSpec, GenerateSettings, TaskSpec, TrainSettings
from smallfleet.errors import ConfigError

_DEFAULTS = TrainSettings()
_GEN = GenerateSettings()
# flags that only kind `generate` reads (GenerateSettings); --batch-size, --learning-rate, --max-length,
# --seed and --valid-fraction go to GenerateSettings too when the kind is generate
_GENERATE_ONLY = ("max_steps", "gradient_accumulation", "lora_r", "lora_alpha", "max_new_tokens", "instruction")


@click.command("train")
@click.argument("fleet", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["classify", "extract", "generate"]), default="classify", show_default=True, help="Task kind: classify (text -> label), extract (text -> JSON object of fields) or generate (text -> text, LoRA on a small LLM).")
@click.option("--train", "train_file", type=click.Path(path_type=Path), help="Training data (JSONL or CSV).")
@click.option("--valid", "valid_file", type=click.Path(path_type=Path), help="Validation data; default: a seeded stratified split of --train.")
@click.option("--test", "test_file", type=click.Path(path_type=Path), help="Test data, evaluated after training.")
@click.option("--text-field", default="text", show_default=True, help="Field/column holding the input text.")
@click.option("--label-field", default="label", show_default=True, help="Field/column holding the label; for extract, the JSON object of gold values (rows without `label` may use `fields`).")
@click.option("--schema", type=click.Path(dir_okay=False, path_type=Path), help="Extract: JSON Schema of the output object (properties typed string, number, integer, date or enum; `required`). Optional with BIO data.")
@click.option("--tokens-field", help="Extract with BIO data: field holding the token list.")
@click.option("--tags-field", help="Extract with BIO data: field holding one BIO tag per token (B-<field>, I-<field>, O).")
@click.option("--input-field", help="Kind generate: field/column holding the input text (same as --text-field).")
@click.option("--output-field", default="output", show_default=True, help="Kind generate: field/column holding the target text.")
@click.option("--base", help="Base model: packaged name (see `smallfleet models`), local folder or .gguf, or hub id [default: minilm; smollm2-135m for generate].")
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
@click.option("--max-steps", type=int, help=f"Generate: optimizer steps [default: {_GEN.max_steps}].")
@click.option("--gradient-accumulation", type=int, help=f"Generate: micro-batches per step [default: {_GEN.gradient_accumulation}].")
@click.option("--lora-r", type=int, help=f"Generate: LoRA rank [default: {_GEN.lora_r}].")
@click.option("--lora-alpha", type=int, help=f"Generate: LoRA alpha [default: {_GEN.lora_alpha}].")
@click.option("--max-new-tokens", type=int, help=f"Generate: default answer length cap [default: {_GEN.max_new_tokens}].")
@click.option("--instruction", help="Generate: system prompt before every input [default: none].")
@runtime_option
def command(
    fleet, kind, train_file, valid_file, test_file, text_field, label_field, schema, tokens_field, tags_field,
    input_field, output_field, base, name, out, force, runtime, **settings
):
    """Fine-tune specialists.

    \b
    One specialist:  smallfleet train --kind classify --train data.jsonl --out DIR
    Extraction:      smallfleet train --kind extract --train data.jsonl --schema schema.json --out DIR
    BIO extraction:  smallfleet train --kind extract --train data.jsonl --tokens-field tokens --tags-field tags --out DIR
    Generative:      smallfleet train --kind generate --train d.jsonl --input-field dialogue
                       --output-field summary [--max-steps N] --out DIR
    A whole fleet:   smallfleet train fleet.yaml [--out DIR]

    Training writes to a temporary folder and moves it into place only when done:
    an interrupted run never damages a specialist that was already there. Settings
    given as flags override the fleet file's for every task.
    """
    from smallfleet.fleet import train_fleet, train_task

    use_runtime(runtime)  # generate: calibrate confidence on the runtime that will serve the adapter
    console = Console(stderr=True)
    generate = {k: settings.pop(k) for k in _GENERATE_ONLY}
    if kind == "generate":
        generate.update({k: settings.pop(k) for k in ("batch_size", "learning_rate", "max_length", "seed", "valid_fraction")})
    wrong = [k for k, v in (settings if kind == "generate" else generate).items() if v is not None]
    if wrong and (fleet is None or kind == "generate"):
        raise ConfigError(f"--{wrong[0].replace('_', '-')} does not apply to --kind {kind}")
    if fleet is not None:
        if train_file is not None:
            raise ConfigError("give either a fleet file or --train, not both")
        spec = FleetSpec.from_file(fleet)
        if any(v is not None for v in generate.values()):
            raise ConfigError("generation flags (--max-steps, ...) apply to one --kind generate task; set them per task in the fleet file")
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
        fields=FieldMap(text=input_field or text_field, label=label_field, output=output_field, tokens=tokens_field,
                        tags=tags_field),
        base=base or DEFAULT_BASE[kind],
        training=TrainSettings().replace(**settings),
        generation=GenerateSettings().replace(**generate),
        schema=schema,
    )
    metrics = train_task(task, out, force, console)
    if "test" in metrics:
        from smallfleet.tasks.base import kind_module

        kind_module(kind).print_report(metrics["test"], console, title=f"{task.name}: test ({test_file})")
    console.print(f"[green]saved[/] {out}  (model card: {out / 'README.md'})")
