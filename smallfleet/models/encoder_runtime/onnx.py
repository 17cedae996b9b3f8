"""Encoders on ONNX Runtime, int8: export a trained transformers encoder once, quantize it, serve it.

The export is the encoder alone (input_ids, attention_mask -> last_hidden_state), so every
kind keeps its own head and pooling in torch. Rows of a batch run one at a time (see
`OnnxEncoder.forward`), so an answer never depends on the other requests batched with it. Quantization is ONNX Runtime's dynamic int8
(`quantize_dynamic`): weights of every MatMul in int8, one scale per output channel; activations
are quantized per call, so no calibration data is needed to quantize. Per-channel scales keep
MiniLM's mean-pooled embedding at cosine 0.993 of fp32's, against 0.969 with one scale per tensor.

Training writes the file (`ONNX_FILE`) into the specialist folder and calibrates the specialist
on it a second time. An older specialist asked to serve on onnx gets its export written on first
load, beside its weights (or, in a folder it may not write, into a temporary folder), and keeps
its torch calibration: retrain it for a calibration of its own.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from smallfleet.errors import SpecialistError
from smallfleet.models.encoder_runtime.base import EncoderRuntime

ONNX_FILE = "onnx/encoder.int8.onnx"
"""Where a specialist keeps its int8 encoder, relative to its folder."""
QUANTIZATION = "int8 dynamic, per-channel weights (onnxruntime quantize_dynamic, MatMul)"
OPSET = 17


def available() -> bool:
    """Whether onnxruntime and onnx (the `onnx` extra) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def require() -> None:
    """Raises SpecialistError with the install command when the `onnx` extra is missing."""
    if not available():
        raise SpecialistError("the onnx encoder runtime needs onnxruntime and onnx: pip install 'smallfleet[onnx]'")


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs advice through the root logger; keep it off the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _LastHidden(nn.Module):
    """The encoder as a function of two tensors, the form the ONNX exporter traces."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_int8(encoder: nn.Module, out: Path) -> Path:
    """Export `encoder` to ONNX and write its int8 quantization to `out`, atomically (a crash leaves no file).

    Args:
        encoder: a transformers encoder (called with input_ids and attention_mask).
        out: the .onnx file to write.

    Returns:
        `out`.
    """
    require()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    was_training = encoder.training
    if any(p.device.type != "cpu" for p in encoder.parameters()):  # trained on a GPU: export a CPU copy
        encoder = copy.deepcopy(encoder).cpu()
    encoder.eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "last_hidden_state": {0: "batch", 1: "tokens"}}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = Path(tmp) / "encoder.fp32.onnx"
        kwargs = dict(input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes=axes, opset_version=OPSET)  # fmt: skip
        with torch.no_grad(), warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")  # the tracer's notes on constant shapes: the encoder has no such branch
            try:  # the TorchScript exporter: no onnxscript needed, and dynamic axes as given
                torch.onnx.export(_LastHidden(encoder), (ids, mask), str(fp32), dynamo=False, **kwargs)
            except TypeError:  # torch < 2.5 has no `dynamo` argument (and only that exporter)
                torch.onnx.export(_LastHidden(encoder), (ids, mask), str(fp32), **kwargs)
        staged = Path(tmp) / out.name
        with _quiet_root_logger():  # its advice to pre-process first: no gain measured on MiniLM
            quantize_dynamic(str(fp32), str(staged), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])  # fmt: skip
        os.replace(staged, out)
    encoder.train(was_training)
    return out


class OnnxEncoder(nn.Module):
    """An ONNX Runtime session standing in for a transformers encoder (CPU; returns CPU tensors)."""

    def __init__(self, path: Path, config, threads: int | None = None):
        super().__init__()
        require()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.config = config
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> SimpleNamespace:
        """Each row runs alone, on its own tokens only (padding dropped, zeros in its place in the output).

        Dynamic int8 quantizes activations with one scale per tensor, computed on the whole input: in a batch, a
        text's answer would depend on the other texts in it (measured: a novelty of 12.85 alone, 12.50 in a
        batch of 64). Alone, a request gets the same answer whoever else is asking, and no time goes to padding.
        """
        ids = input_ids.cpu().numpy().astype(np.int64)
        mask = attention_mask.cpu().numpy().astype(np.int64)
        hidden = np.zeros((*ids.shape, self.config.hidden_size), dtype=np.float32)
        for row in range(ids.shape[0]):
            keep = mask[row] > 0
            feed = {"input_ids": ids[row][keep][None, :], "attention_mask": mask[row][keep][None, :]}
            (out,) = self.session.run(None, feed)
            hidden[row, keep] = out[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))


def _has_own_export(folder: Path, manifest: dict) -> bool:
    return bool(manifest.get("runtimes", {}).get(OnnxEncoders.name)) and (Path(folder) / ONNX_FILE).is_file()


class OnnxEncoders(EncoderRuntime):
    """int8 ONNX Runtime: several times faster than fp32 torch on a CPU (bench/classify.py --runtimes)."""

    name = "onnx"
    auto_priority = 10
    calibrated_separately = True

    @classmethod
    def check(cls) -> None:
        require()

    @classmethod
    def auto_ok(cls, folder: Path, manifest: dict) -> bool:
        from smallfleet.models.encoder import pick_device

        return available() and pick_device().type == "cpu" and _has_own_export(folder, manifest)

    def load(self, folder: Path, manifest: dict, encoder: nn.Module) -> nn.Module:
        path = Path(folder) / ONNX_FILE
        if not path.is_file():  # an older specialist: export now, once
            try:
                export_int8(encoder, path)
            except OSError:  # a folder this process may not write
                path = export_int8(encoder, Path(tempfile.mkdtemp(prefix="smallfleet-onnx-")) / Path(ONNX_FILE).name)
        return OnnxEncoder(path, encoder.config)

    def export_facts(self) -> dict:
        return {"file": ONNX_FILE, "quantization": QUANTIZATION}

    def device(self, preferred: torch.device) -> torch.device:
        return torch.device("cpu")  # the session runs on the CPU and returns CPU tensors

    def describe(self, manifest: dict) -> str:
        own = bool(manifest.get("runtimes", {}).get(self.name))
        return "onnx int8" + ("" if own else " (torch's calibration: retrain for the int8 model's own)")
