"""Scores for generated text: ROUGE-1/2/L against one or more references, output
length, time to first token and decoding speed.

ROUGE is `rouge-score` F1 with the Porter stemmer, reported on a 0-1 scale. With
several references an answer scores the best of them (as the DialogSum and
SAMSum papers report), then answers are averaged.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from smallfleet.data import Example
from smallfleet.models.runtime.base import Decoding
from smallfleet.tasks.generate.data import load_pairs, load_references

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scorer():
    """A stemmed ROUGE-1/2/L scorer (import kept lazy: `rouge-score` is in the `generate` extra)."""
    from rouge_score import rouge_scorer as rs

    return rs.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_per_answer(predictions: list[str], references: list[list[str]]) -> list[dict[str, float]]:
    """ROUGE F1 of each prediction against the best of its references."""
    scorer = rouge_scorer()
    out = []
    for pred, refs in zip(predictions, references):
        scores = [scorer.score(ref, pred) for ref in refs]
        out.append({t: max(s[t].fmeasure for s in scores) for t in ROUGE_TYPES})
    return out


def generation_metrics(
    predictions: list[str], references: list[list[str]], tokens: list[int], ttft_ms: list[float], seconds: float
) -> dict:
    """ROUGE means (0-1), length statistics, time to first token and throughput for one run.

    Args:
        predictions: generated texts.
        references: one or more reference texts per prediction.
        tokens: generated tokens per prediction.
        ttft_ms: time to first token of each call (ms).
        seconds: wall time of all generation.
    """
    per = rouge_per_answer(predictions, references)
    words = [len(p.split()) for p in predictions]
    ref_words = [statistics.mean(len(r.split()) for r in refs) for refs in references]
    return {
        "n": len(predictions),
        **{t: statistics.fmean(p[t] for p in per) for t in ROUGE_TYPES},
        "rouge_scale": "0-1",
        "words_mean": statistics.fmean(words),
        "words_median": statistics.median(words),
        "reference_words_mean": statistics.fmean(ref_words),
        "empty": sum(not p.strip() for p in predictions),
        "tokens_total": sum(tokens),
        "tokens_per_second": sum(tokens) / seconds if seconds > 0 else 0.0,
        "ttft_ms_median": statistics.median(ttft_ms) if ttft_ms else 0.0,
        "seconds": seconds,
    }


def print_generation_report(metrics: dict, console: Console, title: str, baseline: dict | None = None) -> None:
    """Print ROUGE, length and speed; with `baseline`, side by side (e.g. zero-shot base vs adapter)."""
    table = Table(title=title)
    table.add_column("metric")
    runs = [("base zero-shot", baseline), ("fine-tuned", metrics)] if baseline else [("value", metrics)]
    for label, _ in runs:
        table.add_column(label, justify="right")
    rows = [
        ("n", "{:d}", "n"),
        ("ROUGE-1 (0-100)", "{:.2f}", "rouge1"),
        ("ROUGE-2 (0-100)", "{:.2f}", "rouge2"),
        ("ROUGE-L (0-100)", "{:.2f}", "rougeL"),
        ("words/answer (mean)", "{:.1f}", "words_mean"),
        ("words/reference (mean)", "{:.1f}", "reference_words_mean"),
        ("empty answers", "{:d}", "empty"),
        ("tokens/s", "{:.1f}", "tokens_per_second"),
        ("time to first token, median ms", "{:.0f}", "ttft_ms_median"),
    ]
    for label, fmt, key in rows:
        scale = 100 if key.startswith("rouge") else 1
        table.add_row(label, *(fmt.format(m[key] * scale) for _, m in runs))
    console.print(table)
    if "calibration" in metrics:
        cal = metrics["calibration"]
        console.print(
            f"confidence: ECE {cal['ece']:.3f} vs 'good' (ROUGE-L >= {cal['quality_bar']}); "
            f"good share {cal['good_rate']:.2f}; good share on the most confident half {cal['good_at_50']:.2f}"
        )


@contextmanager
def answering(console: Console | None, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Progress of generating `total` answers: yields the callback that counts finished ones.

    A live bar on a terminal (cleared when done); in a log, a line at every tenth.
    """
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    done, started = 0, time.perf_counter()

    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            nonlocal done
            before, done = done, done + n
            progress.advance(bar, n)
            if not console.is_terminal and done * 10 // total > before * 10 // total:
                rate = (time.perf_counter() - started) / done
                console.print(f"{description}: {done}/{total} (ETA {rate * (total - done) / 60:.1f} min)")

        yield advance


def score_answers(specialist, examples: list[Example], refs: list[list[str]], decoding: Decoding,
                  with_adapter: bool = True, console: Console | None = None, keep_answers: bool = False) -> dict:
    """ROUGE and speed of the specialist's (or the bare base's) greedy answers to `examples`.

    Args:
        keep_answers: add `answers`: each answer's confidence, whether it is good (ROUGE-L >= quality bar) and
            its ROUGE-L (`score`).
    """
    what = "fine-tuned" if with_adapter else "base zero-shot"
    with answering(console, f"{specialist.name}: {what} answers", len(examples)) as done:
        started = time.perf_counter()
        gens = specialist.generate([e.text for e in examples], decoding, with_adapter, on_batch=done)
        seconds = time.perf_counter() - started
    metrics = generation_metrics([g.text for g in gens], refs, [g.tokens for g in gens], [g.ttft_ms for g in gens],
                                 seconds)
    metrics["samples"] = [{"input": e.text[:300], "output": g.text, "reference": r[0]}
                          for e, g, r in list(zip(examples, gens, refs))[:3]]
    if keep_answers:
        bar = specialist.manifest["generation"]["quality_bar"]
        rouge_l = [s["rougeL"] for s in rouge_per_answer([g.text for g in gens], refs)]
        metrics["answers"] = {"confidence": [specialist.as_answer(g).confidence for g in gens],
                              "correct": [r >= bar for r in rouge_l], "score": rouge_l}  # fmt: skip
    return metrics


def evaluate_file(specialist, data: Path, console: Console, fields: dict[str, str], limit: int | None = None,
                  compare_base: bool = False) -> dict:
    """Score `specialist` on `data` (ROUGE vs the output field or a `references` list) and print the report.

    Args:
        fields: `text` (input) / `output` (reference) field overrides.
        limit: score only the first N rows.
        compare_base: also score the bare base model zero-shot on the same rows, side by side.
    """
    trained = specialist.manifest.get("fields", {})
    input_field = fields.get("text") or trained.get("text", "text")
    output_field = fields.get("output") or trained.get("output", "output")
    examples = load_pairs(data, input_field, output_field)[: limit or None]
    refs = load_references(data, examples)
    greedy = Decoding(max_new_tokens=specialist.max_new_tokens)
    metrics = score_answers(specialist, examples, refs, greedy, console=console, keep_answers=True)
    metrics["data"] = str(data)
    if compare_base:
        metrics["base_zero_shot"] = score_answers(specialist, examples, refs, greedy, with_adapter=False, console=console)
    print_generation_report(metrics, console, f"{specialist.name} on {data}", baseline=metrics.get("base_zero_shot"))
    return metrics
