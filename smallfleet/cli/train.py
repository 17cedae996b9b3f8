"""`smallfleet train`: one specialist from flags, or every task of a fleet.yaml.

The settings flags are generated from the task kinds' settings dataclasses (see
`cli/settings_flags.py`): flag name = YAML key = field name, help = the field's
docstring, so flags and fleet files cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console

from smallfleet.cli.options import runtime_option, use_runtime
from smallfleet.cli.settings_flags import field_flags, settings_flags, split_field_flags
from smallfleet.errors import ConfigError
from smallfleet.tasks import KINDS, FieldMap, TaskSpec, get_kind


def _kind_help() -> str:
    kinds = "; ".join(f"{name} ({get_kind(name).summary})" for name in KINDS.names())
    return f"Task kind: {kinds}."


@click.command("train")
@click.argument("fleet", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS.names()), default="classify", show_default=True, help=_kind_help())
@click.option("--train", "train_file", type=click.Path(path_type=Path), help="Training data (JSONL or CSV).")
@click.option("--valid", "valid_file", type=click.Path(path_type=Path),
              help="Validation data; default: a seeded split of --train (stratified by label for classify).")
@click.option("--test", "test_file", type=click.Path(path_type=Path), help="Test data, evaluated after training.")
@field_flags()
@click.option("--input-field", help="Same as --text-field (the input of a generate task).")
@click.option("--base", help="Base model: packaged name (see `smallfleet models`), local folder or .gguf, or hub id "
              "[default: the kind's: minilm for classify and extract, smollm2-135m for generate].")
@click.option("--name", help="Task name recorded in the specialist; default: the --out folder name.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output folder. Single task: the specialist. Fleet: one subfolder per task (default runs/<fleet name>).")
@click.option("--force", is_flag=True, help="Replace specialists already in the output folder.")
@settings_flags
@runtime_option
def command(fleet, kind, train_file, valid_file, test_file, input_field, base, name, out, force, runtime, **flags):
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
    given as flags override the fleet file's for every task that has them. Each
    setting's help says which kinds it applies to and their defaults.
    """
    from smallfleet.config import FleetSpec
    from smallfleet.fleet import train_fleet, train_task

    use_runtime(runtime)  # generate: calibrate confidence on the runtime that will serve the adapter
    console = Console(stderr=True)
    field_values, settings = split_field_flags(flags)
    if input_field:
        field_values["text"] = input_field
    if fleet is not None:
        if train_file is not None:
            raise ConfigError("give either a fleet file or --train, not both")
        if field_values:
            raise ConfigError(f"--{next(iter(field_values))}-field applies to one task; set `fields:` per task in the fleet file")
        spec = FleetSpec.from_file(fleet)
        train_fleet(spec, out or Path("runs") / spec.name, force=force, console=console, **settings)
        return
    if train_file is None or out is None:
        raise click.UsageError("give a fleet file, or --train FILE and --out DIR")
    task_kind = get_kind(kind)
    known = {f for f in task_kind.settings_class.__dataclass_fields__}
    wrong = [f"--{k.replace('_', '-')}" for k in settings if k not in known]
    wrong += [f"--{k}-field" for k in field_values if k not in task_kind.fields]
    if wrong:
        raise ConfigError(f"{wrong[0]} does not apply to --kind {kind}")
    task = TaskSpec(
        name=name or re.sub(r"[^\w-]", "_", out.resolve().name),
        kind=kind,
        train=train_file,
        valid=valid_file,
        test=test_file,
        fields=FieldMap(**field_values),
        base=base or "",
        settings=task_kind.settings_class().replace(**settings),
    )
    metrics = train_task(task, out, force, console)
    if "test" in metrics:
        task_kind.print_report(metrics["test"], console, title=f"{task.name}: test ({test_file})")
    console.print(f"[green]saved[/] {out}  (model card: {out / 'README.md'})")
