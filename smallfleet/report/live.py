"""Live quality of each task of a fleet, from the judgements in its database, tested against
the bound the task's guarantee promised (as stored in fleet.json)."""

from __future__ import annotations

from pathlib import Path

from smallfleet.fleet import fleet_index
from smallfleet.live_quality import assess
from smallfleet.store import Database
from smallfleet.store.judgements import tally


def promised_bounds(fleet: Path) -> dict[str, float | None]:
    """Task -> the quality its stored guarantee promises (the guaranteed lower bound; the target when unsupported)."""
    out = {}
    for name, entry in fleet_index(fleet, empty_ok=True)["tasks"].items():
        cascade = entry.get("cascade") or {}
        out[name] = cascade.get("guaranteed_lower_bound") if cascade.get("supported") else cascade.get("target")
    return out


def live_quality(db: Database, fleet: Path, since: str | None = None) -> dict[str, dict]:
    """Per task with judgements: the LiveQuality of its accepted answers (as a dict), plus the agreement of all its
    judged answers (reviews of escalated guesses included), the count by source, and the audits and their spend."""
    bounds = promised_bounds(fleet)
    out = {}
    for task, counts in sorted(tally(db, since=since).items()):
        live = assess(counts["accepted_agreed"], counts["accepted_judged"], bounds.get(task)).to_dict()
        out[task] = {**live, "all_judged": counts["judged"], "all_agreed": counts["agreed"],
                     "by_source": counts["by_source"], "audits": counts["audits"],
                     "audit_cost_usd": round(counts["audit_cost_usd"], 6)}  # fmt: skip
    return out
