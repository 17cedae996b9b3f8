"""Flywheel benchmark: does a fleet learn from its own traffic?

banking77: the specialist starts from 10 labelled examples per intent. The rest of the
training texts arrive as traffic, in rounds of 1,000, through a real `smallfleet serve`
whose upstream tier is a stand-in for a frontier model that answers with the gold label
(or, in the second run, is right 83% of the time: GPT-4's published 3-shot figure on
banking77). After each round `smallfleet retrain` trains a candidate on the seed data plus
the upstream's answers to the escalated requests, gates it on the test set (the frozen
set) and promotes it when it passes; the gateway picks the new version up by itself.

Per round: escalation rate of the round's traffic, accuracy of the accepted answers of the
served version on the test set (and its coverage), cost per 1,000 requests against sending
all of them to the frontier model (GPT-4o list prices), and whether the gate promoted.

    OMP_NUM_THREADS=1 python bench/flywheel.py [--rounds 5] [--epochs 3] [--accuracy 1.0 --accuracy 0.83]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chat_completion, machine, serve_in_thread, update_results, write_json  # noqa: E402
from gateway import free_port, wait_up  # noqa: E402

from smallfleet.data import read_rows  # noqa: E402
from smallfleet.settings import datasets_dir  # noqa: E402
from smallfleet.tokens import estimate_prompt_tokens, estimate_tokens  # noqa: E402

SEED = 13
PER_INTENT = 10
ROUND = 1000
TARGET, DELTA = 0.90, 0.05
INPUT_PRICE, OUTPUT_PRICE = 2.50, 10.00  # GPT-4o list prices, USD per million tokens
TASK = "banking"


def stand_in_upstream(gold: dict[str, str], labels: list[str], accuracy: float, port: int) -> uvicorn.Server:
    """An OpenAI-protocol server answering each text with its gold label, or (1 - accuracy) of the time, seeded
    per text, with another label."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        text = body["messages"][-1]["content"]
        label = gold.get(text, labels[0])
        prompt, answer = estimate_prompt_tokens(body["messages"]), estimate_tokens(label)  # billed like a real API
        rng = random.Random(f"{SEED}:{text}")
        if rng.random() >= accuracy:
            label = rng.choice([x for x in labels if x != label])
        return chat_completion(body.get("model", "oracle"), label, prompt, answer)

    return serve_in_thread(app, port)


def send_round(url: str, texts: list[str]) -> list[dict]:
    """Each text as one chat completion to the fleet's task; the responses' `smallfleet` objects."""
    client = httpx.Client(timeout=120)

    def one(text: str) -> dict:
        r = client.post(f"{url}/chat/completions", json={"model": f"fleet/{TASK}",
                                                         "messages": [{"role": "user", "content": text}]})  # fmt: skip
        r.raise_for_status()
        return r.json()["smallfleet"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, texts))


def accepted_accuracy(fleet: Path, test: list[dict]) -> dict:
    """The served version's accuracy on the test answers it accepts at its threshold, and its coverage."""
    from smallfleet.tasks import load_specialist
    from smallfleet.training.artifacts import read_json

    entry = read_json(fleet / "fleet.json")["tasks"][TASK]
    cascade = entry["cascade"]
    threshold = cascade["threshold"] if cascade.get("supported") else float("inf")
    answers = load_specialist(fleet / entry["folder"]).answer([r["text"] for r in test])
    accepted = [(a.content == r["label"]) for a, r in zip(answers, test) if a.confidence >= threshold]
    return {"version": entry.get("served", "v1"), "threshold": threshold if accepted else None,
            "coverage": len(accepted) / len(test),
            "accepted_accuracy": sum(accepted) / len(accepted) if accepted else None,
            "accuracy": sum(a.content == r["label"] for a, r in zip(answers, test)) / len(test)}  # fmt: skip


