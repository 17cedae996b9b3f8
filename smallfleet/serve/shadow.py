"""Shadow: a candidate version answers live requests in the background, after the response.

`serve --shadow TASK=VERSION` loads that version beside the served one. For every request the
served version answered (or escalated), the candidate answers the same text once the client
has its response, and the request log's `shadow` table gets its answer with whether it agrees
with the served version's answer and, where the request escalated, with the final answer.
`smallfleet versions` shows the agreement. Shadow answers share the CPU with live requests, so
shadow a candidate on part of the day rather than for ever on a busy box.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from smallfleet.flywheel.shadow_gate import promote_if_proven
from smallfleet.serve.fleet import ServedTask
from smallfleet.serve.protocol import Completion
from smallfleet.store import Database
from smallfleet.store.shadow import UPSTREAM, new_shadow_row, record
from smallfleet.tasks import get_kind

log = logging.getLogger("smallfleet.shadow")
CLOSE_SECONDS = 10.0
PROMOTE_CHECK_SECONDS = 5.0
"""Least time between two checks of one task in shadow against its auto-promote goal."""


class Shadow:
    """Runs each task's shadow version (task name -> ServedTask) on the requests its served version saw."""

    def __init__(self, tasks: dict[str, ServedTask], db: Database, fleet: Path):
        self.tasks = tasks
        self.db = db
        self.fleet = fleet
        self._jobs: set[asyncio.Task] = set()
        self._checked: dict[str, float] = {}

    def follow(self, served: ServedTask, text: str, options, completion: Completion) -> None:
        shadow = self.tasks.get(served.name)
        if shadow is None:
            return
        job = asyncio.get_running_loop().create_task(self._run(shadow, served, text, options, completion))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run(self, shadow: ServedTask, served: ServedTask, text: str, options, completion: Completion) -> None:
        try:
            answer, _ = await shadow.batcher.submit(text, options)
            kind, manifest = get_kind(shadow.specialist.kind), shadow.specialist.manifest
            agrees_served = await asyncio.to_thread(kind.agrees, manifest, answer.content, completion.guess or "")
            final = completion.content if completion.escalated and completion.status == "ok" else None
            agrees_final = None if final is None else await asyncio.to_thread(kind.agrees, manifest, answer.content, final)
            row = new_shadow_row(completion.request_id, served.name, shadow.version, served.version, answer.content,
                                 answer.confidence, agrees_served, agrees_final)  # fmt: skip
            await asyncio.to_thread(record, self.db, row)
        except Exception:  # a shadow must never take anything else down
            log.exception("shadow %s of %s failed on request %s", shadow.version, served.name, completion.request_id)

    def follow_upstream(self, task: ServedTask, text: str, options, completion: Completion) -> None:
        """A task in shadow (a distilled task not promoted yet) answers a request the frontier answered; the
        shadow table gets whether it agrees with the frontier (served version `upstream`)."""
        job = asyncio.get_running_loop().create_task(self._judge_upstream(task, text, options, completion))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _judge_upstream(self, task: ServedTask, text: str, options, completion: Completion) -> None:
        try:
            answer, _ = await task.batcher.submit(text, options)
            kind, manifest = get_kind(task.specialist.kind), task.specialist.manifest
            agrees = await asyncio.to_thread(kind.agrees, manifest, answer.content, completion.content)
            row = new_shadow_row(completion.request_id, task.name, task.version, UPSTREAM, answer.content,
                                 answer.confidence, agrees, agrees)  # fmt: skip
            await asyncio.to_thread(record, self.db, row)
            if time.monotonic() - self._checked.get(task.name, -PROMOTE_CHECK_SECONDS) >= PROMOTE_CHECK_SECONDS:
                self._checked[task.name] = time.monotonic()
                verdict = await asyncio.to_thread(promote_if_proven, self.fleet, self.db, task.name, task.threshold)
                if verdict is not None and verdict.promoted:  # the fleet watcher now makes it answer
                    log.warning(verdict.describe())
        except Exception:  # a shadow must never take anything else down
            log.exception("shadow task %s failed on request %s", task.name, completion.request_id)

    async def close(self) -> None:
        if self._jobs:
            _, late = await asyncio.wait(set(self._jobs), timeout=CLOSE_SECONDS)
            for job in late:
                job.cancel()

