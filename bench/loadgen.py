"""Load generator for the gateway benchmark, run as its own process: N concurrent
keep-alive clients send chat completions and report latencies and throughput as JSON.

    python bench/loadgen.py URL MODEL --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

TEXTS = [
    "I was charged twice for order 88412, please refund the extra payment",
    "The tracking page has said 'label created' for six days now",
    "How do I change the email address on my account?",
    "Does the blender come with a spare blade?",
]


async def run(url: str, model: str, requests: int, concurrency: int, key: str) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    headers = {"Authorization": f"Bearer {key}"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            body = {"model": model, "messages": [{"role": "user", "content": TEXTS[i % len(TEXTS)]}]}
            t0 = time.perf_counter()
            resp = await client.post(url, json=body, headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += resp.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(min(20, requests)):  # warm up connections and caches
            await client.post(url, json={"model": model, "messages": [{"role": "user", "content": TEXTS[0]}]}, headers=headers)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": errors,
        "seconds": seconds,
        "rps": requests / seconds,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--key", default="bench")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.model, args.requests, args.concurrency, args.key))))


if __name__ == "__main__":
    main()
