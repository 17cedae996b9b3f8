"""`smallfleet report`: one self-contained HTML page on a fleet's quality, guarantee, traffic and savings."""

from __future__ import annotations

from pathlib import Path

import click

from smallfleet.cli.options import db_option, fleet_argument


@click.command("report")
@fleet_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write [default: FLEET/report.html].")  # fmt: skip
@db_option
@click.option("--since", help="Only traffic from this day on (YYYY-MM-DD).")
def command(fleet, out, db_url, since):
    """Write one HTML page about FLEET that opens anywhere, offline (every plot is inline).

    \b
    On top, the fleet: requests, share answered locally, the saving against all-frontier,
    guarantee status and live-quality alerts. Then for each task:
      - risk-coverage curve with the chosen threshold and its guaranteed bound;
      - reliability diagram of the calibrated confidence;
      - cost vs quality: specialist only, the cascade at several thresholds, all-frontier;
      - requests, escalation rate and spend against all-frontier over time;
      - live quality (audits, reviews, feedback) with its 95% interval;
      - the kind's detail: confused label pairs, per-field F1, or ROUGE.

    Traffic sections need the gateway's database (--db, $SMALLFLEET_DB, or FLEET/smallfleet.db);
    without one, the page shows what training measured.
    """
    from smallfleet.report.facts import gather
    from smallfleet.report.page import write_report
    from smallfleet.store import Database, database_url

    url = database_url(fleet, db_url)
    exists = db_url or not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).is_file()
    db = Database(url) if exists else None
    out = out or fleet / "report.html"
    write_report(gather(fleet, db, since), out)
    served = "" if db else " (no request log found: training figures only)"
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB){served}")
