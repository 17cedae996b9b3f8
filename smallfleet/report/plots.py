"""The report's plots, drawn with matplotlib and returned as inline PNG data URIs (the page
needs nothing but itself)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from smallfleet.report.facts import FleetFacts, TaskFacts  # noqa: E402

SIZE = (5.6, 3.5)
BLUE, ORANGE, GREEN, GREY, RED = "#1f6feb", "#e36209", "#1a7f37", "#6e7781", "#cf222e"
FRONTIER_ASSUMED = 1.0
"""The frontier's quality when no person or client has judged any of its answers."""


def data_uri(fig: Figure) -> str:
    """The figure as a PNG data URI (the figure is closed)."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _accepted_quality(task: TaskFacts) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and accepted quality when the top k validation answers are accepted, k = 1..n."""
    right = np.cumsum(np.asarray(task.curve.correct, dtype=float))
    k = np.arange(1, len(right) + 1)
    return k / len(right), right / k


def risk_coverage(task: TaskFacts) -> str:
    """Accepted quality against the share accepted, with the target, the chosen threshold and its bound."""
    fig, ax = plt.subplots(figsize=SIZE)
    g = task.guarantee
    if len(task.curve.confidence):
        coverage, quality = _accepted_quality(task)
        ax.plot(coverage, quality, color=BLUE, label="validation: accepted quality")
    if g.get("target") is not None:
        ax.axhline(g["target"], color=GREY, linestyle="--", label=f"target {g['target']:.0%}")
    if g.get("supported"):
        ax.scatter([g["coverage"]], [g["accepted_quality"]], color=ORANGE, zorder=3,
                   label=f"threshold {g['threshold']:.3f}: {g['coverage']:.0%} kept local")  # fmt: skip
        ax.axhline(g["guaranteed_lower_bound"], color=GREEN, linestyle=":",
                   label=f"guaranteed >= {g['guaranteed_lower_bound']:.3f} (prob. {1 - g['delta']:.0%})")  # fmt: skip
    elif g:
        ax.text(0.5, 0.5, "guarantee not supported:\nevery request escalates", transform=ax.transAxes, ha="center",
                va="center", color=RED)  # fmt: skip
    ax.set(xlabel="share of requests answered locally (coverage)", ylabel="quality of accepted answers",
           xlim=(0, 1.02), title=f"{task.name}: risk-coverage")  # fmt: skip
    ax.legend(fontsize=7, loc="lower left")
    return data_uri(fig)


def reliability(task: TaskFacts) -> str:
    """Reliability diagram: accuracy against calibrated confidence per bin, on validation."""
    fig, ax = plt.subplots(figsize=SIZE)
    bins = [b for b in task.reliability if b.get("n")]
    ax.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1, label="perfect calibration")
    if bins:
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        widths = [b["hi"] - b["lo"] for b in bins]
        ax.bar(centers, [b["accuracy"] for b in bins], width=widths, color=BLUE, alpha=0.7, edgecolor="white",
               label="share right")  # fmt: skip
        ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], color=ORANGE, s=[8 + b["n"] for b in bins],
                   zorder=3, label="mean confidence (size = rows)")  # fmt: skip
    ax.set(xlabel="calibrated confidence", ylabel="share right", xlim=(0, 1), ylim=(0, 1.02),
           title=f"{task.name}: reliability (validation)")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    return data_uri(fig)


def novelty(task: TaskFacts) -> str:
    """The novelty of in-distribution validation rows and of out-of-scope examples, with the threshold between them."""
    fig, ax = plt.subplots(figsize=SIZE)
    scores = task.novelty
    valid, outside = scores.get("valid", []), scores.get("out_of_scope", [])
    edges = np.histogram_bin_edges(np.concatenate([valid, outside]) if outside else valid, bins=30)
    ax.hist(valid, bins=edges, color=BLUE, alpha=0.6, density=True, label=f"validation ({len(valid)})")
    if outside:
        ax.hist(outside, bins=edges, color=ORANGE, alpha=0.6, density=True, label=f"out-of-scope ({len(outside)})")
    if scores.get("threshold") is not None:
        ax.axvline(scores["threshold"], color=RED, linestyle="--", label=f"threshold {scores['threshold']:.3g}: above escalates")
    ax.set(xlabel="novelty (distance from the training data)", ylabel="density", title=f"{task.name}: novelty")
    ax.legend(fontsize=7, loc="upper right")
    return data_uri(fig)


