"""Sentence embeddings with the packaged MiniLM encoder (mean-pooled, unit length), the space
in which drift checks compare inputs. The same encoder for every task kind, so a
generate task's prompts are compared as a classify task's texts are."""

from __future__ import annotations

import threading

import numpy as np
import torch

EMBEDDER_BASE = "minilm"
MAX_LENGTH = 128
BATCH = 64


class SentenceEmbedder:
    """Loads the encoder on first use; thread-safe; remembers the embeddings of texts it was given as a baseline."""

    def __init__(self, base: str = EMBEDDER_BASE):
        self.base = base
        self._model = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) unit-length embeddings."""
        with self._lock:
            encoder, tokenizer = self._load()
            out = []
            with torch.inference_mode():
                for start in range(0, len(texts), BATCH):
                    batch = tokenizer(texts[start : start + BATCH], truncation=True, max_length=MAX_LENGTH,
                                      padding=True, return_tensors="pt")  # fmt: skip
                    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 1))

    def embed_baseline(self, texts: list[str]) -> np.ndarray:
        """`embed`, computed once per distinct list of texts (a specialist's baseline sample)."""
        key = tuple(texts)
        if key not in self._cache:
            self._cache[key] = self.embed(texts)
        return self._cache[key]

    def _load(self):
        if self._model is None:
            from smallfleet.models.encoder import load_base_encoder
            from smallfleet.models.resolve import resolve_base_model

            base = resolve_base_model(self.base)
            encoder, tokenizer = load_base_encoder(base.path, base.gguf_file)
            self._model = (encoder.eval(), tokenizer)
        return self._model
