"""Write a specialist folder atomically and fingerprint the data it was trained on.

A run writes into a hidden sibling folder and renames it into place only when
everything is saved. A crash or Ctrl-C at any point leaves the previous
specialist exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smallfleet.errors import SpecialistError

MANIFEST = "specialist.json"
CALIBRATION = "calibration.json"
METRICS = "metrics.json"
DRIFT_BASELINE = "drift_baseline.json"
"""A seeded sample of the training inputs, the baseline of the input drift test (see `flywheel/drift.py`)."""


def is_specialist(folder: Path, marker: str = MANIFEST) -> bool:
    """True if `folder` holds a saved specialist (or the artifact whose manifest file is `marker`)."""
    return (folder / marker).is_file()


def check_output(out: Path, force: bool, marker: str = MANIFEST) -> None:
    """Fail early, before any work, if writing to `out` would damage something.

    Args:
        marker: the manifest file that marks a replaceable artifact (a specialist's by default).

    Raises:
        SpecialistError: `out` holds a specialist and `force` is off, or `out` is a
            non-empty folder that is not a specialist (never replaced, even with force).
    """
    _recover(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise SpecialistError(f"{out} exists and is not a folder")
    if is_specialist(out, marker):
        if not force:
            raise SpecialistError(f"{out} already holds a specialist; pass --force to replace it")
        return
    if any(out.iterdir()):
        raise SpecialistError(f"{out} is a non-empty folder that is not a specialist; refusing to write into it")


@contextmanager
def staged_folder(out: Path, force: bool = False, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on failure it is removed.

    Args:
        marker: the manifest file of the artifact `out` may already hold (see `check_output`).
    """
    out = out.resolve()
    check_output(out, force, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def _recover(out: Path) -> None:
    """Undo a swap that was cut between its two renames, and clear partial runs."""
    parent = out.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{out.name}.old-*"))
    if olds and not out.exists():
        os.replace(olds[-1], out)
        olds = olds[:-1]
    for stale in olds + sorted(parent.glob(f".{out.name}.partial-*")):
        if stale.is_dir() and not _owned_by_live_process(stale):
            shutil.rmtree(stale)


def _owned_by_live_process(folder: Path) -> bool:
    """True if the process named in a staging folder's name (`.x.partial-<pid>-…`, `.x.old-<pid>`) still runs."""
    match = re.search(r"\.(?:old|partial)-(\d+)", folder.name)
    if not match or int(match.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fingerprint_files(paths: list[Path | None]) -> dict:
    """SHA-256 of each data file and of them all together, so a specialist names its exact data."""
    files = {}
    total = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        files[str(path)] = digest
        total.update(digest.encode())
    return {"sha256": total.hexdigest(), "files": files}


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
