"""A transformer encoder with a mean-pooled linear head, and its save/load.

Mean pooling (rather than the [CLS] pooler) matches how sentence encoders such as
all-MiniLM-L6-v2 were trained, so the head starts from meaningful features.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and init warnings (we report progress ourselves)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def pick_device() -> torch.device:
    """CUDA when present (or forced with SMALLFLEET_DEVICE), else CPU."""
    forced = os.environ.get("SMALLFLEET_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class EncoderClassifier(nn.Module):
    """Encoder -> masked mean pooling -> dropout -> linear layer over the labels."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(input_ids, attention_mask)))

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean-pooled embedding the head reads (also what novelty is measured on)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def save(self, folder: Path) -> None:
        """Write the encoder (transformers format) and the head (safetensors) into `folder`."""
        self.encoder.save_pretrained(folder / ENCODER_DIR)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(folder / HEAD_FILE))

    @classmethod
    def load(cls, folder: Path, num_labels: int) -> EncoderClassifier:
        """Rebuild a saved classifier from `folder` (offline)."""
        from transformers import AutoModel

        quiet_transformers()
        model = cls(AutoModel.from_pretrained(folder / ENCODER_DIR), num_labels)
        model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
        return model.eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the real (unpadded) tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def load_base_encoder(path: str, gguf_file: str | None = None):
    """Load a pretrained encoder and its tokenizer from a resolved base model."""
    from transformers import AutoModel, AutoTokenizer

    quiet_transformers()
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    encoder = AutoModel.from_pretrained(path, **kwargs)
    return encoder, tokenizer
