"""Novelty: how far an input lies from what a specialist was trained on, in its own embedding space.

A temperature-scaled softmax stays confident far from its training data, so the
confidence threshold alone lets most out-of-scope requests through with a confident,
wrong answer. Novelty is a second, independent test, computed from the pooled
embedding of the same forward pass (no second model):

- `mahalanobis` (Lee et al., 2018; Podolskiy et al., 2021 for intent detection): the
  smallest Mahalanobis distance to a class mean, with one covariance shared by all
  classes, shrunk with Ledoit-Wolf so 384 dimensions can be estimated from a few
  hundred rows.
- `knn` (Sun et al., 2022): the cosine distance to the k-th nearest training embedding.

Embeddings are L2-normalized first for both. The statistics are fitted on the training
rows; the threshold is set on held-out validation rows (training rows are too close
to themselves), optionally tuned with out-of-scope examples that are never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NOVELTY_FILE = "novelty.npz"
METHODS = ("mahalanobis", "knn")
DEFAULT_METHOD = "mahalanobis"
KNN_K = 10


def normalize(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-9, None)


@dataclass
class NoveltyModel:
    """Fitted novelty statistics of one specialist and its threshold (None = the test is off)."""

    method: str
    arrays: dict[str, np.ndarray]
    """mahalanobis: `means` (classes, d), `precision` (d, d); knn: `bank` (n, d) normalized training embeddings."""
    k: int = KNN_K
    threshold: float | None = None
    info: dict = field(default_factory=dict)
    """What the manifest records: how the threshold was set and what it escalates on validation."""
    scores: dict = field(default_factory=dict)
    """The novelty of the rows the threshold was set on (`valid`, `out_of_scope`), for calibration.json and reports."""

    @classmethod
    def fit(cls, method: str, embeddings: np.ndarray, labels: np.ndarray | None = None, k: int = KNN_K) -> NoveltyModel:
        """Fit on training embeddings (and their label indices, for `mahalanobis`; None = one class).

        Args:
            method: `mahalanobis` or `knn`.
            embeddings: (n, d) pooled embeddings of the training rows.
            labels: (n,) class index of each row.
            k: neighbour rank for `knn`.
        """
        if method not in METHODS:
            raise ValueError(f"novelty method {method!r} is not one of {', '.join(METHODS)}")
        x = normalize(embeddings)
        if method == "knn":
            return cls(method, {"bank": x}, k=max(1, min(k, len(x))))
        from sklearn.covariance import LedoitWolf

        labels = np.zeros(len(x), dtype=int) if labels is None else np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([x[labels == c].mean(0) for c in classes])
        centered = x - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centered).precision_.astype(np.float32)
        return cls(method, {"means": means.astype(np.float32), "precision": precision})

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Novelty of each row of (n, d) pooled embeddings: higher = farther from the training data."""
        x = normalize(embeddings)
        if len(x) == 0:
            return np.zeros(0)
        if self.method == "knn":
            sims = x @ self.arrays["bank"].T
            kth = -np.partition(-sims, self.k - 1, axis=1)[:, self.k - 1]
            return (1.0 - kth).astype(float)
        means, precision = self.arrays["means"], self.arrays["precision"]
        xp = x @ precision
        # (x - m)' P (x - m) for every class at once, the smallest of them
        dist = (xp * x).sum(1, keepdims=True) - 2 * xp @ means.T + ((means @ precision) * means).sum(1)[None, :]
        return np.sqrt(np.clip(dist.min(1), 0, None)).astype(float)

    def accepts(self, novelty: float | None) -> bool:
        """Whether a novelty passes the test (always, when there is no threshold)."""
        return self.threshold is None or novelty is None or novelty <= self.threshold

    def set_threshold(self, valid: np.ndarray, share: float, out_of_scope: np.ndarray | None = None) -> dict:
        """Choose the threshold from validation novelty (and out-of-scope novelty when given); returns `info`.

        Without out-of-scope examples the threshold is the (1 - share) quantile of the in-distribution
        validation novelty, so at most `share` of validation escalates for novelty. With them, it is the
        threshold at or above that quantile that best separates the two (most out-of-scope caught minus
        validation escalated), so it never escalates more than `share` of validation either.

        Args:
            valid: novelty of held-out in-distribution validation rows.
            share: most of validation that may escalate for novelty (0..1).
            out_of_scope: novelty of out-of-scope examples, never trained on.
        """
        valid = np.sort(np.asarray(valid, dtype=float))
        if len(valid) == 0:
            self.threshold = None
            self.info = {"method": self.method, "threshold": None, "source": "no validation rows: test off"}
            return self.info
        floor = float(np.quantile(valid, 1 - share, method="higher")) if share > 0 else float(valid[-1])
        chosen, source = floor, f"{1 - share:.0%} quantile of validation novelty"
        if out_of_scope is not None and len(out_of_scope):
            ood = np.sort(np.asarray(out_of_scope, dtype=float))
            cands = np.unique(np.concatenate([valid, ood]))
            cands = cands[cands >= floor]
            gain = (1 - np.searchsorted(ood, cands, side="right") / len(ood)) - \
                   (1 - np.searchsorted(valid, cands, side="right") / len(valid))  # fmt: skip
            best = int(np.argmax(gain))
            # midway to the next score up: the same split, with a margin on both sides
            chosen = float(cands[best] if best + 1 == len(cands) else (cands[best] + cands[best + 1]) / 2)
            chosen = max(chosen, floor)
            source = f"tuned on {len(ood)} out-of-scope examples (validation escalation at most {share:.0%})"
        self.threshold = chosen
        self.scores = {"threshold": chosen, "valid": [round(float(v), 4) for v in valid],
                       "out_of_scope": [round(float(v), 4) for v in np.sort(out_of_scope)] if out_of_scope is not None else []}  # fmt: skip
        self.info = {
            "method": self.method,
            "threshold": round(chosen, 6),
            "source": source,
            "share": share,
            "valid_escalated": round(float((valid > chosen).mean()), 4),
            "valid_rows": int(len(valid)),
        }
        if out_of_scope is not None and len(out_of_scope):
            self.info["out_of_scope_escalated"] = round(float((np.asarray(out_of_scope) > chosen).mean()), 4)
            self.info["out_of_scope_rows"] = int(len(out_of_scope))
        if self.method == "knn":
            self.info["k"] = self.k
        return self.info

    def save(self, folder: Path) -> None:
        """Write the statistics into the specialist folder (the threshold goes in the manifest, `info`)."""
        np.savez(Path(folder) / NOVELTY_FILE, **self.arrays)

    @classmethod
    def load(cls, folder: Path, info: dict | None) -> NoveltyModel | None:
        """The novelty model saved in `folder` with its manifest `info`; None for a specialist saved without one."""
        path = Path(folder) / NOVELTY_FILE
        if not info or not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
        return cls(info["method"], arrays, k=int(info.get("k", KNN_K)), threshold=info.get("threshold"), info=info)


