"""Live audits: the guarantee checked on live traffic.

With `serving.audit_rate` above 0, that share of *accepted* requests is also sent to the
first upstream tier, in the background once the client has its answer (never delaying
it). The upstream's answer is stored beside the specialist's as a judgement
(`store/judgements.py`), and the task's live quality (with reviews and client feedback,
which outrank audits) is tested against the bound its guarantee promised. A task whose
live quality falls below that bound with significance gets a warning in the server log and
`smallfleet_live_quality_alert{task} 1` in /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random

from smallfleet.live_quality import LiveQuality, assess
from smallfleet.serve.fleet import ServedTask
from smallfleet.serve.metrics import GatewayMetrics
from smallfleet.store import Database
from smallfleet.store.judgements import new_judgement, record, tally
from smallfleet.tasks import get_kind
from smallfleet.tiers.base import Tier, TierFailure, TierRequest

log = logging.getLogger("smallfleet.audit")
CLOSE_SECONDS = 10.0
"""At shutdown, how long audits in flight may take to finish."""


def promised_bound(task: ServedTask) -> float:
    """What live quality is tested against: the guaranteed lower bound, or the target of a threshold set by hand."""
    g = task.guarantee
    return g.guaranteed_lower_bound if g is not None and g.supported else task.target


class Auditor:
    """Audits a random share of accepted answers with one upstream tier and watches each task's live quality."""

    def __init__(self, rate: float, tier: Tier | None, db: Database, metrics: GatewayMetrics,
                 seed: int | None = None):  # fmt: skip
        self.rate = rate if tier is not None else 0.0
        self.tier = tier
        self.db = db
        self.metrics = metrics
        self.random = random.Random(seed)
        self.live: dict[str, LiveQuality] = {}
        self._jobs: set[asyncio.Task] = set()

    def draw(self) -> bool:
        """Whether to audit the accepted answer at hand (true for a share `rate` of them)."""
        return self.rate > 0 and self.random.random() < self.rate

    def audit(self, task: ServedTask, request: TierRequest, answer: str) -> None:
        """Ask the audit tier for `request` in the background and judge the specialist's `answer` against it."""
        job = asyncio.get_running_loop().create_task(self._audit(task, request, answer))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _audit(self, task: ServedTask, request: TierRequest, answer: str) -> None:
        try:
            reply = await self.tier.ask(request)
        except TierFailure as exc:
            log.warning("audit of %s request %s failed: %s", task.name, request.request_id, exc)
            self.metrics.audited(task.name, "failed")
            return
        mapped = task.specialist.parse_escalation(reply.content)
        if mapped is None:
            log.warning("audit of %s request %s: the %s reply could not be used for the task", task.name,
                        request.request_id, self.tier.name)  # fmt: skip
            self.metrics.audited(task.name, "failed")
            return
        kind = get_kind(task.specialist.kind)
        try:
            agrees = await asyncio.to_thread(kind.agrees, task.specialist.manifest, answer, mapped.content)
            row = new_judgement(request.request_id, task.name, "audit", True, agrees, answer, mapped.content,
                                self.tier.name, reply.cost_usd)  # fmt: skip
            await asyncio.to_thread(record, self.db, row)
        except Exception:  # an audit must never take anything else down
            log.exception("audit of %s request %s could not be stored", task.name, request.request_id)
            self.metrics.audited(task.name, "failed")
            return
        self.metrics.audited(task.name, "agree" if agrees else "disagree")
        await self.check(task)

    async def check(self, task: ServedTask) -> LiveQuality:
        """Re-test the task's live quality on every judgement stored so far; warn when it turns into an alert."""
        counts = (await asyncio.to_thread(tally, self.db, task.name)).get(task.name, {})
        live = assess(counts.get("accepted_agreed", 0), counts.get("accepted_judged", 0), promised_bound(task))
        before = self.live.get(task.name)
        self.live[task.name] = live
        self.metrics.live_quality(task.name, live)
        if live.alert and not (before and before.alert):
            log.warning("task %s: live accepted quality is below its guarantee: %s", task.name, live.describe())
        elif before and before.alert and not live.alert:
            log.warning("task %s: live accepted quality is back in line: %s", task.name, live.describe())
        return live

    async def start(self, tasks: list[ServedTask]) -> None:
        """Load each task's live quality from the judgements already stored (an alert survives a restart)."""
        for task in tasks:
            await self.check(task)

    async def close(self) -> None:
        """Let audits in flight finish (for a few seconds), then drop the rest."""
        if self._jobs:
            _, late = await asyncio.wait(set(self._jobs), timeout=CLOSE_SECONDS)
            for job in late:
                job.cancel()
