"""An `openai` tier whose model is one per task (`{task}`), as vLLM serves one LoRA module per task."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fake_upstream import FakeUpstream

from smallfleet.tiers.base import TierContext, TierFailure, TierRequest, TierSpec
from smallfleet.tiers.openai import OpenAITier


def ask(tier: OpenAITier, task: str | None):
    body = {"model": "fleet", "messages": [{"role": "user", "content": "hello"}]}
    return tier.answer(TierRequest(body=body, task=task, text="hello", request_id="r1"))


def test_a_per_task_model_sends_each_request_to_its_tasks_model():
    async def run(upstream: FakeUpstream) -> None:
        async with httpx.AsyncClient() as client:
            context = TierContext(client=client, db=None)
            per_task = OpenAITier(TierSpec(name="gpu", base_url=upstream.base_url, model="{task}"), context)
            fixed = OpenAITier(TierSpec(name="frontier", base_url=upstream.base_url, model="gpt-4o-mini"), context)
            assert per_task.model is None and fixed.model == "gpt-4o-mini"  # only a fixed model can be asked for by name
            await ask(per_task, "dialog_summary")
            await ask(per_task, "dialog_topic")
            await ask(fixed, "dialog_topic")
            assert [c["body"]["model"] for c in upstream.calls] == ["dialog_summary", "dialog_topic", "gpt-4o-mini"]
            with pytest.raises(TierFailure, match="one per task and this request fits no task") as failed:
                await ask(per_task, None)
            assert failed.value.kind == TierFailure.REFUSED and len(upstream.calls) == 3  # refused without a call

    with FakeUpstream() as upstream:
        asyncio.run(run(upstream))
