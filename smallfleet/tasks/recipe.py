"""The tail every training recipe shares: the manifest header and the crash-safe save of
weights, manifest, calibration, metrics and card.

A kind's recipe loads its data, fits its model and calibrates it; then it hands over here,
so every specialist folder is written the same way and records the same facts: kind,
name, versions, base model with its SHA-256, field mapping, settings, the data
fingerprint (every file it was trained from, a schema included) and the machine.
"""

from __future__ import annotations

import dataclasses
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

import smallfleet
from smallfleet.models.resolve import ResolvedModel, fingerprint_base
from smallfleet.tasks.spec import TaskSpec
from smallfleet.training.artifacts import (
    CALIBRATION, DRIFT_BASELINE, MANIFEST, METRICS, fingerprint_files, staged_folder, write_json,
)  # fmt: skip

BASELINE_SAMPLE = 256  # training inputs kept for the input drift test: enough for an MMD test, small on disk


def settings_record(settings) -> dict:
    """A settings dataclass as JSON-ready values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()}


def manifest_header(spec: TaskSpec, base: ResolvedModel, device: str = "cpu", **data: object) -> dict:
    """The manifest keys every specialist has; `data` adds the kind's counts to the `data` section.

    Args:
        spec: the task trained.
        base: the resolved base model (recorded by reference, location and SHA-256).
        device: what the model trained on.
        data: e.g. train_rows, valid_rows, valid_source.
    """
    return {
        "kind": spec.kind,
        "name": spec.name,
        "smallfleet_version": smallfleet.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": {"ref": spec.base, "source": base.source, "path": base.path, "gguf_file": base.gguf_file,
                 "sha256": fingerprint_base(base)},  # fmt: skip
        "fields": dataclasses.asdict(spec.fields),
        spec.task_kind.settings_key: settings_record(spec.settings),
        "data": {**data, "fingerprint": fingerprint_files(spec.data_files())},
        "cascade": {"target": spec.target, "delta": spec.delta},
        "machine": {"device": device, "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
    }


def save_specialist(
    out: Path,
    force: bool,
    manifest: dict,
    write_weights: Callable[[Path], None],
    evaluate: Callable[[Path], tuple[dict, dict]],
    write_card: Callable[[Path, dict, dict, dict], None],
    inputs: list[str] | None = None,
) -> dict:
    """Write a specialist into `out` atomically; returns its metrics.

    Args:
        out: the specialist folder; replaced only when everything is saved.
        force: replace a specialist already there.
        manifest: the manifest (header plus the kind's keys); `evaluate` may complete it.
        write_weights: saves the model into the staging folder.
        evaluate: given the staging folder (weights saved), returns (calibration, metrics).
        write_card: writes README.md (and plots) from (folder, manifest, metrics, calibration).
        inputs: the training inputs; a seeded sample of them is kept as the drift baseline.
    """
    with staged_folder(out, force) as tmp:
        write_weights(tmp)
        calibration, metrics = evaluate(tmp)
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / CALIBRATION, calibration)
        write_json(tmp / METRICS, metrics)
        if inputs:
            write_json(tmp / DRIFT_BASELINE, drift_baseline(inputs))
        write_card(tmp, manifest, metrics, calibration)
    return metrics


def drift_baseline(inputs: list[str], seed: int = 13) -> dict:
    """A seeded sample of up to BASELINE_SAMPLE distinct training inputs (what `smallfleet drift` compares traffic with)."""
    distinct = sorted(set(inputs))
    sample = random.Random(seed).sample(distinct, min(BASELINE_SAMPLE, len(distinct)))
    return {"inputs": sample, "of": len(distinct), "seed": seed}
