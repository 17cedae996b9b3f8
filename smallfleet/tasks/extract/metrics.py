"""Scores of an extraction specialist: per-field precision/recall/F1, whole-record exact match,
schema-valid rate, risk-coverage over record confidence, and (for BIO data) span-level micro F1
as conlleval/seqeval compute it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from smallfleet.calibration import ConfidenceCurve, expected_calibration_error
from smallfleet.tasks.extract.align import spans_to_bio
from smallfleet.tasks.extract.data import ExtractExample
from smallfleet.tasks.extract.decode import Extractor
from smallfleet.tasks.extract.schema import Schema


def same_value(a, b) -> bool:
    """Equal after normalization: numbers within 1e-6, text ignoring case and spacing."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-6
    return " ".join(str(a).split()).casefold() == " ".join(str(b).split()).casefold()


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}


def field_scores(gold: list[dict], predicted: list[dict], fields: list[str]) -> tuple[dict, dict, list[bool]]:
    """(per-field P/R/F1, micro P/R/F1, exact match of each record).

    A predicted value counts as a true positive when it equals the gold value; a wrong
    value is both a false positive and a false negative.
    """
    counts = {f: Counter() for f in fields}
    exact = []
    for g, p in zip(gold, predicted):
        ok = True
        for f in fields:
            has_g, has_p = f in g, f in p
            if has_g and has_p and same_value(g[f], p[f]):
                counts[f]["tp"] += 1
                continue
            if has_p:
                counts[f]["fp"] += 1
            if has_g:
                counts[f]["fn"] += 1
            ok = ok and not (has_g or has_p)
        exact.append(ok)
    per_field = {f: _prf(c["tp"], c["fp"], c["fn"]) for f, c in counts.items()}
    total = sum(counts.values(), Counter())
    return per_field, _prf(total["tp"], total["fp"], total["fn"]), exact


def record_f1(gold: list[dict], predicted: list[dict], fields: list[str]) -> list[float]:
    """Each record's field F1 (counted as in `field_scores`); 1.0 for a record with no value in gold or prediction."""
    out = []
    for g, p in zip(gold, predicted):
        tp = sum(f in g and f in p and same_value(g[f], p[f]) for f in fields)
        fp, fn = sum(f in p for f in fields) - tp, sum(f in g for f in fields) - tp
        out.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return out


def bio_entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of each entity; an I- not continuing its type starts one (conlleval)."""
    out, current = set(), None
    for i, tag in enumerate(list(tags) + ["O"]):
        kind, _, name = tag.partition("-")
        if kind == "I" and current and current[0] == name:
            current[2] = i
            continue
        if current:
            out.add(tuple(current))
            current = None
        if kind in ("B", "I"):
            current = [name, i, i]
    return out


def span_scores(gold_tags: list[list[str]], predicted_tags: list[list[str]]) -> tuple[dict, dict]:
    """(per-type P/R/F1, micro P/R/F1) over exact entity spans."""
    counts: dict[str, Counter] = {}
    for g, p in zip(gold_tags, predicted_tags):
        ge, pe = bio_entities(g), bio_entities(p)
        for e in ge | pe:
            c = counts.setdefault(e[0], Counter())
            c["tp" if e in ge and e in pe else "fn" if e in ge else "fp"] += 1
    per_type = {t: _prf(c["tp"], c["fp"], c["fn"]) for t, c in sorted(counts.items())}
    total = sum(counts.values(), Counter())
    return per_type, _prf(total["tp"], total["fp"], total["fn"])


def extraction_metrics(
    gold: list[dict],
    predicted: list[dict],
    confidence: list[float],
    valid: list[bool],
    fields: list[str],
    gold_tags: list[list[str]] | None = None,
    predicted_tags: list[list[str]] | None = None,
) -> dict:
    """All extraction scores of one split.

    Args:
        gold / predicted: normalized records, one per row.
        confidence: calibrated record confidence of each prediction.
        valid: whether each predicted record passed schema validation.
        fields: the schema's fields.
        gold_tags / predicted_tags: word-level BIO tags, for BIO data only.

    Returns:
        `f1` is the span micro F1 for BIO data, else the field micro F1; `per_field`
        maps each field to its F1 (span-level for BIO data).
    """
    per_field, micro, exact = field_scores(gold, predicted, fields)
    curve = ConfidenceCurve.from_predictions(np.array(confidence), np.array(exact))
    metrics = {
        "n": len(gold),
        "field_precision": micro["precision"],
        "field_recall": micro["recall"],
        "field_f1": micro["f1"],
        "exact_match": float(np.mean(exact)) if exact else 0.0,
        "schema_valid": float(np.mean(valid)) if valid else 0.0,
        "record_ece": expected_calibration_error(np.array(confidence), np.array(exact)),
        "coverage": curve.coverage_table(),
        "fields": per_field,
    }
    if gold_tags is not None and predicted_tags is not None:
        per_type, span_micro = span_scores(gold_tags, predicted_tags)
        metrics.update(
            span_precision=span_micro["precision"], span_recall=span_micro["recall"], span_f1=span_micro["f1"]
        )
        metrics["spans"] = per_type
        metrics["f1"] = span_micro["f1"]
        metrics["per_field"] = {t: s["f1"] for t, s in per_type.items()}
    else:
        metrics["f1"] = micro["f1"]
        metrics["per_field"] = {f: s["f1"] for f, s in per_field.items()}
    return metrics


def print_extraction_report(metrics: dict, console: Console, title: str, max_rows: int = 40) -> None:
    """Headline numbers, risk-coverage and the per-field table."""
    span = f"span micro F1 {metrics['span_f1']:.4f}  " if "span_f1" in metrics else ""
    console.print(
        f"[bold]{title}[/]\n  n={metrics['n']}  {span}field micro F1 {metrics['field_f1']:.4f}  "
        f"exact match {metrics['exact_match']:.4f}  schema-valid {metrics['schema_valid']:.4f}  "
        f"record ECE {metrics['record_ece']:.4f}"
    )
    cov = "  ".join(f"{float(k):.0%}: {v:.4f}" for k, v in metrics["coverage"].items())
    console.print(f"  exact match on the most confident records: {cov}")
    rows = metrics.get("spans") or metrics["fields"]
    table = Table(title="per field" + (" (span-level)" if "spans" in metrics else ""))
    for col in ("field", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "field" else "right")
    for name, s in sorted(rows.items(), key=lambda kv: -kv[1]["support"])[:max_rows]:
        table.add_row(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
    console.print(table)


def gold_record(schema: Schema, example: ExtractExample) -> dict:
    """The example's gold values normalized to the schema (a value that fails its type stays as written)."""
    return schema.normalize_record(example.values)[0]


