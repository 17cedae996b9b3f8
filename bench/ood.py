"""Benchmark out-of-distribution detection: does a specialist escalate what it has never seen?

- banking77 specialist (77 intents) receiving the banking77 test texts (in scope) plus
  out-of-scope texts: snips test utterances (music, weather, restaurants...), SMS messages,
  and bitext support tickets of the categories unlike banking (orders, delivery, shipping
  address, newsletter, feedback, contact);
- sms_spam specialist (ham/spam, seeded 80/20 stratified split) receiving banking77 test texts.

Each novelty method (Mahalanobis to the class means with a shared Ledoit-Wolf covariance; cosine
distance to the k-th nearest training embedding) is fitted on the specialist's own training
rows from the pooled embedding of its forward pass, and its threshold set so that at most 5% of
validation escalates for novelty (`novelty_share`). Reported: AUROC and FPR@95%TPR of novelty
and of 1 - confidence, and the escalation rate of each group for softmax only (the guaranteed
confidence threshold at target 0.95), novelty only, and both; the accuracy of the accepted
in-scope answers; and the latency novelty adds to one request.

Specialists are trained once into --work and reused on later runs (delete the folder to retrain).

- generate (`--only dialogsum`): a generate task's novelty is measured on the bare base model's
  embedding of the input (mean-pooled last hidden state, `embed_inputs`), which the adapter does
  not change, so no adapter is trained here: one Gaussian (Ledoit-Wolf) is fitted on a seeded
  sample of DialogSum training dialogues, the threshold set on the DialogSum dev dialogues (at
  most 5% escalate), and DialogSum test dialogues (in scope) are compared with banking77 test
  texts, SMS messages and non-banking bitext tickets (out of scope); the fit uses the transformers
  runtime (as `train` does) and is scored on each runtime that can serve (llama.cpp too, when
  installed). Written to its own RESULTS.md section (`ood-generate`) and results/ood_generate.json.

    OMP_NUM_THREADS=1 python bench/ood.py --epochs 3
    OMP_NUM_THREADS=1 python bench/ood.py --only dialogsum
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, update_results, write_json
from rich.console import Console
from rich.table import Table

from smallfleet.data import holdout_split, load_examples
from smallfleet.guarantee import guaranteed_threshold
from smallfleet.novelty import METHODS, NoveltyModel, auroc, fpr_at_tpr
from smallfleet.settings import datasets_dir
from smallfleet.tasks import TaskSpec, load_specialist
from smallfleet.tasks.classify.specialist import compute_outputs
from smallfleet.tasks.classify.train import load_task_data, train_classifier
from smallfleet.training.artifacts import is_specialist
from smallfleet.training.settings import TrainSettings

BITEXT_UNLIKE_BANKING = {"ORDER", "DELIVERY", "SHIPPING_ADDRESS", "NEWSLETTER", "FEEDBACK", "CONTACT"}
LATENCY_SAMPLES = 100


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample(texts: list[str], n: int, seed: int) -> list[str]:
    texts = sorted(set(texts))
    random.Random(seed).shuffle(texts)
    return texts[:n]


def write_rows(rows: list[tuple[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), encoding="utf-8")
    return path


def specialist_for(name: str, spec: TaskSpec, work: Path, console: Console):
    """Train the task into work/<name> unless a specialist is already there; load it."""
    out = work / name
    if not is_specialist(out):
        started = time.perf_counter()
        train_classifier(spec, out, console=console)
        console.print(f"{name}: trained in {(time.perf_counter() - started) / 60:.1f} min")
    return load_specialist(out)


def embed(specialist, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probabilities, pooled embeddings) of `texts`."""
    logits, pooled = compute_outputs(specialist.model, specialist.tokenizer, texts, specialist.max_length,
                                     specialist.device)  # fmt: skip
    return torch.softmax(logits / specialist.temperature, -1).numpy(), pooled.numpy()


