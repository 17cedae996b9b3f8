"""`smallfleet drift` and `smallfleet watch`: is recent traffic still like the training data,
and retraining by itself when the fleet's `retrain_when` conditions hold."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from smallfleet.cli.options import db_option, fleet_argument, open_database
from smallfleet.cli.settings_flags import dataclass_flags
from smallfleet.config import RetrainWhen
from smallfleet.flywheel.monitor import DriftSettings


@click.command("drift")
@fleet_argument
@click.option("--task", help="Only this task.")
@dataclass_flags(DriftSettings)
@click.option("--json", "json_out", type=click.Path(dir_okay=True, path_type=Path), default=None,
              is_flag=False, flag_value="-", help="Write the report as JSON to this file (`--json -` or bare: stdout).")
@db_option
def drift_command(fleet, task, json_out, db_url, **settings):
    """Compare each task's recent requests with its training baseline.

    \b
    Signals, each with a statistic, a p-value and a verdict (drift when p < --alpha):
      input             MMD permutation test on sentence embeddings of recent vs training inputs
      confidence        Kolmogorov-Smirnov test of recent vs validation confidences
      escalation_rate   binomial test of the share below the threshold vs validation's share
      answer_mix        chi-square test of the predicted answers vs the training mix (label kinds)
      router_none_rate  binomial test of `none` routes vs the router's validation (fleets with a router)
    Only requests of the served version count. A signal that cannot be computed (too few
    requests, a specialist trained before drift baselines were kept) says why.
    """
    from smallfleet.flywheel.monitor import check_drift, fleet_targets
    from smallfleet.models.embed import SentenceEmbedder

    drift_settings = DriftSettings().replace(**settings)
    tasks, router = fleet_targets(fleet, task)
    report = check_drift(tasks, router, open_database(fleet, db_url), drift_settings, SentenceEmbedder())
    report = _shaped(report, task)
    if json_out is not None:
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        if str(json_out) == "-":
            click.echo(text, nl=False)
        else:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(text, encoding="utf-8")
    if json_out is None or str(json_out) != "-":
        _print(report)


def _shaped(report: dict, task: str | None) -> dict:
    """The report with `signals`: the one task's (and the router's), or every signal as `task/signal`."""
    signals = {}
    for name, entry in report["tasks"].items():
        for key, signal in entry["signals"].items():
            signals[key if task else f"{name}/{key}"] = signal
    if report["router"] is not None:
        signals["router_none_rate"] = report["router"]
    return {"drift": report["drift"], "signals": signals, **{k: v for k, v in report.items() if k != "drift"}}


def _print(report: dict) -> None:
    console = Console()
    table = Table(title="drift: recent requests vs the training baseline" + (" -> DRIFT" if report["drift"] else ""))
    for col in ("task", "signal", "n", "statistic", "p-value", "verdict", "note"):
        table.add_column(col, overflow="fold")
    rows = [(name, key, s) for name, entry in report["tasks"].items() for key, s in entry["signals"].items()]
    if report["router"] is not None:
        rows.append(("(router)", "router_none_rate", report["router"]))
    for name, key, s in rows:
        verdict = "-" if s["drift"] is None else ("[red]drift[/]" if s["drift"] else "ok")
        note = s["reason"] or ", ".join(f"{k} {v:.3g}" for k, v in s["detail"].items() if isinstance(v, float))
        table.add_row(name, key, str(s["n"]), "-" if s["statistic"] is None else f"{s['statistic']:.4g}",
                      "-" if s["p_value"] is None else f"{s['p_value']:.3g}", verdict, note)  # fmt: skip
    console.print(table)


@click.command("watch")
@fleet_argument
@dataclass_flags(RetrainWhen)
@click.option("--once", is_flag=True, help="Check once and exit (for scripts and tests).")
@db_option
def watch_command(fleet, once, db_url, **conditions):
    """Retrain FLEET's tasks by themselves when the fleet's `retrain_when:` conditions hold.

    \b
    Every --check-every seconds, for each task:
      - count the labelled rows in the request log that no version has seen yet;
      - with --on-drift, run the drift check (see `smallfleet drift`);
      - retrain (as `smallfleet retrain` does: the candidate is gated, and promoted only
        when it passes) once min_new_rows is reached, or on drift with new rows to learn from.
    The conditions come from the fleet YAML's `retrain_when:` (recorded at training); flags
    replace them. Ctrl-C stops; a retrain cut short leaves the served version untouched.
    """
    from smallfleet.flywheel.watch import fleet_conditions, watch

    console = Console(stderr=True)
    when = fleet_conditions(fleet, **conditions)
    try:
        watch(fleet, open_database(fleet, db_url), when, console, once=once)
    except KeyboardInterrupt:
        console.print("watch stopped")
