"""Refit the fleet's router after `retrain` changed what a task serves, or `distill` added a task.

The router learns which task a request belongs to from the tasks' training texts; once a
task's served version has also learned from its labelled traffic, the router is refit on
the same texts: every task's original training file plus the labelled traffic its served
version has seen. Its settings are the served router's (base and fine-tuning settings from
its manifest; target, out-of-scope file, text field and per-task cap from fleet.json).

The new router trains into its own folder (`_versions/_router/rN`) through the classify
kind's staged (crash-safe) recipe; fleet.json changes only once it is complete, in one
atomic rewrite, so a crash or Ctrl-C leaves the served router untouched. A running gateway
picks it up like a promoted version. A fleet without a router gets its first one once it has two
tasks (a fleet built by `distill`), with the router's default settings (`config.RouterSpec`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from smallfleet.config import FleetSpec, RouterSpec
from smallfleet.fleet import fleet_index, headline, route_threshold
from smallfleet.flywheel.taskdata import TRAFFIC_IDS, task_spec
from smallfleet.flywheel.traffic import labelled_traffic
from smallfleet.flywheel.versions import VERSIONS_DIR, serve_router
from smallfleet.router import ROUTER_DIR, ROUTER_KIND, train_router
from smallfleet.settings import build
from smallfleet.store import Database
from smallfleet.tasks import SavedTask, get_kind
from smallfleet.training.artifacts import MANIFEST, read_json



def refit_router(fleet: Path, db: Database | None, console: Console, reason: str) -> dict | None:
    """Refit and serve the router of `fleet` on every task's training texts plus the labelled traffic its served
    version has seen; returns the new fleet.json router entry, or None when the fleet has no router and fewer
    than two tasks. `db`: the request log the labelled traffic is in (None: no version has learned from traffic)."""
    fleet = Path(fleet)
    index = fleet_index(fleet)
    entry = index.get("router")
    kind = get_kind(ROUTER_KIND)
    first = None
    if entry:
        manifest = read_json(fleet / entry["folder"] / MANIFEST)
        spec = RouterSpec(out_of_scope=Path(entry["out_of_scope"]) if entry.get("out_of_scope") else None,
                          text_field=entry.get("text_field", "text"), target=entry["cascade"]["target"],
                          max_per_task=entry.get("max_per_task", RouterSpec.max_per_task),
                          base=manifest["base"]["ref"] or "",
                          training=build(kind.settings_class, manifest[kind.settings_key], "router: manifest"))  # fmt: skip
    elif len(index["tasks"]) >= 2:
        spec = RouterSpec()
        first = {"out_of_scope": None, "text_field": spec.text_field, "max_per_task": spec.max_per_task}
    else:
        return None
    tasks, extra = [], {}
    for name, task_entry in index["tasks"].items():
        saved = SavedTask.open(fleet / task_entry["folder"])
        tasks.append(task_spec(fleet, name, task_entry, saved))
        ids = fleet / task_entry["folder"] / TRAFFIC_IDS
        seen = set(json.loads(ids.read_text())) if ids.is_file() else set()
        extra[name] = [r.text for r in labelled_traffic(db, saved).rows if r.request_id in seen] if seen and db else []
    folder = fleet / VERSIONS_DIR / ROUTER_DIR / f"r{1 + len(entry.get('previous', [])) if entry else 1}"
    console.print(f"router: refitting on {len(tasks)} tasks' training texts plus "
                  f"{sum(len(t) for t in extra.values())} labelled traffic texts ({reason})")  # fmt: skip
    started = time.monotonic()
    metrics = train_router(FleetSpec(name=index.get("name", fleet.name), tasks=tasks, router=spec), folder,
                           force=True, console=console, extra=extra)  # fmt: skip
    served = serve_router(fleet, folder, {split: headline(m) for split, m in metrics.items()},
                          route_threshold(folder, spec.target), reason, first)  # fmt: skip
    served["train_seconds"] = round(time.monotonic() - started, 1)
    console.print(f"router: now serving {served['folder']} (validation accuracy "
                  f"{metrics['validation']['accuracy']:.3f})")  # fmt: skip
    return served