def cost_quality(task: TaskFacts) -> str:
    """Quality against cost: the specialist alone, the cascade at several thresholds, and all-frontier."""
    fig, ax = plt.subplots(figsize=SIZE)
    measured = task.frontier_cost is not None and task.frontier_cost > 0
    c_f = task.frontier_cost * 1000 if measured else 1.0
    c_s = (task.specialist_cost or 0.0) * 1000 if measured else 0.0
    q_f = task.frontier_quality if task.frontier_quality is not None else FRONTIER_ASSUMED
    n = len(task.curve.confidence)
    if n:
        right = np.cumsum(np.asarray(task.curve.correct, dtype=float))
        ks = np.unique(np.clip(np.round(np.linspace(0.1, 1.0, 10) * n).astype(int), 1, n))
        quality = (right[ks - 1] + q_f * (n - ks)) / n
        cost = c_s + (n - ks) / n * c_f
        ax.plot(cost, quality, color=BLUE, marker="o", markersize=3, label="cascade (10%-100% kept local)")
        ax.scatter([c_s], [right[-1] / n], color=ORANGE, zorder=3, label="specialist only")
        g = task.guarantee
        if g.get("supported"):
            k = max(1, int(round(g["coverage"] * n)))
            ax.scatter([c_s + (n - k) / n * c_f], [(right[k - 1] + q_f * (n - k)) / n], color=GREEN, marker="*", s=120,
                       zorder=4, label="cascade at the guaranteed threshold")  # fmt: skip
    where = (f"judged on {task.frontier_checked} requests" if task.frontier_quality is not None
             else "assumed always right")  # fmt: skip
    ax.scatter([c_f], [q_f], color=RED, marker="s", zorder=3, label=f"all-frontier ({where})")
    unit = "USD per 1,000 requests (request log)" if measured else "spend relative to all-frontier (no traffic yet)"
    ax.set(xlabel=unit, ylabel="quality over all requests (validation)", title=f"{task.name}: cost vs quality")
    ax.legend(fontsize=7, loc="lower right")
    return data_uri(fig)


def traffic(task: TaskFacts, bucket: str) -> str:
    """Requests and escalation rate over time, and spend against all-frontier (cumulative)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(SIZE[0], SIZE[1] * 1.35), sharex=True)
    times = [b["start"] for b in task.series]
    width = (1 / 24 if bucket == "hour" else 1.0) * 0.8
    top.bar(times, [b["requests"] for b in task.series], width=width, color=BLUE, alpha=0.7, label="requests")
    top.set_ylabel(f"requests per {bucket}")
    rate = top.twinx()
    rate.plot(times, [b["escalated"] / b["requests"] for b in task.series], color=ORANGE, marker="o", markersize=3,
              label="escalation rate")  # fmt: skip
    rate.set_ylim(0, 1.05)
    rate.set_ylabel("escalation rate", color=ORANGE)
    top.set_title(f"{task.name}: traffic")
    bottom.plot(times, np.cumsum([b["frontier_cost_usd"] for b in task.series]), color=RED, marker="o", markersize=3,
                label="all-frontier")  # fmt: skip
    bottom.plot(times, np.cumsum([b["cost_usd"] for b in task.series]), color=GREEN, marker="o", markersize=3,
                label="smallfleet")  # fmt: skip
    bottom.set_ylabel("cumulative spend (USD)")
    bottom.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return data_uri(fig)


def live(task: TaskFacts) -> str:
    """Live agreement with its exact 95% interval, against the promised bound."""
    from smallfleet.live_quality import interval

    q = task.live
    fig, ax = plt.subplots(figsize=(SIZE[0], 2.2))
    rows = []
    if q["judged"]:
        rows.append((f"accepted answers ({q['judged']})", q["rate"], q["low"], q["high"], RED if q["alert"] else GREEN))
    if q["all_judged"]:
        low, high = interval(q["all_agreed"], q["all_judged"])
        rows.append((f"all judged answers ({q['all_judged']})", q["all_agreed"] / q["all_judged"], low, high, BLUE))
    for y, (label, rate, low, high, color) in enumerate(rows):
        ax.errorbar([rate], [y], xerr=[[rate - low], [high - rate]], fmt="o", color=color, capsize=4)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    if q["bound"] is not None:
        ax.axvline(q["bound"], color=GREY, linestyle="--", label=f"promised {q['bound']:.1%}")
        ax.legend(fontsize=7, loc="lower left")
    ax.set(xlim=(0, 1.02), ylim=(-0.6, len(rows) - 0.4), xlabel="share judged right (95% interval)",
           title=f"{task.name}: live quality")  # fmt: skip
    return data_uri(fig)


def fleet_spend(facts: FleetFacts) -> str:
    """Per task: what smallfleet spent against what all-frontier would have cost."""
    tasks = [t for t in facts.tasks if t.traffic]
    fig, ax = plt.subplots(figsize=SIZE)
    y = np.arange(len(tasks))
    ax.barh(y - 0.2, [t.traffic["frontier_cost_usd"] for t in tasks], height=0.4, color=RED, label="all-frontier")
    ax.barh(y + 0.2, [t.traffic["cost_usd"] for t in tasks], height=0.4, color=GREEN, label="smallfleet")
    ax.set_yticks(y, [t.name for t in tasks])
    ax.invert_yaxis()
    ax.set(xlabel="spend (USD)", title="spend by task")
    ax.legend(fontsize=7, loc="lower right")
    return data_uri(fig)
