"""The gateway's side of per-key budgets and rate limits: the counters live in the database
(store/limits.py), so gateways sharing one database enforce one limit; this keeps what can be
kept in memory without overshooting.

- Keys without limits cost nothing: the limits are read with the keys, every few seconds.
- A refusal for a spent window (rpm, budget) is remembered until that window ends: the counters only
  grow within a window, so the database would refuse too, and a client hammering a limit costs no
  database round-trip. Nothing is ever admitted from memory.
- Database calls run in a worker thread: a slow or locked database never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import time

from smallfleet.store.db import Database
from smallfleet.store.keys import key_limits
from smallfleet.store.limits import KeyLimits, Refusal, admit, charge
from smallfleet.tokens import estimate_prompt_tokens

REFRESH_SECONDS = 2.0


def request_tokens(text: str) -> int:
    """The prompt tokens a request is admitted with (the estimate the request log uses for its input)."""
    return estimate_prompt_tokens([{"content": text}])


class KeyLimiter:
    """Admits requests against their key's limits and charges what they cost."""

    def __init__(self, db: Database):
        self.db = db
        self._limits: dict[str, tuple[int, KeyLimits]] = {}
        self._loaded = float("-inf")
        self._spent: dict[tuple[str, str], tuple[Refusal, float]] = {}  # (key, limit) -> refusal, its window's end

    async def limits(self, key: str | None) -> tuple[int, KeyLimits] | None:
        """The key's id and limits; None for no key or a key without limits."""
        if key is None:
            return None
        if time.monotonic() - self._loaded > REFRESH_SECONDS:
            self._limits = await asyncio.to_thread(key_limits, self.db)
            self._loaded = time.monotonic()
        return self._limits.get(key)

    async def admit(self, key: str | None, text: str) -> Refusal | None:
        """Take one request from the key's limits; the refusal when one is reached (see store/limits.py).

        Args:
            key: The caller's key name (None: keys are not in use).
            text: The request's input text (its tokens count against tpm).
        """
        found = await self.limits(key)
        if found is None:
            return None
        now = time.time()
        for limit in ("rpm", "budget_usd"):
            remembered = self._spent.get((key, limit))
            if remembered and now < remembered[1]:
                refusal, ends = remembered
                retry = max(1, int(ends - now + 0.999))
                return Refusal(refusal.limit, refusal.message.rsplit("; try again", 1)[0] + f"; try again in {retry} s",
                               retry, refusal.window, ends)  # fmt: skip
        key_id, limits = found
        refusal = await asyncio.to_thread(admit, self.db, key_id, limits, request_tokens(text), now)
        if refusal is not None and refusal.limit != "tpm":  # one big request over tpm does not spend the window
            self._spent[(key, refusal.limit)] = (refusal, refusal.ends)
        return refusal

    async def charge(self, key: str | None, text: str, prompt_tokens: int, completion_tokens: int, usd: float) -> None:
        """Add an answered request's tokens beyond those taken at admission, and its cost, to the key's counters."""
        found = await self.limits(key)
        if found is None:
            return
        key_id, limits = found
        tokens = max(0, prompt_tokens + completion_tokens - request_tokens(text))
        await asyncio.to_thread(charge, self.db, key_id, limits, tokens, usd)
