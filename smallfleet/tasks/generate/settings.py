"""How a generative (LoRA) specialist is fine-tuned and decodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smallfleet.settings import Settings


@dataclass
class GenerateSettings(Settings):
    """How a generative (LoRA) specialist is fine-tuned and decodes; used by kind `generate`."""

    max_steps: int = 200
    """Optimizer steps (each of batch_size x gradient_accumulation examples)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    gradient_accumulation: int = 2
    """Micro-batches summed into one optimizer step."""
    learning_rate: float = 5e-4
    """Peak LoRA learning rate (linear warmup, then linear decay)."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent warming up the learning rate."""
    max_length: int = 512
    """Longest prompt + answer in tokens; the input is cut to fit, the answer is kept."""
    gradient_checkpointing: bool = True
    """Recompute each layer's activations in the backward pass instead of keeping them: several times less
    training memory at long inputs for about a quarter more time per step (bench/generate.py --memory)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    instruction: str = ""
    """System prompt put before every input (also what the zero-shot base and the escalation tier see)."""
    max_new_tokens: int = 96
    """Default cap on generated tokens per answer."""
    quality_bar: float = 0.3
    """ROUGE-L F1 at or above which a validation answer counts as good for calibration."""
    valid_rows: int = 64
    """Most validation rows generated for calibration (generation is slow on CPU)."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many steps (0 = never)."""
    seed: int = 13
    """Seed for LoRA init, shuffling and the validation split."""
    valid_fraction: float = 0.05
    """Share of training rows held out for validation when no validation file is given."""
    novelty_method: str = "mahalanobis"
    """How far an input lies from the training inputs, on the bare base model's mean-pooled embedding of it: mahalanobis (one Gaussian, Ledoit-Wolf covariance), knn (cosine distance to the 10th nearest training input), or none (no novelty test)."""
    novelty_share: float = 0.05
    """Most of the in-distribution validation rows that may escalate for novelty: the novelty threshold is the (1 - share) quantile of their novelty (with --out-of-scope, at or above it)."""
    out_of_scope: Path | None = None
    """Out-of-scope texts (JSONL or CSV, in the task's text field) that tune the novelty threshold; never trained on as a class."""

    def __post_init__(self) -> None:
        self.check("generation", {
            "max_steps": self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "gradient_accumulation": self.gradient_accumulation >= 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "max_length": self.max_length >= 32,
            "lora_r": self.lora_r >= 1,
            "lora_alpha": self.lora_alpha >= 1,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "quality_bar": 0 < self.quality_bar <= 1,
            "valid_rows": self.valid_rows >= 2,
            "checkpoint_every": self.checkpoint_every >= 0,
            "valid_fraction": 0 < self.valid_fraction < 0.5,
            "novelty_method": self.novelty_method in ("mahalanobis", "knn", "none"),
            "novelty_share": 0 <= self.novelty_share < 1,
        })
