"""Benchmark extraction specialists on real public data.

snips slot filling (train -> test, BIO tags, span micro F1), sroie receipts (k-fold
cross-validation over the 626 receipts, per-field F1 of company/date/address/total)
and bitext_support entities (seeded 80/20 split; fields from entity_type/entity_value).
MiniLM base. Reports F1s, exact match, schema-valid rate, exact match at 90% coverage,
training wall time and records/s; prints a table, writes bench/results/extract.json and
updates bench/RESULTS.md.

    python bench/extract.py                          # all three
    python bench/extract.py --only sroie --folds 5 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common import HERE, machine, update_results, write_json

from smallfleet.settings import datasets_dir
from smallfleet.tasks import FieldMap, TaskSpec, load_specialist
from smallfleet.tasks.extract.data import load_bio_rows, load_value_rows
from smallfleet.tasks.extract.metrics import score
from smallfleet.tasks.extract.settings import ExtractSettings
from smallfleet.tasks.extract.train import train_extractor

SCHEMAS = HERE / "schemas"
NAMES = ["snips", "sroie", "bitext_support"]


def write_rows(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_one(name: str, task: TaskSpec, test: Path, work: Path, console: Console) -> dict:
    """Train `task`, then score and time the saved specialist on `test`."""
    out = work / name
    started = time.perf_counter()
    train_extractor(task, out, force=True, console=console)
    train_seconds = time.perf_counter() - started
    model = load_specialist(out)
    bio = model.manifest["format"] == "bio"
    if bio:
        data = load_bio_rows(test, "tokens", "tags")
    else:
        data = load_value_rows(test, model.schema, task.fields.text, task.fields.label)
    started = time.perf_counter()
    metrics, _ = score(model.extractor, data.examples, bio)
    records_per_s = len(data.examples) / (time.perf_counter() - started)
    fit = model.manifest["fit"]
    return {
        "metrics": metrics, "train_seconds": train_seconds, "records_per_s": records_per_s,
        "train_rows": model.manifest["data"]["train_rows"], "unaligned": model.manifest["data"]["unaligned"],
        "values": model.manifest["data"]["values"], "epochs": f"{fit['best_epoch']}/{fit['epochs_run']}",
        "test_unaligned": len(data.unaligned),
    }  # fmt: skip


def spread(rows: list, limit: int | None) -> list:
    """At most `limit` rows taken evenly over the list (files are often grouped by intent)."""
    if not limit or len(rows) <= limit:
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def bench_snips(settings: ExtractSettings, max_train: int | None, work: Path, console: Console) -> dict:
    root = datasets_dir() / "snips"
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines() if line]
    train = write_rows(spread(rows, max_train), work / "snips_train.jsonl")
    task = TaskSpec(
        name="snips", kind="extract", train=train, valid=root / "validation.jsonl",
        fields=FieldMap(tokens="tokens", tags="tags"), settings=settings,
    )  # fmt: skip
    r = run_one("snips", task, root / "test.jsonl", work, console)
    return {"dataset": "snips", "protocol": "train -> test", **r}


def bench_sroie(settings: ExtractSettings, folds: int, max_folds: int, work: Path, console: Console) -> dict:
    rows = [json.loads(line) for line in (datasets_dir() / "sroie" / "train.jsonl").read_text().splitlines() if line]
    order = list(range(len(rows)))
    random.Random(settings.seed).shuffle(order)
    runs = []
    for k in range(min(folds, max_folds)):
        held = set(order[k::folds])
        train = write_rows([rows[i] for i in order if i not in held], work / f"sroie_train_{k}.jsonl")
        test = write_rows([rows[i] for i in sorted(held)], work / f"sroie_test_{k}.jsonl")
        task = TaskSpec(
            name=f"sroie_fold{k}", kind="extract", train=train,
            fields=FieldMap(text="text", label="fields"), settings=settings.replace(schema=SCHEMAS / "sroie.json"),
        )  # fmt: skip
        runs.append(run_one(f"sroie_{k}", task, test, work, console))
        console.print(f"sroie fold {k + 1}/{folds}: per-field F1 {runs[-1]['metrics']['per_field']}")
        partial = {"dataset": "sroie", "protocol": f"{len(runs)} of {folds} folds", **merge_folds(runs)}
        env = machine(
            settings=f"epochs<={settings.epochs}, batch {settings.batch_size}, max_length {settings.max_length}"
        )
        write_json("extract_sroie_partial", {"env": env, "results": [partial]})
    return {"dataset": "sroie", "protocol": f"{len(runs)} of {folds} folds", **merge_folds(runs)}


def merge_folds(runs: list[dict]) -> dict:
    """Pool the folds' counts into one set of scores (micro over all held-out receipts)."""
    fields = list(runs[0]["metrics"]["fields"])
    per_field, tp_all, fp_all, fn_all = {}, 0, 0, 0
    for f in fields:
        tp, fp, fn = (sum(r["metrics"]["fields"][f][c] for r in runs) for c in ("tp", "fp", "fn"))
        p, rec = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        per_field[f] = 2 * p * rec / (p + rec) if p + rec else 0.0
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    p, rec = tp_all / (tp_all + fp_all), tp_all / (tp_all + fn_all)
    n = sum(r["metrics"]["n"] for r in runs)

    def pooled(key):
        return sum(r["metrics"][key] * r["metrics"]["n"] for r in runs) / n

    metrics = {
        "n": n, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0, "per_field": per_field,
        "exact_match": pooled("exact_match"), "schema_valid": pooled("schema_valid"), "record_ece": pooled("record_ece"),
        "coverage": {c: sum(r["metrics"]["coverage"][c] * r["metrics"]["n"] for r in runs) / n for c in runs[0]["metrics"]["coverage"]},
        "folds": [r["metrics"]["per_field"] for r in runs],
    }  # fmt: skip
    return {
        "metrics": metrics,
        "train_seconds": sum(r["train_seconds"] for r in runs),
        "records_per_s": n / sum(n_r / r["records_per_s"] for r, n_r in ((r, r["metrics"]["n"]) for r in runs)),
        "train_rows": sum(r["train_rows"] for r in runs) // len(runs),
        "unaligned": sum(r["unaligned"] for r in runs), "values": sum(r["values"] for r in runs),
        "epochs": ", ".join(r["epochs"] for r in runs), "test_unaligned": sum(r["test_unaligned"] for r in runs),
    }  # fmt: skip


