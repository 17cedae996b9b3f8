"""`smallfleet export`: a fleet's adapters in the format a GPU server loads (vLLM multi-LoRA)."""

from __future__ import annotations

from pathlib import Path

import click

from smallfleet.cli.options import fleet_argument, saved_task


def _task_names(fleet: Path, tasks: tuple[str, ...]) -> list[str]:
    """The tasks asked for, else every task of the fleet whose kind exports an adapter."""
    from smallfleet.fleet import FLEET_INDEX
    from smallfleet.tasks import SavedTask
    from smallfleet.training.artifacts import read_json

    if tasks:
        return list(tasks)
    if not (fleet / FLEET_INDEX).is_file():  # one specialist folder
        return [SavedTask.open(fleet).name]
    names = list(read_json(fleet / FLEET_INDEX).get("tasks", {}))
    return [n for n in names if saved_task(fleet, n).kind.exports_adapter]


@click.command("export")
@fleet_argument
@click.option("--task", "tasks", multiple=True, help="A task to export (repeatable) [default: every task with an adapter].")
@click.option("--format", "fmt", type=click.Choice(["vllm"]), default="vllm", show_default=True,
              help="vllm: a PEFT folder per task (adapter_config.json + adapter_model.safetensors), as "
                   "`vllm serve --enable-lora --lora-modules` and peft load it.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write; each task's adapter goes in OUT/<task>/.")  # fmt: skip
@click.option("--base-model", help="The base's id or path on the GPU server, written as the adapters' "
              "base_model_name_or_path [default: the base's hub id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct].")
@click.option("--force", is_flag=True, help="Replace the task folders of an earlier export.")
def command(fleet, tasks, fmt, out, base_model, force):
    """Write the served version of FLEET's generate tasks as LoRA adapters a GPU server loads.

    Each task becomes OUT/<task>/, a PEFT folder; serve them all on one base with vLLM, and point
    a tier of kind `openai` at it with model "{task}" (each request goes to its task's adapter):

    \b
      smallfleet export runs/fleet --out adapters
      vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora \\
          --lora-modules dialog_summary=adapters/dialog_summary
    """
    names = _task_names(fleet, tasks)
    if not names:
        raise click.UsageError(f"{fleet} has no task with an adapter to export (generate tasks have one)")
    modules = []
    for name in names:
        card = saved_task(fleet, name).export_adapter(out / name, base_model, force)
        modules.append(f"{name}={(out / name).resolve()}")
        click.echo(f"{name}: wrote {out / name} (LoRA rank {card['rank']} on {card['base_model']})")
    click.echo(f"serve them with:\n  vllm serve {card['base_model']} --enable-lora --max-lora-rank "
               f"{max(16, card['rank'] or 16)} --lora-modules {' '.join(modules)}")  # fmt: skip
