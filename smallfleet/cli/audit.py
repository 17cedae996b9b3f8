"""`smallfleet audit`: the repeatable tasks in a fleet's logged pass-through traffic (or an export)."""

from __future__ import annotations


import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from smallfleet.audit.analysis import Assumptions
from smallfleet.cli.options import db_option, open_database
from smallfleet.cli.settings_flags import dataclass_flags
from smallfleet.errors import ConfigError


@click.command("audit")
@click.argument("fleet", type=click.Path(file_okay=False, path_type=Path))
@db_option
@click.option("--from", "export", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Audit this JSONL of past {messages, response} exports instead of FLEET's request log.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the audit as JSON: {requests, clusters: [{id, requests, share, kind, consistency, "
                   "examples, ...}], break_even}.")  # fmt: skip
@click.option("--min-cluster", type=int, default=None, help="Fewest requests that make a cluster [default: 10].")
@dataclass_flags(Assumptions)
def command(fleet, db_url, export, json_out, min_cluster, **assumed):
    """Find the narrow, repeatable tasks in FLEET's pass-through traffic and what they would save.

    \b
    Requests are grouped by task: first by exact system prompt and prompt template (the
    fixed text around the variable part of the user turn), then, for requests no template
    explains, by the meaning of the user turn (MiniLM embeddings). For each cluster:
      - requests, share of volume and of spend, example prompts;
      - the kind its answers suggest: a few distinct answers = classify, JSON or spans copied
        from the input = extract, anything else = generate;
      - consistency: on near-duplicate inputs, how often the frontier gave the same answer
        (a cluster below 80% is flagged as a poor candidate, with the disagreement rate);
      - projected monthly saving at the observed rate, after the specialist's own compute;
    and the break-even of self-hosting against the API, with the assumptions shown.

    The audit is saved in FLEET/_audit/ for `smallfleet distill FLEET --cluster ID` and the
    report. FLEET may be a new folder when --from is given.
    """
    from smallfleet.audit import MIN_CLUSTER, audit, save_audit
    from smallfleet.audit.traffic import from_export, from_log

    try:
        assumptions = Assumptions(**{k: v for k, v in assumed.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if export is None and not fleet.is_dir():
        raise click.BadParameter(f"{fleet} is not a folder (give --from FILE to audit an export)", param_hint="FLEET")
    fleet.mkdir(parents=True, exist_ok=True)
    exchanges = from_export(export) if export else from_log(open_database(fleet, db_url))
    result, rows = audit(exchanges, assumptions, min_cluster or MIN_CLUSTER)
    save_audit(fleet, result, rows)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print_audit(Console(width=max(Console().width, 160)), result)


def print_audit(console: Console, result: dict) -> None:
    """The audit as tables: clusters, their flags, the break-even."""
    table = Table(title=f"{result['requests']} pass-through requests over {result['days']:g} day(s), "
                        f"${result['spend_usd']:.4f} spent; {result['unclustered']} in no cluster")  # fmt: skip
    for col in ("id", "requests", "share", "spend %", "kind", "consistency", "answers", "saving $/month", "template"):
        table.add_column(col, justify="right" if col not in ("kind", "template") else "left")
    table.add_column("example", overflow="ellipsis", no_wrap=True, max_width=40)
    for c in result["clusters"]:
        t = c["template"]
        template = "(by meaning)" if t is None else ("system" if t["system"] else "") + (
            (" + " if t["system"] else "") + "prompt" if t["prefix"] or t["suffix"] else "")
        table.add_row(
            str(c["id"]), str(c["requests"]), f"{c['share']:.1%}", f"{c['spend_share']:.1%}", c["kind"],
            "-" if c["consistency"] is None else f"{c['consistency']:.1%}" + ("" if c["candidate"] else " !"),
            str(c["distinct_answers"]), f"{c['monthly_saving_usd']:.2f}", template, " ".join(c["examples"][0].split()),
        )  # fmt: skip
    console.print(table)
    for c in result["clusters"]:
        for flag in c["flags"]:
            console.print(f"cluster {c['id']}: {flag}")
    b = result["break_even"]
    a = b["assumptions"]
    console.print(
        f"self-hosting the {len(b['clusters'])} candidate cluster(s): {b['monthly_requests']:g} requests/month, "
        f"${b['monthly_api_usd']:.2f}/month on the API now; a ${b['monthly_host_usd']:g}/month machine "
        + (f"pays off from {b['break_even_monthly_requests']:,} requests/month" if b["break_even_monthly_requests"]
           else "never pays off (no API spend)")
        + f" ({'reached' if b['pays_off'] else 'not reached'} at the observed rate; saving "
        f"${b['monthly_saving_usd']:.2f}/month)"
    )  # fmt: skip
    console.print("assumptions: " + ", ".join(f"{k}={v}" for k, v in a.items()) +
                  " (change them with the flags of the same names)")  # fmt: skip



