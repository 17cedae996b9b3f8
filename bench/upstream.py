"""A minimal OpenAI-protocol upstream for the gateway benchmark: answers every chat
completion at once with a fixed reply, so what is measured is the proxy in front of it.
`--fail-rate R` answers that share of calls with a 500 (the soak benchmark's failures).

    python bench/upstream.py PORT [--fail-rate 0.05]
"""

from __future__ import annotations

import argparse
import random

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()
REPLY = {
    "id": "up-1", "object": "chat.completion", "created": 0, "model": "upstream-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "billing"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
}  # fmt: skip


FAIL = {"rate": 0.0, "rng": random.Random(7)}


@app.post("/v1/chat/completions")
async def complete():
    if FAIL["rate"] and FAIL["rng"].random() < FAIL["rate"]:
        return JSONResponse({"error": {"message": "upstream failure (injected)", "type": "api_error"}}, status_code=500)
    return REPLY


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    args = parser.parse_args()
    FAIL["rate"] = args.fail_rate
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)
