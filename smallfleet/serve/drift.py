"""The gateway's drift checks: every `serving.drift_every` seconds, on a worker thread and
never on a request's path, each served task's recent requests are compared with its
training baseline (`flywheel/monitor.py`) and the signals are exported on /metrics."""

from __future__ import annotations

import asyncio
import logging

from smallfleet.flywheel.monitor import DriftSettings, WatchedTask, check_drift
from smallfleet.serve.fleet import ServedFleet
from smallfleet.serve.metrics import GatewayMetrics
from smallfleet.store import Database

log = logging.getLogger("smallfleet.drift")


class DriftMonitor:
    """Runs a drift check of the served fleet periodically and sets the drift gauges."""

    def __init__(self, fleet: ServedFleet, db: Database, metrics: GatewayMetrics, settings: DriftSettings | None = None):
        from smallfleet.models.embed import SentenceEmbedder

        self.fleet = fleet
        self.db = db
        self.metrics = metrics
        self.settings = settings or DriftSettings()
        self.embedder = SentenceEmbedder()  # the encoder loads at the first check, on the worker thread
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
        report = await asyncio.to_thread(check_drift, tasks, router, self.db, self.settings, self.embedder)
        for name, entry in report["tasks"].items():
            for key, signal in entry["signals"].items():
                self.metrics.drift_signal(name, key, signal)
        if report["router"] is not None:
            self.metrics.drift_signal("router", "router_none_rate", report["router"])
        self.last = report
        return report
