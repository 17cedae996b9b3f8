"""The `review` tier: the human review queue. The request is stored for a person and
answered as pending, with the specialist's guess (if any) as the provisional content."""

from __future__ import annotations

import time

from smallfleet.store import reviews as review_queue
from smallfleet.tiers.base import Tier, TierReply, TierRequest


class ReviewTier(Tier):
    """The human review queue: every request it gets is queued for a person, never failed."""

    async def answer(self, request: TierRequest) -> TierReply:
        started = time.perf_counter()
        review_id = review_queue.enqueue(self.context.db, request.request_id, request.task, request.text,
                                         request.guess, request.guess_confidence)  # fmt: skip
        return TierReply(content=request.guess or "", prompt_tokens=0, completion_tokens=0,
                         seconds=time.perf_counter() - started, cost_usd=0.0,
                         pending_review={"id": review_id, "status": review_queue.PENDING})  # fmt: skip
