"""Frozen sentence embeddings for triage: the base encoder, mean-pooled and L2-normalized.

Triage reads a request once and predicts, per tier, whether that tier's answer will be good
enough. A frozen encoder with one small head per tier trains in seconds on a CPU and learns
from a few hundred labelled rows; fine-tuning the encoder would need far more rows per tier.
"""

from __future__ import annotations

import numpy as np
import torch

from smallfleet.models.encoder import load_base_encoder
from smallfleet.models.resolve import resolve_base_model

DEFAULT_BASE = "minilm"
MAX_LENGTH = 256
BATCH = 32


class Embedder:
    """Texts -> unit vectors from a frozen base encoder (loaded offline)."""

    def __init__(self, base: str = DEFAULT_BASE, max_length: int = MAX_LENGTH):
        resolved = resolve_base_model(base)
        self.base = base
        self.max_length = max_length
        self.encoder, self.tokenizer = load_base_encoder(resolved.path, resolved.gguf_file)
        self.encoder.eval()

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    @torch.inference_mode()
    def embed(self, texts: list[str], batch: int = BATCH, progress=None) -> np.ndarray:
        """One float32 row per text; `progress(done, total)` is called after each batch when given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        for start in range(0, len(texts), batch):
            idx = order[start : start + batch]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")  # fmt: skip
            hidden = self.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
            if progress:
                progress(min(start + batch, len(texts)), len(texts))
        return out
