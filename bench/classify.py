"""Benchmark classification specialists on real public data.

banking77 (train -> test, 77 intents) and sms_spam (seeded 80/20 stratified split),
MiniLM base, on whatever machine this runs on. Trains each specialist once, then serves
it on each encoder runtime (torch fp32, ONNX Runtime int8) and reports, per runtime:
accuracy, macro-F1, ECE, accuracy at 90% coverage, batched throughput and single-text
latency, with the ratio to torch from the same run; plus training wall time. Prints a
table, writes bench/results/classify.json and updates bench/RESULTS.md.

    python bench/classify.py                 # both datasets, both runtimes, default settings
    python bench/classify.py --only sms_spam --epochs 2 --runtime torch
    python bench/classify.py --only banking77 --specialist runs/b77 --threads 1   # serve a trained one again
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
from smallfleet.models.encoder_runtime import ENCODER_RUNTIME_ENV
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


def measure(name: str, train: Path, test: Path, settings: TrainSettings, work: Path, console: Console,
            runtimes: list[str], trained: Path | None = None) -> list[dict]:  # fmt: skip
    out = trained or work / name
    train_seconds = None
    if trained is None:
        task = TaskSpec(name=name, train=train, test=test, fields=FieldMap(), settings=settings)
        started = time.perf_counter()
        train_classifier(task, out, force=True, console=console)
        train_seconds = time.perf_counter() - started
    rows = []
    for runtime in runtimes:
        os.environ[ENCODER_RUNTIME_ENV] = runtime
        rows.append({**serve_measure(out, test), "dataset": name, "runtime": runtime, "train_seconds": train_seconds})
        console.print(f"{name} on {runtime}: accuracy {rows[-1]['accuracy']:.4f}, "
                      f"p50 {rows[-1]['latency_p50_ms']:.2f} ms, {rows[-1]['throughput_texts_per_s']:.0f} texts/s")
    base = rows[0]
    for r in rows:
        r["accuracy_minus_first"] = r["accuracy"] - base["accuracy"]
        r["p50_ratio_to_first"] = r["latency_p50_ms"] / base["latency_p50_ms"]
        r["throughput_ratio_to_first"] = r["throughput_texts_per_s"] / base["throughput_texts_per_s"]
    return rows


def serve_measure(out: Path, test: Path) -> dict:
    """Quality and speed of the specialist in `out`, loaded on the runtime $SMALLFLEET_ENCODER_RUNTIME names."""
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
        "dataset": out.name,
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
        "temperature": model.temperature,
        "threads": torch.get_num_threads(),
        "throughput_texts_per_s": throughput,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
    }


def _minutes(seconds: float | None) -> str:
    return "(trained before)" if seconds is None else f"{seconds / 60:.1f} min"


def render_markdown(results: list[dict], env: dict) -> str:
    lines = [
        f"Machine: {env['cpu_count']} CPU cores, torch {env['torch']} ({env['threads']} threads), "
        f"Python {env['python']}; base `minilm`; settings {env['settings']}. Run {env['date']}.",
        "",
        "| dataset | runtime | train | test | labels | accuracy | macro-F1 | ECE (without temperature) | acc@90% cov | "
        "epochs | train time | throughput (x first) | p50 / p95 latency (x first) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['runtime']} | {r['train_rows']} | {r['test_rows']} | {r['labels']} | {r['accuracy']:.4f} | "
            f"{r['macro_f1']:.4f} | {r['ece']:.4f} ({r['ece_before_temperature']:.4f}) | "
            f"{r['accuracy_at_90_coverage']:.4f} | {r['best_epoch']}/{r['epochs_run']} | {_minutes(r['train_seconds'])} | "
            f"{r['throughput_texts_per_s']:.0f} texts/s (x{r['throughput_ratio_to_first']:.2f}) | "
            f"{r['latency_p50_ms']:.2f} / {r['latency_p95_ms']:.2f} ms (x{r['p50_ratio_to_first']:.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["banking77", "sms_spam"], action="append", help="Run only these datasets.")
    parser.add_argument("--epochs", type=int, default=6, help="Maximum epochs (early stopping may end sooner).")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--runtime", action="append", choices=["torch", "onnx"],
                        help="Encoder runtimes to serve each specialist on; ratios are to the first [default: torch, onnx].")
    parser.add_argument("--threads", type=int, default=0, help="Torch and ONNX Runtime threads; 0 = one per core.")
    parser.add_argument("--specialist", type=Path, help="A specialist already trained on the one --only dataset: "
                        "serve and measure it without training.")
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    args = parser.parse_args()
    if args.specialist and len(args.only or []) != 1:
        parser.error("--specialist goes with exactly one --only dataset")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="smallfleet-bench-") as tmp:
        work = Path(tmp)
        data = datasets(work, args.seed)
        results = [row for name in (args.only or ["banking77", "sms_spam"])
                   for row in measure(name, *data[name], settings, work, console, args.runtime or ["torch", "onnx"],
                                      args.specialist)]
    env = machine(settings=f"epochs<={args.epochs}, seed {args.seed}")
    table = Table(title="classification specialists (MiniLM)")
    for col in ("dataset", "runtime", "accuracy", "macro-F1", "ECE", "acc@90%", "train", "texts/s", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["dataset"], r["runtime"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['ece']:.4f}",
            f"{r['accuracy_at_90_coverage']:.4f}", _minutes(r["train_seconds"]),
            f"{r['throughput_texts_per_s']:.0f}", f"{r['latency_p50_ms']:.2f}", f"{r['latency_p95_ms']:.2f}",
        )  # fmt: skip
    Console(width=150).print(table)
    write_json("classify", {"env": env, "results": results})
    if not args.no_update:
        update_results("classify", render_markdown(results, env))


if __name__ == "__main__":
    main()
