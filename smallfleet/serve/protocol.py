"""Request and response shapes of the OpenAI chat-completions protocol, the `smallfleet`
object every response carries, and the reading of a request body with the limits a hostile
one cannot get past."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smallfleet.tasks.specialist import AnswerOptions


MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have (OpenAI's own bodies need a handful)."""
MAX_INT_DIGITS = 40
"""Longest integer a request body may hold; a 64-bit seed has 20 digits."""
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyError(ValueError):
    """A request body that cannot be read as a chat request; the message says why."""


def read_body(body: bytes) -> dict:
    """The JSON object in `body`. Lone surrogates (valid JSON escapes such as `\\ud800`, but not text) become
    U+FFFD, as a UTF-8 decoder reads a broken sequence, so the request can still be answered and logged.

    Args:
        body: The raw request body.

    Raises:
        BodyError: not JSON, not an object, nested deeper than MAX_DEPTH, or a number over MAX_INT_DIGITS digits.
    """
    try:
        data = json.loads(body, parse_int=_bounded_int)
    except RecursionError:  # the decoder recursed through a body nested about a thousand levels deep
        raise BodyError(f"request body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BodyError("request body must be a JSON object")
    return _checked(data, 1)


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise BodyError(f"a number in the request body has {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


def _checked(value: Any, level: int) -> Any:
    """`value` with lone surrogates replaced in every string (keys included); BodyError past MAX_DEPTH."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict | list) and level > MAX_DEPTH:
        raise BodyError(f"request body is nested too deeply (at most {MAX_DEPTH} levels)")
    if isinstance(value, dict):
        return {_checked(k, level): _checked(v, level + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_checked(v, level + 1) for v in value]
    return value


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: the right answer to a logged request, or whether the answer given was right."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    """The `id` of the chat completion (also `smallfleet.request_id`)."""
    answer: str | dict | None = None
    """The right answer: a label, a text, or a JSON object (extract tasks)."""
    correct: bool | None = None
    """Whether the answer given was right (instead of `answer`)."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text; content parts of type `text` are joined."""
        if isinstance(self.content, list):
            return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_message(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("messages must include a user message with text")
        return messages

    def input_text(self) -> str:
        """The last user message: what a specialist answers."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text().strip())

    def system_text(self) -> str | None:
        """The system (or developer) prompt, the first one; None when there is none."""
        return next((m.text() for m in self.messages if m.role in ("system", "developer")), None)

    def options(self) -> AnswerOptions:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        json_mode = (self.response_format or {}).get("type") in ("json_object", "json_schema")
        return AnswerOptions(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            json_mode=json_mode,
        )


def openapi_schemas(*models: type[BaseModel]) -> dict[str, dict]:
    """Component name -> JSON Schema of each model and of the models they use, for `/openapi.json`: the
    routes read their bodies themselves (with the limits above), so FastAPI cannot see these models."""
    schemas = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def openapi_body(model: type[BaseModel]) -> dict:
    """The `openapi_extra` of a route whose JSON body is read as `model` (see `openapi_schemas`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def validation_message(exc: ValidationError) -> str:
    """One readable line per problem: `messages.0.role: Field required`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None, **extra) -> dict:
    """The OpenAI error shape, which the official clients turn into their exception types."""
    return {"error": {"message": message, "type": kind, "code": code, "param": None, **extra}}


@dataclass
class Completion:
    """What the gateway answered for one request, and how."""

    content: str
    tier: str
    task: str | None = None
    confidence: float | None = None
    novelty: float | None = None
    """How far the input lies from the specialist's training data (None: no novelty statistics)."""
    escalation_reason: list[str] = field(default_factory=list)
    """The acceptance tests the specialist's answer failed (`valid`, `confidence`, `novelty`); empty when accepted."""
    route_confidence: float | None = None
    route_novelty: float | None = None
    """The router's novelty of the request (fleet requests routed by a router with novelty statistics)."""
    escalated: bool = False
    accepted: bool = True
    status: Literal["ok", "pending"] = "ok"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    frontier_cost_usd: float = 0.0
    latency_ms: float = 0.0
    tried: list[str] = field(default_factory=list)
    review: dict | None = None
    finish_reason: str = "stop"
    version: str | None = None
    """The served task's version that answered (None when no task did)."""
    guess: str | None = None
    """The specialist's own answer, kept when a tier's answer replaced it (not sent to the client)."""
    triage: dict | None = None
    """The triage decision for a free-form request: chosen tier, per-tier predicted quality, bar, fallback."""
    request_id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def smallfleet(self) -> dict:
        out = {
            "request_id": self.request_id,
            "task": self.task,
            "version": self.version,
            "tier": self.tier,
            "confidence": None if self.confidence is None else round(self.confidence, 6),
            "escalated": self.escalated,
            "accepted": self.accepted,
            "latency_ms": round(self.latency_ms, 3),
            "cost_usd": round(self.cost_usd, 10),
            "frontier_cost_usd": round(self.frontier_cost_usd, 10),
        }
        if self.novelty is not None:
            out["novelty"] = round(self.novelty, 6)
        if self.escalation_reason:
            out["escalation_reason"] = self.escalation_reason
        if self.route_confidence is not None:
            out["route_confidence"] = round(self.route_confidence, 6)
        if self.route_novelty is not None:
            out["route_novelty"] = round(self.route_novelty, 6)
        if self.tried:
            out["tried"] = self.tried
        if self.review:
            out["review"] = self.review
        if self.triage:
            out["triage"] = self.triage
        return out

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def response(self, model: str) -> dict:
        """A `chat.completion` object."""
        return {
            "id": self.request_id,
            "object": "chat.completion",
            "created": self.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self.usage(),
            "smallfleet": self.smallfleet(),
        }

    def chunks(self, model: str, pieces: list[str]) -> list[dict]:
        """`chat.completion.chunk` objects: the role, the content pieces, then the finish with usage and smallfleet."""
        base = {"id": self.request_id, "object": "chat.completion.chunk", "created": self.created, "model": model}

        def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}

        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": p}) for p in pieces if p]
        out.append(chunk({}, self.finish_reason, usage=self.usage(), smallfleet=self.smallfleet()))
        return out