def rate(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else float("nan")


def measure(name: str, specialist, spec: TaskSpec, inside: tuple[list[str], list[str]], outside: dict[str, list[str]],
            tune: list[str] | None, share: float, console: Console, keep: dict) -> dict:  # fmt: skip
    """Every method's scores on one specialist's in-scope test texts (`inside`: texts, gold labels) and
    out-of-scope sets; the training embeddings and labels are left in `keep` (for the latency run)."""
    data = load_task_data(spec)  # the same seeded train/validation split the specialist was trained on
    index = {lab: i for i, lab in enumerate(specialist.labels)}
    _, train_emb = embed(specialist, [ex.text for ex in data.train])
    keep["train"] = (train_emb, np.array([index[ex.label] for ex in data.train]))
    _, valid_emb = embed(specialist, [ex.text for ex in data.valid])
    texts, gold = inside
    probs_in, emb_in = embed(specialist, texts)
    ood_texts = [t for group in outside.values() for t in group]
    source = np.array([s for s, group in outside.items() for _ in group])
    probs_ood, emb_ood = embed(specialist, ood_texts)
    conf_in, conf_ood = probs_in.max(1), probs_ood.max(1)
    correct = np.array([specialist.labels[i] == g for i, g in zip(probs_in.argmax(1), gold)])
    cascade = specialist.manifest.get("cascade") or {"target": 0.95, "delta": 0.05}
    guarantee = guaranteed_threshold(specialist.confidence_curve(), cascade["target"], cascade["delta"])
    low_in, low_ood = conf_in < guarantee.threshold, conf_ood < guarantee.threshold
    base = {
        "specialist": name, "n_in": len(texts), "n_ood": len(ood_texts),
        "epochs_run": specialist.manifest["fit"]["epochs_run"],
        "ood_sources": {s: len(g) for s, g in outside.items()},
        "accuracy_all": float(correct.mean()),
        "confidence_threshold": guarantee.threshold,
        "auroc_confidence": auroc(1 - conf_in, 1 - conf_ood),
        "fpr95_confidence": fpr_at_tpr(1 - conf_in, 1 - conf_ood),
        "softmax_only": {"escalated_in": rate(low_in), "escalated_ood": rate(low_ood),
                         "accepted_accuracy": float(correct[~low_in].mean()) if (~low_in).any() else None},
    }  # fmt: skip
    labels = keep["train"][1]
    methods = {}
    for method in METHODS:
        started = time.perf_counter()
        model = NoveltyModel.fit(method, train_emb, labels)
        fit_seconds = time.perf_counter() - started
        runs = {"validation": None}
        if tune:
            runs["tuned"] = tune
        for how, tuning in runs.items():
            tuned = model.score(embed(specialist, tuning)[1]) if tuning else None
            info = model.set_threshold(model.score(valid_emb), share, tuned)
            nov_in, nov_ood = model.score(emb_in), model.score(emb_ood)
            far_in, far_ood = nov_in > model.threshold, nov_ood > model.threshold
            both_in = low_in | far_in
            methods[f"{method}/{how}"] = {
                "method": method, "threshold_from": info["source"], "threshold": model.threshold,
                "valid_escalated": info["valid_escalated"], "fit_seconds": fit_seconds,
                "auroc": auroc(nov_in, nov_ood), "fpr95": fpr_at_tpr(nov_in, nov_ood),
                "novelty_only": {"escalated_in": rate(far_in), "escalated_ood": rate(far_ood)},
                "both": {"escalated_in": rate(both_in), "escalated_ood": rate(low_ood | far_ood),
                         "accepted_accuracy": float(correct[~both_in].mean()) if (~both_in).any() else None},
                "by_source": {s: {"novelty": rate(far_ood[source == s]), "both": rate((low_ood | far_ood)[source == s]),
                                  "softmax": rate(low_ood[source == s])} for s in outside},
            }  # fmt: skip
    console.print(f"{name}: measured {len(methods)} novelty variants")
    return {**base, "methods": methods}


def latency(specialist, texts: list[str], method: str, train: tuple[np.ndarray, np.ndarray]) -> dict:
    """Single-text predict latency without and with the novelty test (the real serving path)."""
    train_emb, labels = train
    model = NoveltyModel.fit(method, train_emb, labels)
    model.threshold = 0.0
    out = {}
    for label, novelty in (("without", None), ("with", model)):
        specialist.novelty = novelty
        specialist.predict(texts[:20])  # warm-up
        samples = []
        for text in texts[:LATENCY_SAMPLES]:
            t0 = time.perf_counter()
            specialist.predict([text])
            samples.append((time.perf_counter() - t0) * 1000)
        out[f"p50_ms_{label}"] = statistics.median(samples)
    emb = train_emb[:1]
    t0 = time.perf_counter()
    for _ in range(1000):
        model.score(emb)
    out["score_only_ms"] = time.perf_counter() - t0  # seconds for 1000 calls = ms per call
    specialist.novelty = None
    return out


def render_markdown(results: list[dict], lat: dict, env: dict) -> str:
    lines = [
        f"Machine: {env['cpu_count']} CPU cores, torch {env['torch']} ({env['threads']} threads), Python "
        f"{env['python']}; {env['settings']}. Run {env['date']}. Novelty threshold: at most 5% of validation escalates "
        "for novelty (`novelty_share` 0.05) unless marked *tuned*; confidence threshold: the guaranteed one at target "
        "0.95, delta 0.05. Escalation = share of the group sent to the next tier; *acc. accepted* = accuracy of the "
        "in-scope answers the specialist keeps.",
        "",
        "| specialist | out-of-scope (n) | test | AUROC | FPR@95 | escalated in-scope | escalated OOD | acc. accepted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ood = ", ".join(f"{s} {n}" for s, n in r["ood_sources"].items())
        s = r["softmax_only"]
        lines.append(f"| {r['specialist']} ({r['epochs_run']} epochs; in-scope {r['n_in']}) | {ood} | softmax only (1 - confidence) | "
                     f"{r['auroc_confidence']:.3f} | {r['fpr95_confidence']:.3f} | {s['escalated_in']:.1%} | "
                     f"{s['escalated_ood']:.1%} | {_acc(s['accepted_accuracy'])} |")  # fmt: skip
        for key, m in r["methods"].items():
            how = " (tuned)" if key.endswith("/tuned") else ""
            n, b = m["novelty_only"], m["both"]
            lines.append(f"| | | {m['method']}{how}: novelty only | {m['auroc']:.3f} | {m['fpr95']:.3f} | "
                         f"{n['escalated_in']:.1%} | {n['escalated_ood']:.1%} | |")  # fmt: skip
            lines.append(f"| | | {m['method']}{how}: both tests | | | {b['escalated_in']:.1%} | {b['escalated_ood']:.1%} | "
                         f"{_acc(b['accepted_accuracy'])} |")  # fmt: skip
    lines += ["", "Out-of-scope escalated by source (both tests; softmax only in brackets):", ""]
    for r in results:
        for key, m in r["methods"].items():
            parts = ", ".join(f"{s} {v['both']:.0%} ({v['softmax']:.0%})" for s, v in m["by_source"].items())
            lines.append(f"- {r['specialist']}, {key}: {parts}")
    lines += ["", f"Latency of one request ({lat['specialist']}, {LATENCY_SAMPLES} texts, p50): {lat['p50_ms_without']:.2f} ms "
              f"without novelty, {lat['p50_ms_with']:.2f} ms with ({lat['method']}); the score alone "
              f"{lat['score_only_ms']:.3f} ms."]  # fmt: skip
    return "\n".join(lines)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def measure_generate(root: Path, train_rows: int, rows: int, per_source: int, share: float, seed: int,
                     console: Console) -> dict:  # fmt: skip
    """Novelty of a DialogSum generate task from the bare base model's input embedding (no adapter: it is not used)."""
    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.models.runtime import choose_runtime, llama_cpp, shared_base
    from smallfleet.models.runtime.hf import embed_inputs, load_causal_lm

    max_tokens = 512  # generate's default max_length: the input budget of the prompt
    dialogs = lambda split: [r["dialogue"] for r in read_jsonl(root / "dialogsum" / f"{split}.jsonl")]  # noqa: E731
    train, valid, test = (sample(dialogs("train"), train_rows, seed), sample(dialogs("dev"), rows, seed),
                          sample(dialogs("test"), rows, seed))  # fmt: skip
    outside = {
        "banking77": sample([r["text"] for r in read_jsonl(root / "banking77" / "test.jsonl")], per_source, seed),
        "sms": sample([r["text"] for r in read_jsonl(root / "sms_spam" / "all.jsonl")], per_source, seed),
        "bitext (non-banking)": sample([r["text"] for r in read_jsonl(root / "bitext_support" / "all.jsonl")
                                        if r["category"] in BITEXT_UNLIKE_BANKING], per_source, seed),
    }  # fmt: skip
    ood_texts = [t for g in outside.values() for t in g]
    source = np.array([s for s, g in outside.items() for _ in g])
    resolved = resolve_base_model("smollm2-135m")
    model, tokenizer = load_causal_lm(resolved)
    started = time.perf_counter()
    fit_emb = {"train": embed_inputs(model, tokenizer, train, max_tokens),
               "valid": embed_inputs(model, tokenizer, valid, max_tokens)}  # fmt: skip
    console.print(f"dialogsum: embedded {len(train) + len(valid)} dialogues in {time.perf_counter() - started:.0f} s")
    runtimes = ["transformers"] + (["llama.cpp"] if resolved.gguf_file
                                   and llama_cpp.supports(Path(resolved.path) / resolved.gguf_file) else [])  # fmt: skip
    out = {"base": resolved.ref, "train_rows": len(train), "valid_rows": len(valid), "n_in": len(test),
           "ood_sources": {s: len(g) for s, g in outside.items()}, "served_runtime": choose_runtime(resolved),
           "methods": {}}  # fmt: skip
    for runtime in runtimes:
        if runtime == "transformers":
            emb_in, emb_ood = embed_inputs(model, tokenizer, test, max_tokens), embed_inputs(model, tokenizer, ood_texts, max_tokens)
            one = lambda t: embed_inputs(model, tokenizer, t, max_tokens)  # noqa: E731
        else:
            base = shared_base(resolved, runtime)
            emb_in, emb_ood = base.embed(test, max_tokens), base.embed(ood_texts, max_tokens)
            one = lambda t: base.embed(t, max_tokens)  # noqa: E731
        for method in METHODS:
            nm = NoveltyModel.fit(method, fit_emb["train"])
            info = nm.set_threshold(nm.score(fit_emb["valid"]), share)
            nov_in, nov_ood = nm.score(emb_in), nm.score(emb_ood)
            far_in, far_ood = nov_in > nm.threshold, nov_ood > nm.threshold
            samples = []
            for text in test[:20]:
                t0 = time.perf_counter()
                nm.score(one([text]))
                samples.append((time.perf_counter() - t0) * 1000)
            out["methods"][f"{method}/{runtime}"] = {
                "method": method, "runtime": runtime, "threshold": nm.threshold, "valid_escalated": info["valid_escalated"],
                "auroc": auroc(nov_in, nov_ood), "fpr95": fpr_at_tpr(nov_in, nov_ood),
                "escalated_in": rate(far_in), "escalated_ood": rate(far_ood),
                "by_source": {s: rate(far_ood[source == s]) for s in outside},
                "p50_ms_per_input": statistics.median(samples),
            }  # fmt: skip
            console.print(f"dialogsum {method}/{runtime}: AUROC {auroc(nov_in, nov_ood):.3f}")
    return out


def render_generate(r: dict, env: dict) -> str:
    lines = [
        f"Machine: {env['cpu_count']} CPU cores, torch {env['torch']} ({env['threads']} threads), Python {env['python']}; "
        f"{env['settings']}. Run {env['date']}. No adapter trained (the novelty of a generate task is measured on the "
        f"bare base model, which the adapter does not change). Fitted on {r['train_rows']} DialogSum training dialogues "
        f"(transformers runtime, as `train` does); threshold: at most 5% of the {r['valid_rows']} DialogSum dev dialogues "
        f"escalate. In scope: {r['n_in']} DialogSum test dialogues; out of scope: "
        + ", ".join(f"{s} {n}" for s, n in r["ood_sources"].items()) + f". `serve` picks runtime {r['served_runtime']} here.",
        "",
        "| method / runtime scored on | AUROC | FPR@95 | escalated in-scope | escalated OOD | by source | p50 ms / input |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for key, m in r["methods"].items():
        parts = ", ".join(f"{s} {v:.0%}" for s, v in m["by_source"].items())
        lines.append(f"| {key} | {m['auroc']:.3f} | {m['fpr95']:.3f} | {m['escalated_in']:.1%} | {m['escalated_ood']:.1%} "
                     f"| {parts} | {m['p50_ms_per_input']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/smallfleet-ood-bench"),
                        help="Where the specialists are trained (and reused from on later runs).")
    parser.add_argument("--epochs", type=int, default=3, help="Maximum epochs when a specialist is trained (each "
                        "specialist's epochs are reported).")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--per-source", type=int, default=700, help="Out-of-scope texts drawn from each source.")
    parser.add_argument("--share", type=float, default=0.05, help="novelty_share: most of validation escalated for novelty.")
    parser.add_argument("--only", choices=["banking77", "sms_spam", "dialogsum"], action="append",
                        help="Run only these cases (dialogsum: the generate task; default: banking77 and sms_spam).")
    parser.add_argument("--gen-train", type=int, default=1000, help="DialogSum training dialogues the generate "
                        "case's novelty statistics are fitted on.")
    parser.add_argument("--gen-rows", type=int, default=500, help="DialogSum dev dialogues (threshold) and test "
                        "dialogues (in scope) of the generate case.")
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console(stderr=True)
    root = datasets_dir()
    if not root.is_dir():
        raise SystemExit(f"shared datasets not found at {root}; set SMALLFLEET_DATASETS")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    settings = TrainSettings(epochs=args.epochs, seed=args.seed, novelty_share=args.share)
    n = args.per_source

    banking_test = load_examples(root / "banking77" / "test.jsonl")
    snips = [r["text"] for r in read_jsonl(root / "snips" / "test.jsonl")]
    snips_tune = [r["text"] for r in read_jsonl(root / "snips" / "validation.jsonl")]
    spam_rows = load_examples(root / "sms_spam" / "all.jsonl")
    bitext = [r["text"] for r in read_jsonl(root / "bitext_support" / "all.jsonl") if r["category"] in BITEXT_UNLIKE_BANKING]

    only = args.only or ["banking77", "sms_spam"]
    if "dialogsum" in only:
        gen = measure_generate(root, args.gen_train, args.gen_rows, n, args.share, args.seed, console)
        env = machine(settings=f"base `smollm2-135m`, seed {args.seed}, {n} out-of-scope texts per source")
        body = render_generate(gen, env)
        Console(width=150).print(body)
        write_json("ood_generate", {"env": env, **gen})
        if not args.no_update:
            update_results("ood-generate", body)
        only = [o for o in only if o != "dialogsum"]
        if not only:
            return
    results, keep, timed = [], {}, None
    if "banking77" in only:
        banking_spec = TaskSpec(name="banking77", train=root / "banking77" / "train.jsonl", settings=settings)
        banking = specialist_for("banking77", banking_spec, work, console)
        outside = {"snips": sample(snips, n, args.seed), "sms": sample([e.text for e in spam_rows], n, args.seed),
                   "bitext (non-banking)": sample(bitext, n, args.seed)}  # fmt: skip
        results.append(measure("banking77", banking, banking_spec, ([e.text for e in banking_test],
                               [e.label for e in banking_test]), outside, sample(snips_tune, n, args.seed), args.share,
                               console, keep))  # fmt: skip
        timed = (banking, [e.text for e in banking_test], dict(keep))
    if "sms_spam" in only:
        spam_train, spam_test, _ = holdout_split(spam_rows, 0.2, args.seed, label=lambda ex: ex.label)
        spam_file = write_rows([(e.text, e.label) for e in spam_train], work / "sms_spam_train.jsonl")
        spam_spec = TaskSpec(name="sms_spam", train=spam_file, settings=settings)
        spam = specialist_for("sms_spam", spam_spec, work, console)
        results.append(measure("sms_spam", spam, spam_spec, ([e.text for e in spam_test], [e.label for e in spam_test]),
                               {"banking77": sample([e.text for e in banking_test], n, args.seed)}, None, args.share,
                               console, keep))  # fmt: skip
        timed = timed or (spam, [e.text for e in spam_test], dict(keep))

    best = max(METHODS, key=lambda m: results[0]["methods"][f"{m}/validation"]["auroc"])
    lat = {"method": best, "specialist": timed[0].name, **latency(timed[0], timed[1], best, timed[2]["train"])}
    env = machine(settings=f"base `minilm`, epochs<={args.epochs}, seed {args.seed}, {n} out-of-scope texts per source")
    table = Table(title="out-of-distribution detection")
    for col in ("specialist", "test", "AUROC", "FPR@95", "esc. in", "esc. OOD", "acc. accepted"):
        table.add_column(col, justify="right")
    for r in results:
        s = r["softmax_only"]
        table.add_row(r["specialist"], "softmax only", f"{r['auroc_confidence']:.3f}", f"{r['fpr95_confidence']:.3f}",
                      f"{s['escalated_in']:.1%}", f"{s['escalated_ood']:.1%}", _acc(s["accepted_accuracy"]))  # fmt: skip
        for key, m in r["methods"].items():
            n_, b = m["novelty_only"], m["both"]
            table.add_row("", f"{key} novelty", f"{m['auroc']:.3f}", f"{m['fpr95']:.3f}", f"{n_['escalated_in']:.1%}",
                          f"{n_['escalated_ood']:.1%}", "")  # fmt: skip
            table.add_row("", f"{key} both", "", "", f"{b['escalated_in']:.1%}", f"{b['escalated_ood']:.1%}",
                          _acc(b["accepted_accuracy"]))  # fmt: skip
    Console(width=150).print(table)
    console.print(f"latency p50: {lat['p50_ms_without']:.2f} ms without novelty, {lat['p50_ms_with']:.2f} ms with ({best})")
    write_json("ood", {"env": env, "results": results, "latency": lat})
    if not args.no_update:
        update_results("ood", render_markdown(results, lat, env))


if __name__ == "__main__":
    main()
