"""Console benchmark: how long each `/ui` page takes with a large request log, and what
loading pages does to the gateway's own requests.

A throwaway SQLite log is filled with `--rows` synthetic requests spread over the last
week (the fleet's tasks; a quarter escalated to a priced tier, a few errors), 2% of them
audited and a few hundred pending review items. A real `smallfleet serve` process serves the
fleet on that log; an admin key signs in over HTTP like a browser, and each page is fetched
`--repeat` times (time to the last byte, measured by the client; each fetch with its own URL,
so no fetch comes from the console's page cache, and 0.3 s apart, slower than the console's
pace for a session, so none waits its turn). Then chat completions are timed alone, while
another client reloads the same console pages without pause (served from the cache), while it
and while it loads a new URL every time without pause (every page built by the console's process),
the phases interleaved over `--rounds` rounds so the shared machine's changing load weighs on
each alike: the ratios to alone say how much the console slows the request path (the poller
asks without pause; the gateway makes it wait its turn, at a person's pace).

    python bench/console.py --fleet runs/quickstart [--rows 100000] [--repeat 20] [--chats 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from common import HERE, machine, update_results, write_json
from rich.console import Console
from rich.table import Table

ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from smallfleet.fleet import fleet_index  # noqa: E402
from smallfleet.store import Database  # noqa: E402
from smallfleet.store.judgements import new_judgement  # noqa: E402
from smallfleet.store.keys import create_key  # noqa: E402
from smallfleet.store.ledger import write_requests  # noqa: E402

TEXT = "I was charged twice for order 88412, please refund the extra payment"


def fill(db: Database, tasks: list[str], rows: int, seed: int = 0) -> str:
    """`rows` request rows over the last 7 days, 2% audited, 300 pending reviews; returns one request id."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    batch, judged, reviews = [], [], []
    for i in range(rows):
        at = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
        task = rng.choice(tasks)
        escalated = rng.random() < 0.25
        error = rng.random() < 0.01
        rid = f"chatcmpl-bench{i:08d}"
        batch.append({"request_id": rid, "created_at": at, "day": at.strftime("%Y-%m-%d"), "api_key": "bench",
                      "model": f"fleet/{task}", "task": task, "version": "v1",
                      "tier": "frontier" if escalated else "specialist", "confidence": rng.random(),
                      "escalated": escalated, "status": "error" if error else "ok", "http_status": 502 if error else 200,
                      "input": f"{TEXT} #{i}", "output": "billing", "prompt_tokens": 40, "completion_tokens": 2,
                      "latency_ms": rng.uniform(5, 40), "cost_usd": 0.0004 if escalated else 0.000001,
                      "frontier_cost_usd": 0.0004, "tried": None, "error": "upstream 502" if error else None})  # fmt: skip
        if not escalated and rng.random() < 0.02:
            judged.append(new_judgement(rid, task, "audit", accepted=True, agrees=rng.random() < 0.95, answer="billing",
                                        reference="billing", tier="frontier", cost_usd=0.0004))  # fmt: skip
        if escalated and len(reviews) < 300:
            reviews.append({"request_id": rid, "created_at": at, "task": task, "input": f"{TEXT} #{i}", "guess": None,
                            "confidence": 0.3, "status": "pending"})  # fmt: skip
    batch.sort(key=lambda r: r["created_at"])
    with db.engine.begin() as conn:
        for start in range(0, len(batch), 5000):  # as the gateway's ledger writes them
            write_requests(db, conn, batch[start : start + 5000])
        conn.execute(db.judgements.insert(), judged)
        conn.execute(db.reviews.insert(), reviews)
    return batch[len(batch) // 2]["request_id"]


def timed(client: httpx.Client, path: str, repeat: int) -> dict:
    times = []
    for i in range(repeat):
        time.sleep(0.3)  # slower than the console's pace (builder.PAGES_PER_SECOND): no fetch waits its turn
        started = time.perf_counter()
        r = client.get(path + ("&" if "?" in path else "?") + f"fetch={i}")  # a URL of its own: built, not cached
        times.append(1000 * (time.perf_counter() - started))
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
            "max_ms": round(times[-1], 1), "bytes": len(r.content)}  # fmt: skip


