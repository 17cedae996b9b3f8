"""Train, evaluate and describe a triage model (`smallfleet triage train|eval`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smallfleet.errors import DataError
from smallfleet.triage.embed import DEFAULT_BASE, Embedder
from smallfleet.triage.model import (MANIFEST, MIN_ROWS, TriageModel, choose_c, fit_head, head_is_trainable,
                                     training_arrays)
from smallfleet.triage.routing import NUM_RESULTS, evaluate_router, plot_curves, rank_shares, strong_scores
from smallfleet.triage.rows import TriageRow, tier_order, unknown_tiers
from smallfleet.triage.tuning import choose_shared_c

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
                 c: float | None = None, seed: int = 13, force: bool = False, notes: list[str] | None = None,
                 source: str = "", embedder: Embedder | None = None, order: list[str] | None = None) -> TriageModel:  # fmt: skip
    """Fit one head per tier with enough rows, score them on a held-out fifth, refit on all rows and save to `out`.

    Args:
        rows: labelled rows; their tiers are taken cheapest first (see `rows.tier_order`).
        min_rows: fewest labelled rows a tier needs for a head; fewer and triage will not choose it on a prediction.
        c: inverse L2 strength of the logistic heads; None = chosen per head by cross-validation on the rows.
        notes: lines for the card (e.g. tiers left out); lines about short tiers are added.
        source: where the rows came from, for the card.
        order: the tiers cheapest first (e.g. the fleet's, for rows from its log that each score one tier);
            default: as the rows name them.
    """
    from smallfleet.training.artifacts import staged_folder

    if not rows:
        raise DataError("no triage rows to train on")
    named = tier_order(rows)
    tiers = [t for t in order or [] if t in named] + [t for t in named if t not in (order or [])]
    notes = list(notes or [])
    embedder = embedder or Embedder(base)
    vectors = embedder.embed([r.text for r in rows])
    heads, per_tier = fit_heads(rows, vectors, tiers, min_rows, c, seed, notes)
    card = {"rows": len(rows), "source": source, "per_tier": per_tier, "min_rows": min_rows,
            "c": "cross-validated" if c is None else c, "max_length": embedder.max_length,
            "notes": notes}  # fmt: skip
    model = TriageModel(tiers, heads, base, card, embedder)
    with staged_folder(out, force, marker=MANIFEST) as tmp:
        model.save(tmp)
        (tmp / "README.md").write_text(render_card(model), encoding="utf-8")
    return model


def fit_heads(rows: list[TriageRow], vectors: np.ndarray, tiers: list[str], min_rows: int = MIN_ROWS,
              c: float | None = None, seed: int = 13, notes: list[str] | None = None,
              validate: bool = True) -> tuple[dict, dict]:  # fmt: skip
    """Tier -> (weights, bias) for each tier with at least `min_rows` rows, and tier -> what the card says of it.

    Args:
        vectors: the rows' embeddings.
        c: inverse L2 strength; None = chosen from `model.C_GRID` by cross-validation on these rows: one for all
            heads by the decision's APGR when enough rows score every tier (`tuning.choose_shared_c`), else per head
            by its log-loss.
        notes: lines about tiers left without a head are appended here.
        validate: also score each head, fitted without a held-out fifth, on that fifth (AUC, Brier).
    """
    valid = np.random.default_rng(seed).random(len(rows)) < VALID_FRACTION
    per_tier, heads = {}, {}
    trainable = [t for t in tiers if head_is_trainable(rows, t, min_rows)[0]]
    shared = choose_shared_c(rows, vectors, trainable, seed=seed) if c is None else None
    for tier in tiers:
        ok, count, good = head_is_trainable(rows, tier, min_rows)
        per_tier[tier] = {"rows": count, "good_share": round(good, 4), "head": ok}
        if not ok:
            if notes is not None:
                notes.append(f"tier {tier!r}: {count} labelled row(s): too few for a head (needs {min_rows}); "
                             "triage will not choose it on a prediction, and falls back to the tier order when "
                             "no cheaper tier has a head")  # fmt: skip
            continue
        X, y, weight = training_arrays(rows, vectors, tier)
        tier_c = c if c is not None else shared if shared is not None else choose_c(X, y, weight, seed=seed)
        per_tier[tier]["c"] = tier_c
        per_tier[tier]["c_chosen_by"] = "given" if c is not None else "decision" if shared is not None else "log-loss"
        per_tier[tier]["constant"] = good in (0.0, 1.0)
        if validate:
            per_tier[tier].update(_validation(rows, vectors, tier, valid, tier_c))
        heads[tier] = fit_head(X, y, weight, c=tier_c)
    return heads, per_tier


def _validation(rows: list[TriageRow], vectors: np.ndarray, tier: str, valid: np.ndarray, c: float) -> dict:
    """AUC and Brier score of a head fitted without the held-out rows, on them (None when they are all alike)."""
    from sklearn.metrics import roc_auc_score

    idx_train = [i for i, r in enumerate(rows) if tier in r.scores and not valid[i]]
    idx_valid = [i for i, r in enumerate(rows) if tier in r.scores and valid[i]]
    y_valid = np.array([rows[i].scores[tier] >= 0.5 for i in idx_valid])
    if not idx_valid or not idx_train or y_valid.all() or not y_valid.any():
        return {"valid_rows": len(idx_valid), "valid_auc": None, "valid_brier": None}
    w, b = fit_head(*training_arrays([rows[i] for i in idx_train], vectors[idx_train], tier), c=c)
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
    notes = [f"tier {t!r} has no head in this model: never chosen on a prediction" for t in tiers[:-1]
             if t not in model.heads]  # fmt: skip
    if tiers[-1] not in model.heads:
        notes.append(f"tier {tiers[-1]!r} has no head in this model: taken to be good enough on every row")
    probs = np.array([[p.get(t, np.nan) for t in tiers] for p in predicted], dtype=np.float64)
    probs[:, -1] = np.nan_to_num(probs[:, -1], nan=1.0)
    result = evaluate_router(quality, probs, strong_scores(probs, rank_shares(len(tiers))), num_results)
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
        "free-form request to the tier with the best predicted quality minus (1 - `serving.willingness_to_pay`) "
        "times its price as a share of the dearest tier's: a dearer tier answers when its predicted gain is worth "
        "its extra price. The cascade then goes on as usual if that tier fails.",
        "",
        f"- base encoder (frozen, mean-pooled): `{model.base}`, texts cut at {card.get('max_length')} tokens",
        f"- heads: logistic regression per tier, C={card.get('c')} (constant when a tier's answers are all alike)",
        f"- training rows: {card.get('rows')}" + (f" from {card['source']}" if card.get("source") else ""),
        f"- tiers, cheapest first: {', '.join(model.tiers)}",
        "",
        "| tier | labelled rows | good share | head | C | validation AUC | validation Brier |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, info in card.get("per_tier", {}).items():
        head = ("constant" if info.get("constant") else "yes") if info["head"] else "no"
        lines.append(f"| {tier} | {info['rows']} | {info['good_share']:.3f} | {head} | {info.get('c', '')} | "
                     f"{_fmt(info.get('valid_auc'))} | {_fmt(info.get('valid_brier'))} |")  # fmt: skip
    if card.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in card["notes"]]]
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"
