"""Escalation tiers: what every tier offers, its settings, and the name -> class registry.

A tier answers a request the specialist could not (or did not) accept: an OpenAI-compatible
endpoint, the human review queue, or a third-party kind registered under the
`smallfleet.tiers` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from smallfleet.errors import ConfigError
from smallfleet.pii import Redaction, check_kinds
from smallfleet.registry import Registry
from smallfleet.tiers.breaker import Breaker

if TYPE_CHECKING:
    import httpx

    from smallfleet.store import Database


@dataclass
class TierSpec:
    """One escalation tier: an OpenAI-compatible endpoint or the human review queue."""

    name: str
    """Tier name, shown in responses and the request log."""
    kind: str = "openai"
    """`openai` (any OpenAI-compatible endpoint), `review` (human review queue), or a registered kind."""
    base_url: str = ""
    """Endpoint root for `openai` tiers, e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1."""
    model: str = ""
    """Model name sent upstream; `{task}` in it becomes the request's task (e.g. vLLM LoRA modules named after tasks)."""
    api_key_env: str = ""
    """Environment variable holding the upstream API key (keys are never read from files)."""
    input_price: float = 0.0
    """USD per million input tokens."""
    output_price: float = 0.0
    """USD per million output tokens."""
    hour_usd: float = 0.0
    """For self-hosted endpoints: USD per hour of the machine, costed from measured request time."""
    timeout: float = 30.0
    """Seconds before an upstream attempt is abandoned."""
    retries: int = 2
    """Retries after a timeout, connection error or 5xx, with exponential backoff."""
    deadline: float = 45.0
    """Seconds one request may spend on this tier, all attempts and backoff included; no retry starts past it."""
    breaker_failures: int = 3
    """Consecutive failed requests (timeouts, connection errors, 5xx) that open the tier's circuit; 0 = never."""
    breaker_seconds: float = 30.0
    """How long an open circuit skips the tier before one trial request is let through."""
    external: bool = False
    """The tier is run by a third party: what is sent to it leaves your network (its `redact` list applies)."""
    redact: list[str] = field(default_factory=list)
    """Personal data replaced by typed placeholders before a request goes to this external tier, and put back in its
    answer: any of email, phone, card, iban, person (see smallfleet/pii.py for what each finds)."""

    def __post_init__(self) -> None:
        where = f"tier {self.name!r}"
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: name must be letters, digits, '-' or '_'")
        if self.kind not in TIERS:
            raise ConfigError(f"{where}: unknown kind {self.kind!r} (known: {', '.join(TIERS.names())})")
        TIERS.get(self.kind).check_spec(self)
        if min(self.input_price, self.output_price, self.hour_usd) < 0 or self.timeout <= 0 or self.retries < 0:
            raise ConfigError(f"{where}: prices, timeout and retries must not be negative")
        if self.deadline <= 0 or self.breaker_failures < 0 or self.breaker_seconds <= 0:
            raise ConfigError(f"{where}: deadline and breaker_seconds must be above 0, breaker_failures not negative")
        check_kinds(self.redact, where)
        if self.redact and not self.external:
            raise ConfigError(f"{where}: redact applies to a tier outside your network: set external: true")

    def token_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a request of this size at this tier's token prices."""
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1e6


class TierFailure(Exception):
    """A tier could not answer; the message says what happened (never a secret).

    Its `kind` tells the gateway and the tier's circuit breaker what the failure says about the tier:
    DOWN, it did not answer (timeout, connection error, 5xx: counts towards opening its circuit);
    REFUSED, it answered with an error about this request (e.g. a 4xx: it is up); UNAVAILABLE, it was
    not asked (its circuit is open, its queue is full), so trying again later may work.
    """

    DOWN, REFUSED, UNAVAILABLE = "down", "refused", "unavailable"

    def __init__(self, tier: str, reason: str, kind: str = DOWN):
        super().__init__(f"{tier}: {reason}")
        self.tier = tier
        self.reason = reason
        self.kind = kind


