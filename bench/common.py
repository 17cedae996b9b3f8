"""Helpers every benchmark script shares: machine description, JSON output, RESULTS.md sections."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine(**extra) -> dict:
    """What the numbers were measured on (goes into the JSON and the RESULTS.md line)."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        **extra,
    }


def write_json(name: str, payload: dict) -> Path:
    """Write bench/results/<name>.json."""
    path = HERE / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def update_results(section: str, body: str, path: Path = HERE / "RESULTS.md") -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others as they are."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def chat_completion(model: str, content: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """An OpenAI chat completion body answering `content`, as a stand-in upstream returns it."""
    return {"id": "up", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}  # fmt: skip


def serve_in_thread(app, port: int):
    """Run ASGI `app` on 127.0.0.1:`port` in a daemon thread; returns the started uvicorn server."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server
