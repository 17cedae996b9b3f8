"""Scores for generated text: ROUGE-1/2/L against one or more references, output
length, time to first token and decoding speed.

ROUGE is `rouge-score` F1 with the Porter stemmer, reported on a 0-1 scale. With
several references an answer scores the best of them (as the DialogSum and
SAMSum papers report), then answers are averaged.
"""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.table import Table

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
