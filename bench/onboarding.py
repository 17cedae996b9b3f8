"""Onboarding benchmark: from pass-through frontier traffic to a distilled fleet.

Mixed traffic goes through a real `smallfleet serve` started on an empty folder as a pure
pass-through gateway: three narrow tasks from shared datasets, each behind its own prompt
template or system prompt (banking77 intents, restricted to its most frequent intents for a small
run; sms_spam; snips intents), plus free-form requests that fit no task (bitext_support questions
and MMLU prompts). A stand-in upstream answers each task request with its gold label in the
template's format, and free-form requests with a reference text.

Then `smallfleet audit` clusters the log, `smallfleet distill` trains a specialist on each
candidate classify cluster from the frontier's answers and promotes it, and a second batch of
the same mixed traffic (new texts) goes through the gateway, for the same model name.

Reported: cluster purity against the true tasks; the share of task traffic answered locally;
accepted accuracy against the gold labels (target per task); the saving; and what happened to
the free-form requests (they must all stay upstream).

    OMP_NUM_THREADS=1 python bench/onboarding.py [--per-task 400] [--eval-per-task 150] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chat_completion, machine, serve_in_thread, update_results, write_json  # noqa: E402
from gateway import free_port, wait_up  # noqa: E402

from smallfleet.settings import datasets_dir  # noqa: E402
from smallfleet.tokens import estimate_prompt_tokens, estimate_tokens  # noqa: E402

SEED = 7
MODEL = "gpt-4o"
INPUT_PRICE, OUTPUT_PRICE = 2.50, 10.00  # GPT-4o list prices, USD per million tokens
TARGET, DELTA = 0.90, 0.05
BANKING_INTENTS = 10
GOAL_LOCAL = 0.70
TASKS = {
    "banking": {"system": "You are the support desk of a bank.",
                "prefix": "Classify the intent of this customer message.\nMessage: ",
                "suffix": "\nAnswer with the intent label only."},
    "spam": {"system": "You filter SMS messages. Reply with one word: spam or ham.", "prefix": "", "suffix": ""},
    "snips": {"system": None, "prefix": "Which intent does this voice command have? Command: \"",
              "suffix": "\". Reply with one of PlayMusic, AddToPlaylist, RateBook, SearchScreeningEvent, "
                        "BookRestaurant, GetWeather, SearchCreativeWork."},
}  # fmt: skip


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]  # not splitlines: U+2028 in texts


def build_traffic(per_task: int, eval_per_task: int, free: int) -> tuple[list[dict], list[dict]]:
    """(phase-1 traffic, phase-2 traffic): items {task, messages, gold}; task None for free-form requests."""
    data = datasets_dir()
    rng = random.Random(SEED)
    banking = _read(data / "banking77" / "train.jsonl")
    top = {label for label, _ in Counter(r["label"] for r in banking).most_common(BANKING_INTENTS)}
    sources = {
        "banking": [(r["text"], r["label"]) for r in banking if r["label"] in top],
        "spam": [(r["text"], r["label"]) for r in _read(data / "sms_spam" / "all.jsonl")],
        "snips": [(r["text"], r["intent"]) for r in _read(data / "snips" / "train.jsonl")],
    }
    phases: list[list[dict]] = [[], []]
    for task, rows in sources.items():
        rng.shuffle(rows)
        seen = set()
        rows = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]
        t = TASKS[task]
        for phase, chunk in ((0, rows[:per_task]), (1, rows[per_task : per_task + eval_per_task])):
            for text, label in chunk:
                messages = ([{"role": "system", "content": t["system"]}] if t["system"] else []) + [
                    {"role": "user", "content": t["prefix"] + text + t["suffix"]}]
                phases[phase].append({"task": task, "messages": messages, "gold": label})
    questions = [(r["text"], r["response"]) for r in _read(data / "bitext_support" / "all.jsonl")]
    questions += [(r["prompt"].split("\n")[0], "It depends; here is a careful answer.")
                  for r in _read(data / "routellm_mmlu" / "all.jsonl")]  # fmt: skip
    rng.shuffle(questions)
    for phase, chunk in ((0, questions[:free]), (1, questions[free : free + free // 2])):
        for text, answer in chunk:
            phases[phase].append({"task": None, "messages": [{"role": "user", "content": text}], "gold": answer})
    for phase in phases:
        rng.shuffle(phase)
    return phases[0], phases[1]


def stand_in_upstream(gold: dict[str, str], port: int) -> uvicorn.Server:
    """An OpenAI-protocol server answering each request with its gold answer, billed at estimated tokens."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        body = await request.json()
        answer = gold.get(body["messages"][-1]["content"], "I cannot help with that.")
        prompt, out = estimate_prompt_tokens(body["messages"]), estimate_tokens(answer)
        return chat_completion(body.get("model", MODEL), answer, prompt, out)

    return serve_in_thread(app, port)


