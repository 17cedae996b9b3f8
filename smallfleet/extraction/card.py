"""The model card of an extraction specialist: schema, data (with alignment losses), settings, scores."""

from __future__ import annotations

import json
from pathlib import Path

from smallfleet.card import COVERAGE_PNG, RELIABILITY_PNG, fingerprint_lines, fit_summary, plot_calibration
from smallfleet.training.artifacts import read_json


def write_extract_card(folder: Path, manifest: dict, metrics: dict) -> None:
    """Write README.md (the card) and the calibration plots into `folder`."""
    calibration = read_json(folder / "calibration.json")
    plot_calibration(calibration, folder)
    (folder / "README.md").write_text(render_extract_card(manifest, metrics, calibration), encoding="utf-8")


def render_extract_card(manifest: dict, metrics: dict, calibration: dict) -> str:
    """Markdown model card for an extraction specialist."""
    data, fit, train = manifest["data"], manifest["fit"], manifest["training"]
    score_name = "span micro-F1" if manifest["format"] == "bio" else "field micro-F1"
    lines = [
        f"# {manifest['name']}: extract specialist",
        "",
        f"Span tagger fine-tuned from `{manifest['base']['ref']}` ({manifest['base']['source']}) by smallfleet "
        f"{manifest['smallfleet_version']} on {manifest['created']}; returns JSON objects of this schema:",
        "",
        "```json",
        json.dumps(manifest["schema"], indent=2),
        "```",
        "",
        "## Training data",
        "",
        f"- format: {'tokens with BIO tags' if manifest['format'] == 'bio' else 'text plus gold values, aligned to spans'}",
        f"- train: {data['train_rows']} rows ({data['train_windows']} windows of <= {train['max_length']} tokens, "
        f"overlap {manifest['stride']}); validation: {data['valid_rows']} rows ({data['valid_source']})",
    ]
    if manifest["format"] != "bio":
        lines.append(
            f"- gold values not found in their text: {data['unaligned']} of {data['values']} (rows left out of training)"
        )
    lines += fingerprint_lines(data["fingerprint"])
    lines += [
        "",
        "## Settings",
        "",
        ", ".join(f"{k}={v}" for k, v in train.items()),
        "",
        fit_summary(fit, score_name, manifest["machine"]),
        "",
        "## Scores",
        "",
        "| split | n | F1 | field F1 | exact match | schema-valid | record ECE | EM@80% | EM@90% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split, m in metrics.items():
        cov = m["coverage"]
        lines.append(
            f"| {split} | {m['n']} | {m['f1']:.4f} | {m['field_f1']:.4f} | {m['exact_match']:.4f} | "
            f"{m['schema_valid']:.4f} | {m['record_ece']:.4f} | {cov['0.8']:.4f} | {cov['0.9']:.4f} |"
        )
    last = metrics.get("test") or metrics["validation"]
    lines += ["", "| field | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, s in (last.get("spans") or last["fields"]).items():
        lines.append(f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
    lines += [
        "",
        "EM@X% is the whole-record exact match on the X% of inputs the specialist is most confident about.",
        "",
        "## Confidence",
        "",
        "A field's confidence is the calibrated probability that its value (or its absence) is right; a record's is "
        "the calibrated lowest field confidence over required fields (all fields when none is required).",
        f"Token temperature T = {calibration['temperature']:.3f}; record ECE on validation "
        f"{calibration['ece_before']:.4f} before Platt scaling, {calibration['ece_after']:.4f} after.",
        "",
        f"![reliability]({RELIABILITY_PNG}) ![risk-coverage]({COVERAGE_PNG})",
        "",
    ]
    return "\n".join(lines)
