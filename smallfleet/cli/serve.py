"""`smallfleet serve`: the OpenAI-compatible gateway over a trained fleet."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from smallfleet.cli.options import runtime_option, use_runtime
from smallfleet.errors import SmallfleetError
from smallfleet.store.journal import JOURNAL_FOLDER


@click.command("serve")
@click.argument("fleet", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for all; "
              "any address but loopback needs an API key first, or --insecure).")
@click.option("--insecure", is_flag=True, help="Serve on a non-loopback --host even though no API key exists "
              "(anyone who reaches the address may use the gateway and its upstream tiers).")
@click.option("--port", default=8000, show_default=True, help="TCP port.")
@click.option("--db", "db_url", help="SQLAlchemy URL of the request log [default: $SMALLFLEET_DB or FLEET/smallfleet.db].")
@click.option("--target", type=float, help="Quality target for every task's accepted answers (replaces the fleet's).")
@click.option("--delta", type=float, help="Allowed probability that accepted answers miss the target (replaces the "
              "fleet's; default 0.05): each task's threshold is guaranteed at 1 - delta.")
@click.option("--threshold", "thresholds", multiple=True, metavar="TASK=VALUE",
              help="Set a task's confidence threshold by hand (repeatable); above 1 escalates every request.")
@click.option("--shadow", "shadows", multiple=True, metavar="TASK=VERSION",
              help="Run VERSION of TASK on live requests in the background, after each response, and log how often "
              "it agrees with the served version (repeatable; see `smallfleet versions --db`).")
@click.option("--escalate-to", "escalate_url", help="Add an OpenAI-compatible tier at this base URL (e.g. https://api.openai.com/v1).")
@click.option("--escalate-model", help="Model name for --escalate-to.")
@click.option("--escalate-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable with the --escalate-to API key.")
@click.option("--escalate-input-price", type=float, default=0.0, help="--escalate-to USD per million input tokens.")
@click.option("--escalate-output-price", type=float, default=0.0, help="--escalate-to USD per million output tokens.")
@click.option("--escalate-timeout", type=float, default=30.0, show_default=True, help="--escalate-to seconds per attempt.")
@click.option("--escalate-retries", type=int, default=2, show_default=True, help="--escalate-to retries after a timeout or 5xx.")
@click.option("--cpu-hour-usd", type=float, help="Price of one CPU core-hour for costing specialist answers.")
@click.option("--audit-rate", type=click.FloatRange(0, 1), help="Share of accepted answers also sent to the first "
              "upstream tier after the response, to check live quality against the guarantee (replaces the fleet's).")
@click.option("--drift-every", type=click.FloatRange(min=0), help="Seconds between the gateway's drift checks "
              "(signals on /metrics, computed in the background); 0 = none [default: the fleet's serving.drift_every, 300].")
@click.option("--max-pending-reviews", type=click.IntRange(min=1), help="Most items the review queue holds "
              "pending; past it a review tier is skipped (the next tier answers, or a 503) (replaces the fleet's).")
@click.option("--journal-fsync/--no-journal-fsync", default=None, help="Sync each request-log row to the disk "
              "before its response: survives power loss, not only a crashed gateway (replaces the fleet's).")
@click.option("--log-inputs", type=click.Choice(["full", "redacted", "none"]), help="What the request log keeps of "
              "each input: all of it, with personal data replaced by typed placeholders, or nothing (replaces the fleet's).")
@click.option("--triage", "triage", type=click.Path(exists=True, file_okay=False),
              help="Triage model folder (`smallfleet triage train`): requests no task owns, and requests for model "
              "`auto`, go to the tier whose predicted gain is worth its price (replaces the fleet's serving.triage).")
@click.option("--willingness-to-pay", type=click.FloatRange(0, 1), help="Triage's knob: a dearer tier answers "
              "when its predicted gain in P(good answer) is at least (1 - this) x its extra price as a share of the "
              "dearest tier's; 1 = the tier predicted best whatever its price (replaces the fleet's).")
@click.option("--console-cache-seconds", type=click.FloatRange(min=0), help="Seconds a console page is kept for "
              "the session that loaded it (an answer, promotion or rollback clears them); 0 = none [default: the "
              "fleet's serving.console_cache_seconds, 3].")
@click.option("--threads", type=click.IntRange(min=0), help="Torch threads of the models (llama.cpp takes the same "
              "count); 0 = one per core. On a small machine 1 answers single requests faster and leaves a core to "
              "the next [default: the fleet's serving.threads, 0].")
@click.option("--max-wait-seconds", type=click.FloatRange(min=0), help="Load shedding: a request whose task has "
              "more than this many seconds of work queued goes straight to the escalation tiers (escalation_reason "
              "busy) instead of waiting; 0 = every request waits its turn [default: the fleet's "
              "serving.max_wait_seconds, 0].")
@click.option("--workers", type=click.IntRange(min=1), help="Gateway processes on the one port, forked after the "
              "fleet is loaded so they share its weights; each runs its models on one thread, so N workers use N "
              "cores [default: the fleet's serving.workers, 1].")
@runtime_option
@click.option("--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def command(fleet, host, insecure, port, db_url, target, delta, thresholds, shadows, escalate_url, escalate_model, escalate_key_env, escalate_input_price,
            escalate_output_price, escalate_timeout, escalate_retries, cpu_hour_usd, audit_rate, max_pending_reviews,
            journal_fsync, log_inputs, triage, willingness_to_pay, drift_every, console_cache_seconds, threads,
            max_wait_seconds, workers, runtime, log_level):  # fmt: skip
    """Serve FLEET (a folder made by `smallfleet train`, or one specialist folder) over HTTP.

    \b
    Endpoints (OpenAI protocol; the official clients work unchanged):
      POST /v1/chat/completions   model "fleet" routes; "fleet/<task>" picks a task;
                                  "auto" (with --triage) goes to the tier whose
                                  predicted gain is worth its price; any other model name goes
                                  to the first openai tier
      POST /v1/feedback           {"request_id", "answer"} or {"request_id", "correct"}
      GET  /v1/models   /healthz   /metrics (Prometheus)

    Each answer carries a `smallfleet` object (request_id, task, version, tier, confidence,
    escalated, latency_ms, cost_usd, frontier_cost_usd; `triage` when triage chose the tier)
    and is logged to the request log.
    The gateway follows FLEET/fleet.json: `smallfleet promote` and `rollback` switch a
    task's version within seconds, without a restart.
    Client keys (`smallfleet keys create`) are required once any key has been
    created, even after all are revoked, until `smallfleet keys open`. A key created with
    --budget-usd, --rpm or --tpm gets HTTP 429 naming the limit, with Retry-After, past it
    (counted in the database: gateways sharing it share the limit). On any --host but
    loopback, serve refuses to start until a key exists, unless --insecure is given.
    """
    import uvicorn

    from smallfleet.serve.app import create_app
    from smallfleet.serve.fleet import ServedFleet
    from smallfleet.store import Database, database_url
    from smallfleet.store.keys import keys_required
    from smallfleet.tiers.base import TIERS, TierSpec

    if bool(escalate_url) != bool(escalate_model):
        raise click.UsageError("--escalate-to and --escalate-model go together")
    manual = {}
    for item in thresholds:
        task, sep, value = item.partition("=")
        try:
            manual[task] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected TASK=VALUE, e.g. tickets=0.8", param_hint="--threshold") from None
        if not sep or manual[task] < 0:
            raise click.BadParameter(f"{item!r}: expected TASK=VALUE with VALUE >= 0", param_hint="--threshold")
    use_runtime(runtime)
    console = Console(stderr=True)
    db = Database(database_url(fleet, db_url))
    if not (insecure or is_loopback(host) or keys_required(db)):
        raise SmallfleetError(f"refusing to serve on {host} with no API key: anyone who can reach it could use the "
                              f"gateway and its upstream tiers. Create a key first (smallfleet keys create {fleet} "
                              "NAME), serve on 127.0.0.1, or pass --insecure to serve it open anyway.")  # fmt: skip
    if delta is not None and not 0 < delta < 1:
        raise click.BadParameter("must be in (0, 1)", param_hint="--delta")
    with console.status("loading the fleet"):
        served = ServedFleet.load(fleet, target=target, thresholds=manual, delta=delta, threads=threads,
                                  workers=workers)  # fmt: skip
    if served.serving.workers > 1 and not db.shareable:
        raise SmallfleetError(f"{served.serving.workers} workers (--workers, serving.workers) need a request log "
                              f"they can share, not {db}: use a file or a database server (--db)")  # fmt: skip
    for item in shadows:
        task, sep, version = item.partition("=")
        if not sep or not version:
            raise click.BadParameter(f"{item!r}: expected TASK=VERSION, e.g. tickets=v2", param_hint="--shadow")
        with console.status(f"loading the shadow {task} {version}"):
            served.add_shadow(task, version)
    if escalate_url:
        served.tiers.insert(0, TierSpec(name="escalate", kind="openai", base_url=escalate_url, model=escalate_model,
                                        api_key_env=escalate_key_env, input_price=escalate_input_price,
                                        output_price=escalate_output_price, timeout=escalate_timeout,
                                        retries=escalate_retries))  # fmt: skip
    if not served.tasks and not served.tiers:
        raise SmallfleetError(f"{fleet} holds no fleet (fleet.json) and no specialist, and no tier to pass requests "
                              "to: train a fleet into it, or serve it as a pass-through gateway that logs "
                              "everything with --escalate-to URL --escalate-model M")  # fmt: skip
    flags = {"cpu_hour_usd": cpu_hour_usd, "audit_rate": audit_rate, "max_pending_reviews": max_pending_reviews,
             "journal_fsync": journal_fsync, "log_inputs": log_inputs, "willingness_to_pay": willingness_to_pay,
             "drift_every": drift_every, "console_cache_seconds": console_cache_seconds,
             "max_wait_seconds": max_wait_seconds}  # fmt: skip
    served.serving = replace(served.serving, **{k: v for k, v in flags.items() if v is not None})  # flags given win
    if triage:
        with console.status("loading the triage model"):
            served.use_triage(Path(triage).resolve())
    for task in served.tasks.values():
        promise = (task.guarantee.describe() if task.guarantee else
                   f"accept confidence >= {task.threshold:.3f} (set by hand; {task.coverage:.0%} of validation)")
        note = task.specialist.serving_note()
        console.print(f"task [bold]{task.name}[/] ({task.specialist.kind}{', ' + note if note else ''}): {promise}; "
                      f"{task.specialist.novelty_line()}")  # fmt: skip
    for name, shadow in served.shadows.items():
        console.print(f"shadow: {name} {shadow.version} answers live requests after {served.tasks[name].version}")
    if served.router:
        note = served.router.specialist.serving_note()
        console.print(f"router: {len(served.tasks)} tasks{', ' + note if note else ''}, route confidence >= "
                      f"{served.router.threshold:.3f} ({served.router.coverage:.0%} of validation routed); "
                      f"{served.router.specialist.novelty_line()}")  # fmt: skip
    for t in served.tiers:
        if TIERS.get(t.kind).costed and not (t.input_price or t.output_price or t.hour_usd):
            console.print(f"[yellow]warning[/] tier {t.name} has no price: its answers are costed at 0 "
                          "(set input_price/output_price, or hour_usd for a self-hosted endpoint)")  # fmt: skip
    tiers = ", ".join(f"{t.name} ({t.kind})" for t in served.tiers) or "none (low-confidence answers are returned as is)"
    console.print(f"escalation tiers: {tiers}")
    if served.serving.workers > 1:
        console.print(f"workers: {served.serving.workers} processes forked from this one, sharing the loaded "
                      "weights; each runs its models on one thread (--workers)")  # fmt: skip
    else:
        console.print(f"model threads: {served.serving.threads or 'one per core'} (--threads)")
    if served.serving.max_wait_seconds:
        console.print(f"load shedding: a request whose task has more than {served.serving.max_wait_seconds:g} s of "
                      "work queued goes straight to the escalation tiers" + ("" if served.tiers else
                      " [yellow](no tier: off)[/]"))  # fmt: skip
    if served.triage:
        heads = ", ".join(served.triage.heads) or "none (tier order)"
        console.print(f"triage: free-form and `auto` requests go to the tier whose predicted gain is worth its price at "
                      f"willingness_to_pay {served.serving.willingness_to_pay} (heads: {heads})")  # fmt: skip
    if served.serving.audit_rate:
        audit_tier = next((t.name for t in served.tiers if t.model), None)
        console.print(f"live audits: {served.serving.audit_rate:.1%} of accepted answers also go to " +
                      (f"tier {audit_tier}" if audit_tier else "[yellow]no tier: none has a model, audits are off[/]"))
    console.print(f"request log: {db} (journaled in {served.folder / JOURNAL_FOLDER}"
                  f"{', synced to disk per row' if served.serving.journal_fsync else ''})")
    console.print(f"[green]serving[/] http://{host}:{port}/v1, console at http://{host}:{port}/ui (Ctrl-C stops). Try:")
    click.echo(example_curl(host, port), err=True)  # not through rich: a wrapped curl cannot be pasted
    app = create_app(served, db, loopback=is_loopback(host))
    if served.serving.workers > 1:
        from smallfleet.serve import workers as forked

        forked.run(app, host, port, served.serving.workers, log_level, forked.prepare())
    else:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to any interface
        return False


def example_curl(host: str, port: int) -> str:
    """A ready-to-paste curl for this fleet."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return (
        f"  curl -s http://{shown}:{port}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f"    -d '{{\"model\": \"fleet\", \"messages\": [{{\"role\": \"user\", \"content\": "
        f"\"I was charged twice for my order\"}}]}}'"
    )
