"""The `EncoderRuntime` interface, and torch: the trained fp32 encoder as it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # the CLI lists the runtimes without importing torch
    import torch
    from torch import nn


class EncoderRuntime:
    """How an encoder specialist's transformer runs when it serves. Subclasses register in `ENCODER_RUNTIMES`."""

    name: ClassVar[str]
    auto_priority: ClassVar[int] = 0
    """`auto` asks the runtimes with the highest priority first."""
    calibrated_separately: ClassVar[bool] = False
    """True when training calibrates the specialist on this runtime a second time (records under "runtimes")."""

    @classmethod
    def check(cls) -> None:
        """Raise SpecialistError when this runtime cannot run here (asked for by name)."""

    @classmethod
    def auto_ok(cls, folder: Path, manifest: dict) -> bool:
        """Whether `auto` should serve the specialist in `folder` on this runtime."""
        return False

    def load(self, folder: Path, manifest: dict, encoder: nn.Module) -> nn.Module:
        """The module that replaces `encoder` (called like a transformers encoder: input_ids, attention_mask ->
        an object with `last_hidden_state`)."""
        raise NotImplementedError

    def describe(self, manifest: dict) -> str:
        """`serve`'s start-up words for it, e.g. "onnx int8"."""
        return self.name

    def export_facts(self) -> dict:
        """What the manifest records about this runtime's copy of a trained encoder (file, quantization)."""
        return {}

    def device(self, preferred: torch.device) -> torch.device:
        """Where the rest of the model (head, pooling) runs beside this encoder: `preferred` unless it must be CPU."""
        return preferred


class TorchEncoders(EncoderRuntime):
    """The trained fp32 weights in torch, as they are (also on a GPU)."""

    name = "torch"
    auto_priority = 0

    @classmethod
    def auto_ok(cls, folder: Path, manifest: dict) -> bool:
        return True

    def load(self, folder: Path, manifest: dict, encoder: nn.Module) -> nn.Module:
        return encoder

    def describe(self, manifest: dict) -> str:
        return "torch fp32"
