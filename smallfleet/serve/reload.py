"""Hot reload: a running gateway follows its fleet.json, so `smallfleet promote` and
`smallfleet rollback` take effect within seconds, with no restart and no failed or delayed
request.

The new version is loaded on a worker thread while the old one keeps answering; then the
task's entry is swapped in one step on the event loop (every request from then on goes to
the new version), and the old version's inference thread is closed a few seconds later,
once the requests already queued on it have been answered.
"""

from __future__ import annotations

import asyncio
import logging

from smallfleet.fleet import FLEET_INDEX
from smallfleet.serve.fleet import ServedFleet, load_router
from smallfleet.training.artifacts import read_json

log = logging.getLogger("smallfleet.reload")
POLL_SECONDS = 1.0
"""How often fleet.json is looked at (a stat call)."""
RETIRE_SECONDS = 5.0
"""How long a replaced version keeps its inference thread for the requests already queued on it."""


class FleetWatcher:
    """Swaps in the version of each task that fleet.json names whenever the file changes."""

    def __init__(self, fleet: ServedFleet):
        self.fleet = fleet
        self.path = fleet.folder / FLEET_INDEX
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:  # one specialist folder served as a fleet: nothing to follow
            return None
        return st.st_mtime_ns, st.st_size

    async def run(self) -> None:
        """Poll until cancelled; a version that fails to load is logged and the one served stays."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self.check()
            except Exception:
                log.exception("fleet reload failed; still serving the versions loaded before")

    async def check(self) -> list[str]:
        """Swap every task whose served folder changed in fleet.json, and the router when it was refit; returns
        their names (`_router` for the router)."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return []
        self._stamp = stamp
        index = await asyncio.to_thread(read_json, self.path)
        swapped = []
        for name, entry in index.get("tasks", {}).items():
            current = self.fleet.tasks.get(name)
            if current is None:  # a task added since start-up (e.g. by `smallfleet distill`)
                self.fleet.tasks[name] = await asyncio.to_thread(self.fleet.reload_task, name, entry)
                log.warning("task %s: added (%s)", name, "serving" if self.fleet.tasks[name].live else "in shadow")
                swapped.append(name)
                continue
            if entry.get("folder") == current.folder:
                if current.live != (not entry.get("shadow_only")):  # promoted out of shadow
                    current.live = not entry.get("shadow_only")
                    log.warning("task %s: %s", name, "now answering" if current.live else "back in shadow")
                    swapped.append(name)
                continue
            new = await asyncio.to_thread(self.fleet.reload_task, name, entry)
            self.fleet.tasks[name] = new  # one step on the event loop: no request sees half of it
            asyncio.get_running_loop().call_later(RETIRE_SECONDS, current.batcher.close)
            log.warning("task %s: now serving %s (was %s)", name, new.version, current.version)
            swapped.append(name)
        router = index.get("router")
        if router and router.get("folder") != self.fleet.router_folder:  # refit, or a first one (distill)
            new_router, batcher = await asyncio.to_thread(load_router, self.fleet.folder, router)
            old = self.fleet.router_batcher
            self.fleet.router, self.fleet.router_batcher = new_router, batcher  # one step on the event loop
            self.fleet.router_folder = router["folder"]
            if old is not None:
                asyncio.get_running_loop().call_later(RETIRE_SECONDS, old.close)
            log.warning("router: now serving %s", router["folder"])
            swapped.append("_router")
        return swapped
