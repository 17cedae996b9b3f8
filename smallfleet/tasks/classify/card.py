"""The model card of a classification specialist: labels, accuracy and temperature scaling."""

from __future__ import annotations

from pathlib import Path

from smallfleet.tasks.card import CardParts, base_line, fit_summary, write_card


def write_classify_card(folder: Path, manifest: dict, metrics: dict, calibration: dict) -> None:
    """Write README.md (the card) and the calibration plots into `folder`."""
    data = manifest["data"]
    scores = [
        "| split | n | accuracy | macro-F1 | ECE | acc@80% | acc@90% | acc@95% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, m in metrics.items():
        cov = m["coverage"]
        scores.append(
            f"| {split} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} "
            f"| {cov['0.8']:.4f} | {cov['0.9']:.4f} | {cov['0.95']:.4f} |"
        )
    scores += ["", "acc@X% is the accuracy on the X% of inputs the specialist is most confident about."]
    parts = CardParts(
        intro=[
            f"Fine-tuned from {base_line(manifest)} by smallfleet {manifest['smallfleet_version']} on "
            f"{manifest['created']}.",
            f"Labels ({len(manifest['labels'])}): {', '.join(f'`{lab}`' for lab in manifest['labels'])}.",
        ],
        data=[f"- train: {data['train_rows']} rows; validation: {data['valid_rows']} rows ({data['valid_source']})"],
        fit=fit_summary(manifest["fit"], "macro-F1", manifest["machine"]),
        scores=scores,
        confidence=[
            "Confidence is the softmax probability after temperature scaling on validation: "
            f"T = {calibration['temperature']:.3f}; ECE {calibration['ece_before']:.4f} before, "
            f"{calibration['ece_after']:.4f} after."
        ],
    )
    write_card(folder, manifest, "training", calibration, parts)
