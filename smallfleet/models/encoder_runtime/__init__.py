"""Where an encoder specialist's transformer runs when it serves: torch (fp32) or ONNX Runtime (int8).

Classify, extract and the router keep their encoder in transformers format (`encoder/`) and
train on torch. For serving, the encoder module inside their model is swapped for the chosen
runtime's: `serving_encoder(folder, manifest, encoder)`. The head, pooling, calibration and
novelty code around it stay the same; only the transformer's forward pass changes.

The runtimes are the `smallfleet.encoder_runtimes` registry (`ENCODER_RUNTIMES`): subclasses
of `base.EncoderRuntime`. smallfleet ships two:
- torch (`base.TorchEncoders`, always available): the trained fp32 weights as they are.
- onnx (`onnx.OnnxEncoders`, the `onnx` extra): the encoder exported to ONNX and int8-quantized
  (dynamic, per channel), run by ONNX Runtime. Training exports it and calibrates the specialist
  on it a second time (its own temperature and confidence curve), so the cascade's guarantee
  holds for the model that actually answers.

`auto` takes ONNX for a specialist whose folder holds the int8 export with its own calibration,
on a CPU, when onnxruntime is installed; torch otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from smallfleet.errors import SpecialistError
from smallfleet.models.encoder_runtime.base import EncoderRuntime
from smallfleet.registry import Registry

if TYPE_CHECKING:  # the CLI lists the runtimes without importing torch
    from torch import nn

ENCODER_RUNTIME_ENV = "SMALLFLEET_ENCODER_RUNTIME"
"""Environment variable naming the encoder runtime when the caller names none (`--runtime onnx|torch`)."""
AUTO = "auto"

ENCODER_RUNTIMES: Registry[type[EncoderRuntime]] = Registry("smallfleet.encoder_runtimes", "encoder runtime")


def encoder_runtime_names() -> tuple[str, ...]:
    """The name of every registered encoder runtime (nothing is imported)."""
    return tuple(ENCODER_RUNTIMES.names())


def choose_encoder_runtime(folder: Path, manifest: dict, runtime: str | None = None) -> EncoderRuntime:
    """The runtime the encoder of the specialist in `folder` serves on: `runtime`, else $SMALLFLEET_ENCODER_RUNTIME,
    else auto (the registered runtimes, highest `auto_priority` first, the first whose `auto_ok` says yes).

    Raises:
        SpecialistError: an unknown runtime, or one named explicitly that cannot run here.
    """
    runtime = runtime or os.environ.get(ENCODER_RUNTIME_ENV) or AUTO
    names = encoder_runtime_names()
    if runtime != AUTO:
        if runtime not in names:
            raise SpecialistError(f"unknown encoder runtime {runtime!r} (choose from {', '.join((AUTO, *names))})")
        chosen = ENCODER_RUNTIMES.get(runtime, error=SpecialistError)
        chosen.check()
        return chosen()
    classes = [ENCODER_RUNTIMES.get(name, error=SpecialistError) for name in names]
    for cls in sorted(classes, key=lambda c: -c.auto_priority):  # stable: ties keep registry order
        if cls.auto_ok(Path(folder), manifest):
            return cls()
    raise SpecialistError(f"no encoder runtime can serve {folder} (tried {', '.join(names) or 'none'})")


def serving_encoder(folder: Path, manifest: dict, encoder: nn.Module,
                    runtime: str | None = None) -> tuple[nn.Module, EncoderRuntime]:  # fmt: skip
    """The encoder module to serve the specialist in `folder` with, and the runtime it runs on.

    Args:
        folder: the specialist's folder.
        manifest: its manifest (says whether an export with its own calibration is there).
        encoder: the trained torch encoder, as loaded.
        runtime: a runtime's name; None = $SMALLFLEET_ENCODER_RUNTIME, else auto.
    """
    chosen = choose_encoder_runtime(folder, manifest, runtime)
    return chosen.load(Path(folder), manifest, encoder), chosen


def runtime_calibration(calibration: dict, runtime: str) -> dict:
    """The calibration of a specialist on `runtime`: the runtime's own record when training made one, else the
    torch model's (e.g. an older specialist exported on first load). Works on manifest["calibration"] and on
    calibration.json alike: both keep the per-runtime records under "runtimes"."""
    return calibration.get("runtimes", {}).get(runtime) or calibration


def runtimes_to_calibrate() -> list[EncoderRuntime]:
    """The runtimes a freshly trained encoder is exported to and calibrated on a second time: those that calibrate
    separately and can run here, unless $SMALLFLEET_ENCODER_RUNTIME names another (`train --runtime torch`)."""
    asked = os.environ.get(ENCODER_RUNTIME_ENV) or AUTO
    out = []
    for name in encoder_runtime_names():
        cls = ENCODER_RUNTIMES.get(name, error=SpecialistError)
        if not cls.calibrated_separately or asked not in (AUTO, name):
            continue
        try:
            cls.check()
        except SpecialistError:
            continue
        out.append(cls())
    return out
