"""`smallfleet feedback` and `smallfleet traffic`: ground truth on logged requests, and the
labelled examples the log has gathered for the next version of a task."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from smallfleet.cli.options import db_option, fleet_argument, open_database, saved_task, write_training_rows


@click.command("feedback")
@fleet_argument
@click.argument("request_id")
@click.option("--answer", help="The right answer: a label, a text, or a JSON object (extract tasks).")
@click.option("--correct/--wrong", default=None, help="Whether the answer given was right (instead of --answer).")
@db_option
def feedback_command(fleet, request_id, answer, correct, db_url):
    """Record feedback on the logged request REQUEST_ID (a chat completion's `id`).

    Exactly as `POST /v1/feedback` does, with an admin's rights: the right answer must be
    valid for the request's task; it is stored as ground truth for live quality (when the
    specialist's answer was served) and as a labelled example for retraining (see
    `smallfleet traffic`).
    """
    from smallfleet.flywheel.feedback import FeedbackError, give_feedback

    if (answer is None) == (correct is None):
        raise click.UsageError("give exactly one of --answer and --correct/--wrong")
    try:
        stored = give_feedback(open_database(fleet, db_url), lambda task: saved_task(fleet, task), request_id, answer,
                               correct, key="(shell)", role="admin")  # fmt: skip
    except FeedbackError as exc:
        raise click.ClickException(str(exc)) from None
    verdict = {True: "the answer given was right", False: "the answer given was wrong", None: "the answer given was not the specialist's"}[stored["agrees"]]  # fmt: skip
    click.echo(f"feedback on {request_id} ({stored['task']}) recorded: {verdict}")


@click.command("traffic")
@fleet_argument
@click.option("--task", required=True, help="The task whose labelled traffic to gather.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as training JSONL here.")
@click.option("--since", help="Only traffic from this day on (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@db_option
def traffic_command(fleet, task, out, since, as_json, db_url):
    """The labelled examples --task's request log has gathered, for retraining.

    \b
    Sources, strongest first (a request with several keeps the strongest):
      human     answers to the task's review items
      feedback  right answers sent as feedback, and answers confirmed correct
      upstream  an upstream tier's answers to escalated requests (distillation)
    Every answer is checked by the task; exact duplicates are dropped; the same text with
    different answers is reported as a conflict (the strongest, then latest, answer is kept).
    With --out, the rows are written in the task's own field names, ready to train on.
    """
    from smallfleet.flywheel.traffic import labelled_traffic

    saved = saved_task(fleet, task)
    traffic = labelled_traffic(open_database(fleet, db_url), saved, since)
    if out:
        write_training_rows(saved, [(r.text, r.answer) for r in traffic.rows], out)
    summary = traffic.summary()
    if as_json:
        click.echo(json.dumps({**summary, "out": str(out) if out else None}, indent=2, ensure_ascii=False))
        return
    console = Console()
    table = Table(title=f"labelled traffic of {task}")
    for col in ("source", "rows"):
        table.add_column(col)
    for source, n in summary["by_source"].items():
        table.add_row(source, str(n))
    table.add_row("total", str(summary["rows"]))
    console.print(table)
    console.print(f"dropped: {traffic.duplicates} exact duplicate(s), {traffic.superseded} answer(s) superseded by a "
                  f"stronger source, {traffic.invalid} invalid for the task")  # fmt: skip
    for c in traffic.conflicts[:10]:
        answers = "; ".join(f"{a!r} ({', '.join(s)})" for a, s in c["answers"].items())
        console.print(f"[yellow]conflict[/] {c['text'][:80]!r}: {answers}; kept {c['kept']!r}")
    if len(traffic.conflicts) > 10:
        console.print(f"... and {len(traffic.conflicts) - 10} more conflicts (see --json)")
    if out:
        console.print(f"wrote {summary['rows']} row(s) to {out}")


@click.command("versions")
@fleet_argument
@click.option("--task", help="Only this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: task -> list of {version, served, metrics, ...}.")
@db_option
def versions_command(fleet, task, as_json, db_url):
    """List the versions of FLEET's tasks and which one each serves.

    `v1` is what `smallfleet train` wrote; later versions come from retraining. A running
    gateway serves what `promote` and `rollback` point to, switching within seconds.
    """
    from smallfleet.flywheel.versions import list_versions
    from smallfleet.store import database_url
    from smallfleet.store.shadow import agreement

    found = list_versions(fleet, task)
    url = database_url(fleet, db_url)
    if db_url or not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).is_file():
        shadowed = agreement(open_database(fleet, db_url), task)
        for name, versions in found.items():
            for v in versions:
                if (name, v["version"]) in shadowed:
                    v["shadow"] = shadowed[(name, v["version"])]
    if as_json:
        click.echo(json.dumps(found[task] if task else found, indent=2, ensure_ascii=False))
        return
    table = Table(title="versions")
    for col in ("task", "version", "served", "created", "test", "threshold", "coverage", "shadow", "gate"):
        table.add_column(col)
    for name, versions in found.items():
        for v in versions:
            test = (v.get("metrics") or {}).get("test") or (v.get("metrics") or {}).get("validation") or {}
            score = next((f"{k} {test[k]:.3f}" for k in ("accuracy", "f1", "rougeL") if k in test), "-")
            cascade = v.get("cascade") or {}
            table.add_row(name, v["version"], "yes" if v["served"] else "", str(v.get("created") or "")[:19], score,
                          f"{cascade['threshold']:.3f}" if cascade.get("supported") else "escalate all",
                          f"{cascade.get('coverage', 0):.0%}", _shadow_cell(v.get("shadow")),
                          _gate_cell(v.get("gate")))  # fmt: skip
    Console().print(table)


def _shadow_cell(shadow: dict | None) -> str:
    if not shadow:
        return ""
    final = "" if shadow["agrees_final"] is None else f", {shadow['agrees_final']:.0%} of {shadow['escalated']} escalated"
    return f"{shadow['agrees_served']:.0%} of {shadow['requests']}{final}"


def _gate_cell(gate: dict | None) -> str:
    if not gate:
        return ""
    return f"{'passed' if gate['passed'] else 'failed'} vs {gate['against']}"


@click.command("promote")
@fleet_argument
@click.option("--task", required=True, help="The task.")
@click.option("--version", "version", required=True, help="The version to serve, e.g. v2.")
def promote_command(fleet, task, version):
    """Serve VERSION of --task (a running gateway switches within seconds, without a restart)."""
    from smallfleet.flywheel.versions import promote

    promote(fleet, task, version)
    click.echo(f"{task}: serving {version}")


@click.command("rollback")
@fleet_argument
@click.option("--task", required=True, help="The task.")
def rollback_command(fleet, task):
    """Serve the version of --task served before the current one (repeat to go further back)."""
    from smallfleet.flywheel.versions import rollback

    version = rollback(fleet, task)
    click.echo(f"{task}: rolled back, serving {version}")


@click.command("retrain")
@fleet_argument
@click.option("--task", required=True, help="The task to retrain.")
@click.option("--promote/--no-promote", "promote_when_passed", default=True, show_default=True,
              help="Serve the candidate when the gate passes (--no-promote only reports).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write {candidate, promoted, added_rows, gate, ...} here.")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="Gate: significance of the paired test that would find the candidate worse.")
@click.option("--max-ece", type=float, default=0.10, show_default=True, help="Gate: largest calibration error allowed.")
@click.option("--margin", type=float, default=0.01, show_default=True,
              help="Gate, graded kinds (field F1, ROUGE): how far below zero the lower bound of the candidate's "
                   "mean score improvement (paired bootstrap) may fall.")
@click.option("--calibrate-on", type=click.Choice(["all", "trusted"]), default="all", show_default=True,
              help="Without a validation file, calibrate the candidate (and set its threshold) on a slice of everything "
                   "it trains on, upstream answers included, so the guarantee is agreement with the upstream (all); or "
                   "on a slice of the task's data plus human and feedback answers only (trusted), for an upstream "
                   "that is often wrong.")
@db_option
def retrain_command(fleet, task, promote_when_passed, json_out, alpha, max_ece, margin, calibrate_on, db_url):
    """Train a candidate version of --task on its training data plus its labelled traffic, and promote it
    only when it provably does no worse than the served version.

    \b
    The gate compares both versions on a frozen evaluation set (the task's test file, else the
    seeded slice of its training data `train` set aside) and on a held-back fifth of the new
    labelled traffic:
      - not worse by a paired test at --alpha: exact one-sided McNemar on right/wrong answers
        (labels); a paired bootstrap of the mean item score (field F1, ROUGE-L) whose lower
        bound must clear -(--margin) for graded kinds;
      - calibration error at most --max-ece (the candidate is calibrated on the task's validation
        file, else on --calibrate-on's rows);
      - at the task's quality target, it accepts at least as many requests (fewer escalations).
    Every decision is written into the candidate's folder (gate.json and GATE.md). On promotion
    the fleet's router, if it has one, is refit on the tasks' texts plus their labelled traffic.
    With no new labelled rows nothing changes. A crash or Ctrl-C leaves the served version as it was.
    """
    from smallfleet.flywheel.gate import GateSettings
    from smallfleet.flywheel.retrain import retrain

    result = retrain(fleet, task, open_database(fleet, db_url), Console(stderr=True), promote_when_passed,
                     GateSettings(alpha=alpha, max_ece=max_ece, margin=margin, calibrate_on=calibrate_on))  # fmt: skip
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