def run(accuracy: float, rounds: int, epochs: int, work: Path, log, calibrate_on: str = "all") -> dict:
    data = datasets_dir() / "banking77"
    train = [row for _, row in read_rows(data / "train.jsonl")]
    test = [row for _, row in read_rows(data / "test.jsonl")]
    rng = random.Random(SEED)
    rng.shuffle(train)
    seed_rows, traffic, seen = [], [], {}
    for row in train:
        if seen.get(row["label"], 0) < PER_INTENT:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            seed_rows.append(row)
        else:
            traffic.append(row)
    labels = sorted(seen)
    work.mkdir(parents=True, exist_ok=True)
    (work / "seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed_rows))
    (work / "fleet.yaml").write_text(
        f"name: flywheel\ntasks:\n  - name: {TASK}\n    train: seed.jsonl\n    test: {data / 'test.jsonl'}\n"
        f"    target: {TARGET}\n    delta: {DELTA}\n    training:\n      epochs: {epochs}\n      max_length: 64\n")
    fleet = work / "fleet"
    subprocess.run([sys.executable, "-m", "smallfleet", "train", str(work / "fleet.yaml"), "--out", str(fleet), "--force"],
                   check=True, stdout=log, stderr=log)  # fmt: skip
    upstream_port, port = free_port(), free_port()
    upstream = stand_in_upstream({r["text"]: r["label"] for r in train}, labels, accuracy, upstream_port)
    gateway = subprocess.Popen([sys.executable, "-m", "smallfleet", "serve", str(fleet), "--port", str(port),
                                "--escalate-to", f"http://127.0.0.1:{upstream_port}/v1", "--escalate-model", "oracle",
                                "--escalate-input-price", str(INPUT_PRICE), "--escalate-output-price", str(OUTPUT_PRICE),
                                "--drift-every", "0"], stdout=log, stderr=log)  # fmt: skip
    rows = []
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", gateway, "gateway")
        for number in range(1, rounds + 1):
            batch = traffic[(number - 1) * ROUND : number * ROUND]
            if not batch:
                break
            quality = accepted_accuracy(fleet, test)
            started = time.monotonic()
            answers = send_round(f"http://127.0.0.1:{port}/v1", [r["text"] for r in batch])
            escalated = sum(a["escalated"] for a in answers)
            cost = sum(a["cost_usd"] for a in answers)
            frontier = sum(a["frontier_cost_usd"] for a in answers)
            served_seconds = time.monotonic() - started
            out = work / f"retrain-{number}.json"
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "smallfleet", "retrain", str(fleet), "--task", TASK, "--json", str(out),
                            "--calibrate-on", calibrate_on], check=True, stdout=log, stderr=log)  # fmt: skip
            result = json.loads(out.read_text())
            rows.append({"round": number, "requests": len(batch), "served_version": quality["version"],
                         "escalation_rate": escalated / len(batch), "test_coverage": quality["coverage"],
                         "accepted_accuracy": quality["accepted_accuracy"], "test_accuracy": quality["accuracy"],
                         "cost_per_1000": 1000 * cost / len(batch), "frontier_cost_per_1000": 1000 * frontier / len(batch),
                         "cost_ratio": cost / frontier if frontier else None, "candidate": result["candidate"],
                         "promoted": result["promoted"], "added_rows": result["added_rows"],
                         "gate_why": result.get("gate", {}).get("why"), "serve_seconds": round(served_seconds, 1),
                         "retrain_seconds": round(time.monotonic() - started, 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            write_json(f"flywheel_{int(accuracy * 100)}", {"accuracy": accuracy, "rounds": rows, "partial": True})
        final = accepted_accuracy(fleet, test)
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)
        upstream.should_exit = True
    return {"upstream_accuracy": accuracy, "seed_rows": len(seed_rows), "traffic_rows": len(traffic), "rounds": rows,
            "after_last_round": final}  # fmt: skip


def render(results: list[dict], env: dict, epochs: int) -> str:
    lines = [f"banking77: {PER_INTENT} labelled examples per intent ({results[0]['seed_rows']} rows) to start; the rest "
             f"of the training texts as traffic in rounds of {ROUND} through `smallfleet serve` with a stand-in "
             f"upstream; `smallfleet retrain` (gate on the 3,080-text test set) after each round. Target accepted "
             f"accuracy {TARGET} (delta {DELTA}); epochs {epochs}, max_length 64. Cost: specialist CPU time at "
             f"$0.04/core-hour plus upstream calls, against every request at GPT-4o prices (${INPUT_PRICE}/"
             f"${OUTPUT_PRICE} per M tokens, estimated tokens). Machine: {env['cpu_count']} CPU cores, torch "
             f"{env['torch']}. Run {env['date']}.", ""]  # fmt: skip
    for res in results:
        lines += [f"Upstream right {res['upstream_accuracy']:.0%} of the time:", "",
                  "| round | served | escalation rate | accepted accuracy (test) | coverage (test) | cost / 1k requests | "
                  "all-frontier / 1k | ratio | candidate | promoted |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in res["rounds"]:
            acc = "-" if r["accepted_accuracy"] is None else f"{r['accepted_accuracy']:.3f}"
            lines.append(f"| {r['round']} | {r['served_version']} | {r['escalation_rate']:.1%} | {acc} | "
                         f"{r['test_coverage']:.1%} | ${r['cost_per_1000']:.4f} | ${r['frontier_cost_per_1000']:.4f} | "
                         f"{r['cost_ratio']:.2f} | {r['candidate']} | {'yes' if r['promoted'] else 'no'} |")  # fmt: skip
        f = res["after_last_round"]
        acc = "-" if f["accepted_accuracy"] is None else f"{f['accepted_accuracy']:.3f}"
        lines += ["", f"After the last round: serving {f['version']}, accepted accuracy {acc} at coverage "
                      f"{f['coverage']:.1%} of the test set (plain accuracy {f['accuracy']:.3f}).", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accuracy", type=float, action="append", help="Upstream accuracy (repeatable) [1.0, 0.83].")
    parser.add_argument("--work", type=Path, default=Path("/tmp/smallfleet-flywheel"))
    parser.add_argument("--calibrate-on", choices=["all", "trusted"], default="all",
                        help="`retrain --calibrate-on`: calibrate candidates on everything (upstream answers included) "
                             "or on trusted labels only.")  # fmt: skip
    args = parser.parse_args()
    results = []
    env = machine()
    with (args.work.parent / f"{args.work.name}.log").open("a") as log:
        for accuracy in args.accuracy or [1.0, 0.83]:
            results.append(run(accuracy, args.rounds, args.epochs, args.work / f"up{int(accuracy * 100)}", log,
                               args.calibrate_on))  # fmt: skip
            write_json("flywheel", {"machine": env, "epochs": args.epochs, "results": results})
            update_results("flywheel", "## Flywheel: learning from traffic (`bench/flywheel.py`)\n\n" +
                           render(results, env, args.epochs))  # fmt: skip
    print(render(results, env, args.epochs))


if __name__ == "__main__":
    main()
