"""Gateway benchmark: added latency over calling the specialist in-process, and throughput
under concurrent load, against LiteLLM's proxy in front of the same upstream.

Every server runs as its own process on loopback and the load comes from a separate
client process (bench/loadgen.py), so the numbers include HTTP, JSON, routing and the
request log, as users see them. The upstream (bench/upstream.py) answers at once, so the
passthrough rows measure the proxies themselves.

    python bench/gateway.py [--fleet runs/quickstart] [--litellm .venv-litellm/bin/litellm]

LiteLLM lives in its own virtualenv (`make bench-venv-litellm`) so its pins never touch ours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import HERE, machine, update_results, write_json
from rich.console import Console
from rich.table import Table

ROOT = HERE.parent
TEXT = "I was charged twice for order 88412, please refund the extra payment"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not start within {timeout:.0f}s")


def quickstart_fleet(folder: Path, console: Console) -> None:
    """Train the quickstart fleet into `folder` unless a fleet is there already."""
    if not (folder / "fleet.json").is_file():
        console.print(f"training the quickstart fleet into {folder}")
        subprocess.run([sys.executable, "-m", "smallfleet", "train", str(ROOT / "examples/quickstart/fleet.yaml"),
                        "--out", str(folder), "--force"], check=True)  # fmt: skip


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def load(url: str, model: str, requests: int, concurrency: int, key: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), url, model, "--requests", str(requests), "--concurrency", str(concurrency),
         "--key", key],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def in_process_latency(folder: Path, n: int, runtime: str) -> dict:
    from smallfleet.models.encoder_runtime import ENCODER_RUNTIME_ENV
    from smallfleet.tasks import load_specialist

    os.environ[ENCODER_RUNTIME_ENV] = runtime
    specialist = load_specialist(folder)
    for _ in range(20):
        specialist.answer([TEXT])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        specialist.answer([TEXT])
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(0.99 * (len(times) - 1))], "requests": n}


def litellm_config(path: Path, upstream: str) -> Path:
    path.write_text(
        "model_list:\n"
        "  - model_name: upstream-model\n"
        "    litellm_params:\n"
        "      model: openai/upstream-model\n"
        f"      api_base: {upstream}\n"
        "      api_key: dummy\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=Path, default=ROOT / "runs" / "quickstart", help="Trained fleet (trained from the quickstart if missing).")
    parser.add_argument("--task", default="support_ticket")
    parser.add_argument("--litellm", type=Path, default=ROOT / ".venv-litellm" / "bin" / "litellm")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per concurrent run.")
    parser.add_argument("--sequential", type=int, default=500, help="Requests per one-at-a-time run.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="Model threads of the gateways (serve --threads) and of the in-process rows; 0 = one per core.")
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    quickstart_fleet(args.fleet, console)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="smallfleet-bench-gw-"))
    procs: list[subprocess.Popen] = []
    results: dict = {}
    try:
        console.print("in-process specialist latency")
        results["in_process"] = in_process_latency(args.fleet / args.task, args.sequential, "auto")
        results["in_process_torch"] = in_process_latency(args.fleet / args.task, args.sequential, "torch")

        up_port, gw_port, lt_port, torch_port = free_port(), free_port(), free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        procs.append(start([sys.executable, str(HERE / "upstream.py"), str(up_port)], work / "upstream.log"))
        wait_up(f"http://127.0.0.1:{up_port}/docs", procs[-1], "upstream")
        # both proxies check a client key, as they would in production
        db = f"sqlite:///{work / 'bench.db'}"
        gw_key = subprocess.run([sys.executable, "-m", "smallfleet", "keys", "create", str(args.fleet), "bench", "--db", db],
                                capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        lt_key = "sk-bench-" + os.urandom(16).hex()
        for port, runtime in ((gw_port, "auto"), (torch_port, "torch")):  # the default, and fp32 torch as the baseline
            procs.append(start([sys.executable, "-m", "smallfleet", "serve", str(args.fleet), "--port", str(port),
                                "--db", db, "--escalate-to", upstream, "--runtime", runtime, "--threads", str(args.threads),
                                "--escalate-model", "upstream-model", "--threshold", f"{args.task}=0"],
                               work / f"gateway-{runtime}.log"))  # fmt: skip
            wait_up(f"http://127.0.0.1:{port}/healthz", procs[-1], f"smallfleet gateway ({runtime})")
        results["gateway_runtime"] = next((line.strip() for line in (work / "gateway-auto.log").read_text().splitlines()
                                           if f"task {args.task}" in line), "")  # fmt: skip
        have_litellm = args.litellm.is_file()
        if have_litellm:
            cfg = litellm_config(work / "litellm.yaml", upstream)
            env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_MASTER_KEY": lt_key}
            procs.append(start([str(args.litellm), "--config", str(cfg), "--port", str(lt_port), "--host", "127.0.0.1"],
                               work / "litellm.log", env))  # fmt: skip
            wait_up(f"http://127.0.0.1:{lt_port}/health/liveliness", procs[-1], "litellm proxy")
        else:
            console.print(f"[yellow]LiteLLM not found at {args.litellm}[/]: run `make bench-venv-litellm` for the anchor rows")

        gw = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        gw_torch = f"http://127.0.0.1:{torch_port}/v1/chat/completions"
        lt = f"http://127.0.0.1:{lt_port}/v1/chat/completions"
        runs = [
            ("upstream direct", f"{upstream}/chat/completions", "upstream-model", 1),
            ("smallfleet specialist", gw, f"fleet/{args.task}", 1),
            ("smallfleet specialist, torch", gw_torch, f"fleet/{args.task}", 1),
            ("smallfleet passthrough", gw, "upstream-model", 1),
            ("litellm passthrough", lt, "upstream-model", 1),
            ("smallfleet specialist", gw, f"fleet/{args.task}", args.concurrency),
            ("smallfleet specialist, torch", gw_torch, f"fleet/{args.task}", args.concurrency),
            ("smallfleet passthrough", gw, "upstream-model", args.concurrency),
            ("litellm passthrough", lt, "upstream-model", args.concurrency),
        ]
        rows = []
        for name, url, model, conc in runs:
            if name.startswith("litellm") and not have_litellm:
                continue
            n = args.sequential if conc == 1 else args.requests
            console.print(f"{name}, concurrency {conc}, {n} requests")
            key = lt_key if name.startswith("litellm") else gw_key
            rows.append({"name": name, "concurrency": conc, **load(url, model, n, conc, key)})
        results["runs"] = rows
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    seq = {r["name"]: r for r in rows if r["concurrency"] == 1}
    conc = {r["name"]: r for r in rows if r["concurrency"] > 1}
    summary = {
        "specialist_overhead_p50_ms": seq["smallfleet specialist"]["p50_ms"] - results["in_process"]["p50_ms"],
        "specialist_overhead_p99_ms": seq["smallfleet specialist"]["p99_ms"] - results["in_process"]["p99_ms"],
        "specialist_torch_overhead_p50_ms": seq["smallfleet specialist, torch"]["p50_ms"]
        - results["in_process_torch"]["p50_ms"],
        "specialist_p50_ratio_to_torch": seq["smallfleet specialist"]["p50_ms"] / seq["smallfleet specialist, torch"]["p50_ms"],
        "specialist_rps_ratio_to_torch": conc["smallfleet specialist"]["rps"] / conc["smallfleet specialist, torch"]["rps"],
        "passthrough_overhead_p50_ms": seq["smallfleet passthrough"]["p50_ms"] - seq["upstream direct"]["p50_ms"],
    }
    if "litellm passthrough" in seq:
        summary["litellm_overhead_p50_ms"] = seq["litellm passthrough"]["p50_ms"] - seq["upstream direct"]["p50_ms"]
        summary["rps_ratio_vs_litellm"] = conc["smallfleet passthrough"]["rps"] / conc["litellm passthrough"]["rps"]
    results["summary"] = summary
    env = machine(concurrency=args.concurrency, model_threads=args.threads or "one per core", litellm=_litellm_version(args.litellm) if have_litellm else None)

    table = Table(title="gateway: latency and throughput on loopback")
    for col in ("path", "concurrency", "requests", "p50 ms", "p99 ms", "req/s", "errors"):
        table.add_column(col, justify="right")
    for key, label in (("in_process", "specialist in-process"), ("in_process_torch", "specialist in-process, torch")):
        table.add_row(label, "1", str(results[key]["requests"]),
                      f"{results[key]['p50_ms']:.2f}", f"{results[key]['p99_ms']:.2f}", "", "")  # fmt: skip
    for r in rows:
        table.add_row(r["name"], str(r["concurrency"]), str(r["requests"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      f"{r['rps']:.0f}", str(r["errors"]))  # fmt: skip
    Console(width=150).print(table)
    Console(width=150).print({k: round(v, 3) for k, v in summary.items()})
    write_json("gateway", {"env": env, **results})
    if not args.no_update:
        update_results("gateway", render_markdown(results, rows, summary, env))


def _litellm_version(path: Path) -> str:
    pip = path.parent / "pip"
    out = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:")), "?")


def render_markdown(results: dict, rows: list[dict], summary: dict, env: dict) -> str:
    ip, it = results["in_process"], results["in_process_torch"]
    lines = [
        f"Machine: {env['cpu_count']} CPU cores, torch {env['torch']}, Python {env['python']}; LiteLLM {env['litellm']}; "
        f"model threads {env.get('model_threads', 'one per core')}. "
        f"Run {env['date']}.",
        "",
        "| path | concurrency | requests | p50 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|",
        f"| specialist called in-process | 1 | {ip['requests']} | {ip['p50_ms']:.2f} | {ip['p99_ms']:.2f} | | |",
        f"| specialist called in-process, torch | 1 | {it['requests']} | {it['p50_ms']:.2f} | {it['p99_ms']:.2f} | | |",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['concurrency']} | {r['requests']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['rps']:.0f} | {r['errors']} |")  # fmt: skip
    lines += [
        "",
        f"- Gateway overhead on the specialist path: p50 {summary['specialist_overhead_p50_ms']:+.2f} ms, "
        f"p99 {summary['specialist_overhead_p99_ms']:+.2f} ms (through the gateway minus in-process); on torch "
        f"p50 {summary['specialist_torch_overhead_p50_ms']:+.2f} ms.",
        f"- Specialist path, default runtime ({results.get('gateway_runtime', '').split('(')[-1].split(')')[0]}) "
        f"against torch fp32, same run: p50 x{summary['specialist_p50_ratio_to_torch']:.2f}, concurrent "
        f"throughput x{summary['specialist_rps_ratio_to_torch']:.2f}.",
        f"- Passthrough overhead over calling the upstream directly: smallfleet p50 {summary['passthrough_overhead_p50_ms']:+.2f} ms"
        + (f", LiteLLM p50 {summary['litellm_overhead_p50_ms']:+.2f} ms." if "litellm_overhead_p50_ms" in summary else "."),
    ]
    if "rps_ratio_vs_litellm" in summary:
        lines.append(f"- Concurrent passthrough throughput: smallfleet / LiteLLM = {summary['rps_ratio_vs_litellm']:.2f}x.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
