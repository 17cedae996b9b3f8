"""A minimal OpenAI-protocol upstream for the gateway benchmark: answers every chat
completion at once with a fixed reply, so what is measured is the proxy in front of it.

    python bench/upstream.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

app = FastAPI()
REPLY = {
    "id": "up-1", "object": "chat.completion", "created": 0, "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "billing"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
}  # fmt: skip


@app.post("/v1/chat/completions")
async def complete() -> dict:
    return REPLY


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
