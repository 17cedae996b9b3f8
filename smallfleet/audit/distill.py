"""`smallfleet distill`: a task learned from one audited cluster, the frontier's answers as labels.

The input is the user turn with the cluster's template stripped; the label is the frontier's
answer, shaped by the task's kind (`TaskKind.distill_rows`: a label set, JSON records checked
against an inferred schema the user can edit, or text as it is). A seeded share of the cluster is
held back and the specialist's agreement with the frontier measured on it. The task joins the
fleet in shadow (`shadow_only` in fleet.json), and the fleet's router is refit to know it (a first
router once the fleet has two tasks; the router sends a request to a task in shadow upstream, and
the task answers it in the background too): requests carrying its template still go upstream
while the specialist answers them in the background (the `shadow` table), until `smallfleet
promote`. With `--auto-promote` it is served at once when the held-back agreement of the answers
it would accept clears the task's target with confidence 1 - delta; otherwise the gateway
promotes it once its live shadow agreement does (`flywheel/shadow_gate.py`).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from smallfleet.audit import cluster_rows, read_audit
from smallfleet.errors import ConfigError, DataError
from smallfleet.fleet import FLEET_INDEX, cascade_threshold, headline
from smallfleet.flywheel.router_refit import refit_router
from smallfleet.guarantee import DEFAULT_DELTA, error_upper_bound
from smallfleet.store import Database
from smallfleet.tasks import FieldMap, TaskSpec, get_kind, load_specialist
from smallfleet.training.artifacts import MANIFEST, read_json, write_json

MIN_DISTILL = 60
"""Fewest requests a cluster needs to be distilled (train, validation and a held-back part)."""
HELD_BACK = 0.2
DISTILL_DIR = "_distill"
DEFAULT_TARGET = 0.95


@dataclass
class DistillResult:
    task: str
    kind: str
    rows: int
    held_back: int
    agreement: float
    """Share of held-back requests where the specialist's answer agrees with the frontier's."""
    accepted_share: float
    """Share of held-back requests the specialist would answer itself (at its threshold)."""
    accepted_agreement: float | None
    promoted: bool
    folder: Path
    data: Path
    router: str | None = None
    """The router's folder, refit with the new task (None: the fleet has a single task, so no router)."""

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def distill(fleet: Path, cluster: int, name: str, kind: str | None = None, settings: dict | None = None,
            target: float = DEFAULT_TARGET, delta: float = DEFAULT_DELTA, auto_promote: bool = False,
            force: bool = False, console: Console | None = None, db: Database | None = None) -> DistillResult:  # fmt: skip
    """Build, train and add to `fleet` (in shadow) a task from audited cluster `cluster`.

    Args:
        fleet: The fleet folder holding the audit (`smallfleet audit`).
        cluster: The cluster's id in the audit.
        name: The new task's name.
        kind: Task kind; default the kind the audit saw in the answers.
        settings: The kind's training settings to change (setting -> value).
        auto_promote: Serve the task at once when its held-back accepted agreement clears `target`.
        force: Replace a task of that name.
        db: The request log, for the labelled traffic retrained tasks learned from (the router is refit on it).

    Raises:
        DataError: no audit, no such cluster, too few requests (with the number needed), unusable answers.
    """
    console = console or Console(stderr=True)
    fleet = Path(fleet)
    if not re.fullmatch(r"[A-Za-z0-9][\w-]{0,63}", name):
        raise ConfigError(f"task name {name!r}: use letters, digits, _ and - (at most 64)")
    audit = read_audit(fleet)
    if audit is None:
        raise DataError(f"{fleet} has no audit yet: run `smallfleet audit {fleet}` first")
    found = {c["id"]: c for c in audit["clusters"]}
    if cluster not in found:
        raise DataError(f"the audit has no cluster {cluster} (clusters: {', '.join(map(str, found)) or 'none'})")
    info = found[cluster]
    rows = cluster_rows(fleet, cluster)
    if len(rows) < MIN_DISTILL:
        raise DataError(f"cluster {cluster} has {len(rows)} requests; distilling needs at least {MIN_DISTILL} "
                        f"({MIN_DISTILL - len(rows)} more): let more traffic through the gateway and audit again")  # fmt: skip
    index_path = fleet / FLEET_INDEX
    index = read_json(index_path) if index_path.is_file() else {"name": fleet.resolve().name, "tasks": {}}
    if name in index["tasks"] and not force:
        raise ConfigError(f"{fleet} already has a task {name!r}; give another --name (or --force to replace it)")
    task_kind = get_kind(kind or info["kind"])
    data = fleet / DISTILL_DIR / name
    data.mkdir(parents=True, exist_ok=True)
    random.Random(0).shuffle(rows)
    held = max(1, int(len(rows) * HELD_BACK))
    train_rows, options = task_kind.distill_rows([r["input"] for r in rows[held:]], [r["answer"] for r in rows[held:]],
                                                 data)  # fmt: skip
    _write_jsonl(data / "train.jsonl", train_rows)
    _write_jsonl(data / "held_back.jsonl", rows[:held])
    spec_settings = task_kind.settings_class().replace(**{**options.get("settings", {}), **(settings or {})})
    spec = TaskSpec(name=name, train=data / "train.jsonl", kind=task_kind.name, fields=FieldMap(**options.get("fields", {})),
                    settings=spec_settings, target=target, delta=delta)  # fmt: skip
    out = fleet / name
    metrics = task_kind.train(spec, out, force=force, console=console)
    cascade = cascade_threshold(out, target, delta)
    agreement, accepted, accepted_agreement = _held_back_agreement(out, rows[:held], cascade["threshold"])
    n_accepted = round(accepted * held)
    promote = auto_promote and n_accepted > 0 and (
        1 - error_upper_bound(round(n_accepted * (1 - accepted_agreement)), n_accepted, delta) >= target)
    template = info.get("template")
    version = {"folder": name, "created": datetime.now(UTC).isoformat(timespec="seconds"),
               "metrics": {split: headline(m) for split, m in metrics.items()}, "cascade": cascade}  # fmt: skip
    index["tasks"][name] = {
        "kind": task_kind.name, "folder": name, "metrics": version["metrics"], "cascade": cascade,
        "novelty": read_json(out / MANIFEST).get("novelty"),
        "data": {"train": str((data / "train.jsonl").resolve()), "valid": None, "test": None},
        "versions": {"v1": version}, "served": "v1", "history": ["v1"],
        "template": template, "shadow_only": not promote,
        **({"auto_promote": {"target": target, "delta": delta}} if auto_promote and not promote else {}),
        "distilled": {"cluster": cluster, "requests": len(rows), "held_back": held, "agreement": round(agreement, 4),
                      "accepted_share": round(accepted, 4),
                      "accepted_agreement": None if accepted_agreement is None else round(accepted_agreement, 4)},
    }  # fmt: skip
    write_json(index_path, index)
    # the router learns the new task too (a fleet's first router once it has two tasks); a running gateway follows
    router = refit_router(fleet, db, console, f"task {name} distilled from cluster {cluster}")
    return DistillResult(name, task_kind.name, len(train_rows), held, agreement, accepted, accepted_agreement, promote,
                         out, data, router["folder"] if router else None)  # fmt: skip


def _held_back_agreement(folder: Path, rows: list[dict], threshold: float) -> tuple[float, float, float | None]:
    """(agreement with the frontier on all held-back rows, share accepted at `threshold`, agreement of those)."""
    specialist = load_specialist(folder)
    kind, manifest = get_kind(specialist.kind), specialist.manifest
    answers = specialist.answer([r["input"] for r in rows])
    agree = [kind.agrees(manifest, a.content, r["answer"]) for a, r in zip(answers, rows, strict=True)]
    accepted = [ok for ok, a in zip(agree, answers, strict=True) if a.valid and a.confidence >= threshold]
    return (sum(agree) / len(agree), len(accepted) / len(agree),
            sum(accepted) / len(accepted) if accepted else None)  # fmt: skip


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
