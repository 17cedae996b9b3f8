"""`smallfleet retrain`: train a candidate version of a task on its training data plus its
labelled traffic, gate it against the served version, and promote it when the gate passes.

- The **frozen evaluation set** is never trained on: the task's test file, or else the
  seeded slice of its original training data that `train` set aside at the first training
  (`fleet.set_aside_frozen`, recorded in the card). A fleet trained before that existed
  falls back to a seeded slice of the training data (v1 has seen it, which can only favour
  the served version).
- A seeded fifth of the **new** labelled traffic is held back as a fresh evaluation slice
  (when there are at least 10 new rows); the rest, with the traffic earlier versions
  used, joins the training data.
- The candidate is **calibrated** (and its threshold set) on the task's validation file, else
  on a slice of its training data: with `GateSettings.calibrate_on` = `all` (the default)
  upstream answers included, so its guarantee is agreement with the upstream; with `trusted`
  only the task's own data and human and feedback answers, for an upstream that is often wrong.
- When the candidate is promoted and the fleet has a router, the router is refit on the
  tasks' training texts plus their labelled traffic (`router_refit.py`), staged the same way.
- The candidate trains into its own version folder through the kind's usual (crash-safe)
  recipe; fleet.json changes only when the version is registered, and the served pointer
  only on promotion, so a crash or Ctrl-C leaves the served version untouched.
"""

from __future__ import annotations

import json
from collections import Counter
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from smallfleet.data import read_rows
from smallfleet.data.split import holdout_split
from smallfleet.errors import ConfigError
from smallfleet.fleet import cascade_threshold, fleet_index, headline
from smallfleet.flywheel.gate import GateSettings, decide, summary_markdown
from smallfleet.flywheel.traffic import SOURCES, labelled_traffic
from smallfleet.flywheel.router_refit import refit_router
from smallfleet.flywheel.taskdata import TRAFFIC_IDS, task_spec
from smallfleet.flywheel.versions import add_version, list_versions, promote, served_version, version_folder
from smallfleet.store import Database
from smallfleet.tasks import SavedTask
from smallfleet.training.artifacts import write_json

FRESH_SHARE, FRESH_MIN = 0.2, 10
FROZEN_SHARE, SEED = 0.2, 20261201


def unseen_rows(fleet: Path, task: str, rows: list) -> list:
    """The labelled traffic rows of `task` that no version has seen yet (trained on or held back)."""
    used = set()
    for v in list_versions(fleet, task)[task]:
        ids = Path(fleet) / v["folder"] / TRAFFIC_IDS
        if ids.is_file():
            used |= set(json.loads(ids.read_text()))
    return [r for r in rows if r.request_id not in used]


