"""The `smallfleet` command. Each subcommand lives in its own module."""

from __future__ import annotations

import sys

import click

from smallfleet.errors import SmallfleetError


class _Group(click.Group):
    """Turns SmallfleetError into one clear message and exit code 1, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SmallfleetError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="smallfleet")
def main() -> None:
    """Fine-tune small specialists for narrow tasks, evaluate them, and serve them locally.

    \b
    Typical flow:
      smallfleet train fleet.yaml --out runs/myfleet     train every task of a fleet
      smallfleet eval runs/myfleet/tickets --data test.jsonl
      smallfleet predict runs/myfleet/tickets --text "my card never arrived"
      smallfleet serve runs/myfleet --port 8000           OpenAI-compatible gateway
      smallfleet costs runs/myfleet                       spend vs an all-frontier baseline
      smallfleet report runs/myfleet --out report.html    quality, guarantee and savings on one page
    """


def _register() -> None:
    from smallfleet.cli import (audit, distill, drift, evaluate, export, flywheel, keys, ledger, models, predict, report,
                                review, serve, train, triage)

    for module in (train, evaluate, predict, serve, models, report, export):
        main.add_command(module.command)
    main.add_command(ledger.logs_command)
    main.add_command(ledger.costs_command)
    main.add_command(flywheel.feedback_command)
    main.add_command(flywheel.traffic_command)
    main.add_command(flywheel.versions_command)
    main.add_command(flywheel.promote_command)
    main.add_command(flywheel.rollback_command)
    main.add_command(flywheel.retrain_command)
    main.add_command(drift.drift_command)
    main.add_command(drift.watch_command)
    main.add_command(review.group)
    main.add_command(keys.group)
    main.add_command(triage.group)
    main.add_command(audit.command)
    main.add_command(distill.command)


_register()
