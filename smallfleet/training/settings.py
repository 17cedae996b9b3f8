"""How an encoder specialist (classify, extract, the router) is fine-tuned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smallfleet.settings import Settings


@dataclass
class TrainSettings(Settings):
    """How a specialist is fine-tuned."""

    epochs: int = 8
    """Maximum passes over the training data."""
    batch_size: int = 32
    """Examples per optimizer step."""
    learning_rate: float = 1e-4
    """Peak learning rate of the encoder (linear warmup, then linear decay)."""
    head_learning_rate: float = 2e-3
    """Peak learning rate of the freshly initialized output head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.06
    """Fraction of the steps spent warming up the learning rate."""
    label_smoothing: float = 0.1
    """Share of the target mass spread over the other labels (regularizes; temperature scaling re-calibrates)."""
    max_length: int = 128
    """Longest input in tokens; longer texts are truncated (extract: cut into windows overlapping by a quarter)."""
    patience: int = 2
    """Stop after this many epochs without a better validation score."""
    seed: int = 13
    """Seed for initialization, shuffling and the validation split."""
    valid_fraction: float = 0.1
    """Share of training rows held out for validation when no validation file is given."""
    novelty_method: str = "mahalanobis"
    """How far an input lies from the training data, on the pooled embedding: mahalanobis (nearest class mean, shared Ledoit-Wolf covariance), knn (cosine distance to the 10th nearest training text), or none (no novelty test)."""
    novelty_share: float = 0.05
    """Most of the in-distribution validation rows that may escalate for novelty: the novelty threshold is the (1 - share) quantile of their novelty (with --out-of-scope, at or above it)."""
    out_of_scope: Path | None = None
    """Out-of-scope texts (JSONL or CSV, in the task's text field) that tune the novelty threshold; never trained on as a class."""

    def __post_init__(self) -> None:
        self.check("training", {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "head_learning_rate": self.head_learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "max_length": self.max_length >= 8,
            "patience": self.patience >= 1,
            "valid_fraction": 0 < self.valid_fraction < 0.5,
            "novelty_method": self.novelty_method in ("mahalanobis", "knn", "none"),
            "novelty_share": 0 <= self.novelty_share < 1,
        })
