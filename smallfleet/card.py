"""The model card saved with every specialist: what it is, what it was trained on,
with which settings, and how it scored, plus two plots people read faster than tables."""

from __future__ import annotations

from pathlib import Path

RELIABILITY_PNG = "reliability.png"
COVERAGE_PNG = "risk_coverage.png"


def write_card(folder: Path, manifest: dict, metrics: dict, calibration: dict) -> None:
    """Write README.md (the card) and the calibration plots into `folder`."""
    plot_calibration(calibration, folder)
    (folder / "README.md").write_text(render_card(manifest, metrics, calibration), encoding="utf-8")


def render_card(manifest: dict, metrics: dict, calibration: dict) -> str:
    """Markdown model card for a classification specialist."""
    data, fit, train = manifest["data"], manifest["fit"], manifest["training"]
    lines = [
        f"# {manifest['name']}: {manifest['kind']} specialist",
        "",
        f"Fine-tuned from `{manifest['base']['ref']}` ({manifest['base']['source']}) by smallfleet "
        f"{manifest['smallfleet_version']} on {manifest['created']}.",
        f"Labels ({len(manifest['labels'])}): {', '.join(f'`{lab}`' for lab in manifest['labels'])}.",
        "",
        "## Training data",
        "",
        f"- train: {data['train_rows']} rows; validation: {data['valid_rows']} rows ({data['valid_source']})",
        *fingerprint_lines(data["fingerprint"]),
        "",
        "## Settings",
        "",
        ", ".join(f"{k}={v}" for k, v in train.items()),
        "",
        fit_summary(fit, "macro-F1", manifest["machine"]),
        "",
        "## Scores",
        "",
        "| split | n | accuracy | macro-F1 | ECE | acc@80% | acc@90% | acc@95% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, m in metrics.items():
        cov = m["coverage"]
        lines.append(
            f"| {split} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} "
            f"| {cov['0.8']:.4f} | {cov['0.9']:.4f} | {cov['0.95']:.4f} |"
        )
    lines += [
        "",
        "acc@X% is the accuracy on the X% of inputs the specialist is most confident about.",
        "",
        "## Calibration",
        "",
        f"Temperature scaling on validation: T = {calibration['temperature']:.3f}; "
        f"ECE {calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after.",
        "",
        f"![reliability]({RELIABILITY_PNG}) ![risk-coverage]({COVERAGE_PNG})",
        "",
    ]
    return "\n".join(lines)


def plot_calibration(calibration: dict, folder: Path) -> None:
    """Save the reliability diagram and the accuracy-vs-coverage curve as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in calibration["reliability"] if b["n"]]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.bar(
        [(b["lo"] + b["hi"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=[b["hi"] - b["lo"] for b in bins],
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="Reliability (validation)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / RELIABILITY_PNG, dpi=100)
    plt.close(fig)

    points = calibration["points"]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([p["coverage"] for p in points], [p["accuracy"] for p in points], color="tab:blue")
    ax.set(xlabel="coverage (share answered)", ylabel="accuracy of answered", xlim=(0, 1), title="Risk-coverage")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / COVERAGE_PNG, dpi=100)
    plt.close(fig)


def fingerprint_lines(fingerprint: dict) -> list[str]:
    """Card lines for a data fingerprint: the combined SHA-256, then one per file."""
    lines = [f"- data fingerprint (SHA-256): `{fingerprint['sha256'][:16]}`"]
    return lines + [f"  - `{path}`: `{digest[:16]}`" for path, digest in fingerprint["files"].items()]


def fit_summary(fit: dict, score_name: str, machine: dict) -> str:
    """One sentence on how an epoch-based fit went: best validation score, epochs, time, device."""
    return (
        f"Best validation {score_name} {fit['best_score']:.4f} at epoch {fit['best_epoch']} of {fit['epochs_run']}"
        f"{' (stopped early)' if fit['stopped_early'] else ''}; {fit['seconds']:.0f} s on "
        f"{machine['device']} ({machine['torch_threads']} threads)."
    )
