"""Benchmark classification specialists on real public data.

banking77 (train -> test, 77 intents) and sms_spam (seeded 80/20 stratified split),
MiniLM base, on whatever machine this runs on. Reports accuracy, macro-F1, ECE,
accuracy at 90% coverage, training wall time, batched throughput and single-text
latency; prints a table, writes bench/results/classify.json and updates bench/RESULTS.md.

    python bench/classify.py                 # both datasets, default settings
    python bench/classify.py --only sms_spam --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import machine, update_results, write_json
from rich.console import Console
from rich.table import Table

from smallfleet.calibration import expected_calibration_error
from smallfleet.settings import datasets_dir
from smallfleet.data import holdout_split, load_examples
from smallfleet.tasks import FieldMap, TaskSpec, load_specialist
from smallfleet.tasks.classify.metrics import classification_metrics
from smallfleet.tasks.classify.specialist import compute_logits
from smallfleet.tasks.classify.train import train_classifier
from smallfleet.training.settings import TrainSettings

LATENCY_SAMPLES = 300


def write_split(examples, path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in examples))
    return path


def datasets(work: Path, seed: int) -> dict[str, tuple[Path, Path]]:
    root = datasets_dir()
    if not root.is_dir():
        raise SystemExit(f"shared datasets not found at {root}; set SMALLFLEET_DATASETS")
    spam = load_examples(root / "sms_spam" / "all.jsonl")
    spam_train, spam_test, _ = holdout_split(spam, 0.2, seed, label=lambda ex: ex.label)
    return {
        "banking77": (root / "banking77" / "train.jsonl", root / "banking77" / "test.jsonl"),
        "sms_spam": (write_split(spam_train, work / "spam_train.jsonl"), write_split(spam_test, work / "spam_test.jsonl")),
    }


def measure(name: str, train: Path, test: Path, settings: TrainSettings, work: Path, console: Console) -> dict:
    out = work / name
    task = TaskSpec(name=name, train=train, test=test, fields=FieldMap(), settings=settings)
    started = time.perf_counter()
    train_classifier(task, out, force=True, console=console)
    train_seconds = time.perf_counter() - started

    model = load_specialist(out)
    examples = load_examples(test)
    texts = [e.text for e in examples]
    started = time.perf_counter()
    predictions = model.predict(texts)
    throughput = len(texts) / (time.perf_counter() - started)
    gold = [e.label for e in examples]
    metrics = classification_metrics(gold, predictions)
    raw = torch.softmax(compute_logits(model.model, model.tokenizer, texts, model.max_length, model.device), -1)
    raw_correct = [model.labels[i] == g for i, g in zip(raw.argmax(-1).tolist(), gold)]
    ece_raw = expected_calibration_error(raw.max(-1).values.numpy(), raw_correct)

    model.predict(texts[:20])  # warm-up
    latencies = []
    for text in texts[:LATENCY_SAMPLES]:
        t0 = time.perf_counter()
        model.predict([text])
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    manifest = model.manifest
    return {
        "dataset": name,
        "train_rows": manifest["data"]["train_rows"],
        "test_rows": len(texts),
        "labels": len(manifest["labels"]),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "ece_before_temperature": ece_raw,
        "accuracy_at_90_coverage": metrics["coverage"]["0.9"],
        "coverage": metrics["coverage"],
        "epochs_run": manifest["fit"]["epochs_run"],
        "best_epoch": manifest["fit"]["best_epoch"],
        "train_seconds": train_seconds,
        "throughput_texts_per_s": throughput,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
    }


def render_markdown(results: list[dict], env: dict) -> str:
    lines = [
        f"Machine: {env['cpu_count']} CPU cores, torch {env['torch']} ({env['threads']} threads), "
        f"Python {env['python']}; base `minilm`; settings {env['settings']}. Run {env['date']}.",
        "",
        "| dataset | train | test | labels | accuracy | macro-F1 | ECE (without temperature) | acc@90% cov | epochs | "
        "train time | throughput | p50 / p95 latency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['train_rows']} | {r['test_rows']} | {r['labels']} | {r['accuracy']:.4f} | "
            f"{r['macro_f1']:.4f} | {r['ece']:.4f} ({r['ece_before_temperature']:.4f}) | "
            f"{r['accuracy_at_90_coverage']:.4f} | {r['best_epoch']}/{r['epochs_run']} | {r['train_seconds'] / 60:.1f} min | "
            f"{r['throughput_texts_per_s']:.0f} texts/s | {r['latency_p50_ms']:.1f} / {r['latency_p95_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["banking77", "sms_spam"], action="append", help="Run only these datasets.")
    parser.add_argument("--epochs", type=int, default=6, help="Maximum epochs (early stopping may end sooner).")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="smallfleet-bench-") as tmp:
        work = Path(tmp)
        data = datasets(work, args.seed)
        results = [
            measure(name, *data[name], settings, work, console) for name in (args.only or ["banking77", "sms_spam"])
        ]
    env = machine(settings=f"epochs<={args.epochs}, seed {args.seed}")
    table = Table(title="classification specialists (MiniLM)")
    for col in ("dataset", "accuracy", "macro-F1", "ECE", "acc@90%", "train", "texts/s", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["dataset"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['ece']:.4f}",
            f"{r['accuracy_at_90_coverage']:.4f}", f"{r['train_seconds'] / 60:.1f} min",
            f"{r['throughput_texts_per_s']:.0f}", f"{r['latency_p50_ms']:.1f}", f"{r['latency_p95_ms']:.1f}",
        )  # fmt: skip
    Console(width=150).print(table)
    write_json("classify", {"env": env, "results": results})
    if not args.no_update:
        update_results("classify", render_markdown(results, env))


if __name__ == "__main__":
    main()
