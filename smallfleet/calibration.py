"""Calibrated confidence: temperature scaling, expected calibration error, and the
accuracy-vs-confidence curve that later tiers use to pick escalation thresholds.

A fine-tuned network is usually over-confident. Temperature scaling (Guo et al.,
2017) divides the logits by one scalar T fitted on validation data; it changes
confidences, never the predicted label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """Return the temperature T > 0 that minimises validation NLL of softmax(logits / T).

    Args:
        logits: (n, num_labels) raw scores on validation data.
        labels: (n,) gold label indices.
        max_iter: L-BFGS iterations.
    """
    logits = logits.detach().double()
    labels = labels.detach().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = log_t.detach().exp().item()
    return min(max(t, 0.05), 20.0)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per-bin count, mean confidence and accuracy (for the reliability diagram)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(mask.sum()),
                "confidence": float(confidence[mask].mean()) if mask.any() else None,
                "accuracy": float(correct[mask].mean()) if mask.any() else None,
            }
        )
    return out


@dataclass
class ConfidenceCurve:
    """Accuracy of the answers accepted at each confidence threshold, from validation data.

    Stored as the validation confidences sorted high to low with whether each
    answer was right, so any threshold or coverage can be computed exactly.
    """

    confidence: np.ndarray
    correct: np.ndarray

    @classmethod
    def from_predictions(cls, confidence: np.ndarray, correct: np.ndarray) -> ConfidenceCurve:
        order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
        return cls(np.asarray(confidence, dtype=float)[order], np.asarray(correct, dtype=bool)[order])

    def accuracy_at_coverage(self, coverage: float) -> float:
        """Accuracy on the most confident `coverage` share of inputs."""
        n = len(self.confidence)
        if n == 0:
            return float("nan")
        k = max(1, int(round(coverage * n)))
        return float(self.correct[:k].mean())

    def coverage_table(self, levels: tuple[float, ...] = (0.8, 0.9, 0.95, 1.0)) -> dict[str, float]:
        """Map "0.8"/"0.9"/... to accuracy on that most-confident share (the risk-coverage table)."""
        return {str(level): self.accuracy_at_coverage(level) for level in levels}

    def threshold_for(self, target_accuracy: float) -> tuple[float, float]:
        """Lowest threshold at which the accepted answers' accuracy is still >= target.

        This accepts as many answers as possible (least escalation cost) while
        meeting the quality target on validation data.

        Returns:
            (threshold, coverage). When no threshold reaches the target, threshold is
            just above the top confidence (accept nothing) and coverage is 0.
        """
        n = len(self.confidence)
        if n == 0:
            return 1.0, 0.0
        running = np.cumsum(self.correct) / np.arange(1, n + 1)
        # accepting the top k answers is only possible at a cut between distinct confidences
        cut = np.append(self.confidence[1:] < self.confidence[:-1], True)
        admissible = np.flatnonzero(cut & (running >= target_accuracy))
        if len(admissible) == 0:
            return float(min(1.0, self.confidence[0] + 1e-6)), 0.0
        k = admissible[-1] + 1
        return float(self.confidence[k - 1]), k / n

    def coverage_at(self, threshold: float) -> float:
        """Share of validation answers whose confidence reaches `threshold` (those accepted)."""
        return float((self.confidence >= threshold).mean()) if len(self.confidence) else 0.0

    def points(self, steps: int = 100) -> list[dict]:
        """The curve sampled at `steps` coverage levels, for cards and plots."""
        n = len(self.confidence)
        out = []
        for i in range(1, steps + 1):
            k = max(1, int(round(i / steps * n)))
            out.append(
                {"coverage": k / n, "threshold": float(self.confidence[k - 1]), "accuracy": float(self.correct[:k].mean())}
            )
        return out

    def to_dict(self) -> dict:
        return {"confidence": [round(float(c), 6) for c in self.confidence], "correct": [bool(c) for c in self.correct]}

    @classmethod
    def from_dict(cls, data: dict) -> ConfidenceCurve:
        return cls(np.asarray(data["confidence"], dtype=float), np.asarray(data["correct"], dtype=bool))


@dataclass
class LogisticMap:
    """p(right) = sigmoid(coef . features + intercept), fitted on validation correctness.

    The one confidence map of the kinds that calibrate with a logistic fit: extract maps a
    field's (or record's) raw confidence through its logit (Platt scaling), generate maps an
    answer's mean and minimum token log-probability. When the fit is not possible (too few
    rows, or all answers right or all wrong) the map falls back to `fallback`.
    """

    coef: list[float]
    intercept: float = 0.0
    constant: float | None = None
    """When set, every input maps to this probability."""

    def __call__(self, features) -> float:
        if self.constant is not None:
            return float(self.constant)
        z = self.intercept + float(np.dot(self.coef, np.asarray(features, dtype=float)))
        return float(1.0 / (1.0 + np.exp(-max(-40.0, min(40.0, z)))))

    @classmethod
    def fit(cls, features, correct, c: float = 1.0, min_rows: int = 1, fallback: LogisticMap | None = None) -> LogisticMap:
        """Logistic regression of right-vs-wrong on `features` (n rows x k).

        Args:
            c: inverse regularization strength (sklearn's C).
            min_rows: fewer rows than this gives the fallback.
            fallback: the map used when no fit is possible; default a constant at the share right.
        """
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(correct, dtype=int)
        x = np.asarray(features, dtype=float).reshape(len(y), -1)
        if len(y) < min_rows or len(set(y.tolist())) < 2:
            return fallback or cls(coef=[0.0] * x.shape[1], constant=float(y.mean()) if len(y) else 0.5)
        fitted = LogisticRegression(C=c).fit(x, y)
        return cls(coef=[float(v) for v in fitted.coef_[0]], intercept=float(fitted.intercept_[0]))

    def to_dict(self) -> dict:
        return {"constant": self.constant} if self.constant is not None else {"coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: dict) -> LogisticMap:
        """Read `to_dict`'s output (and the older {"a", "b"} Platt form)."""
        if data.get("constant") is not None:
            return cls(coef=[], constant=float(data["constant"]))
        if "a" in data:
            return cls(coef=[float(data["a"])], intercept=float(data["b"]))
        return cls(coef=[float(v) for v in data["coef"]], intercept=float(data["intercept"]))


def logit(p: float) -> float:
    """log(p / (1 - p)), with p clipped away from 0 and 1."""
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))
