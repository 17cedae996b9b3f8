"""Copies of the session's trained fleet, for tests that change it (promote, retrain, roll back)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smallfleet.flywheel.versions import add_version, version_folder


def copy_fleet(fleet_dir: Path, dst: Path, second_version: str | None = None) -> Path:
    """A copy of the trained fleet `fleet_dir` at `dst` (without its logs), for a test that rewrites its fleet.json.

    With `second_version`, that task gets a v2 (a copy of its v1) that a test can promote and roll back.
    """
    shutil.copytree(fleet_dir, dst, ignore=shutil.ignore_patterns("*.db*", "*.log"))
    if second_version:
        v2 = version_folder(dst, second_version, "v2")
        shutil.copytree(dst / second_version, v2)
        entry = json.loads((dst / "fleet.json").read_text())["tasks"][second_version]
        assert add_version(dst, second_version, v2, entry["metrics"], entry["cascade"]) == "v2"
    return dst