def chat_latencies(base: str, key: str, task: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for _ in range(n):
            started = time.perf_counter()
            r = client.post("/v1/chat/completions", json={"model": f"fleet/{task}", "messages": [{"role": "user", "content": TEXT}]})
            out.append(1000 * (time.perf_counter() - started))
            assert r.status_code == 200, r.text
    return out


PHASES = ["alone", "polling cached pages", "polling new URLs"]


def poll_console(base: str, cookies: dict, polled: list[str], mode, stop, idle, loaded) -> None:
    """Until `stop`, load console pages without pause while `mode` is 1 (the same few URLs) or 2 (a URL never
    asked before each time); idle while it is 0."""
    with httpx.Client(base_url=base, cookies=cookies, timeout=60) as c:
        n = 0
        while not stop.is_set():
            if mode.value == 0:
                idle.set()
                time.sleep(0.02)
                continue
            idle.clear()
            path = polled[n % len(polled)] + (f"?poll={n}" if mode.value == 2 else "")
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            n += 1
            loaded.value = n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=Path, default=ROOT / "runs" / "quickstart", help="A trained fleet folder.")
    parser.add_argument("--rows", type=int, default=100_000, help="Request rows in the log.")
    parser.add_argument("--repeat", type=int, default=20, help="Fetches of each page.")
    parser.add_argument("--chats", type=int, default=300, help="Chat completions timed in each phase.")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds of the three phases, interleaved.")
    args = parser.parse_args()
    console = Console()
    tasks = list(fleet_index(args.fleet)["tasks"])
    work = Path(tempfile.mkdtemp(prefix="smallfleet-bench-console-"))
    url = f"sqlite:///{work / 'log.db'}"
    db = Database(url)
    started = time.perf_counter()
    some_request = fill(db, tasks, args.rows)
    console.print(f"filled {args.rows} rows in {time.perf_counter() - started:.1f}s")
    admin, client_key = create_key(db, "bench-admin", "admin"), create_key(db, "bench-client", "client")
    db.close()

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    thresholds = [x for t in tasks for x in ("--threshold", f"{t}=0")]  # every chat answered locally: the fast path
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    log = (work / "gateway.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "smallfleet", "serve", str(args.fleet), "--db", url, "--port", str(port),
                             *thresholds], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (work / "gateway.log").read_text()
            time.sleep(0.5)
        browser = httpx.Client(base_url=base, timeout=60)
        form = browser.get("/ui/signin")
        csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
        assert browser.post("/ui/signin", data={"csrf": csrf, "key": admin, "next": "/ui"}).status_code == 303
        pages = ["/ui", "/ui/tasks", "/ui/reviews", "/ui/requests", f"/ui/requests?task={tasks[0]}&escalated=yes",
                 "/ui/requests?errors=yes", f"/ui/requests/{some_request}", "/ui/versions"]  # fmt: skip
        for path in pages:  # warm-up: templates compiled, SQLite pages cached
            browser.get(path)
        results = {path: timed(browser, path, args.repeat) for path in pages}

        chat_latencies(base, client_key, tasks[0], 10)  # warm-up
        polled = ["/ui", "/ui/tasks", "/ui/reviews", "/ui/requests", "/ui/versions"]

        ctx = multiprocessing.get_context("spawn")  # the poller: its own process, no lock shared with the timer
        mode, stop, idle, loaded = ctx.Value("i", 0), ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        poller = ctx.Process(target=poll_console, args=(base, dict(browser.cookies), polled, mode, stop, idle, loaded))
        poller.start()
        phases: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in PHASES}
        per_round = max(1, args.chats // args.rounds)
        try:
            for r in range(args.rounds):  # phases interleaved, so the shared machine's load weighs on each alike
                for name in PHASES[r % 3 :] + PHASES[: r % 3]:
                    mode.value, first = PHASES.index(name), loaded.value
                    while mode.value and loaded.value < first + len(polled):  # polling (and its pages cached)
                        assert poller.is_alive(), "the console poller failed"
                        time.sleep(0.1)
                    first = loaded.value
                    times = chat_latencies(base, client_key, tasks[0], per_round)
                    phases[name] = (phases[name][0] + times, phases[name][1] + loaded.value - first)
                    mode.value = 0
                    idle.clear()
                    idle.wait(60)  # the poller idle, its last page answered
        finally:
            stop.set()
            poller.join(timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    table = Table(title=f"console pages, {args.rows:,} logged requests ({args.repeat} fetches each)")
    for col in ("page", "median ms", "p95 ms", "max ms", "KB"):
        table.add_column(col)
    for path, r in results.items():
        table.add_row(path, f"{r['median_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['max_ms']:.1f}", f"{r['bytes'] / 1024:.0f}")
    console.print(table)
    def pct(values: list[float], q: float) -> float:
        return round(sorted(values)[int(q * (len(values) - 1))], 1)

    baseline = phases["alone"][0]
    base50, base99 = pct(baseline, 0.5), pct(baseline, 0.99)
    chat = {}
    chat_table = Table(title=f"chat completions (local answers), {args.chats} per phase")
    for col in ("phase", "p50 ms", "p99 ms", "p50 / alone", "p99 / alone", "console pages meanwhile"):
        chat_table.add_column(col)
    for name, (times, pages_loaded) in phases.items():
        row = {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "console_pages": pages_loaded}
        row["p50_ratio"], row["p99_ratio"] = round(row["p50_ms"] / base50, 2), round(row["p99_ms"] / base99, 2)
        chat[name] = row
        chat_table.add_row(name, f"{row['p50_ms']}", f"{row['p99_ms']}", f"x{row['p50_ratio']}", f"x{row['p99_ratio']}",
                           str(pages_loaded))  # fmt: skip
    console.print(chat_table)
    payload = {"machine": machine(fleet=str(args.fleet), tasks=tasks), "rows": args.rows, "repeat": args.repeat,
               "pages": results, "chat": chat}  # fmt: skip
    path = write_json("console", payload)
    slowest = max(results.items(), key=lambda kv: kv[1]["p95_ms"])
    body = (f"## Console pages (`bench/console.py`)\n\n{args.rows:,} requests in the log (SQLite), {args.repeat} fetches "
            f"per page, time to the last byte from a client on loopback, {payload['machine']['cpu_count']} cores.\n\n"
            "| page | median ms | p95 ms |\n|---|---|---|\n"
            + "".join(f"| `{p}` | {r['median_ms']} | {r['p95_ms']} |\n" for p, r in results.items())
            + f"\nSlowest p95: `{slowest[0]}` {slowest[1]['p95_ms']} ms (every fetch a new URL, so built, not cached).\n\n"
            f"Chat completions (local answers), {args.chats} per phase, while another client loads console pages "
            f"without pause ({args.rounds} rounds of the three phases, interleaved); ratios against alone "
            f"(p50 {base50} ms, p99 {base99} ms):\n\n"
            "| phase | p50 ms | p99 ms | p50 / alone | p99 / alone | console pages meanwhile |\n|---|---|---|---|---|---|\n"
            + "".join(f"| {n} | {c['p50_ms']} | {c['p99_ms']} | x{c['p50_ratio']} | x{c['p99_ratio']} | {c['console_pages']} |\n"
                      for n, c in chat.items() if "p50_ratio" in c))  # fmt: skip
    update_results("console", body)
    console.print(f"wrote {path}")
    print(json.dumps(payload["pages"]))


if __name__ == "__main__":
    main()
