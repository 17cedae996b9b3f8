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

import numpy as np
import torch
from rich.console import Console

import smallfleet
from smallfleet.data import read_rows
from smallfleet.errors import DataError
from smallfleet.models.encoder_runtime import runtimes_to_calibrate
from smallfleet.models.resolve import ResolvedModel, fingerprint_base
from smallfleet.novelty import NoveltyModel
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
        "data": {**data, **({"test_note": spec.test_note} if spec.test_note else {}),
                 "fingerprint": fingerprint_files(spec.data_files())},
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


def calibrate_on_runtimes(tmp: Path, manifest: dict, calibration: dict, encoder: torch.nn.Module,
                          calibrate: Callable[[torch.nn.Module], tuple[dict, dict]], console: Console) -> None:  # fmt: skip
    """Calibrate a freshly trained encoder specialist a second time on each runtime that serves it differently
    (ONNX int8), so its confidence, threshold and guarantee hold for the model that will answer.

    For each such runtime that can run here: the runtime writes its copy of `encoder` into the staging folder
    `tmp` (e.g. onnx/encoder.int8.onnx), `calibrate(module)` redoes the kind's calibration with that module in
    place of the encoder, and the result goes under "runtimes" in calibration.json and the manifest.

    Args:
        tmp: the staging folder (weights saved).
        manifest: completed in place: manifest["runtimes"][name] = the facts `calibrate` returns plus temperature
            and ECE; manifest["calibration"]["runtimes"][name] = temperature and ECE.
        calibration: calibration.json's content, completed in place with the runtime's whole record.
        encoder: the trained torch encoder.
        calibrate: module -> (calibration record like the kind's own, facts such as validation accuracy).
        console: where the result is reported.
    """
    for runtime in runtimes_to_calibrate():
        module = runtime.load(tmp, manifest, encoder)
        record, facts = calibrate(module)
        short = {k: record[k] for k in ("temperature", "ece_before", "ece_after") if k in record}
        calibration.setdefault("runtimes", {})[runtime.name] = record
        manifest.setdefault("calibration", {}).setdefault("runtimes", {})[runtime.name] = short
        manifest.setdefault("runtimes", {})[runtime.name] = {**runtime.export_facts(), **facts, **short}
        said = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in {**facts, **short}.items())
        console.print(f"{manifest.get('name', tmp.name)}: calibrated on {runtime.describe(manifest)}: {said}")


def fit_novelty(spec: TaskSpec, embed: Callable[[list[str]], np.ndarray], train_texts: list[str],
                train_labels: np.ndarray | None, valid_texts: list[str], ood_texts: list[str] | None,
                console: Console) -> NoveltyModel | None:  # fmt: skip
    """Fit a specialist's novelty statistics on its training rows and set the threshold on validation
    (tuned on out-of-scope texts when there are some); None when the task's novelty_method is `none`.

    Args:
        spec: the task (its settings name the method, the share and the out-of-scope file).
        embed: texts -> (n, d) embeddings: the trained encoder's pooled ones, or the bare base model's (generate).
        train_texts: the rows the statistics describe.
        train_labels: their class index (`mahalanobis` keeps one mean per class); None = one class.
        valid_texts: held-out in-distribution rows the threshold is set on.
        ood_texts: the task's out-of-scope texts (`out_of_scope_texts`), never trained on; None = none given.
        console: where the result is reported.
    """
    settings = spec.settings
    if settings.novelty_method == "none":
        return None
    model = NoveltyModel.fit(settings.novelty_method, embed(train_texts), train_labels)
    ood = model.score(embed(ood_texts)) if ood_texts else None
    info = model.set_threshold(model.score(embed(valid_texts)), settings.novelty_share, ood)
    caught = f", {info['out_of_scope_escalated']:.0%} of out-of-scope" if "out_of_scope_escalated" in info else ""
    console.print(f"{spec.name}: novelty ({model.method}) threshold {info['threshold']}: escalates "
                  f"{info['valid_escalated']:.1%} of validation{caught}")  # fmt: skip
    return model


def out_of_scope_texts(spec: TaskSpec) -> list[str] | None:
    """The texts of the task's out-of-scope file (its text field), read before training; None without one.

    Raises:
        DataError: a row without the field (file and line), or no text at all.
    """
    if spec.settings.out_of_scope is None:
        return None
    return read_texts(spec.settings.out_of_scope, spec.fields.text)


def read_texts(path: Path, field: str) -> list[str]:
    """The text in field `field` of every row of `path`.

    Raises:
        DataError: a row without the field (file and line), or no text at all.
    """
    texts = []
    for line, row in read_rows(path):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{path}:{line}: row has no text in field {field!r}")
        texts.append(value)
    if not texts:
        raise DataError(f"{path}: no texts")
    return texts


def drift_baseline(inputs: list[str], seed: int = 13) -> dict:
    """A seeded sample of up to BASELINE_SAMPLE distinct training inputs (what `smallfleet drift` compares traffic with)."""
    distinct = sorted(set(inputs))
    sample = random.Random(seed).sample(distinct, min(BASELINE_SAMPLE, len(distinct)))
    return {"inputs": sample, "of": len(distinct), "seed": seed}
