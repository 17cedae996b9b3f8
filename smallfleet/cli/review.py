"""`smallfleet review`: the human review queue (list, answer, export as training data)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from smallfleet.cli.options import db_option, example_fields, fleet_argument, open_database, task_manifest


@click.group("review")
def group():
    """Requests escalated to a person: list them, record answers, export them for retraining."""


@group.command("list")
@fleet_argument
@db_option
@click.option("--all", "show_all", is_flag=True, help="Include answered items.")
@click.option("--task", help="Only this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def list_command(fleet, db_url, show_all, task, as_json):
    """List pending review items (oldest first) with the specialist's guess."""
    from smallfleet.store.reviews import items

    rows = items(open_database(fleet, db_url), None if show_all else "pending", task)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    table = Table(title=f"{len(rows)} review item(s)")
    for col in ("id", "task", "status", "guess", "conf", "answer", "input"):
        table.add_column(col, overflow="fold")
    for r in rows:
        conf = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        table.add_row(str(r["id"]), r["task"] or "-", r["status"], r["guess"] or "-", conf, r["answer"] or "", r["input"][:80])
    Console().print(table)


@group.command("answer")
@fleet_argument
@click.argument("item_id", type=int)
@click.argument("answer")
@db_option
@click.option("--reviewer", help="Who answered (kept with the item).")
def answer_command(fleet, item_id, answer, db_url, reviewer):
    """Record ANSWER for review item ITEM_ID (for a classify task: one of its labels)."""
    from smallfleet.errors import ConfigError
    from smallfleet.store.reviews import answer as record
    from smallfleet.store.reviews import get

    db = open_database(fleet, db_url)
    item = get(db, item_id)
    labels = _labels(fleet, item["task"])
    if labels and answer not in labels:
        raise ConfigError(f"{answer!r} is not a label of task {item['task']!r} (labels: {', '.join(labels)})")
    record(db, item_id, answer, reviewer)
    click.echo(f"review #{item_id}: recorded {answer!r}")


@group.command("export")
@fleet_argument
@click.option("--task", required=True, help="Task whose answered items to export.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSONL file to write.")
@db_option
def export_command(fleet, task, out, db_url):
    """Write the answered items of --task as labelled JSONL rows, in the task's own field names,
    ready to add to its training data for the next `smallfleet train`."""
    from smallfleet.store.reviews import items

    rows = items(open_database(fleet, db_url), "answered", task, limit=1_000_000)
    text_field, label_field = example_fields(fleet, task)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({text_field: r["input"], label_field: r["answer"]}, ensure_ascii=False) + "\n")
    click.echo(f"wrote {len(rows)} labelled example(s) to {out}")


def _labels(fleet: Path, task: str | None) -> list[str]:
    return task_manifest(fleet, task).get("labels", [])
