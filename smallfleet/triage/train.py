"""Train, evaluate and describe a triage model (`smallfleet triage train|eval`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smallfleet.errors import DataError
from smallfleet.triage.embed import DEFAULT_BASE, Embedder
from smallfleet.triage.model import MANIFEST, MIN_ROWS, TriageModel, fit_head, head_is_trainable, training_arrays
from smallfleet.triage.routing import NUM_RESULTS, evaluate_router, plot_curves
from smallfleet.triage.rows import TriageRow, tier_order, unknown_tiers

PLOT = "routing_curve.png"
VALID_FRACTION = 0.2


def drop_unknown_tiers(rows: list[TriageRow], fleet_tiers: list[str]) -> tuple[list[TriageRow], list[str]]:
    """Rows without the scores of tiers the fleet lacks (rows left with none are dropped), and one report line
    per unknown tier naming where it appears."""
    unknown = unknown_tiers(rows, fleet_tiers)
    notes = [f"tier {t!r} is not in the fleet (tiers: {', '.join(fleet_tiers)}): {len(w)} row(s), e.g. "
             f"{', '.join(w[:3])}; its scores are left out" for t, w in unknown.items()]  # fmt: skip
    if not unknown:
        return rows, notes
    kept = []
    for row in rows:
        scores = {t: v for t, v in row.scores.items() if t not in unknown}
        if scores:
            kept.append(TriageRow(row.text, scores, row.where))
    return kept, notes


def train_triage(rows: list[TriageRow], out: Path, base: str = DEFAULT_BASE, min_rows: int = MIN_ROWS,
                 c: float = 1.0, seed: int = 13, force: bool = False, notes: list[str] | None = None,
                 source: str = "", embedder: Embedder | None = None) -> TriageModel:  # fmt: skip
    """Fit one head per tier with enough rows, score them on a held-out fifth, refit on all rows and save to `out`.

    Args:
        rows: labelled rows; their tiers are taken cheapest first (see `rows.tier_order`).
        min_rows: fewest labelled rows a tier needs for a head; fewer and triage will not choose it on a prediction.
        c: inverse L2 strength of the logistic heads.
        notes: lines for the card (e.g. tiers left out); lines about short tiers are added.
        source: where the rows came from, for the card.
    """
    from smallfleet.training.artifacts import staged_folder

    if not rows:
        raise DataError("no triage rows to train on")
    tiers = tier_order(rows)
    notes = list(notes or [])
    embedder = embedder or Embedder(base)
    vectors = embedder.embed([r.text for r in rows])
    rng = np.random.default_rng(seed)
    valid = rng.random(len(rows)) < VALID_FRACTION
    per_tier, heads = {}, {}
    for tier in tiers:
        ok, count, good = head_is_trainable(rows, tier, min_rows)
        per_tier[tier] = {"rows": count, "good_share": round(good, 4), "head": ok}
        if not ok:
            notes.append(f"tier {tier!r}: {count} labelled row(s), good share {good:.2f}: too few (or all alike) "
                         f"for a head (needs {min_rows} with good and bad answers); triage will not choose it on "
                         "a prediction, and falls back to the tier order when no cheaper tier has a head")  # fmt: skip
            continue
        per_tier[tier].update(_validation(rows, vectors, tier, valid, c))
        heads[tier] = fit_head(*training_arrays(rows, vectors, tier), c=c)
    card = {"rows": len(rows), "source": source, "per_tier": per_tier, "min_rows": min_rows, "c": c,
            "max_length": embedder.max_length, "notes": notes}  # fmt: skip
    model = TriageModel(tiers, heads, base, card, embedder)
    with staged_folder(out, force, marker=MANIFEST) as tmp:
        model.save(tmp)
        (tmp / "README.md").write_text(render_card(model), encoding="utf-8")
    return model


def _validation(rows: list[TriageRow], vectors: np.ndarray, tier: str, valid: np.ndarray, c: float) -> dict:
    """AUC and Brier score of a head fitted without the held-out rows, on them (None when they are all alike)."""
    from sklearn.metrics import roc_auc_score

    idx_train = [i for i, r in enumerate(rows) if tier in r.scores and not valid[i]]
    idx_valid = [i for i, r in enumerate(rows) if tier in r.scores and valid[i]]
    y_valid = np.array([rows[i].scores[tier] >= 0.5 for i in idx_valid])
    sub = [rows[i] for i in idx_train]
    if not idx_valid or y_valid.all() or not y_valid.any() or not head_is_trainable(sub, tier, 2)[0]:
        return {"valid_rows": len(idx_valid), "valid_auc": None, "valid_brier": None}
    w, b = fit_head(*training_arrays(sub, vectors[idx_train], tier), c=c)
    p = 1 / (1 + np.exp(-(vectors[idx_valid] @ w + b)))
    q = np.array([rows[i].scores[tier] for i in idx_valid])
    return {"valid_rows": len(idx_valid), "valid_auc": round(float(roc_auc_score(y_valid, p)), 4),
            "valid_brier": round(float(np.mean((p - q) ** 2)), 4)}  # fmt: skip


def evaluate_triage(model: TriageModel, rows: list[TriageRow], num_results: int = NUM_RESULTS,
                    plot: Path | None = None) -> dict:  # fmt: skip
    """RouteLLM-style scores of `model` on replay rows that carry every tier's quality (strongest tier last).

    Raises:
        DataError: a row lacks a tier's score, or the rows name fewer than two tiers.
    """
    tiers = list(rows[0].scores) if rows else []
    if len(tiers) < 2:
        raise DataError("triage eval needs rows scoring at least two tiers (cheapest first, strongest last)")
    missing = [f"{r.where}: no score for tier(s) {', '.join(t for t in tiers if t not in r.scores)}"
               for r in rows if any(t not in r.scores for t in tiers)]  # fmt: skip
    if missing:
        from smallfleet.data.load import summarize_problems

        raise DataError(summarize_problems(missing, f"{len(missing)} row(s) do not score every tier of the first "
                                                    f"row ({', '.join(tiers)}), which replay evaluation needs"))  # fmt: skip
    quality = np.array([[r.scores[t] for t in tiers] for r in rows], dtype=np.float64)
    predicted = model.predict([r.text for r in rows])
    notes = [f"tier {t!r} has no head in this model: its predicted quality is taken as 0 (never chosen)"
             for t in tiers[:-1] if t not in model.heads]  # fmt: skip
    probs = np.array([[p.get(t, 0.0) for t in tiers[:-1]] for p in predicted])
    result = evaluate_router(quality, probs, 1 - probs.max(1), num_results)
    result = {"n": result["n"], "apgr": result["apgr"], "strong_share_at_95": result["strong_share_at_95"],
              "tiers": tiers, **result, "notes": notes}  # fmt: skip
    if plot is not None:
        plot_curves(result, plot, f"triage on {len(rows)} rows", tiers)
    return result


def render_card(model: TriageModel) -> str:
    """README.md of a triage model: what it predicts, trained on what, how each head scored."""
    card = model.card
    lines = [
        "# triage model",
        "",
        "Predicts, for a request, the probability that each tier's answer is good enough. The gateway sends a "
        "free-form request to the cheapest tier whose prediction reaches `serving.willingness_to_pay`, else to "
        "the most expensive one; the cascade then goes on as usual if that tier fails.",
        "",
        f"- base encoder (frozen, mean-pooled): `{model.base}`, texts cut at {card.get('max_length')} tokens",
        f"- heads: logistic regression per tier, C={card.get('c')}",
        f"- training rows: {card.get('rows')}" + (f" from {card['source']}" if card.get("source") else ""),
        f"- tiers, cheapest first: {', '.join(model.tiers)}",
        "",
        "| tier | labelled rows | good share | head | validation AUC | validation Brier |",
        "|---|---|---|---|---|---|",
    ]
    for tier, info in card.get("per_tier", {}).items():
        lines.append(f"| {tier} | {info['rows']} | {info['good_share']:.3f} | {'yes' if info['head'] else 'no'} | "
                     f"{_fmt(info.get('valid_auc'))} | {_fmt(info.get('valid_brier'))} |")  # fmt: skip
    if card.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in card["notes"]]]
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"