def describe_novelty(info: dict | None) -> str:
    """One line for start-up logs and cards: the novelty test (a manifest's `novelty`) and what it escalates."""
    if not info:
        return "novelty test off (saved without novelty statistics)"
    if info.get("threshold") is None:
        return f"novelty test off ({info.get('source', 'no threshold')})"
    line = (f"accept novelty <= {info['threshold']:.4g} ({info['method']}): escalates "
            f"{info.get('valid_escalated', 0):.1%} of validation")  # fmt: skip
    if "out_of_scope_escalated" in info:
        line += f" and {info['out_of_scope_escalated']:.0%} of {info['out_of_scope_rows']} out-of-scope examples"
    return line


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float | None:
    """Probability that an out-of-scope row scores higher than an in-distribution one (ties count half)."""
    a, b = np.asarray(in_scores, dtype=float), np.asarray(out_scores, dtype=float)
    if not len(a) or not len(b):
        return None
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float | None:
    """Share of in-distribution rows flagged at the threshold that flags `tpr` of the out-of-scope rows."""
    a, b = np.asarray(in_scores, dtype=float), np.asarray(out_scores, dtype=float)
    if not len(a) or not len(b):
        return None
    cut = np.quantile(b, 1 - tpr, method="lower")
    return float((a >= cut).mean())


def ood_report(novelty_in: list, novelty_ood: list, confidence_in: list, confidence_ood: list,
               confidence_threshold: float, novelty_threshold: float | None) -> dict:  # fmt: skip
    """How well novelty (and, for comparison, 1 - confidence) tells in-distribution rows from out-of-scope ones,
    and what share of each group the served thresholds escalate (`smallfleet eval --ood`).

    Args:
        novelty_in, novelty_ood: novelty of each in-distribution / out-of-scope row (None when not measured).
        confidence_in, confidence_ood: the specialist's confidence on each.
        confidence_threshold: the served confidence threshold.
        novelty_threshold: the served novelty threshold; None = no novelty test.
    """
    c_in, c_ood = np.asarray(confidence_in, dtype=float), np.asarray(confidence_ood, dtype=float)
    measured = novelty_threshold is not None and None not in novelty_in and None not in novelty_ood
    n_in = np.asarray(novelty_in, dtype=float) if measured else np.zeros(len(c_in))
    n_ood = np.asarray(novelty_ood, dtype=float) if measured else np.zeros(len(c_ood))
    low_in, low_ood = c_in < confidence_threshold, c_ood < confidence_threshold
    far_in = n_in > novelty_threshold if measured else np.zeros(len(c_in), dtype=bool)
    far_ood = n_ood > novelty_threshold if measured else np.zeros(len(c_ood), dtype=bool)

    def share(mask: np.ndarray) -> float | None:
        return round(float(mask.mean()), 4) if len(mask) else None

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "n_in": int(len(c_in)),
        "n_ood": int(len(c_ood)),
        "auroc": rounded(auroc(n_in, n_ood)) if measured else None,
        "fpr_at_95tpr": rounded(fpr_at_tpr(n_in, n_ood)) if measured else None,
        "auroc_confidence": rounded(auroc(1 - c_in, 1 - c_ood)),
        "fpr_at_95tpr_confidence": rounded(fpr_at_tpr(1 - c_in, 1 - c_ood)),
        "confidence_threshold": round(confidence_threshold, 6),
        "novelty_threshold": novelty_threshold,
        "escalated_in": share(low_in | far_in),
        "escalated_ood": share(low_ood | far_ood),
        "escalated_in_confidence": share(low_in),
        "escalated_ood_confidence": share(low_ood),
        "escalated_in_novelty": share(far_in) if measured else None,
        "escalated_ood_novelty": share(far_ood) if measured else None,
        "novelty_in": [round(float(v), 4) for v in n_in] if measured else [],
        "novelty_ood": [round(float(v), 4) for v in n_ood] if measured else [],
    }
