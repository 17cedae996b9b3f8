"""Rough token counts, for costing text that no tokenizer or upstream counted."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters per token for English) for costing requests no upstream counted."""
    return max(1, (len(text) + 3) // 4)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """Rough token count of chat messages: their contents plus the per-message framing."""
    return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in messages) + 2