def send(url: str, items: list[dict]) -> list[dict]:
    """Each item as one chat completion for MODEL; (content, smallfleet object) per item."""
    client = httpx.Client(timeout=300)

    def one(item: dict) -> dict:
        r = client.post(f"{url}/chat/completions", json={"model": MODEL, "messages": item["messages"]})
        r.raise_for_status()
        body = r.json()
        return {"content": body["choices"][0]["message"]["content"], **body["smallfleet"]}

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, items))


def smallfleet(*args, log) -> None:
    subprocess.run([sys.executable, "-m", "smallfleet", *map(str, args)], check=True, stdout=log, stderr=log)


def serve(folder: Path, upstream_port: int, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smallfleet", "serve", str(folder), "--port", str(port),
                             "--escalate-to", f"http://127.0.0.1:{upstream_port}/v1", "--escalate-model", MODEL,
                             "--escalate-input-price", str(INPUT_PRICE), "--escalate-output-price", str(OUTPUT_PRICE)],
                            stdout=log, stderr=log)  # fmt: skip
    wait_up(f"http://127.0.0.1:{port}/healthz", proc, "gateway")
    return proc, f"http://127.0.0.1:{port}/v1"


def purity(audit: dict, folder: Path, truth: dict[str, str | None]) -> tuple[float, dict[int, str | None]]:
    """Weighted purity of the clusters against the true tasks (free-form counts as its own class), and each
    cluster's majority task."""
    from smallfleet.audit import cluster_rows

    right, total, majority = 0, 0, {}
    for c in audit["clusters"]:
        tasks = Counter(truth.get(r["ref"]) for r in cluster_rows(folder, c["id"]))
        task, count = tasks.most_common(1)[0]
        majority[c["id"]] = task
        right += count
        total += sum(tasks.values())
    return (right / total if total else 0.0), majority


def run(args) -> dict:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "fleet"
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir()
    log = (work / "onboarding.log").open("w")
    first, second = build_traffic(args.per_task, args.eval_per_task, args.free)
    gold = {item["messages"][-1]["content"]: item["gold"] for item in first + second}
    upstream_port = free_port()
    upstream = stand_in_upstream(gold, upstream_port)
    try:
        gateway, url = serve(folder, upstream_port, log)
        started = time.monotonic()
        replies = send(url, first)
        gateway.terminate()
        gateway.wait(timeout=60)
        log_seconds = time.monotonic() - started
        assert all(r["tier"] != "specialist" for r in replies)
        from smallfleet.store import Database, database_url

        db = Database(database_url(folder))
        with db.engine.connect() as conn:
            ids = [row.request_id for row in conn.execute(db.requests.select().order_by(db.requests.c.id))]
        by_id = {r["request_id"]: item["task"] for r, item in zip(replies, first, strict=True)}
        truth = {i: by_id.get(i) for i in ids}
        started = time.monotonic()
        smallfleet("audit", folder, "--json", work / "audit.json", log=log)
        audit_seconds = time.monotonic() - started
        audit = json.loads((work / "audit.json").read_text())
        pure, majority = purity(audit, folder, truth)
        distilled, distill_seconds = {}, 0.0
        for c in audit["clusters"]:
            task = majority[c["id"]]
            if task is None or task in distilled or not c["candidate"] or c["kind"] != "classify":
                continue
            started = time.monotonic()
            smallfleet("distill", folder, "--cluster", c["id"], "--name", task, "--epochs", args.epochs,
                       "--max-length", 64, "--valid-fraction", 0.25, "--target", TARGET, "--delta", DELTA, log=log)  # fmt: skip
            smallfleet("promote", folder, "--task", task, "--version", "v1", log=log)
            distill_seconds += time.monotonic() - started
            distilled[task] = json.loads((folder / "fleet.json").read_text())["tasks"][task]["distilled"]
        gateway, url = serve(folder, upstream_port, log)
        replies = send(url, second)
        gateway.terminate()
        gateway.wait(timeout=60)
    finally:
        upstream.should_exit = True
    per_task: dict[str, dict] = {}
    cost = frontier = 0.0
    for item, reply in zip(second, replies, strict=True):
        key = item["task"] or "(free-form)"
        t = per_task.setdefault(key, {"requests": 0, "local": 0, "local_right": 0, "wrong_task": 0})
        t["requests"] += 1
        cost += reply["cost_usd"]
        frontier += reply["frontier_cost_usd"]
        if reply["tier"] == "specialist":
            t["local"] += 1
            t["local_right"] += reply["content"] == item["gold"]
            t["wrong_task"] += reply["task"] != item["task"]
    for t in per_task.values():
        t["local_share"] = t["local"] / t["requests"]
        t["accepted_accuracy"] = t["local_right"] / t["local"] if t["local"] else None
    tasks = [k for k in per_task if k != "(free-form)"]
    task_requests = sum(per_task[k]["requests"] for k in tasks)
    local = sum(per_task[k]["local"] for k in tasks)
    right = sum(per_task[k]["local_right"] for k in tasks)
    return {
        "per_task_phase1": args.per_task, "per_task_phase2": args.eval_per_task, "free_form_phase1": args.free,
        "epochs": args.epochs, "target": TARGET, "delta": DELTA, "banking_intents": BANKING_INTENTS,
        "clusters": [{"id": c["id"], "requests": c["requests"], "kind": c["kind"], "consistency": c["consistency"],
                      "majority_task": majority[c["id"]], "template": c["template"] is not None} for c in audit["clusters"]],
        "unclustered": audit["unclustered"],
        "purity": pure, "distilled": distilled, "per_task": per_task,
        "task_local_share": local / task_requests if task_requests else 0.0,
        "task_accepted_accuracy": right / local if local else None,
        "free_form_answered_locally": per_task.get("(free-form)", {}).get("local", 0),
        "cost_usd": cost, "all_frontier_usd": frontier, "saving_pct": 100 * (1 - cost / frontier) if frontier else None,
        "seconds": {"log_phase": round(log_seconds, 1), "audit": round(audit_seconds, 1),
                    "distill_and_promote": round(distill_seconds, 1)},
        "goal_met": local / task_requests >= GOAL_LOCAL and (right / local if local else 0) >= TARGET
                    and per_task.get("(free-form)", {}).get("local", 0) == 0,
    }  # fmt: skip


