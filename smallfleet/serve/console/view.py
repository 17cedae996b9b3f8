"""What the console's pages need of the served fleet, as plain data: taken from the live
`ServedFleet` on the gateway for each page and sent to the process that builds the page
(`builder.py`), which loads no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass
from pathlib import Path

from smallfleet.tasks import SavedTask, get_kind

if TYPE_CHECKING:
    from smallfleet.serve.fleet import ServedFleet


@dataclass(frozen=True)
class TaskView:
    """One served task as the console shows it."""

    name: str
    kind: str
    version: str
    threshold: float
    coverage: float
    target: float
    promise: str
    """The threshold's guarantee in words (or that it was set by hand)."""
    specialist_folder: Path
    manifest: dict

    def saved_task(self) -> SavedTask:
        """The served version as the review code path wants it."""
        return SavedTask(self.specialist_folder, self.manifest, get_kind(self.kind))


@dataclass(frozen=True)
class FleetView:
    """The served fleet at one moment: its name, folder, tier names and tasks."""

    name: str
    folder: Path
    tiers: tuple[str, ...]
    tasks: dict[str, TaskView]

    @classmethod
    def of(cls, fleet: ServedFleet, tiers: list[str]) -> FleetView:
        tasks = {}
        for name, task in list(fleet.tasks.items()):
            s = task.specialist
            promise = task.guarantee.describe() if task.guarantee else f"accept confidence >= {task.threshold:.3f} (set by hand)"
            tasks[name] = TaskView(name, s.kind, task.version, task.threshold, task.coverage, task.target, promise,
                                   Path(s.folder), s.manifest)  # fmt: skip
        return cls(fleet.name, Path(fleet.folder), tuple(tiers), tasks)