def retrain(fleet: Path, task: str, db: Database, console: Console, promote_when_passed: bool = True,
            settings: GateSettings | None = None) -> dict:  # fmt: skip
    """Train, gate and (when it passes) promote a new version of `task`; returns what `--json` writes."""
    settings = settings or GateSettings()
    fleet = Path(fleet)
    index = fleet_index(fleet)
    entry = index["tasks"].get(task)
    if entry is None:
        raise ConfigError(f"no task {task!r} in {fleet} (tasks: {', '.join(index['tasks'])})")
    served_name = served_version(entry)
    served = SavedTask.open(fleet / entry["folder"])
    spec = task_spec(fleet, task, entry, served)

    traffic = labelled_traffic(db, served)
    new = unseen_rows(fleet, task, traffic.rows)
    if not new:
        console.print(f"{task}: no new labelled rows in the request log ({len(traffic.rows)} already used); "
                      "nothing changed")  # fmt: skip
        return {"candidate": None, "promoted": False, "added_rows": 0, "served": served_name,
                "message": "no new labelled rows"}  # fmt: skip
    fresh: list = []
    if len(new) >= FRESH_MIN:
        _, fresh, _ = holdout_split(new, FRESH_SHARE, SEED)
    fresh_ids = {r.request_id for r in fresh}
    train_traffic = [r for r in traffic.rows if r.request_id not in fresh_ids]
    sources = dict(Counter(r.source for r in new))
    console.print(f"{task}: {len(new)} new labelled row(s) ({sources}); {len(train_traffic)} join the "
                  f"training data, {len(fresh)} held back for the gate")  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix=f".retrain-{task}-", dir=fleet))
    try:
        original = [row for _, row in read_rows(spec.train)]
        frozen_note = spec.test_note or f"the task's test file {spec.test}"
        frozen = spec.test
        if frozen is None:  # a seeded slice of the original data, never trained on by a candidate
            original, held, _ = holdout_split(original, FROZEN_SHARE, SEED)
            frozen = _jsonl(work / "frozen.jsonl", held)
            frozen_note = f"a seeded {FROZEN_SHARE:.0%} slice (seed {SEED}) of {spec.train}, which v1 trained on"
        rows = {source: [served.training_row(r.text, r.answer) for r in train_traffic if r.source == source]
                for source in SOURCES}  # fmt: skip
        valid, calibrated_on = spec.valid, f"the task's validation file {spec.valid}"
        if valid is None and settings.calibrate_on == "trusted":  # upstream answers are trained on, not calibrated on
            fraction = getattr(spec.settings, "valid_fraction", FRESH_SHARE)
            trusted, held, how = holdout_split(original + rows["human"] + rows["feedback"], fraction, SEED)
            original, rows["human"], rows["feedback"] = trusted, [], []
            valid = _jsonl(work / "valid.jsonl", held)
            calibrated_on = (f"{len(held)} rows of the task's data and human or feedback answers ({how}); "
                             "upstream answers only trained on")  # fmt: skip
        elif valid is None:
            calibrated_on = "a slice of the training data, upstream answers included (--calibrate-on all)"
        combined = _jsonl(work / "train.jsonl", original + [row for source in SOURCES for row in rows[source]])
        console.print(f"{task}: calibrated on {calibrated_on}")
        candidate_spec = replace(spec, train=combined, valid=valid, test=frozen)
        version = f"v{1 + max(int(v['version'][1:]) for v in list_versions(fleet, task)[task])}"
        out = version_folder(fleet, task, version)
        metrics = spec.task_kind.train(candidate_spec, out, force=False, console=console)
        candidate = SavedTask.open(out)
        sets = {"frozen set": _paired(served, candidate, frozen, console)}
        if fresh:
            fresh_file = _jsonl(work / "fresh.jsonl", [served.training_row(r.text, r.answer) for r in fresh])
            sets["fresh traffic"] = _paired(served, candidate, fresh_file, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cascade = cascade_threshold(out, spec.target, spec.delta)
    served_cascade = entry.get("cascade") or cascade_threshold(fleet / entry["folder"], spec.target, spec.delta)
    frozen_answers = sets["frozen set"]["candidate_answers"]
    paired = ("served", "candidate", "served_scores", "candidate_scores")
    decision = decide({k: {p: v[p] for p in paired} for k, v in sets.items()},
                      frozen_answers["confidence"], frozen_answers["correct"], served_cascade.get("coverage", 0.0),
                      cascade["coverage"], settings)  # fmt: skip
    promoted = decision["passed"] and promote_when_passed
    report = {"task": task, "candidate": version, "served": served_name, "decision": decision, "promoted": promoted,
              "frozen_set": frozen_note, "calibrated_on": calibrated_on, "added_rows": len(new), "traffic": traffic.summary()}  # fmt: skip
    write_json(out / "gate.json", report)
    (out / "GATE.md").write_text(summary_markdown(task, version, served_name, decision, promoted), encoding="utf-8")
    # every row this version has seen, trained on or held back (held-back rows join the next version's training)
    (out / TRAFFIC_IDS).write_text(json.dumps(sorted(r.request_id for r in traffic.rows)), encoding="utf-8")
    add_version(fleet, task, out, {split: headline(m) for split, m in metrics.items()}, cascade,
                {"gate": {"passed": decision["passed"], "why": decision["why"], "against": served_name}})  # fmt: skip
    router = None
    if promoted:
        promote(fleet, task, version)
        # the served task now knows its labelled traffic: so must the router (when the fleet has one)
        router = refit_router(fleet, db, console, f"{task} {version} promoted with {len(new)} new labelled rows")
    verdict = "promoted" if promoted else ("gate passed, not promoted (--no-promote)" if decision["passed"] else
                                           f"not promoted ({decision['why']})")  # fmt: skip
    console.print(f"{task}: {version} {verdict}; report in {out / 'GATE.md'}")
    return {"candidate": version, "promoted": promoted, "added_rows": len(new), "served": served_name if not promoted
            else version, "gate": decision, "report": str(out / "gate.json"),
            "router": {"folder": router["folder"], "metrics": router["metrics"]} if router else None}  # fmt: skip


def _jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _paired(served: SavedTask, candidate: SavedTask, data: Path, console: Console) -> dict:
    """Both versions' right/wrong answers on `data`, row for row, and their graded scores for graded kinds."""
    quiet = Console(quiet=True)
    served_answers = served.kind.evaluate(served.load(), data, quiet, {})["answers"]
    candidate_answers = candidate.kind.evaluate(candidate.load(), data, quiet, {})["answers"]
    console.print(f"gate: scored both versions on {data.name} ({len(served_answers['correct'])} rows)")
    return {"served": served_answers["correct"], "candidate": candidate_answers["correct"],
            "served_scores": served.kind.item_scores(served_answers),
            "candidate_scores": candidate.kind.item_scores(candidate_answers),
            "candidate_answers": candidate_answers}  # fmt: skip
