"""One gateway worker against several: throughput, latency and memory per process (`serve --workers N`).

For each worker count, a real gateway serves the fleet on loopback with every model on one
thread (what `--workers` does), and a separate load-generator process (bench/loadgen.py) sends
concurrent keep-alive chat completions: the specialist path (`fleet/<task>`), then pass-through
to a local upstream that answers at once. Throughput and latency are quoted against one worker
from the same run. Memory is read from /proc/PID/smaps_rollup after the load: RSS counts the
weights shared with the parent in every worker, PSS divides shared pages between the processes
that map them, so the sum of PSS is what the gateway really takes.

The load generator shares the machine: on 2 cores, 2 workers and the client compete for the
same cores, so the scaling shown is what a 2-core box gets, not the workers' own limit.

    python bench/workers.py [--fleet runs/quickstart] [--workers 1,2] [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import HERE, machine, update_results, write_json
from gateway import ROOT, free_port, load, quickstart_fleet, start, wait_up
from rich.console import Console
from rich.table import Table


def processes(root: int) -> list[int]:
    """`root` and its children (the gunicorn arbiter and its workers)."""
    children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    return [root, *map(int, children)]


def memory_mb(pid: int) -> dict[str, float]:
    rows = (line.split() for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    kb = {row[0].rstrip(":"): int(row[1]) for row in rows}
    return {"rss_mb": round(kb["Rss"] / 1024, 1), "pss_mb": round(kb["Pss"] / 1024, 1),
            "private_mb": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=Path, default=ROOT / "runs" / "quickstart",
                        help="Trained fleet (trained from the quickstart if missing).")  # fmt: skip
    parser.add_argument("--task", default="support_ticket")
    parser.add_argument("--workers", default="1,2", help="Worker counts to compare (the first is the baseline).")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per run.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    quickstart_fleet(args.fleet, console)
    counts = [int(n) for n in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="smallfleet-bench-workers-"))
    up_port = free_port()
    upstream = start([sys.executable, str(HERE / "upstream.py"), str(up_port)], work / "upstream.log")
    runs = []
    try:
        wait_up(f"http://127.0.0.1:{up_port}/docs", upstream, "upstream")
        db = f"sqlite:///{work / 'bench.db'}"
        key = subprocess.run([sys.executable, "-m", "smallfleet", "keys", "create", str(args.fleet), "bench", "--db",
                              db], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        for n in counts:
            port = free_port()
            gw = start([sys.executable, "-m", "smallfleet", "serve", str(args.fleet), "--port", str(port), "--db", db,
                        "--workers", str(n), "--threads", "1", "--drift-every", "0",
                        "--escalate-to", f"http://127.0.0.1:{up_port}/v1", "--escalate-model", "upstream-model",
                        "--threshold", f"{args.task}=0"], work / f"gateway-{n}.log")  # fmt: skip
            try:
                wait_up(f"http://127.0.0.1:{port}/healthz", gw, f"gateway with {n} workers")
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                load(url, f"fleet/{args.task}", 100, args.concurrency, key)  # warm every worker up
                for path, model in (("specialist", f"fleet/{args.task}"), ("passthrough", "upstream-model")):
                    console.print(f"{n} worker(s), {path}, {args.requests} requests at concurrency {args.concurrency}")
                    runs.append({"workers": n, "path": path, **load(url, model, args.requests, args.concurrency, key)})
                pids = processes(gw.pid)
                mem = [{"pid": pid, "role": "parent" if pid == gw.pid else "worker", **memory_mb(pid)} for pid in pids]
                for run in runs[-2:]:
                    run["memory"] = mem
            finally:
                gw.terminate()
                gw.wait(timeout=60)
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    base = {r["path"]: r for r in runs if r["workers"] == counts[0]}
    for r in runs:
        r["rps_ratio"] = r["rps"] / base[r["path"]]["rps"]
        r["total_pss_mb"] = round(sum(m["pss_mb"] for m in r["memory"]), 1)
        r["total_rss_mb"] = round(sum(m["rss_mb"] for m in r["memory"]), 1)
    table = Table(title=f"serve --workers N, {args.concurrency} concurrent clients, models on one thread each")
    for col in ("workers", "path", "req/s", f"x vs {counts[0]}", "p50 ms", "p99 ms", "errors",
                "RSS per worker MB", "PSS per worker MB", "PSS all processes MB"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in runs:
        workers = [m for m in r["memory"] if m["role"] == "worker"] or r["memory"]
        table.add_row(str(r["workers"]), r["path"], f"{r['rps']:.0f}", f"{r['rps_ratio']:.2f}", f"{r['p50_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", str(r["errors"]), " / ".join(f"{m['rss_mb']:.0f}" for m in workers),
                      " / ".join(f"{m['pss_mb']:.0f}" for m in workers), f"{r['total_pss_mb']:.0f}")  # fmt: skip
    Console(width=160).print(table)
    env = machine(concurrency=args.concurrency, requests=args.requests, fleet=str(args.fleet))
    write_json("workers", {"env": env, "runs": runs})
    if not args.no_update:
        lines = [f"Run {env['date']}, {env['cpu_count']} cores: `python bench/workers.py --requests {args.requests}` on "
                 f"the quickstart fleet, {args.concurrency} concurrent keep-alive clients in a separate process, models "
                 "on one thread per worker, request log on SQLite. Ratios are against "
                 f"{counts[0]} worker(s) in the same run.", "",
                 "| workers | path | req/s | ratio | p50 ms | p99 ms | errors | RSS per worker MB | PSS per worker MB "
                 "| PSS of all processes MB |", "|---:|---|---:|---:|---:|---:|---:|---|---|---:|"]  # fmt: skip
        for r in runs:
            workers = [m for m in r["memory"] if m["role"] == "worker"] or r["memory"]
            rss = " / ".join(f"{m['rss_mb']:.0f}" for m in workers)
            pss = " / ".join(f"{m['pss_mb']:.0f}" for m in workers)
            lines.append(f"| {r['workers']} | {r['path']} | {r['rps']:.0f} | x{r['rps_ratio']:.2f} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['errors']} | {rss} | {pss} | {r['total_pss_mb']:.0f} |")  # fmt: skip
        update_results("workers", "## Several gateway workers (`bench/workers.py`, `serve --workers N`)\n\n"
                       + "\n".join(lines))  # fmt: skip


if __name__ == "__main__":
    main()
