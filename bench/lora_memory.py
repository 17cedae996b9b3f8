"""Peak memory of LoRA training, change by change (`python bench/generate.py --memory`).

Each configuration runs in a fresh process: load SmolLM2-135M-Instruct, attach LoRA, and
train a few steps on the longest DialogSum training dialogues (every micro-batch full at
max_length, the worst case) with the same seed, so every configuration sees the same
batches and their losses can be compared step by step. Peak RSS is the kernel's
high-water mark (VmHWM), reset after the model is loaded, so the load's own peak
(dequantizing the GGUF) is reported apart from training's.

    python bench/generate.py --memory                    # 8x2, max_length 512, 3 steps each
    python bench/generate.py --memory --memory-steps 2 --no-update
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from common import HERE, machine, update_results, write_json
from rich.console import Console
from rich.table import Table

BATCH, ACCUMULATION, MAX_LENGTH = 8, 2, 512
CONFIGS = {  # each adds one change to the one before
    "before: full-vocabulary loss, every activation kept": {"answer_only": False, "checkpointing": False, "heap": False},
    "+ answer-only logits": {"answer_only": True, "checkpointing": False, "heap": False},
    "+ activation checkpointing": {"answer_only": True, "checkpointing": True, "heap": False},
    "+ fixed mmap threshold (the default)": {"answer_only": True, "checkpointing": True, "heap": True},
}
GIB = 1024**3


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def full_vocabulary_loss(model, ids, attention, labels):
    """The loss as it was: transformers computes logits over the whole vocabulary for every token."""
    return model(input_ids=ids, attention_mask=attention, labels=labels).loss


def run_config(answer_only: bool, checkpointing: bool, heap: bool, pairs: list[tuple[str, str]], steps: int, threads: int) -> dict:
    """Train `steps` optimizer steps in this (fresh) process; peak RSS of loading and of training, losses."""
    import torch
    from rich.console import Console

    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.models.runtime.hf import load_causal_lm
    from smallfleet.tasks.generate import lora
    from smallfleet.tasks.generate.settings import GenerateSettings

    if threads:
        torch.set_num_threads(threads)
    if not answer_only:
        lora.answer_loss = full_vocabulary_loss
    if not heap:
        lora.fix_mmap_threshold = lambda: False
    settings = GenerateSettings(max_steps=steps, batch_size=BATCH, gradient_accumulation=ACCUMULATION,
                                max_length=MAX_LENGTH, gradient_checkpointing=checkpointing, checkpoint_every=0,
                                warmup_ratio=0.0)  # fmt: skip
    model, tokenizer = load_causal_lm(resolve_base_model("smollm2-135m"))
    model = lora.attach_lora(model, settings)
    load_peak = _status_kb("VmHWM") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    start_rss = _status_kb("VmRSS") * 1024
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = lora.train_lora(model, tokenizer, pairs, settings, Path(tmp), Console(quiet=True), "memory")
    return {"load_peak_bytes": load_peak, "rss_before_training_bytes": start_rss,
            "train_peak_bytes": _status_kb("VmHWM") * 1024, "seconds_per_step": result.seconds / result.steps,
            "losses": [h["loss"] for h in result.history], "answer_tokens": result.answer_tokens}  # fmt: skip


def longest_dialogues(path: Path, n: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: len(r["dialogue"]), reverse=True)
    return [(r["dialogue"], r["summary"]) for r in rows[:n]]


def measure(train_file: Path, steps: int, threads: int, only: list[str] | None, console: Console) -> dict:
    pairs = longest_dialogues(train_file, BATCH * ACCUMULATION * steps)
    rows = []
    previous = HERE / "results" / "lora_memory.json"
    kept = json.loads(previous.read_text())["rows"] if only and previous.is_file() else []  # rows not re-measured
    for name, config in CONFIGS.items():
        if only and not any(o in name for o in only):
            continue
        console.print(f"[cyan]{name}[/]: {steps} steps of {BATCH}x{ACCUMULATION} at max_length {MAX_LENGTH} ...")
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            row = pool.apply(run_config, (config["answer_only"], config["checkpointing"], config["heap"], pairs, steps, threads))
        rows.append({"config": name, **config, **row, "wall_seconds": time.perf_counter() - started})
        console.print(f"  training peak {row['train_peak_bytes'] / GIB:.2f} GiB, "
                      f"{row['seconds_per_step']:.1f} s/step, losses {row['losses']}")
    if kept:  # the new rows replace the ones of the same configuration, in the table's order
        new = {r["config"]: r for r in rows}
        rows = [new.pop(k["config"], k) for k in kept] + list(new.values())
    return {"machine": machine(), "batch": BATCH, "gradient_accumulation": ACCUMULATION, "max_length": MAX_LENGTH,
            "steps": steps, "rows": rows, "source": f"the {len(pairs)} longest dialogues of {train_file}"}


def table(payload: dict) -> Table:
    first = payload["rows"][0]
    out = Table(title=f"LoRA training memory, SmolLM2-135M fp32, {payload['batch']}x{payload['gradient_accumulation']} "
                      f"at max_length {payload['max_length']}")  # fmt: skip
    for col in ("configuration", "peak RSS GiB", "vs before", "s/step", "vs before", "max |loss diff|"):
        out.add_column(col, justify="left" if col == "configuration" else "right")
    for r in payload["rows"]:
        peak = max(r["train_peak_bytes"], r["load_peak_bytes"])
        diff = max(abs(a - b) for a, b in zip(r["losses"], first["losses"]))
        out.add_row(r["config"], f"{peak / GIB:.2f}", f"x{peak / max(first['train_peak_bytes'], first['load_peak_bytes']):.2f}",
                    f"{r['seconds_per_step']:.1f}", f"x{r['seconds_per_step'] / first['seconds_per_step']:.2f}",
                    f"{diff:.4f}")  # fmt: skip
    return out


def section(payload: dict) -> str:
    first = payload["rows"][0]
    base_peak = max(first["train_peak_bytes"], first["load_peak_bytes"])
    lines = [
        "## LoRA training memory",
        "",
        f"`python bench/generate.py --memory` ({payload['machine']['date']}, {payload['machine']['cpu_count']} CPUs, "
        f"torch {payload['machine']['torch']}): SmolLM2-135M-Instruct fp32 + LoRA r16 on every projection, "
        f"{payload['batch']}x{payload['gradient_accumulation']} at max_length {payload['max_length']}, "
        f"{payload['steps']} optimizer steps on {payload['source'].split(' of ')[0]} of DialogSum train "
        "(every micro-batch full length). Each configuration runs in a fresh process on the same batches. "
        "Peak RSS is the process's high-water mark, loading included "
        f"(loading alone peaks at {first['load_peak_bytes'] / GIB:.2f} GiB while the GGUF is dequantized).",
        "",
        "| configuration | peak RSS | vs before | s/step | vs before | max loss difference vs before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        peak = max(r["train_peak_bytes"], r["load_peak_bytes"])
        diff = max(abs(a - b) for a, b in zip(r["losses"], first["losses"]))
        lines.append(f"| {r['config']} | {peak / GIB:.2f} GiB | x{peak / base_peak:.2f} | {r['seconds_per_step']:.1f} | "
                     f"x{r['seconds_per_step'] / first['seconds_per_step']:.2f} | {diff:.4f} |")
    lines += ["", "Losses per step: " + "; ".join(f"{r['config']}: {r['losses']}" for r in payload["rows"]) + "."]
    return "\n".join(lines)


def main(train_file: Path, steps: int, threads: int, only: list[str] | None, update: bool) -> None:
    console = Console()
    payload = measure(train_file, steps, threads, only, console)
    console.print(table(payload))
    path = write_json("lora_memory", payload)
    console.print(f"wrote {path}")
    if update:
        update_results("lora_memory", section(payload))
