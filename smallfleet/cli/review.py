"""`smallfleet review`: the human review queue (list, answer, export as training data)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from smallfleet.cli.options import db_option, fleet_argument, open_database, saved_task, write_training_rows


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
    """Record ANSWER for review item ITEM_ID.

    The answer must be valid for the item's task: one of its labels (classify), a JSON object that
    validates against its schema (extract), or a non-empty text (generate). It is stored in the
    task's canonical form (e.g. a normalized record), exactly as the training row will carry it,
    and whether the specialist's guess was right is kept as ground truth (see `smallfleet costs`).
    """
    from smallfleet.flywheel.review import answer_review

    item = answer_review(open_database(fleet, db_url), lambda name: saved_task(fleet, name), item_id, answer, reviewer)
    answer = item["answer"]
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
    write_training_rows(saved_task(fleet, task), [(r["input"], r["answer"]) for r in rows], out)
    click.echo(f"wrote {len(rows)} labelled example(s) to {out}")
