"""The model card skeleton every specialist's card fills: what it is, what it was trained
on, with which settings, how it scored and what its confidence means, plus two plots
people read faster than tables. Each kind supplies its own parts (`CardParts`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smallfleet.calibration import ConfidenceCurve
from smallfleet.guarantee import DEFAULT_DELTA, guaranteed_threshold
from smallfleet.novelty import describe_novelty

RELIABILITY_PNG = "reliability.png"
COVERAGE_PNG = "risk_coverage.png"


@dataclass
class CardParts:
    """What a kind adds to the card skeleton."""

    intro: list[str]
    """Lines under the title: what the specialist is and returns."""
    data: list[str]
    """Bullet lines of the training-data section (the fingerprint lines follow)."""
    fit: str
    """One sentence on how training went."""
    scores: list[str]
    """The scores section: tables and notes."""
    confidence: list[str]
    """What the confidence means and how it was calibrated."""


def write_card(folder: Path, manifest: dict, settings_key: str, calibration: dict, parts: CardParts) -> None:
    """Write README.md (the card) and the calibration plots into the specialist folder `folder`."""
    plot_calibration(calibration, folder)
    (folder / "README.md").write_text(render_card(manifest, settings_key, parts, calibration), encoding="utf-8")


def escalation_lines(manifest: dict, calibration: dict) -> list[str]:
    """The card's escalation section: the guaranteed threshold at the task's target and delta."""
    cascade = manifest.get("cascade") or {"target": 0.95, "delta": DEFAULT_DELTA}
    curve = ConfidenceCurve.from_dict(calibration["curve"])
    g = guaranteed_threshold(curve, cascade["target"], cascade["delta"])
    lines = [
        f"At the task's target ({g.target:.0%} of accepted answers right) and delta {g.delta}: {g.describe()}.",
        f"Method: {g.method}. The gateway recomputes this at start-up (`serve --target/--delta` change it).",
        "",
    ]
    for name, record in calibration.get("runtimes", {}).items():  # e.g. onnx int8: calibrated again on it
        own = guaranteed_threshold(ConfidenceCurve.from_dict(record["curve"]), cascade["target"], cascade["delta"])
        facts = manifest.get("runtimes", {}).get(name, {})
        said = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in facts.items()
                         if isinstance(v, float) and k != "temperature")  # fmt: skip
        lines += [f"Served on `{name}` ({facts.get('quantization', 'its own copy of the encoder')}), the default "
                  f"when it can run: calibrated again on it (temperature {record['temperature']:.4f}; {said}). At the "
                  f"same target: {own.describe()}.", ""]  # fmt: skip
    return [
        *lines,
        f"Novelty: {describe_novelty(manifest.get('novelty'))}. An answer is accepted only when it passes both "
        "tests; the novelty statistics are in `novelty.npz`.",
    ]


def render_card(manifest: dict, settings_key: str, parts: CardParts, calibration: dict) -> str:
    """Markdown model card: title, intro, training data, settings, scores, confidence, plots."""
    settings = manifest[settings_key]
    lines = [
        f"# {manifest['name']}: {manifest['kind']} specialist",
        "",
        *parts.intro,
        "",
        "## Training data",
        "",
        *parts.data,
        *([f"- frozen evaluation set: {manifest['data']['test_note']}"] if manifest["data"].get("test_note") else []),
        *fingerprint_lines(manifest["data"]["fingerprint"]),
        "",
        "## Settings",
        "",
        ", ".join(f"{k}={v!r}" for k, v in settings.items()),
        "",
        parts.fit,
        "",
        "## Scores",
        "",
        *parts.scores,
        "",
        "## Confidence",
        "",
        *parts.confidence,
        "",
        "## Escalation",
        "",
        *escalation_lines(manifest, calibration),
        "",
        f"![reliability]({RELIABILITY_PNG}) ![risk-coverage]({COVERAGE_PNG})",
        "",
    ]
    return "\n".join(lines)


def base_line(manifest: dict) -> str:
    """Where the base model came from, with its SHA-256 when known."""
    base = manifest["base"]
    digest = f", SHA-256 `{base['sha256'][:16]}`" if base.get("sha256") else ""
    return f"`{base['ref']}` ({base['source']}{digest})"


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