def bench_bitext(settings: ExtractSettings, max_train: int | None, work: Path, console: Console) -> dict:
    """One field per utterance from entity_type/entity_value; utterances without an entity give {}."""
    rows = [
        json.loads(line) for line in (datasets_dir() / "bitext_support" / "all.jsonl").read_text().splitlines() if line
    ]
    records = [
        {"text": r["text"], "fields": {r["entity_type"]: r["entity_value"]} if r["entity_type"] else {}} for r in rows
    ]
    by_type: dict[str, list[dict]] = {}
    for r, rec in zip(rows, records):
        by_type.setdefault(r["entity_type"], []).append(rec)
    rng, train, test = random.Random(settings.seed), [], []
    for group in by_type.values():  # stratified by entity type
        rng.shuffle(group)
        cut = int(round(0.2 * len(group)))
        test += group[:cut]
        train += group[cut:]
    train = spread(train, max_train)
    task = TaskSpec(
        name="bitext_support", kind="extract", train=write_rows(train, work / "bitext_train.jsonl"),
        fields=FieldMap(text="text", label="fields"), settings=settings.replace(schema=SCHEMAS / "bitext_support.json"),
    )  # fmt: skip
    r = run_one("bitext_support", task, write_rows(test, work / "bitext_test.jsonl"), work, console)
    return {"dataset": "bitext_support", "protocol": "seeded 80/20 stratified split", **r}