def score(extractor: Extractor, examples: list[ExtractExample], bio: bool) -> tuple[dict, list]:
    """Extraction metrics of `extractor` on `examples`, and its extractions."""
    out = extractor.extract([e.text for e in examples])
    gold = [gold_record(extractor.schema, e) for e in examples]
    gold_tags = pred_tags = None
    if bio:
        gold_tags = [e.tags for e in examples]
        pred_tags = [spans_to_bio([s.span for s in x.spans], e.word_offsets) for x, e in zip(out, examples)]
    metrics = extraction_metrics(
        gold,
        [x.record for x in out],
        [x.record_confidence for x in out],
        [x.valid for x in out],
        extractor.schema.names,
        gold_tags,
        pred_tags,
    )
    return metrics, out


def evaluate_file(specialist, data: Path, console: Console, fields: dict[str, str], limit: int | None = None) -> dict:
    """Score an extract specialist on the labelled file `data` and print the report.

    Args:
        fields: `text` / `label` (gold values object) / `tokens` / `tags` field names overriding
            those the specialist was trained with.
        limit: score only the first N rows.
    """
    from smallfleet.tasks.extract.data import load_bio_rows, load_value_rows, values_field

    trained = specialist.manifest.get("fields", {})
    bio = specialist.manifest.get("format") == "bio"
    if bio:
        loaded = load_bio_rows(
            data,
            fields.get("tokens") or trained.get("tokens") or "tokens",
            fields.get("tags") or trained.get("tags") or "tags",
        )
    else:
        label = fields.get("label") or trained.get("label", "label")
        loaded = load_value_rows(
            data, specialist.schema, fields.get("text") or trained.get("text", "text"), values_field(data, label)
        )
    examples = loaded.examples[: limit or None]
    metrics, out = score(specialist.extractor, examples, bio)
    metrics["data"] = str(data)
    gold = [gold_record(specialist.schema, e) for e in examples]
    exact = field_scores(gold, [x.record for x in out], specialist.schema.names)[2]
    scores = record_f1(gold, [x.record for x in out], specialist.schema.names)
    metrics["answers"] = {"confidence": [x.record_confidence for x in out], "correct": exact, "score": scores}
    if not bio:
        metrics["unaligned_values"] = len(loaded.unaligned)
    print_extraction_report(metrics, console, title=f"{specialist.name} on {data}")
    return metrics
