"""`smallfleet distill`: a specialist from one audited cluster of frontier traffic."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from smallfleet.cli.options import db_option, open_database
from smallfleet.cli.settings_flags import settings_flags, split_field_flags
from smallfleet.errors import ConfigError
from smallfleet.tasks import KINDS, get_kind


@click.command("distill")
@click.argument("fleet", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--cluster", type=int, required=True, help="The cluster's id in `smallfleet audit`.")
@click.option("--name", required=True, help="The new task's name (its model is `fleet/<name>`).")
@click.option("--kind", type=click.Choice(KINDS.names()), help="Task kind [default: the kind the audit saw].")
@click.option("--target", type=float, default=0.95, show_default=True,
              help="Quality target of accepted answers (agreement with the frontier).")
@click.option("--delta", type=float, default=0.05, show_default=True, help="Failure probability of the guarantee.")
@click.option("--auto-promote", is_flag=True,
              help="Serve the task at once when the held-back agreement of the answers it would accept clears "
                   "--target with confidence 1 - delta; otherwise the serving gateway promotes it once the live "
                   "shadow agreement of those answers with the frontier does (or `smallfleet promote`).")
@click.option("--force", is_flag=True, help="Replace a task of that name.")
@db_option
@settings_flags
def command(fleet, cluster, name, kind, target, delta, auto_promote, force, db_url, **flags):
    """Train task NAME on audited cluster ID of FLEET, the frontier's answers as labels.

    \b
    The input is the user turn with the cluster's template stripped; the label is the
    frontier's answer: labels normalized into a label set (classify), JSON records checked
    against a JSON Schema inferred from them (extract; FLEET/_distill/NAME/schema.json, edit
    it and run again with --force), text as it is (generate). 20% of the cluster is held back
    and the specialist's agreement with the frontier measured on it.

    The task joins the served fleet in shadow: requests carrying the cluster's system prompt
    or template still go upstream, and the specialist answers them in the background (see
    `smallfleet versions`). The fleet's router is refit to know the task (a first router once
    the fleet has two tasks); it sends requests for a task in shadow upstream too. `smallfleet promote FLEET --task NAME --version v1` makes it answer
    them itself, in the frontier's format, for the same model name the client uses.
    A cluster of fewer than 60 requests is refused, with the number needed.
    """
    from smallfleet.audit.distill import distill

    field_values, settings = split_field_flags(flags)
    if field_values:
        raise ConfigError("distill takes its fields from the cluster; --*-field does not apply")
    if kind:
        known = set(get_kind(kind).settings_class.__dataclass_fields__)
        wrong = [k for k in settings if k not in known]
        if wrong:
            raise ConfigError(f"--{wrong[0].replace('_', '-')} does not apply to --kind {kind}")
    console = Console(stderr=True)
    result = distill(fleet, cluster, name, kind, settings, target, delta, auto_promote, force, console,
                     open_database(fleet, db_url))  # fmt: skip
    accepted = "-" if result.accepted_agreement is None else f"{result.accepted_agreement:.1%}"
    click.echo(f"task {result.task} ({result.kind}): trained on {result.rows} rows in {result.data}; on "
               f"{result.held_back} held-back requests it agrees with the frontier on {result.agreement:.1%}, "
               f"would answer {result.accepted_share:.1%} itself, agreeing on {accepted} of those")  # fmt: skip
    if result.router:
        click.echo(f"router: refit with {result.task}, serving {result.router}")
    if result.promoted:
        click.echo(f"promoted: {result.task} now answers requests carrying its template")
    elif auto_promote:
        click.echo(f"in shadow: the held-back rows do not prove {target:g} agreement at 1 - {delta:g}; serve with "
                   f"`smallfleet serve {fleet} --escalate-to ...` and the gateway promotes {result.task} once its "
                   "live shadow agreement with the frontier does")  # fmt: skip
    else:
        click.echo(f"in shadow: serve with `smallfleet serve {fleet} --escalate-to ...`, then "
                   f"`smallfleet promote {fleet} --task {result.task} --version v1`")  # fmt: skip