def render(r: dict, env: dict) -> str:
    lines = [f"Pass-through traffic through `smallfleet serve` on an empty folder: 3 tasks x {r['per_task_phase1']} "
             f"requests (banking77 restricted to its {r['banking_intents']} most frequent intents, sms_spam, snips "
             f"intents), each behind its own template/system prompt, plus {r['free_form_phase1']} free-form requests "
             f"(bitext_support, MMLU); stand-in upstream answers with the gold labels. `smallfleet audit`, then "
             f"`distill` ({r['epochs']} epochs, target {r['target']}, delta {r['delta']}) + `promote` per classify "
             f"cluster; then {r['per_task_phase2']} new requests per task and {r['free_form_phase1'] // 2} free-form "
             f"ones for the same model name. Machine: {env['cpu_count']} CPU cores, torch {env['torch']}. "
             f"Run {env['date']}.", "",
             f"Cluster purity against the true tasks: {r['purity']:.3f} ({len(r['clusters'])} clusters, "
             f"{r['unclustered']} requests in none).", "",
             "| task | requests | answered locally | accepted accuracy | held-back agreement (distill) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, t in r["per_task"].items():
        acc = "-" if t["accepted_accuracy"] is None else f"{t['accepted_accuracy']:.3f}"
        held = r["distilled"].get(name, {}).get("agreement")
        lines.append(f"| {name} | {t['requests']} | {t['local_share']:.1%} | {acc} | "
                     f"{'-' if held is None else f'{held:.3f}'} |")  # fmt: skip
    acc = "-" if r["task_accepted_accuracy"] is None else f"{r['task_accepted_accuracy']:.3f}"
    lines += ["", f"Task traffic answered locally: {r['task_local_share']:.1%} at accepted accuracy {acc} (goal: "
                  f">= {GOAL_LOCAL:.0%} at >= {r['target']}); free-form requests answered by a specialist: "
                  f"{r['free_form_answered_locally']} (goal 0). Spend ${r['cost_usd']:.4f} against all-frontier "
                  f"${r['all_frontier_usd']:.4f} (saving {r['saving_pct']:.1f}%). Goal met: "
                  f"{'yes' if r['goal_met'] else 'no'}."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-task", type=int, default=400, help="Requests per task in the logged traffic.")
    parser.add_argument("--eval-per-task", type=int, default=150, help="New requests per task after distilling.")
    parser.add_argument("--free", type=int, default=80, help="Free-form requests in the logged traffic (half as many after).")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/smallfleet-onboarding"))
    args = parser.parse_args()
    result = run(args)
    env = machine()
    write_json("onboarding", {"env": env, **result})
    body = render(result, env)
    update_results("onboarding", "## Onboarding: audit + distill from pass-through traffic (bench/onboarding.py)\n\n"
                   + body)  # fmt: skip
    print(body)


if __name__ == "__main__":
    main()
