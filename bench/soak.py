"""Soak and load: mixed traffic at a fixed rate for a long time, then the knee of the specialist path.

Soak: an open-loop client sends a fixed request rate (`--rate`, for `--minutes`) of mixed
traffic through a real gateway process: a specialist task named directly, the router
(`model: fleet`), a task whose every answer escalates to the upstream tier, and
pass-through requests for the upstream's own model. The upstream (bench/upstream.py)
fails a share of its calls (`--fail-rate`), so the gateway's retries and errors are in the
mix. Every `--every` seconds it samples the gateway's RSS, the window's p50/p99 latency and
errors, and the rows in the request log. At the end, every request that got a 200 is looked
up in the log by its id: a missing one is a lost row.

Knee: then the specialist path alone at rising rates (`--knee-rates`), `--knee-seconds` each;
the highest rate held at p99 < 100 ms is the knee, shown in a plot.

    python bench/soak.py                       # 30 minutes at 20 req/s, then the knee
    python bench/soak.py --minutes 5 --rate 10 # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import HERE, machine, update_results, write_json
from gateway import ROOT, free_port, start, wait_up
from rich.console import Console
from rich.table import Table

# (share, model, where the texts come from). Texts are drawn at random from real held-out rows,
# so every kind's specialist sees varied inputs, not one cached string.
MIX = [
    (0.33, "fleet/support_ticket", "tickets"),  # classify, accepted
    (0.15, "fleet/slots", "snips"),  # extract (BIO slots -> JSON record), accepted
    (0.02, "fleet/summary", "dialogues"),  # generate (LoRA on SmolLM2-135M, ~1 s of a core each), accepted
    (0.15, "fleet", "tickets"),  # the router picks the task
    (0.15, "fleet/review_sentiment", "reviews"),  # threshold 1.01: every answer escalates upstream
    (0.20, "upstream-model", "tickets"),  # pass-through
]
GENERATE = "fleet/summary"
"""The route that generates: ~2% of the mix, so a window's overall p99 is its slowest few generations."""
SHORT_DIALOGUE = 320  # characters: the soak's generate requests are short calls, not long meetings


def load_texts() -> dict[str, list[str]]:
    """The held-out texts the soak draws from, by source name."""
    import csv
    import json

    from smallfleet.settings import datasets_dir

    data, shared = ROOT / "examples" / "quickstart" / "data", datasets_dir()

    def jsonl(path: Path, field: str) -> list[str]:
        return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]

    with open(data / "reviews_test.csv", newline="") as f:
        reviews = [r["review"] for r in csv.DictReader(f)]
    dialogues = [d for d in jsonl(shared / "dialogsum" / "test.jsonl", "dialogue") if len(d) <= SHORT_DIALOGUE]
    return {"tickets": jsonl(data / "tickets_test.jsonl", "text"), "reviews": reviews,
            "snips": jsonl(shared / "snips" / "test.jsonl", "text"), "dialogues": dialogues}  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1)))] if values else float("nan")


async def open_loop(url: str, rate: float, seconds: float, mix: list, texts: dict[str, list[str]], on_done,
                    seed: int = 13) -> None:
    """Send `rate` requests per second for `seconds`, each picked from `mix` with a random text of its
    source, without waiting for answers."""
    rng = random.Random(seed)
    shares = [m[0] for m in mix]
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=512)) as client:
        tasks = []
        started = time.perf_counter()
        n = 0
        while (now := time.perf_counter() - started) < seconds:
            due = n / rate
            if due > now:
                await asyncio.sleep(due - now)
            _, model, source = rng.choices(mix, weights=shares)[0]
            text = rng.choice(texts[source])
            tasks.append(asyncio.create_task(one(client, url, model, text, on_done)))
            n += 1
        await asyncio.gather(*tasks)


async def one(client: httpx.AsyncClient, url: str, model: str, text: str, on_done) -> None:
    t = time.perf_counter()
    try:
        r = await client.post(url, json={"model": model, "messages": [{"role": "user", "content": text}]})
        body = r.json() if r.status_code == 200 else {}
        status, rid = r.status_code, body.get("id")
        busy = (body.get("smallfleet") or {}).get("escalation_reason") == ["busy"]
    except httpx.HTTPError:
        status, rid, busy = 0, None, False
    on_done(time.perf_counter(), (time.perf_counter() - t) * 1000, status, rid, model, busy)


def log_rows(db_file: Path) -> int:
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]


