"""A small OpenAI-protocol server standing in for a paid frontier API (the one test double:
a real frontier cannot be reached from here). Tests set `FakeUpstream.mode` to choose its
behaviour and read `FakeUpstream.calls` to see what the gateway sent."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeUpstream:
    """Modes: `reply:<text>` answers <text>; `answer` answers `FakeUpstream.answer(body)`; `echo` answers 'upstream: <last user message>';
    `fail` answers HTTP 500; `slow` sleeps past any sane timeout; `echo-headers` answers HTTP 400 whose
    error message (and raw body) repeat every request header, the Authorization one included."""

    def __init__(self):
        self.mode = "echo"
        self.answer = None  # a function of the request body -> answer text; used in mode `answer`
        self.delay = 0.0  # seconds before any reply
        self.calls: list[dict] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request):
            body = await request.json()
            self.calls.append({"body": body, "authorization": request.headers.get("authorization")})
            await asyncio.sleep(self.delay)
            if self.mode == "echo-headers":  # as some real gateways do in their 4xx bodies
                auth = request.headers.get("authorization")
                return JSONResponse({"error": {"message": f"bad request for Authorization: {auth}; headers were "
                                                          f"{dict(request.headers)}"}}, status_code=400)  # fmt: skip
            if self.mode == "fail":
                return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=500)
            if self.mode == "slow":
                await asyncio.sleep(3)
            if self.mode == "answer":
                content = self.answer(body)
            elif self.mode.startswith("reply:"):
                content = self.mode.split(":", 1)[1]
            else:
                content = "upstream: " + body["messages"][-1]["content"]
            return {
                "id": "fake-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            }  # fmt: skip

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
