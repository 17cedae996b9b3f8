"""The model card of an extraction specialist: schema, data (with alignment losses), settings, scores."""

from __future__ import annotations

import json
from pathlib import Path

from smallfleet.tasks.card import CardParts, base_line, fit_summary, write_card


def write_extract_card(folder: Path, manifest: dict, metrics: dict, calibration: dict) -> None:
    """Write README.md (the card) and the calibration plots into `folder`."""
    data, train = manifest["data"], manifest["training"]
    bio = manifest["format"] == "bio"
    data_lines = [
        f"- format: {'tokens with BIO tags' if bio else 'text plus gold values, aligned to spans'}",
        f"- train: {data['train_rows']} rows ({data['train_windows']} windows of <= {train['max_length']} tokens, "
        f"overlap {manifest['stride']}); validation: {data['valid_rows']} rows ({data['valid_source']})",
    ]
    if not bio:
        data_lines.append(
            f"- gold values not found in their text: {data['unaligned']} of {data['values']} (rows left out of training)"
        )
    scores = [
        "| split | n | F1 | field F1 | exact match | schema-valid | record ECE | EM@80% | EM@90% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split, m in metrics.items():
        cov = m["coverage"]
        scores.append(
            f"| {split} | {m['n']} | {m['f1']:.4f} | {m['field_f1']:.4f} | {m['exact_match']:.4f} | "
            f"{m['schema_valid']:.4f} | {m['record_ece']:.4f} | {cov['0.8']:.4f} | {cov['0.9']:.4f} |"
        )
    last = metrics.get("test") or metrics["validation"]
    scores += ["", "| field | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, s in (last.get("spans") or last["fields"]).items():
        scores.append(f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
    scores += ["", "EM@X% is the whole-record exact match on the X% of inputs the specialist is most confident about."]
    parts = CardParts(
        intro=[
            f"Span tagger fine-tuned from {base_line(manifest)} by smallfleet {manifest['smallfleet_version']} on "
            f"{manifest['created']}; returns JSON objects of this schema:",
            "",
            "```json",
            json.dumps(manifest["schema"], indent=2),
            "```",
        ],
        data=data_lines,
        fit=fit_summary(manifest["fit"], "span micro-F1" if bio else "field micro-F1", manifest["machine"]),
        scores=scores,
        confidence=[
            "A field's confidence is the calibrated probability that its value (or its absence) is right; a record's "
            "is the calibrated lowest field confidence over required fields (all fields when none is required).",
            f"Token temperature T = {calibration['temperature']:.3f}; record ECE on validation "
            f"{calibration['ece_before']:.4f} before Platt scaling, {calibration['ece_after']:.4f} after.",
        ],
    )
    write_card(folder, manifest, "training", calibration, parts)