def latency_windows(done: list, start_t: float, window: float, seconds: float) -> list[dict]:
    """p99 of the answered requests finished in each `window`-second stretch of the soak: overall, without the
    generate route, and per route (NaN for a route with no answer in it). The last, cut stretch is left out."""
    out = []
    for k in range(int(seconds // window)):
        lo, hi = start_t + k * window, start_t + (k + 1) * window
        inside = [d for d in done if lo <= d[0] < hi and d[2] == 200]
        out.append({"t_s": round((k + 1) * window, 1), "requests": len(inside),
                    "p99_ms": pct([d[1] for d in inside], 0.99),
                    "p99_no_generate_ms": pct([d[1] for d in inside if d[4] != GENERATE], 0.99),
                    "route_p99_ms": {m: pct([d[1] for d in inside if d[4] == m], 0.99) for _, m, _ in MIX}})  # fmt: skip
    return out


def soak(url: str, pid: int, db_file: Path, minutes: float, rate: float, every: float, texts: dict,
         console: Console, window: float | None = None) -> dict:
    done: list[tuple[float, float, int, str | None, str, bool]] = []
    samples = []
    start_t = time.perf_counter()

    async def sampler(stop: asyncio.Event) -> None:
        last = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
            window = done[last:]
            last = len(done)
            lat = [d[1] for d in window if d[2] == 200]
            short = [d[1] for d in window if d[2] == 200 and d[4] != GENERATE]
            samples.append({"t_s": round(time.perf_counter() - start_t, 1), "rss_mb": round(rss_mb(pid), 1),
                            "requests": len(window), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                            "p99_no_generate_ms": pct(short, 0.99),
                            "route_p99_ms": {m: pct([d[1] for d in window if d[2] == 200 and d[4] == m], 0.99)
                                             for _, m, _ in MIX},
                            "errors": sum(1 for d in window if d[2] != 200), "shed": sum(1 for d in window if d[5]),
                            "log_rows": log_rows(db_file)})  # fmt: skip
            s = samples[-1]
            console.print(f"t={s['t_s']:>6.0f}s rss {s['rss_mb']:.0f} MB  p50 {s['p50_ms']:.1f} ms  "
                          f"p99 {s['p99_ms']:.1f} ms  errors {s['errors']}  log rows {s['log_rows']}")  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler(stop))
        await open_loop(url, rate, minutes * 60, MIX, texts, lambda *d: done.append(d))
        stop.set()
        await sampling

    asyncio.run(main())
    routes = []
    for _, model, _ in MIX:
        lat = [d[1] for d in done if d[4] == model and d[2] == 200]
        routes.append({"model": model, "requests": sum(1 for d in done if d[4] == model),
                       "errors": sum(1 for d in done if d[4] == model and d[2] != 200),
                       "shed": sum(1 for d in done if d[4] == model and d[5]),
                       "p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1)})  # fmt: skip
    return {"samples": samples, "routes": routes, "answered_ids": [d[3] for d in done if d[2] == 200],
            "windows": latency_windows(done, start_t, window or every, minutes * 60),
            "requests": len(done), "errors": sum(1 for d in done if d[2] != 200),
            "shed": sum(1 for d in done if d[5])}  # fmt: skip


def knee(url: str, rates: list[float], seconds: float, texts: dict, console: Console) -> list[dict]:
    rows = []
    for rate in rates:
        done: list = []
        asyncio.run(open_loop(url, rate, seconds, [MIX[0]], texts, lambda *d: done.append(d)))
        lat = [d[1] for d in done if d[2] == 200]
        rows.append({"rate": rate, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                     "errors": sum(1 for d in done if d[2] != 200)})  # fmt: skip
        console.print(f"knee: {rate:>5.0f} req/s  p50 {rows[-1]['p50_ms']:.1f} ms  p99 {rows[-1]['p99_ms']:.1f} ms")
        if rows[-1]["p99_ms"] > 1000:  # far past the knee: higher rates only queue
            break
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["rate"] for r in rows], [r["p99_ms"] for r in rows], "o-", label="p99")
    ax.plot([r["rate"] for r in rows], [r["p50_ms"] for r in rows], "o-", label="p50")
    ax.axhline(100, color="grey", linestyle="--", label="100 ms")
    ax.set(xlabel="offered rate (req/s), specialist path", ylabel="latency (ms)", yscale="log",
           title="smallfleet gateway: latency against offered load")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_timeline(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    fig, (rss, lat) = plt.subplots(2, 1, figsize=(6, 4.5), sharex=True)
    rss.plot(minutes, [s["rss_mb"] for s in samples], "o-", markersize=3)
    rss.set(ylabel="gateway RSS (MB)", title="smallfleet soak: memory and latency over time")
    lat.plot(minutes, [s["p99_ms"] for s in samples], "o-", markersize=3, label="p99")
    lat.plot(minutes, [s["p99_no_generate_ms"] for s in samples], "o-", markersize=3, label="p99 without generate")
    lat.plot(minutes, [s["p50_ms"] for s in samples], "o-", markersize=3, label="p50")
    lat.set(xlabel="minutes", ylabel="latency (ms)", yscale="log")
    lat.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=Path, default=ROOT / "runs" / "soak",
                        help="Trained fleet with the tasks of bench/soak_fleet.yaml (trained there if missing).")
    parser.add_argument("--minutes", type=float, default=30.0, help="Length of the soak.")
    parser.add_argument("--rate", type=float, default=20.0, help="Requests per second during the soak.")
    parser.add_argument("--every", type=float, default=30.0, help="Seconds between samples.")
    parser.add_argument("--p99-window", type=float, default=None,
                        help="Seconds per window for the p99 stability figures [default: --every]. Longer windows "
                             "hold more of the rare slow requests (generations), so their p99 is a steadier figure.")
    parser.add_argument("--warmup", type=float, default=0.2, help="Share of the soak left out of the RSS growth.")
    parser.add_argument("--fail-rate", type=float, default=0.05, help="Share of upstream calls that fail with a 500.")
    parser.add_argument("--knee-rates", default="25,50,100,150,200,300,400", help="Rates for the knee (req/s).")
    parser.add_argument("--knee-seconds", type=float, default=20.0)
    parser.add_argument("--drift-every", type=float, default=None,
                        help="The gateway's serving.drift_every (seconds between drift checks; 0 = none) "
                             "[default: the fleet's setting].")  # fmt: skip
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    parser.add_argument("--threads", type=int, default=None,
                        help="The gateway's serving.threads (torch threads of its models; 0 = one per core) "
                             "[default: the fleet's setting].")  # fmt: skip
    parser.add_argument("--max-wait-seconds", type=float, default=None,
                        help="The gateway's serving.max_wait_seconds (load shedding; 0 = off) [default: the fleet's].")
    parser.add_argument("--name", default="soak", help="Results file name (bench/results/NAME.json); a name other "
                        "than `soak` leaves bench/RESULTS.md and the plots alone, for A/B runs.")
    parser.add_argument("--knee-only", action="store_true",
                        help="Only the knee, no soak: writes results/soak_knee.json and the knee plot.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    if not (args.fleet / "fleet.json").is_file():
        subprocess.run([sys.executable, "-m", "smallfleet", "train", str(HERE / "soak_fleet.yaml"),
                        "--out", str(args.fleet), "--force"], check=True)  # fmt: skip
    texts = load_texts()
    window = args.p99_window or args.every
    work = Path(tempfile.mkdtemp(prefix="smallfleet-soak-"))
    up_port, gw_port = free_port(), free_port()
    db_file = work / "soak.db"
    procs = [start([sys.executable, str(HERE / "upstream.py"), str(up_port), "--fail-rate", str(args.fail_rate)],
                   work / "upstream.log")]  # fmt: skip
    try:
        wait_up(f"http://127.0.0.1:{up_port}/docs", procs[0], "upstream")
        procs.append(start([sys.executable, "-m", "smallfleet", "serve", str(args.fleet), "--port", str(gw_port),
                            "--db", f"sqlite:///{db_file}", "--escalate-to", f"http://127.0.0.1:{up_port}/v1",
                            "--escalate-model", "upstream-model", "--escalate-input-price", "2.5",
                            "--escalate-output-price", "10", "--threshold", "support_ticket=0",
                            "--threshold", "slots=0", "--threshold", "summary=0",
                            "--threshold", "review_sentiment=1.01",
                            *(["--drift-every", str(args.drift_every)] if args.drift_every is not None else []),
                            *(["--threads", str(args.threads)] if args.threads is not None else []),
                            *(["--max-wait-seconds", str(args.max_wait_seconds)]
                              if args.max_wait_seconds is not None else [])],
                           work / "gateway.log"))  # fmt: skip
        wait_up(f"http://127.0.0.1:{gw_port}/healthz", procs[1], "gateway")
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        console.print(f"soak: {args.minutes:g} min at {args.rate:g} req/s, sampling every {args.every:g} s")
        if not args.knee_only:
            result = soak(url, procs[1].pid, db_file, args.minutes, args.rate, args.every, texts, console, window)
        knee_rows = knee(url, [float(r) for r in args.knee_rates.split(",") if r], args.knee_seconds, texts, console)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=60)
    knee_rate = max((r["rate"] for r in knee_rows if r["p99_ms"] < 100), default=None)
    if args.knee_only:
        plot(knee_rows, HERE / "results" / "soak_knee.png")
        write_json("soak_knee", {"env": machine(), "threads": args.threads, "drift_every": args.drift_every,
                                 "knee_rate": knee_rate, "knee": knee_rows})  # fmt: skip
        Console().print(f"knee (p99 < 100 ms on the specialist path): {knee_rate} req/s")
        return
    import sqlite3

    with sqlite3.connect(db_file) as conn:  # after a clean shutdown every queued row is written
        logged = {r[0] for r in conn.execute("SELECT request_id FROM requests")}
    ids = result.pop("answered_ids")
    lost = sum(1 for i in ids if i not in logged)
    samples = result["samples"]
    steady = samples[max(1, int(len(samples) * args.warmup)):] or samples
    windows = result.pop("windows")
    full = [w for w in windows if w["t_s"] - window > args.warmup * args.minutes * 60 - 1e-6] or windows

    def spread(key: str, route: str | None = None) -> float | None:
        values = [s[key] if route is None else s[key].get(route) for s in full]
        values = [v for v in values if v is not None and v == v]  # a window with no answer on that route: NaN
        return round(100 * (max(values) / statistics.median(values) - 1), 1) if values else None

    for r in result["routes"]:
        r["p99_spread_pct"] = spread("route_p99_ms", r["model"])

    summary = {
        "minutes": args.minutes, "rate": args.rate, "requests": result["requests"], "answered": len(ids),
        "errors": result["errors"], "lost_rows": lost, "shed": result["shed"],
        "threads": args.threads, "max_wait_seconds": args.max_wait_seconds, "p99_window_s": window,
        "rss_growth_pct": round(100 * (steady[-1]["rss_mb"] / steady[0]["rss_mb"] - 1), 2),
        "p99_spread_pct": spread("p99_ms"), "p99_spread_no_generate_pct": spread("p99_no_generate_ms"),
        "knee_rate": knee_rate,
    }  # fmt: skip
    table = Table(title="soak")
    for key in summary:
        table.add_column(key, justify="right")
    table.add_row(*[str(v) for v in summary.values()])
    Console().print(table)
    routes = Table(title="by route (whole soak)")
    route_keys = ("model", "requests", "errors", "shed", "p50_ms", "p99_ms", "p99_spread_pct")
    for key in route_keys:
        routes.add_column(key, justify="right")
    for r in result["routes"]:
        routes.add_row(*[str(r[k]) for k in route_keys])
    Console().print(routes)
    env = machine(fail_rate=args.fail_rate, mix=[m[:2] for m in MIX])
    if args.name != "soak":
        write_json(args.name, {"env": env, "summary": summary, "routes": result["routes"], "samples": samples,
                               "windows": windows,
                               "knee": knee_rows})  # fmt: skip
        return
    plot(knee_rows, HERE / "results" / "soak_knee.png")
    plot_timeline(samples, HERE / "results" / "soak_timeline.png")
    write_json("soak", {"env": env, "summary": summary, "routes": result["routes"], "samples": samples, "windows": windows,
                        "knee": knee_rows})  # fmt: skip
    if not args.no_update:
        lines = ["## Soak and load (`bench/soak.py`)", "",
                 f"{env['date']}, {env['cpu_count']} cores. {args.minutes:g} min of mixed traffic at {args.rate:g} req/s "
                 "of held-out texts: " + ", ".join(f"{share:.0%} `{model}`" for share, model, _ in MIX)
                 + f" (classify, extract, generate, the router, a task whose every answer escalates, pass-through), "
                 f"the upstream failing {args.fail_rate:.0%} of calls; the fleet of `bench/soak_fleet.yaml`; model threads "
                 f"{args.threads or 'torch default'}, `max_wait_seconds` {args.max_wait_seconds or 0:g}; RSS sampled every "
                 f"{args.every:g} s, p99 over windows of {window:g} s after the first {args.warmup:.0%} (warm-up).", "",
                 "| requests | answered | errors | lost log rows | RSS growth after warm-up | p99 spread (max vs median window) "
                 "| the same without generate | knee (p99 < 100 ms) |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
                 f"| {summary['requests']} | {summary['answered']} | {summary['errors']} | {summary['lost_rows']} | "
                 f"{summary['rss_growth_pct']}% | {summary['p99_spread_pct']}% | {summary['p99_spread_no_generate_pct']}% "
                 f"| {summary['knee_rate']} req/s |", "",
                 f"| route | requests | errors | shed | p50 ms | p99 ms | p99 spread over the {window:g} s windows |",
                 "|---|---:|---:|---:|---:|---:|---:|",
                 *[f"| `{r['model']}` | {r['requests']} | {r['errors']} | {r['shed']} | {r['p50_ms']} | {r['p99_ms']} "
                   f"| {r['p99_spread_pct']}% |" for r in result["routes"]], "",
                 "![RSS and latency over the soak](results/soak_timeline.png)", "",
                 "![latency against offered load](results/soak_knee.png)"]  # fmt: skip
        update_results("soak", "\n".join(lines))


if __name__ == "__main__":
    main()
