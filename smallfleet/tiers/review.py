"""The `review` tier: the human review queue. The request is stored for a person and
answered as pending, with the specialist's guess (if any) as the provisional content.

The queue is bounded (`serving.max_pending_reviews`): a person can only answer so many, and
junk traffic must not grow it without limit. Past the bound the tier is unavailable and the
gateway tries the next tier, or answers 503."""

from __future__ import annotations

import asyncio
import time

from smallfleet.store import reviews as review_queue
from smallfleet.tiers.base import Tier, TierFailure, TierReply, TierRequest


class ReviewTier(Tier):
    """The human review queue: every request it gets is queued for a person, while the queue has room."""

    async def answer(self, request: TierRequest) -> TierReply:
        """Queue `request` for a person (off the event loop: a locked database must not stall the gateway).

        Raises:
            TierFailure: UNAVAILABLE when `max_pending_reviews` items are already pending.
        """
        started = time.perf_counter()
        try:
            review_id = await asyncio.to_thread(review_queue.enqueue, self.context.db, request.request_id,
                                                request.task, request.text, request.guess, request.guess_confidence,
                                                self.context.max_pending_reviews)  # fmt: skip
        except review_queue.QueueFull as exc:
            raise TierFailure(self.name, str(exc), TierFailure.UNAVAILABLE) from None
        return TierReply(content=request.guess or "", prompt_tokens=0, completion_tokens=0,
                         seconds=time.perf_counter() - started, cost_usd=0.0,
                         pending_review={"id": review_id, "status": review_queue.PENDING})  # fmt: skip
