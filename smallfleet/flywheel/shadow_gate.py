"""Auto-promotion of a distilled task on its live shadow agreement with the frontier.

A task distilled with `--auto-promote` whose held-back rows could not prove it stays in shadow
with its goal (`auto_promote: {target, delta}` in fleet.json). While it is in shadow, the gateway
has it answer the requests the frontier answers and stores whether it agreed (the `shadow`
table). Only the answers it would have accepted count, since only those would be served.

Looking at the agreement again and again as rows come in would raise the chance of promoting a
task that is not good enough. So the test takes a fixed series of looks: look k uses the first
n0 x 2^k accepted answers, with failure probability delta / 2^(k+1), where n0 is the fewest
answers that could pass the first look at all. The probabilities add up to at most delta, and
a look gives the same verdict however often it is computed. The task is promoted at the first
look whose one-sided Clopper-Pearson lower bound on agreement reaches the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from smallfleet.fleet import FLEET_INDEX
from smallfleet.flywheel.versions import promote, served_version
from smallfleet.guarantee import error_upper_bound
from smallfleet.store import Database
from smallfleet.store.shadow import accepted_against_frontier
from smallfleet.training.artifacts import read_json

MAX_LOOKS = 12


@dataclass
class ShadowVerdict:
    task: str
    version: str
    answers: int
    """Accepted answers the deciding look used (the last look's, when none passed)."""
    agreeing: int
    lower_bound: float
    target: float
    delta: float
    promoted: bool

    def describe(self) -> str:
        verdict = "promoted" if self.promoted else "still in shadow"
        return (f"task {self.task} {self.version}: {verdict} on live shadow agreement: {self.agreeing} of "
                f"{self.answers} accepted answers agree with the frontier, lower bound {self.lower_bound:.3f} against "
                f"target {self.target:g} (failure probability {self.delta:g} over every look)")  # fmt: skip


def first_look(target: float, delta: float) -> int:
    """The fewest accepted answers that could pass the first look (all agreeing, at delta / 2)."""
    return max(1, math.ceil(math.log(delta / 2) / math.log(target)))


def promote_if_proven(fleet: Path, db: Database, task: str, threshold: float) -> ShadowVerdict | None:
    """Promote `task` (served version) when its live shadow agreement clears its auto-promote goal; None when the
    task is not in shadow with one, or has too few accepted answers for a first look yet."""
    entry = read_json(Path(fleet) / FLEET_INDEX).get("tasks", {}).get(task)
    if not entry or not entry.get("shadow_only") or not entry.get("auto_promote"):
        return None
    target, delta = entry["auto_promote"]["target"], entry["auto_promote"]["delta"]
    version, n0 = served_version(entry), first_look(target, delta)
    agreed = accepted_against_frontier(db, task, version, threshold, n0 * 2 ** (MAX_LOOKS - 1))
    verdict = None
    for k in range(MAX_LOOKS):
        n = n0 * 2**k
        if len(agreed) < n:
            break
        agreeing = sum(agreed[:n])
        bound = 1 - error_upper_bound(n - agreeing, n, delta / 2 ** (k + 1))
        verdict = ShadowVerdict(task, version, n, agreeing, bound, target, delta, bound >= target)
        if verdict.promoted:
            promote(fleet, task, version)
            break
    return verdict
