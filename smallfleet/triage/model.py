"""The triage model: per tier, the probability that the tier's answer to a request is good enough.

One logistic-regression head per tier over frozen sentence embeddings (see `embed.py`),
multi-label: a row teaches the heads of the tiers it scores, and a float quality q counts
as q of a good answer and 1 - q of a bad one. A tier whose labelled rows all agree gets a
constant head (its good share). The decision is concrete code shared by the gateway and the
evaluation (`routing.choose_tiers`): the tier with the best predicted quality minus
(1 - willingness_to_pay) times its price as a share of the dearest tier's, i.e. a dearer tier
answers when its predicted gain over the cheaper ones is worth its extra price.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smallfleet.errors import SpecialistError
from smallfleet.triage.routing import choose_tiers, price_shares, rank_shares
from smallfleet.triage.rows import TriageRow

MANIFEST = "triage.json"
HEADS_FILE = "heads.safetensors"
MIN_ROWS = 50
"""Fewest labelled rows a tier needs for a head of its own (a constant one when its answers are all alike)."""
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0)  # unit-norm embeddings: past 3 the heads barely change
"""Inverse L2 strengths tried for each head when none is given (chosen by cross-validation on the training rows)."""
C_FOLDS = 3


@dataclass
class TriageDecision:
    """Which tier triage chose for one request, and why."""

    tier: str | None
    """The tier to ask first; None when triage fell back to the tier order."""
    predicted: dict[str, float]
    """Tier -> predicted probability of a good-enough answer (tiers with a head only)."""
    willingness_to_pay: float
    fallback: str | None = None
    """Why triage fell back to the tier order, when it did."""

    def as_dict(self) -> dict:
        return {"tier": self.tier, "predicted": {t: round(p, 4) for t, p in self.predicted.items()},
                "willingness_to_pay": self.willingness_to_pay, "fallback": self.fallback}  # fmt: skip


@dataclass
class TriageModel:
    """Per-tier heads over a frozen encoder's embeddings; `tiers` are cheapest first."""

    tiers: list[str]
    heads: dict[str, tuple[np.ndarray, float]]
    """Tier -> (weights, bias) of its logistic head; tiers with too few rows have none."""
    base: str
    card: dict = field(default_factory=dict)
    """What the model was trained on and how it scored (saved in triage.json and README.md)."""
    embedder: object | None = None

    def predict_embedded(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Tier -> P(good enough) for each row of `vectors`."""
        return {t: 1 / (1 + np.exp(-(vectors @ w + b))) for t, (w, b) in self.heads.items()}

    def predict(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text: tier -> P(good enough)."""
        if self.embedder is None:
            from smallfleet.triage.embed import Embedder

            self.embedder = Embedder(self.base)
        probs = self.predict_embedded(self.embedder.embed(texts))
        return [{t: float(p[i]) for t, p in probs.items()} for i in range(len(texts))]

    def decide(self, predicted: dict[str, float], tiers: list[str], willingness_to_pay: float,
               costs: list[float] | None = None) -> TriageDecision:  # fmt: skip
        """The tier of `tiers` (cheapest first) with the best predicted quality - (1 - willingness_to_pay) * its
        price share (`routing.choose_tiers`): a dearer tier is chosen when its predicted gain is worth its price.

        Args:
            predicted: tier -> P(good enough), from `predict`.
            tiers: the fleet's tiers, cheapest first.
            willingness_to_pay: the knob in [0, 1]; 1 = the tier predicted best whatever its price, 0 = a dearer
                tier only when its predicted gain is at least its whole extra price share.
            costs: each tier's price for this request (any unit); None = evenly spaced by rank.

        A cheaper tier without a head is never chosen on a prediction; the dearest tier without one is taken to
        be good enough. When no cheaper tier has a head triage falls back to the tier order (tier None) and says so.
        """
        known = [i for i, t in enumerate(tiers) if t in self.tiers]
        if not known:
            return TriageDecision(None, predicted, willingness_to_pay,
                                  f"the triage model knows none of the tiers ({', '.join(tiers)})")  # fmt: skip
        names = [tiers[i] for i in known]
        if len(names) > 1 and not any(t in self.heads for t in names[:-1]):
            short = ", ".join(t for t in names[:-1] if t not in self.heads)
            return TriageDecision(None, predicted, willingness_to_pay,
                                  f"too few labelled rows for tier(s) {short} (fewer than {MIN_ROWS})")  # fmt: skip
        shares = price_shares([costs[i] for i in known]) if costs is not None else rank_shares(len(names))
        probs = np.array([[predicted.get(t, np.nan) for t in names]], dtype=np.float64)
        if np.isnan(probs[0, -1]):
            probs[0, -1] = 1.0
        chosen = names[int(choose_tiers(probs, shares, 1 - willingness_to_pay)[0])]
        return TriageDecision(chosen, predicted, willingness_to_pay)

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {}
        for tier, (w, b) in self.heads.items():
            tensors[f"{tier}.weight"] = np.asarray(w, dtype=np.float32)
            tensors[f"{tier}.bias"] = np.asarray([b], dtype=np.float32)
        save_file(tensors, str(folder / HEADS_FILE))
        manifest = {"kind": "triage", "base": self.base, "tiers": self.tiers, "heads": sorted(self.heads), **self.card}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> TriageModel:
        """Read a saved triage model (`smallfleet triage train`)."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise SpecialistError(f"{folder} is not a triage model (no {MANIFEST}; make one with `smallfleet triage train`)")
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / HEADS_FILE))
        heads = {t: (tensors[f"{t}.weight"], float(tensors[f"{t}.bias"][0])) for t in manifest["heads"]}
        card = {k: v for k, v in manifest.items() if k not in ("kind", "base", "tiers", "heads")}
        return cls(manifest["tiers"], heads, manifest["base"], card)


def training_arrays(rows: list[TriageRow], vectors: np.ndarray, tier: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, weight) for `tier`'s head: a quality q becomes a good row of weight q and a bad one of weight 1 - q."""
    idx = [i for i, r in enumerate(rows) if tier in r.scores]
    q = np.array([rows[i].scores[tier] for i in idx], dtype=np.float64)
    X = np.concatenate([vectors[idx], vectors[idx]])
    y = np.concatenate([np.ones(len(idx)), np.zeros(len(idx))])
    weight = np.concatenate([q, 1 - q])
    keep = weight > 0
    return X[keep], y[keep], weight[keep]


def fit_head(X: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, float]:
    """A logistic head (L2, inverse strength `c`) on embeddings; a constant one when `y` holds one class."""
    from sklearn.linear_model import LogisticRegression

    share = float(np.average(y, weights=weight)) if weight.sum() > 0 else 0.5
    if share in (0.0, 1.0):
        p = min(max(share, 1e-3), 1 - 1e-3)
        return np.zeros(X.shape[1], dtype=np.float32), float(np.log(p / (1 - p)))
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(X, y, sample_weight=weight)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def choose_c(X: np.ndarray, y: np.ndarray, weight: np.ndarray, grid: tuple[float, ...] = C_GRID,
             folds: int = C_FOLDS, seed: int = 13) -> float:  # fmt: skip
    """The inverse L2 strength of `grid` with the lowest weighted log-loss in `folds`-fold cross-validation on
    these rows only (a good row and its bad twin, from one float quality, stay in the same fold)."""
    n = len(X)
    if n < 2 * folds or len(set(y.tolist())) < 2:
        return 1.0
    keys = np.unique(X, axis=0, return_inverse=True)[1].ravel()  # one text's rows stay together
    fold = np.random.default_rng(seed).permutation(keys.max() + 1)[keys] % folds
    losses = []
    for c in grid:
        loss = 0.0
        for f in range(folds):
            train, test = fold != f, fold == f
            if not test.any() or len(set(y[train].tolist())) < 2:
                continue
            w, b = fit_head(X[train], y[train], weight[train], c)
            p = np.clip(1 / (1 + np.exp(-(X[test] @ w + b))), 1e-6, 1 - 1e-6)
            loss -= float(np.sum(weight[test] * (y[test] * np.log(p) + (1 - y[test]) * np.log(1 - p))))
        losses.append(loss)
    return float(grid[int(np.argmin(losses))])


def head_is_trainable(rows: list[TriageRow], tier: str, min_rows: int) -> tuple[bool, int, float]:
    """Whether `tier` has at least `min_rows` labelled rows; (ok, rows, good share)."""
    scores = [r.scores[tier] for r in rows if tier in r.scores]
    good = float(np.mean(scores)) if scores else 0.0
    return len(scores) >= min_rows, len(scores), good
