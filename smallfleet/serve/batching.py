"""One inference thread per model, batching the requests that arrive while it is busy.

At low load a request runs alone at once (no waiting for a batch to fill); under
concurrent load, requests queued during one forward pass go together into the next,
which is what lets two CPU cores keep up with many clients.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from smallfleet.forking import renew_after_fork

MAX_BATCH = 32
EMA = 0.2
"""Weight of the newest batch in the running estimate of seconds per item."""


class Batcher:
    """Runs `fn(texts, options) -> results` on a dedicated thread; `submit` awaits one result."""

    def __init__(self, fn: Callable[[list[str], Any], list], name: str, max_batch: int = MAX_BATCH):
        self.fn = fn
        self.name = name
        self.max_batch = max_batch
        self._per_item: float | None = None
        self._closed = False
        self._start()
        renew_after_fork(self)

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._running = 0
        self._thread = threading.Thread(target=self._run, name=f"smallfleet-{self.name}", daemon=True)
        self._thread.start()

    def after_fork(self) -> None:
        """A forked worker (`serve --workers`) gets its own queue and thread: the parent's did not come along."""
        if not self._closed:
            self._start()

    async def submit(self, text: str, options: Any = None) -> tuple[Any, float]:
        """The result for `text`, and this request's share of the batch's compute seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((text, options, loop, future))
        return await future

    def expected_wait(self) -> float:
        """Seconds a request submitted now would wait before its own batch starts: the items queued or running,
        times the recent seconds per item (0 until a batch has run). An estimate for load shedding, not a promise."""
        return (self._queue.qsize() + self._running) * (self._per_item or 0.0)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)

    def _run(self) -> None:
        held: list = []  # items with other options than the batch being run; they go next
        while True:
            first = held.pop(0) if held else self._queue.get()
            if first is None:
                return
            batch, rest = [first], []
            for item in held:
                (batch if item[1] == first[1] and len(batch) < self.max_batch else rest).append(item)
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    rest.append(None)
                    break
                (batch if item[1] == first[1] else rest).append(item)
            held = rest
            started = time.perf_counter()
            self._running = len(batch)
            try:
                results = self.fn([item[0] for item in batch], first[1])
                error = None
            except Exception as exc:  # handed to every waiting request, which answers with a 5xx
                results, error = [None] * len(batch), exc
            self._running = 0
            share = (time.perf_counter() - started) / len(batch)
            self._per_item = share if self._per_item is None else (1 - EMA) * self._per_item + EMA * share
            for (_, _, loop, future), result in zip(batch, results):
                loop.call_soon_threadsafe(_settle, future, result, share, error)


def _settle(future: asyncio.Future, result: Any, seconds: float, error: Exception | None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result((result, seconds))
