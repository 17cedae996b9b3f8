"""`smallfleet logs` and `smallfleet costs`: read the gateway's request log."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from smallfleet.cli.options import db_option, fleet_argument, open_database, saved_task, write_training_rows


@click.command("logs")
@fleet_argument
@db_option
@click.option("--limit", default=20, show_default=True, help="Rows to show, newest first.")
@click.option("--task", help="Only this task.")
@click.option("--tier", help="Only requests answered by this tier (`specialist`, a tier name).")
@click.option("--escalated/--not-escalated", default=None, help="Only escalated (or only local) requests.")
@click.option("--errors", is_flag=True, help="Only failed requests.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--export", "export_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write --task's escalated requests that an upstream tier answered as labelled JSONL (training data).")
def logs_command(fleet, db_url, limit, task, tier, escalated, errors, as_json, export_file):
    """Show the latest requests the gateway answered for FLEET.

    With --export and --task, write the requests of that task that escalated and were
    answered upstream as labelled rows in the task's own field names, so the bigger
    model's answers become training data for the next version of the specialist.
    """
    from smallfleet.store.ledger import recent

    db = open_database(fleet, db_url)
    if export_file:
        if not task:
            raise click.UsageError("--export needs --task")
        _export(db, fleet, task, export_file)
        return
    rows = recent(db, limit, task, tier, escalated, errors)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    table = Table(title=f"last {len(rows)} requests")
    for col in ("time", "task", "tier", "conf", "esc", "status", "ms", "cost $"):
        table.add_column(col, no_wrap=True)
    for col in ("input", "output / error"):
        table.add_column(col, overflow="ellipsis", no_wrap=True, max_width=40)
    for r in rows:
        table.add_row(
            str(r["created_at"])[5:19], r["task"] or "-", r["tier"] or "-",
            "-" if r["confidence"] is None else f"{r['confidence']:.2f}", "yes" if r["escalated"] else "",
            r["status"], f"{r['latency_ms']:.1f}" if r["latency_ms"] is not None else "-", f"{r['cost_usd']:.6f}",
            r["input"] or "", r["error"] or r["output"] or "",
        )  # fmt: skip
    Console().print(table)


@click.command("costs")
@fleet_argument
@db_option
@click.option("--since", help="Only days from this one on (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print the rollup as JSON.")
def costs_command(fleet, db_url, since, as_json):
    """Cost rollup of FLEET's request log: spend against sending everything to the frontier tier.

    Totals, by task and by day: requests, escalations, spend, all-frontier spend
    (what the most expensive configured tier would have charged) and the saving; and, for
    free-form requests triage sent to a tier, the same by the tier it chose (`by_triage`).

    Then each task's live quality: of its accepted answers that have a judgement (a live
    audit by the first upstream tier, client feedback, or a person's review, strongest
    first), the share judged right, with an exact 95% interval, tested against the bound
    its guarantee promised; and the spend on audits, which is not in the figures above.
    """
    from smallfleet.report.live import live_quality
    from smallfleet.store.ledger import rollup

    db = open_database(fleet, db_url)
    summary = rollup(db, since)
    summary["live_quality"] = live_quality(db, fleet, since)
    summary["audit_cost_usd"] = round(sum(t["audit_cost_usd"] for t in summary["live_quality"].values()), 6)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    groups_by = [("by task", summary["by_task"]), ("by day", summary["by_day"])]
    if summary["by_triage"]:
        groups_by.append(("by triage decision (free-form requests)", summary["by_triage"]))
    for title, groups in groups_by:
        table = Table(title=f"costs {title}")
        for col in ("", "requests", "escalated", "rate", "errors", "spend $", "all-frontier $", "saving $", "saving %"):
            table.add_column(col, justify="right")
        for name, g in [*groups.items(), ("total", summary)]:
            table.add_row(
                name, str(g["requests"]), str(g["escalated"]), f"{g['escalation_rate']:.1%}", str(g["errors"]),
                f"{g['cost_usd']:.6f}", f"{g['frontier_cost_usd']:.6f}", f"{g['saving_usd']:.6f}",
                "-" if g["saving_pct"] is None else f"{g['saving_pct']:.1f}",
            )  # fmt: skip
        console.print(table)
    _print_live(console, summary)


def _print_live(console: Console, summary: dict) -> None:
    live = summary["live_quality"]
    if not live:
        console.print("live quality: no judged answers yet (set serving.audit_rate, answer reviews, or send feedback)")
        return
    table = Table(title="live quality of accepted answers (audits, feedback, reviews)")
    for col in ("task", "judged", "right", "95% interval", "promised", "p", "status", "audits", "audit $"):
        table.add_column(col, justify="right")
    for task, q in live.items():
        status = "-" if not q["judged"] or q["bound"] is None else ("BELOW" if q["alert"] else "ok")
        table.add_row(
            task, str(q["judged"]), "-" if q["rate"] is None else f"{q['rate']:.1%}",
            "-" if q["low"] is None else f"{q['low']:.1%}-{q['high']:.1%}",
            "-" if q["bound"] is None else f"{q['bound']:.1%}", "-" if q["p_value"] is None else f"{q['p_value']:.3g}",
            status, str(q["audits"]), f"{q['audit_cost_usd']:.6f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"audit spend: ${summary['audit_cost_usd']:.6f} (on top of the spend above)")


def _export(db, fleet: Path, task: str, out: Path) -> None:
    from smallfleet.flywheel.traffic import upstream_answers

    rows = [(text, answer) for _, (_, text, answer) in upstream_answers(db, task)]
    write_training_rows(saved_task(fleet, task), rows, out)
    click.echo(f"wrote {len(rows)} upstream-answered example(s) of {task} to {out}")
