"""Circuit breaker: a tier that keeps failing is skipped for a cool-down instead of costing
every escalated request its timeout.

Closed (the normal state): requests pass and consecutive failures are counted; `failures`
of them in a row open the circuit. Open: requests are refused at once, without calling the
tier, for `seconds`. Then half-open: one trial request passes (the others are still refused
while it runs); its success closes the circuit, its failure opens it for another cool-down.

Only failures that say the tier is down count (timeouts, connection errors, 5xx); a tier that
answers, even with a 4xx about the request, is up. The gateway serves every request on one
event loop, so the state needs no lock.
"""

from __future__ import annotations

import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    """The circuit of one tier.

    Args:
        failures: Consecutive failures that open the circuit; 0 never opens it.
        seconds: How long the circuit stays open before a trial request is let through.
        clock: Seconds on a monotonic clock (tests pass their own).
    """

    def __init__(self, failures: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.seconds = seconds
        self.clock = clock
        self.consecutive = 0
        """Failures in a row so far."""
        self.opened_at: float | None = None
        self._trial = False  # a trial request is in flight

    @property
    def state(self) -> str:
        """`closed`, `open`, or `half-open` (the cool-down is over: the next request is a trial)."""
        if self.opened_at is None:
            return CLOSED
        if self._trial or self.clock() - self.opened_at < self.seconds:
            return OPEN
        return HALF_OPEN

    def admit(self) -> float | None:
        """None when a request may go to the tier now (the trial one when half-open); else the seconds until
        the next trial."""
        state = self.state
        if state == HALF_OPEN:
            self._trial = True
        if state != OPEN:
            return None
        return max(0.0, self.opened_at + self.seconds - self.clock())

    def succeeded(self) -> None:
        """The tier answered: the circuit closes."""
        self.consecutive, self.opened_at, self._trial = 0, None, False

    def failed(self) -> None:
        """The tier is down for this request: count it; open (or reopen, after a failed trial) the circuit."""
        self.consecutive += 1
        if self._trial or (self.failures and self.consecutive >= self.failures):
            self.opened_at = self.clock()
        self._trial = False

    def abandoned(self) -> None:
        """The request ended without telling whether the tier is up (cancelled, or not sent): the trial, if it
        was one, goes to the next request."""
        self._trial = False
