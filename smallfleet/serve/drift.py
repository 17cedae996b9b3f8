"""The gateway's drift checks: every `serving.drift_every` seconds, each served task's recent
requests are compared with its training baseline (`flywheel/monitor.py`) and the signals are
exported on /metrics.

A check loads a sentence encoder and embeds a few thousand texts, which takes hundreds of MB
for a minute. So each check runs in a fresh, lower-priority process that exits when the check
is done: its memory goes back to the system, and the gateway's own memory stays flat over days
of checks (measured in `bench/soak.py`). A log in SQLite memory cannot be shared with a
process: then the check runs on a worker thread of the gateway, as the console's pages do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from smallfleet.flywheel.monitor import DriftSettings, WatchedTask, check_drift
from smallfleet.serve.fleet import ServedFleet
from smallfleet.serve.metrics import GatewayMetrics
from smallfleet.store import Database

log = logging.getLogger("smallfleet.drift")

CHECK_NICENESS = 10
"""Added to the check process's niceness: the gateway's own threads come first for the CPU."""


def _check_in_process() -> None:
    """One check, run in its own process (`python -m smallfleet.serve.drift`, see the module's docstring):
    reads what to check as JSON on stdin and writes the report as JSON on stdout."""
    from smallfleet.models.embed import SentenceEmbedder

    try:
        os.nice(CHECK_NICENESS)
    except OSError:  # not allowed here: the check still leaves the gateway's memory alone
        pass
    job = json.load(sys.stdin)
    tasks = [WatchedTask(**{**t, "folder": Path(t["folder"])}) for t in job["tasks"]]
    router = job["router"] and WatchedTask(**{**job["router"], "folder": Path(job["router"]["folder"])})
    db = Database(job["db_url"])
    try:
        report = check_drift(tasks, router, db, DriftSettings(**job["settings"]), SentenceEmbedder())
    finally:
        db.close()
    json.dump(report, sys.stdout)


class DriftMonitor:
    """Runs a drift check of the served fleet periodically and sets the drift gauges."""

    def __init__(self, fleet: ServedFleet, db: Database, metrics: GatewayMetrics, settings: DriftSettings | None = None):
        self.fleet = fleet
        self.db = db
        self.metrics = metrics
        self.settings = settings or DriftSettings()
        self.separate = db.shareable
        self._embedder = None  # only for a log in memory: loaded at the first check, on the worker thread
        self.last: dict | None = None
        """The latest report (as `smallfleet drift --json` gives it, without `signals`)."""

    async def run(self) -> None:
        """Check every `serving.drift_every` seconds until cancelled; a failed check is logged and the next one runs."""
        while True:
            await asyncio.sleep(self.fleet.serving.drift_every)
            try:
                await self.check()
            except Exception:
                log.exception("drift check failed; the drift gauges keep their last values")

    async def check(self) -> dict:
        """One check of the versions served now; sets the gauges and returns the report."""
        tasks = [WatchedTask(t.name, self.fleet.folder / t.folder, t.threshold, t.version)
                 for t in self.fleet.tasks.values()]  # fmt: skip
        router = None
        if self.fleet.router is not None:
            r = self.fleet.router
            router = WatchedTask("router", r.specialist.folder, r.threshold)
        if self.separate:
            report = await self._in_process(tasks, router)
        else:
            if self._embedder is None:
                from smallfleet.models.embed import SentenceEmbedder

                self._embedder = SentenceEmbedder()
            report = await asyncio.to_thread(check_drift, tasks, router, self.db, self.settings, self._embedder)
        for name, entry in report["tasks"].items():
            for key, signal in entry["signals"].items():
                self.metrics.drift_signal(name, key, signal)
        if report["router"] is not None:
            self.metrics.drift_signal("router", "router_none_rate", report["router"])
        self.last = report
        return report

    async def _in_process(self, tasks: list[WatchedTask], router: WatchedTask | None) -> dict:
        job = {"tasks": [asdict(t) for t in tasks], "router": router and asdict(router), "db_url": self.db.url,
               "settings": asdict(self.settings)}  # fmt: skip
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "smallfleet.serve.drift",
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
        try:
            out, _ = await proc.communicate(json.dumps(job, default=str).encode())
        finally:
            if proc.returncode is None:  # cancelled (the gateway stops): the check is not waited for
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"the drift check process exited with {proc.returncode} (its error is above)")
        return json.loads(out)


if __name__ == "__main__":
    _check_in_process()
