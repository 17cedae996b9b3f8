"""Versions of a fleet's tasks, and the pointer to the one being served.

fleet.json keeps, for each task, its versions (`v1`, `v2`, ...: folder, creation time,
metrics, cascade) and which one is served; the task's `folder`, `metrics` and `cascade`
are always the served version's, so everything that reads fleet.json serves that one.
`v1` is the folder `train` wrote (`<fleet>/<task>`); later versions live in
`<fleet>/_versions/<task>/<version>/`. A fleet.json from before versions reads as one `v1`.

Every change rewrites fleet.json whole (a temporary file renamed over it), so a reader,
such as a running gateway polling for changes, never sees half of one.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from smallfleet.errors import ConfigError
from smallfleet.fleet import FLEET_INDEX
from smallfleet.training.artifacts import read_json

VERSIONS_DIR = "_versions"


def _index(fleet: Path) -> dict:
    path = Path(fleet) / FLEET_INDEX
    if not path.is_file():
        raise ConfigError(f"{fleet} has no {FLEET_INDEX}: versions belong to a fleet folder made by `smallfleet train`")
    return read_json(path)


def _write(fleet: Path, index: dict) -> None:
    path = Path(fleet) / FLEET_INDEX
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _entry(index: dict, fleet: Path, task: str) -> dict:
    entry = index["tasks"].get(task)
    if entry is None:
        raise ConfigError(f"no task {task!r} in {fleet} (tasks: {', '.join(index['tasks'])})")
    if "versions" not in entry:  # written before versions: what it serves is v1
        entry["versions"] = {"v1": {"folder": entry["folder"], "created": None, "metrics": entry.get("metrics", {}),
                                    "cascade": entry.get("cascade")}}  # fmt: skip
        entry["served"], entry["history"] = "v1", ["v1"]
    return entry


def list_versions(fleet: Path, task: str | None = None) -> dict[str, list[dict]]:
    """Task -> its versions, oldest first: {version, served, folder, created, metrics, cascade}."""
    index = _index(fleet)
    names = [task] if task else list(index["tasks"])
    out = {}
    for name in names:
        entry = _entry(index, fleet, name)
        out[name] = [{"version": v, "served": v == entry["served"], **info} for v, info in entry["versions"].items()]
    return out


def served_version(entry: dict) -> str:
    """The version a fleet.json task entry serves (`v1` for one written before versions)."""
    return entry.get("served", "v1")


def version_folder(fleet: Path, task: str, version: str) -> Path:
    """Where a new version's specialist goes."""
    return Path(fleet) / VERSIONS_DIR / task / version


def add_version(fleet: Path, task: str, folder: Path, metrics: dict, cascade: dict, extra: dict | None = None) -> str:
    """Register the specialist in `folder` as the task's next version (not served yet); returns its name."""
    index = _index(fleet)
    entry = _entry(index, fleet, task)
    number = 1 + max(int(v[1:]) for v in entry["versions"])
    version = f"v{number}"
    entry["versions"][version] = {"folder": str(Path(folder).resolve().relative_to(Path(fleet).resolve())),
                                  "created": datetime.now(UTC).isoformat(timespec="seconds"), "metrics": metrics,
                                  "cascade": cascade, **(extra or {})}  # fmt: skip
    _write(fleet, index)
    return version


def promote(fleet: Path, task: str, version: str) -> dict:
    """Serve `version` of `task`; returns the task's entry. A running gateway switches within seconds."""
    index = _index(fleet)
    entry = _entry(index, fleet, task)
    _serve(fleet, task, entry, version)
    entry["history"] = [*entry.get("history", []), version]
    _write(fleet, index)
    return entry


def rollback(fleet: Path, task: str) -> str:
    """Serve the version served before the current one (each rollback goes one step further back); returns it."""
    index = _index(fleet)
    entry = _entry(index, fleet, task)
    current = entry["served"]
    history = list(entry.get("history") or [current])
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise ConfigError(f"task {task!r} has nothing to roll back to: it has only ever served {current}")
    _serve(fleet, task, entry, history[-1])
    entry["history"] = history
    _write(fleet, index)
    return history[-1]


def _serve(fleet: Path, task: str, entry: dict, version: str) -> None:
    if version not in entry["versions"]:
        raise ConfigError(f"task {task!r} has no version {version!r} (versions: {', '.join(entry['versions'])})")
    info = entry["versions"][version]
    if not (Path(fleet) / info["folder"]).is_dir():
        raise ConfigError(f"version {version} of {task!r} is missing its folder {Path(fleet) / info['folder']}")
    entry.update(folder=info["folder"], metrics=info.get("metrics", {}), cascade=info.get("cascade"), served=version)
    entry.pop("shadow_only", None)  # a distilled task answers once a version of it is promoted


def serve_router(fleet: Path, folder: Path, metrics: dict, cascade: dict, reason: str,
                 first: dict | None = None) -> dict:  # fmt: skip
    """Serve the router in `folder` (a refit); the one served before stays listed under `previous`. Returns the
    fleet.json router entry. A running gateway switches within seconds.

    Args:
        first: for a fleet without a router yet, the entry's settings (`out_of_scope`, `text_field`, `max_per_task`).
    """
    index = _index(fleet)
    old = index.get("router")
    if not old and first is None:
        raise ConfigError(f"{fleet} has no router to replace")
    entry = {**(old or first), "folder": str(Path(folder).resolve().relative_to(Path(fleet).resolve())),
             "metrics": metrics, "cascade": cascade,
             "refit": {"created": datetime.now(UTC).isoformat(timespec="seconds"), "why": reason},
             "previous": [*old.get("previous", []), old["folder"]] if old else []}  # fmt: skip
    index["router"] = entry
    _write(fleet, index)
    return entry
