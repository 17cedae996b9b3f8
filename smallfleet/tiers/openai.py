"""The `openai` tier: any OpenAI-compatible chat-completions endpoint, with bounded retries.

A hanging upstream would otherwise cost each request timeout x (retries + 1) plus backoff
(90 s with the defaults); the tier's `deadline` caps the whole (45 s by default), and its
circuit breaker (see `breaker.py`) skips it altogether once it keeps failing."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

import httpx

from smallfleet.errors import ConfigError
from smallfleet.tiers.base import Tier, TierContext, TierFailure, TierReply, TierRequest, TierSpec
from smallfleet.tokens import estimate_prompt_tokens, estimate_tokens

log = logging.getLogger("smallfleet.tiers")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_SECONDS = 0.25
BACKOFF_CAP = 4.0
ERROR_CHARS = 200  # of an upstream's error message, kept in `tried`, the response and the request log
REDACTED = "[redacted]"
TASK_FIELD = "{task}"
"""In a tier's model, replaced by the request's task: one upstream model per task (vLLM serves each adapter under its name)."""
_BEARER = re.compile(r"\b(bearer)(\s+)[^\s'\",;}]+", re.IGNORECASE)


class OpenAITier(Tier):
    """Any OpenAI-compatible chat-completions endpoint."""

    costed = True

    def __init__(self, spec: TierSpec, context: TierContext):
        super().__init__(spec, context)
        self.client = context.client
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and not key:
            log.warning("tier %s: environment variable %s is not set; calling without a key", spec.name, spec.api_key_env)
        self._key = key
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    @classmethod
    def check_spec(cls, spec: TierSpec) -> None:
        if not (spec.base_url and spec.model):
            raise ConfigError(f"tier {spec.name!r}: an openai tier needs base_url and model")

    @property
    def model(self) -> str | None:
        """The model clients may ask for by name; None when it is one per task (`{task}`), as with vLLM's LoRA modules."""
        return None if TASK_FIELD in self.spec.model else self.spec.model

    def model_for(self, task: str | None) -> str:
        """The model sent upstream for a request routed to `task`: `{task}` in the tier's model replaced by it.

        Raises:
            TierFailure: (REFUSED) the model names the task and the request has none (it fits no task).
        """
        if TASK_FIELD not in self.spec.model:
            return self.spec.model
        if task is None:
            raise TierFailure(self.name, f"its model {self.spec.model!r} is one per task and this request fits no task",
                              TierFailure.REFUSED)  # fmt: skip
        return self.spec.model.replace(TASK_FIELD, task)

    def cost(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> float:
        """Token price when the tier has one; a self-hosted tier pays for its machine time instead."""
        return self.spec.token_cost(prompt_tokens, completion_tokens) + self.spec.hour_usd * seconds / 3600

    def estimate_cost(self, messages: list[dict], content: str) -> float:
        """What this tier would charge for `messages` answered with `content` (token estimate)."""
        return self.spec.token_cost(estimate_prompt_tokens(messages), estimate_tokens(content))

    async def answer(self, request: TierRequest) -> TierReply:
        """Send the request's body (its `model` replaced by the tier's), retrying transient failures while the
        tier's `deadline` allows: each attempt gets at most what is left of it, and no retry starts past it.

        Raises:
            TierFailure: after the last retry or at the deadline (DOWN), or at once for a 4xx that retrying
                cannot fix (REFUSED).
        """
        body = {**request.body, "model": self.model_for(request.task), "stream": False}
        deadline = time.monotonic() + self.spec.deadline
        attempts, last, cut = 0, "", False
        for attempt in range(self.spec.retries + 1):
            if attempt:
                pause = min(BACKOFF_CAP, BACKOFF_SECONDS * 2 ** (attempt - 1))
                if time.monotonic() + pause >= deadline:
                    cut = True
                    break
                await asyncio.sleep(pause)
            limit = min(self.spec.timeout, deadline - time.monotonic())
            if limit <= 0:
                cut = True
                break
            attempts += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(limit):  # httpx's timeout bounds each read, not the whole attempt
                    resp = await self.client.post(self.url, json=body, headers=self._headers, timeout=limit)
            except (httpx.TimeoutException, TimeoutError):
                last = f"timed out after {limit:.3g}s"
                continue
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
                continue
            seconds = time.perf_counter() - started
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise TierFailure(self.name, f"HTTP {resp.status_code}: {self._error_text(resp)}", TierFailure.REFUSED)
            return self._reply(resp, seconds)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        if cut:
            tries += f", {self.spec.deadline:g}s deadline reached"
        raise TierFailure(self.name, f"{last} ({tries})")

    def _reply(self, resp: httpx.Response, seconds: float) -> TierReply:
        try:
            data = resp.json()
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise TierFailure(self.name, "reply is not a chat completion") from None
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or estimate_tokens(content))
        return TierReply(
            content=content,
            prompt_tokens=prompt,
            completion_tokens=completion,
            seconds=seconds,
            cost_usd=self.cost(prompt, completion, seconds),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def _error_text(self, resp: httpx.Response) -> str:
        """The upstream's error message, short, with our key and any bearer token taken out (some
        upstreams echo the request's headers in their 4xx bodies)."""
        try:
            text = str(resp.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            text = resp.text
        return redact(text, self._key)[:ERROR_CHARS]


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret` and without the token of any `Bearer <token>`.

    Args:
        text: Text that came from an upstream.
        secret: The key this tier sends upstream, if any.
    """
    if secret:
        text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