def render_markdown(results: list[dict], env: dict) -> str:
    lines = [
        f"Machine: {env['cpu_count']} CPU cores shared with two other training jobs, torch {env['torch']} "
        f"({env['threads']} threads), Python {env['python']}; base `minilm`; settings {env['settings']}. Run {env['date']}.",
        "",
        *[f"- {r['dataset']}: {r['settings']}" for r in results if "settings" in r],
        "",
        "| dataset | protocol | train rows | test n | F1 | per-field F1 | exact match | schema-valid | EM@90% cov | record ECE "
        "| epochs (best/run) | train time | records/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        fields = (
            ", ".join(f"{k} {v:.3f}" for k, v in m["per_field"].items()) if len(m["per_field"]) <= 8 else "see JSON"
        )
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | {r['train_rows']} | {m['n']} | {m['f1']:.4f} | {fields} | "
            f"{m['exact_match']:.4f} | {m['schema_valid']:.4f} | {m['coverage']['0.9']:.4f} | {m['record_ece']:.4f} | "
            f"{r['epochs']} | {r['train_seconds'] / 60:.1f} min | {r['records_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=NAMES, action="append", help="Run only these datasets.")
    parser.add_argument("--epochs", type=int, default=4, help="Maximum epochs (early stopping may end sooner).")
    parser.add_argument("--folds", type=int, default=5, help="sroie cross-validation folds.")
    parser.add_argument("--max-folds", type=int, default=None, help="Run only the first N sroie folds (time budget).")
    parser.add_argument(
        "--max-length", type=int, default=128, help="Window length in tokens (sroie: overlapping windows)."
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train", type=int, help="snips/bitext: train on at most this many rows (time budget).")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    parser.add_argument("--out", default="extract", help="Name of the JSON under bench/results/.")
    parser.add_argument("--render", nargs="+", type=Path, help="Only merge these result JSONs into one and RESULTS.md.")
    args = parser.parse_args()
    if args.render:
        parts = [json.loads(p.read_text()) for p in args.render]
        results = [{"settings": part["env"]["settings"], **r} for part in parts for r in part["results"]]
        env = {**parts[0]["env"], "settings": "per row"}
        write_json(args.out, {"env": env, "results": results})
        update_results("extract", render_markdown(results, env))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    settings = ExtractSettings(epochs=args.epochs, seed=args.seed, max_length=args.max_length, batch_size=args.batch_size)
    results = []
    with tempfile.TemporaryDirectory(prefix="smallfleet-bench-") as tmp:
        work = Path(tmp)
        for name in args.only or NAMES:
            if name == "snips":
                results.append(bench_snips(settings, args.max_train, work, console))
            elif name == "sroie":
                results.append(bench_sroie(settings, args.folds, args.max_folds or args.folds, work, console))
            else:
                results.append(bench_bitext(settings, args.max_train, work, console))
    env = machine(
        settings=f"epochs<={args.epochs}, batch {args.batch_size}, max_length {args.max_length}, seed {args.seed}"
        + (f", train rows <= {args.max_train}" if args.max_train else "")
    )
    table = Table(title="extraction specialists (MiniLM)")
    for col in ("dataset", "protocol", "F1", "exact", "valid", "EM@90%", "train", "records/s"):
        table.add_column(col, justify="right")
    for r in results:
        m = r["metrics"]
        table.add_row(
            r["dataset"], r["protocol"], f"{m['f1']:.4f}", f"{m['exact_match']:.4f}", f"{m['schema_valid']:.4f}",
            f"{m['coverage']['0.9']:.4f}", f"{r['train_seconds'] / 60:.1f} min", f"{r['records_per_s']:.0f}",
        )  # fmt: skip
    Console(width=150).print(table)
    write_json(args.out, {"env": env, "results": results})
    if not args.no_update:
        update_results("extract", render_markdown(results, env))


if __name__ == "__main__":
    main()
