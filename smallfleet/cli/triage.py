"""`smallfleet triage train|eval`: the model that sends free-form requests to the tier whose predicted gain is worth its price."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from smallfleet.errors import DataError


@click.group("triage")
def group() -> None:
    """Triage: predict, per request, which tiers will answer it well enough.

    \b
    smallfleet triage train --data rows.jsonl --out runs/fleet/_triage
    smallfleet triage train --from-log runs/fleet --out runs/fleet/_triage
    smallfleet triage eval runs/fleet/_triage --data replay.jsonl --json eval.json

    Rows are {"text": ..., "scores": {"<tier>": 0|1 or a quality in [0, 1]}}, tiers named
    cheapest first. Serve with `serving.triage` (or `smallfleet serve --triage DIR`): requests the
    router sends to no task, and requests for model `auto`, go to the tier with the best
    predicted quality minus (1 - `serving.willingness_to_pay`) x its price as a share of the
    dearest tier's: a dearer tier answers when its predicted gain is worth its extra price.
    """


@group.command("train")
@click.option("--data", type=click.Path(path_type=Path), help="Rows (JSONL or CSV): text and per-tier scores.")
@click.option("--from-log", "from_log", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Take the rows from this fleet's request log instead: tiers' answers judged by review, feedback "
                   "or audits, and replies a task could not use.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write the triage model to.")
@click.option("--text-field", default="text", show_default=True, help="Field of the request text in --data.")
@click.option("--scores-field", default="scores", show_default=True, help="Field of the per-tier scores in --data.")
@click.option("--fleet", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Fleet folder whose tiers the rows should name (rows naming others are reported); "
                   "--from-log implies it.")  # fmt: skip
@click.option("--db", "db_url", help="SQLAlchemy URL of the request log for --from-log [default: $SMALLFLEET_DB "
              "or FLEET/smallfleet.db].")
@click.option("--base", default="minilm", show_default=True, help="Base encoder (frozen) the heads read.")
@click.option("--min-rows", type=click.IntRange(min=2), default=50, show_default=True,
              help="Fewest labelled rows a tier needs for a head; below it triage falls back to the tier order.")
@click.option("--c", "c", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Inverse L2 strength of the per-tier logistic heads [default: chosen from 0.03 to 3 by 3-fold "
                   "cross-validation on the training rows: by the routing decision's APGR when 60+ rows score every "
                   "tier, else per head by its log-loss].")
@click.option("--force", is_flag=True, help="Replace an existing triage model in --out.")
def train_command(data, from_log, out, text_field, scores_field, fleet, db_url, base, min_rows, c, force):
    """Train a triage model: one calibrated head per tier over frozen sentence embeddings."""
    from smallfleet.triage.rows import load_rows
    from smallfleet.triage.train import drop_unknown_tiers, train_triage

    console = Console(stderr=True)
    if bool(data) == bool(from_log):
        raise click.UsageError("give exactly one of --data and --from-log")
    fleet = from_log or fleet
    tiers = _fleet_tiers(fleet) if fleet else None
    if from_log:
        from smallfleet.store import Database, database_url
        from smallfleet.triage.from_log import rows_from_log

        db = Database(database_url(from_log, db_url))
        rows, source = rows_from_log(db, str(from_log)), f"the request log of {from_log}"
        order = {t: i for i, t in enumerate(tiers)}
        for row in rows:  # the fleet's tier order is the price order the gateway uses
            row.scores = dict(sorted(row.scores.items(), key=lambda kv: order.get(kv[0], len(order))))
        if not rows:
            raise DataError(f"the request log of {from_log} has no tier answers judged by review, feedback or audits yet")
    else:
        rows, source = load_rows(data, text_field, scores_field), str(data)
    notes = []
    if tiers is not None:
        rows, notes = drop_unknown_tiers(rows, tiers)
        for note in notes:
            console.print(f"[yellow]warning[/] {note}")
        if not rows:
            raise DataError(f"no row scores a tier of the fleet ({', '.join(tiers)})")
    with console.status(f"embedding {len(rows)} rows and fitting the heads"):
        model = train_triage(rows, out, base=base, min_rows=min_rows, c=c, force=force, notes=notes, source=source,
                             order=tiers if from_log else None)  # fmt: skip
    for tier, info in model.card["per_tier"].items():
        auc = info.get("valid_auc")
        line = f"tier {tier}: {info['rows']} rows, good share {info['good_share']:.3f}, " + (
            "constant head (answers all alike)" if info.get("constant") else
            f"head, C={info['c']} (validation AUC {auc:.3f})" if info["head"] and auc is not None else
            f"head, C={info['c']}" if info["head"] else
            "[yellow]no head: too few labelled rows, falls back to the tier order[/]")
        console.print(line)
    console.print(f"[green]saved[/] triage model to {out} ({len(model.card['notes'])} note(s) in its README.md)")


@group.command("eval")
@click.argument("model_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Replay rows scoring every tier (cheapest first, the strongest last).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the results here as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the quality vs strong-share plot (.png or .svg).")
@click.option("--text-field", default="text", show_default=True, help="Field of the request text.")
@click.option("--scores-field", default="scores", show_default=True, help="Field of the per-tier scores.")
@click.option("--num-results", type=click.IntRange(min=2), default=10, show_default=True,
              help="Threshold cuts of the sweep (RouteLLM's --num-results: quantiles of the router's scores).")
def eval_command(model_dir, data, json_out, plot, text_field, scores_field, num_results):
    """Score the triage model in DIR RouteLLM's way on replay --data.

    Prints APGR (average performance gap recovered over the quality vs strong-call-share curve)
    and the share of calls to the strongest tier needed to reach 95% of its quality, next to a
    random router and the oracle. The JSON holds `n`, `apgr`, `strong_share_at_95`, `tiers`, the
    shares at 50%/95% of the gap, each curve, and the same for `random` and `oracle`.
    """
    from smallfleet.triage.model import TriageModel
    from smallfleet.triage.rows import load_rows
    from smallfleet.triage.train import evaluate_triage

    model = TriageModel.load(model_dir)
    rows = load_rows(data, text_field, scores_field)
    result = evaluate_triage(model, rows, num_results, plot)
    for note in result["notes"]:
        click.secho(f"note: {note}", fg="yellow", err=True)
    click.echo(f"{result['n']} rows, tiers {' < '.join(result['tiers'])}: {result['tiers'][0]} alone "
               f"{result['weak_quality']:.4f}, {result['tiers'][-1]} alone {result['strong_quality']:.4f}")  # fmt: skip
    click.echo(f"{'router':8} {'APGR':>7} {'strong@95%':>11} {'@50% gap':>9} {'@95% gap':>9}")
    for name, part in (("triage", result), ("random", result["random"]), ("oracle", result["oracle"])):
        click.echo(f"{name:8} {part['apgr']:7.4f} {_share(part['strong_share_at_95']):>11} "
                   f"{_share(part['strong_share_at_50_gap']):>9} {_share(part['strong_share_at_95_gap']):>9}")  # fmt: skip
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _share(x) -> str:
    return "never" if x is None else f"{100 * x:.1f}%"


def _fleet_tiers(folder: Path) -> list[str]:
    from smallfleet.fleet import fleet_index

    return [t["name"] for t in fleet_index(folder).get("tiers", [])]
