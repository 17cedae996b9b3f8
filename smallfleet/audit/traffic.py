"""The traffic an audit reads: pass-through requests from the gateway's log, or a JSONL of past
`{messages, response}` exports for teams whose logs live elsewhere, as one list of `Exchange`s."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from smallfleet.errors import DataError
from smallfleet.store.ledger import SPECIALIST_TIER
from smallfleet.tokens import estimate_tokens


@dataclass
class Exchange:
    """One request a frontier model answered: its system prompt, last user turn and answer, and what it cost."""

    ref: str
    """Where it came from: the request id, or `file:line`."""
    system: str | None
    user: str
    answer: str
    model: str | None = None
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime | None = None


def from_log(db) -> list[Exchange]:
    """The log's pass-through requests: answered by an upstream tier with no task (routed to none or passed
    through by model name), oldest first."""
    r = db.requests
    query = (select(r.c.request_id, r.c.system, r.c.input, r.c.output, r.c.model, r.c.cost_usd, r.c.prompt_tokens,
                    r.c.completion_tokens, r.c.created_at)
             .where(r.c.task.is_(None), r.c.status == "ok", r.c.tier != SPECIALIST_TIER, r.c.input.is_not(None),
                    r.c.output.is_not(None))
             .order_by(r.c.id))  # fmt: skip
    with db.engine.connect() as conn:
        return [Exchange(row.request_id, row.system, row.input, row.output, row.model, float(row.cost_usd or 0),
                         int(row.prompt_tokens or 0), int(row.completion_tokens or 0), row.created_at)
                for row in conn.execute(query) if row.input.strip()]  # fmt: skip


def from_export(path: Path) -> list[Exchange]:
    """Exchanges from a JSONL file of `{"messages": [...], "response": ...}` rows; `response` is the answer's
    text, an assistant message, or a whole chat completion. Optional: `model`, `cost_usd`, `created_at` (ISO).

    Raises:
        DataError: a row that is not such an object, named by file and line.
    """
    out = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{where}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
                raise DataError(f"{where}: expected an object with `messages` (a list) and `response`")
            messages = [m for m in row["messages"] if isinstance(m, dict)]
            users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
            users = [u for u in users if u.strip()]
            answer = _answer(row.get("response"))
            if not users or answer is None:
                raise DataError(f"{where}: needs a user message with text and a `response` with the answer's text")
            system = next((_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")), None)
            created = row.get("created_at")
            out.append(Exchange(where, system, users[-1], answer, row.get("model"), float(row.get("cost_usd") or 0),
                                estimate_tokens((system or "") + users[-1]), estimate_tokens(answer),
                                datetime.fromisoformat(created) if isinstance(created, str) else None))  # fmt: skip
    return out


def _text(content) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def _answer(response) -> str | None:
    """The answer's text from a string, an assistant message, or a chat completion."""
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        if "choices" in response and response["choices"]:
            return _answer(response["choices"][0].get("message"))
        if "content" in response:
            return _text(response["content"])
    return None
