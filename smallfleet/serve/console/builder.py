"""Where the console's pages are built: in a separate, lower-priority process, so a page never
holds the gateway's interpreter lock nor its CPU while API requests wait; with each session's
pages kept for a few seconds, so a browser reloading a page costs almost nothing; and with each
session paced to a person's speed, so a script loading pages without pause cannot keep the
gateway busy serving them either (it waits, which costs nothing).

The gateway sends the builder process the served fleet as plain data (`FleetView`) with each
page; the process has its own connection to the request log and loads no model. One process
builds one page at a time, so the console never takes more than one core, and its CPU is
given to the gateway first (niceness `BUILDER_NICENESS`). A log in SQLite memory cannot be
shared with a process: then pages are built on a worker thread, as everything else is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from starlette.concurrency import run_in_threadpool

from smallfleet.errors import ConfigError
from smallfleet.serve.console.pages import ConsolePages
from smallfleet.serve.console.view import FleetView
from smallfleet.store import Database

if TYPE_CHECKING:
    from smallfleet.serve.fleet import ServedFleet

BUILDER_NICENESS = 10
"""Added to the builder process's niceness: the gateway's own threads come first for the CPU."""
CACHE_ENTRIES = 512
"""Most pages kept at once (the oldest go first)."""
PAGES_PER_SECOND = 4.0
"""Pages a session gets each second, after a first `PAGES_BURST`; faster, each waits its turn."""
PAGES_BURST = 8

_pages: ConsolePages | None = None
"""The builder process's pages, on its own database connection (set by `_start`)."""


def _start(db_url: str) -> None:
    """Run once in the builder process."""
    global _pages
    try:
        os.nice(BUILDER_NICENESS)
    except OSError:  # not allowed here: builds still leave the gateway's interpreter alone
        pass
    _pages = ConsolePages(Database(db_url))


def build_page(pages: ConsolePages, fleet: FleetView, page: str, args: tuple, template: str,
               context: dict) -> tuple[str, int]:  # fmt: skip
    """One page's HTML and status: `pages.<page>(fleet, *args)` rendered with `template` and `context`."""
    try:
        figures = getattr(pages, page)(fleet, *args)
    except ConfigError as exc:  # what the page is about does not exist
        return pages.render(fleet, "error.html.j2", status=404, message=str(exc), session=context.get("session")), 404
    return pages.render(fleet, template, **context, **figures), 200


def _build_in_process(fleet: FleetView, page: str, args: tuple, template: str, context: dict) -> tuple[str, int]:
    assert _pages is not None, "builder process not started"
    return build_page(_pages, fleet, page, args, template, context)


class PageCache:
    """Rendered pages by (session, URL) for `seconds`; `clear()` after anything a page shows was changed here."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._pages: dict[tuple[str, str], tuple[float, str, int]] = {}
        self.hits = 0

    def get(self, key: tuple[str, str]) -> tuple[str, int] | None:
        found = self._pages.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        self.hits += 1
        return found[1], found[2]

    def put(self, key: tuple[str, str], body: str, status: int) -> None:
        if self.seconds <= 0:
            return
        now = time.monotonic()
        if len(self._pages) >= CACHE_ENTRIES:
            self._pages = {k: v for k, v in self._pages.items() if v[0] >= now}
            while len(self._pages) >= CACHE_ENTRIES:
                del self._pages[next(iter(self._pages))]
        self._pages[key] = (now + self.seconds, body, status)

    def clear(self) -> None:
        self._pages.clear()


class Pacer:
    """Pages per session at `rate` a second after a burst of `burst` (a generic cell rate: each page
    moves the session's next due time by 1/rate); `delay` says how long a page must wait."""

    def __init__(self, rate: float = PAGES_PER_SECOND, burst: int = PAGES_BURST):
        self.interval = 1 / rate
        self.slack = (burst - 1) / rate
        self._due: dict[str, float] = {}

    def delay(self, session: str) -> float:
        now = time.monotonic()
        if len(self._due) > CACHE_ENTRIES:  # forget sessions that are idle
            self._due = {k: v for k, v in self._due.items() if v > now}
        due = max(self._due.get(session, now), now)
        self._due[session] = due + self.interval
        return max(0.0, due - now - self.slack)


class Console:
    """The console of one gateway: its pages (`pages`, used in the gateway for form posts and error pages),
    the builder process for the pages people look at, and their cache."""

    def __init__(self, fleet: ServedFleet, db: Database, tiers: list[str], cache_seconds: float):
        self.fleet = fleet
        self.tiers = tiers
        self.db_url = db.url
        self.pages = ConsolePages(db)
        self.cache = PageCache(cache_seconds)
        self.pacer = Pacer()
        self.separate = db.shareable
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def view(self) -> FleetView:
        """The served fleet now (versions switch while the gateway runs)."""
        return FleetView.of(self.fleet, self.tiers)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:  # started with the first page, not with the gateway: most never show one
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                                                 initargs=(self.db_url,))  # fmt: skip
            return self._pool

    def warm(self) -> None:
        """Start the builder process now (it takes seconds to start), e.g. while someone signs in."""
        if self.separate:
            self._executor().submit(os.getpid)

    async def pace(self, session: str) -> None:
        """Wait while `session` asks for pages faster than a person reads them."""
        wait = self.pacer.delay(session)
        if wait > 0:
            await asyncio.sleep(wait)

    async def build(self, page: str, args: tuple, template: str, context: dict) -> tuple[str, int]:
        """One page's HTML and status, built away from the gateway's request path."""
        fleet = self.view()
        if not self.separate:
            return await run_in_threadpool(build_page, self.pages, fleet, page, args, template, context)
        for attempt in (1, 2):
            pool = self._executor()
            try:
                return await asyncio.wrap_future(pool.submit(_build_in_process, fleet, page, args, template, context))
            except BrokenProcessPool:  # the process died (killed, out of memory): a new one, once
                with self._lock:
                    if self._pool is pool:
                        self._pool = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