@dataclass
class TierContext:
    """What the gateway shares with every tier it builds."""

    client: httpx.AsyncClient
    """The gateway's HTTP connection pool."""
    db: Database
    """The gateway's database (request log, review queue)."""
    max_pending_reviews: int = 10_000
    """Most items the review queue may hold pending (`serving.max_pending_reviews`)."""


@dataclass
class TierRequest:
    """One request handed to a tier."""

    body: dict
    """The chat-completions body to send (its `messages` are the specialist's prompt, or the client's own)."""
    task: str | None
    """The task the request was routed to; None when no specialist fits (passthrough)."""
    text: str
    """The user's input."""
    request_id: str
    """The id the client and the request log will see."""
    guess: str | None = None
    """The specialist's own answer, when it gave one."""
    guess_confidence: float | None = None
    """The specialist's confidence in `guess`."""


@dataclass
class TierReply:
    """A tier's answer and what it cost."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost_usd: float
    finish_reason: str = "stop"
    pending_review: dict | None = None
    """Set when the answer is deferred to a person: `{"id": <review id>, "status": "pending"}`."""


class Tier(ABC):
    """One escalation tier, built from its spec for the life of the gateway."""

    costed: ClassVar[bool] = False
    """True when the tier's answers are costed from its spec's prices (an unpriced spec is then worth a warning)."""

    def __init__(self, spec: TierSpec, context: TierContext):
        self.spec = spec
        self.name = spec.name
        self.context = context
        self.breaker = Breaker(spec.breaker_failures, spec.breaker_seconds)

    @classmethod
    def check_spec(cls, spec: TierSpec) -> None:
        """Raise ConfigError when `spec` lacks what this kind needs."""

    @property
    def model(self) -> str | None:
        """The upstream model name clients may ask for; None for a tier that is not a model endpoint."""
        return None

    def estimate_cost(self, messages: list[dict], content: str) -> float:
        """What this tier would charge for `messages` answered with `content`."""
        return 0.0

    @abstractmethod
    async def answer(self, request: TierRequest) -> TierReply:
        """Answer `request`.

        Raises:
            TierFailure: the tier could not answer; the gateway tries the next one.
        """

    async def ask(self, request: TierRequest) -> TierReply:
        """`answer(request)` through the tier's circuit breaker (see `breaker.py`): what callers use.

        Raises:
            TierFailure: the tier could not answer, or at once (UNAVAILABLE) while its circuit is open.
        """
        wait = self.breaker.admit()
        if wait is not None:
            raise TierFailure(self.name, f"circuit open after {self.breaker.consecutive} failed requests in a row "
                              f"(next trial in {wait:.0f}s)", TierFailure.UNAVAILABLE)  # fmt: skip
        redaction = Redaction(self.spec.redact) if self.spec.external and self.spec.redact else None
        if redaction is not None:  # personal data stays inside: placeholders go out, and are put back in the answer
            request = replace(request, body={**request.body, "messages": redaction.redact_messages(request.body["messages"])},
                              text=redaction.redact(request.text),
                              guess=None if request.guess is None else redaction.redact(request.guess))  # fmt: skip
        try:
            reply = await self.answer(request)
        except TierFailure as exc:
            if exc.kind == TierFailure.DOWN:
                self.breaker.failed()
            elif exc.kind == TierFailure.REFUSED:
                self.breaker.succeeded()
            else:
                self.breaker.abandoned()
            raise
        except BaseException:  # cancelled or crashed: says nothing about the tier; re-raised as it is
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        if redaction is not None:
            reply.content = redaction.restore(reply.content)
        return reply


TIERS: Registry[type[Tier]] = Registry("smallfleet.tiers", "tier kind")
"""Tier kind -> Tier class."""


def build_tiers(specs: list[TierSpec], context: TierContext) -> list[Tier]:
    """The tiers of `specs`, in order."""
    return [TIERS.get(s.kind)(s, context) for s in specs]
