"""Train a classification specialist: fine-tune an encoder with a mean-pooled linear head,
stop early on validation macro-F1, fit a temperature on validation logits, save.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from sklearn.metrics import f1_score

from smallfleet.calibration import ConfidenceCurve, expected_calibration_error, fit_temperature, reliability_bins
from smallfleet.data import Example, holdout_split, load_examples, validate_classification
from smallfleet.models.encoder import ENCODER_DIR, EncoderClassifier, load_base_encoder, pick_device
from smallfleet.models.resolve import resolve_base_model
from smallfleet.tasks.classify.card import write_classify_card
from smallfleet.tasks.classify.metrics import classification_metrics
from smallfleet.tasks.classify.specialist import ClassifySpecialist, compute_logits, compute_outputs
from smallfleet.tasks.recipe import (
    calibrate_on_runtimes, fit_novelty, manifest_header, out_of_scope_texts, save_specialist,
)  # fmt: skip
from smallfleet.tasks.spec import FieldMap, TaskSpec
from smallfleet.training.artifacts import check_output
from smallfleet.training.loop import fit


@dataclass
class ClassifyData:
    """Validated training, validation and optional test rows of one task."""

    train: list[Example]
    valid: list[Example]
    test: list[Example] | None
    valid_source: str
    warnings: list[str]


def load_task_data(spec: TaskSpec) -> ClassifyData:
    """Load, validate and (when no validation file is given) split a task's data."""
    f: FieldMap = spec.fields
    train = load_examples(spec.train, f.text, f.label)
    valid = load_examples(spec.valid, f.text, f.label) if spec.valid else None
    test = load_examples(spec.test, f.text, f.label) if spec.test else None
    train, report = validate_classification(train, valid, test)
    if valid is None:
        settings = spec.settings
        train, valid, how = holdout_split(train, settings.valid_fraction, settings.seed, label=lambda ex: ex.label)
        source = f"{how} of {spec.train.name}"
    else:
        source = str(spec.valid)
    return ClassifyData(train, valid, test, source, report.warnings)


def train_classifier(spec: TaskSpec, out: Path, force: bool = False, console: Console | None = None) -> dict:
    """Train, calibrate, evaluate and save a classification specialist for `spec` into `out`.

    Args:
        spec: the task: data files, field mapping, base model and training settings.
        out: specialist folder; written atomically.
        force: replace a specialist already in `out`.
        console: where progress and warnings go.

    Returns:
        The saved metrics (validation, and test when the task has a test file).

    Raises:
        SpecialistError, DataError, ModelNotFoundError: before any training starts.
    """
    console = console or Console(stderr=True)
    check_output(out, force)
    base = resolve_base_model(spec.base)
    data = load_task_data(spec)
    ood_texts = out_of_scope_texts(spec)
    for warning in data.warnings:
        console.print(f"[yellow]warning[/] {spec.name}: {warning}")
    labels = sorted({ex.label for ex in data.train})
    index = {label: i for i, label in enumerate(labels)}
    settings = spec.settings
    device = pick_device()

    encoder, tokenizer = load_base_encoder(base.path, base.gguf_file)
    torch.manual_seed(settings.seed)
    model = EncoderClassifier(encoder, len(labels)).to(device)
    train_texts = [ex.text for ex in data.train]
    encoded = tokenizer(train_texts, truncation=True, max_length=settings.max_length)["input_ids"]
    targets = torch.tensor([index[ex.label] for ex in data.train])
    valid_texts = [ex.text for ex in data.valid]
    valid_gold = np.array([index.get(ex.label, -1) for ex in data.valid])

    def step_loss(batch: list[int]) -> torch.Tensor:
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
        logits = model(padded["input_ids"].to(device), padded["attention_mask"].to(device))
        return torch.nn.functional.cross_entropy(
            logits, targets[batch].to(device), label_smoothing=settings.label_smoothing
        )

    def evaluate() -> float:
        predicted = compute_logits(model, tokenizer, valid_texts, settings.max_length, device).argmax(-1).numpy()
        return _macro_f1(valid_gold, predicted)

    console.print(
        f"[bold]{spec.name}[/]: {len(data.train)} train / {len(data.valid)} valid rows, "
        f"{len(labels)} labels, base {spec.base} on {device.type}"
    )
    result = fit(model, [len(ids) for ids in encoded], step_loss, evaluate, settings, console, spec.name)

    valid_logits = compute_logits(model, tokenizer, valid_texts, settings.max_length, device)
    known = torch.tensor(valid_gold >= 0)
    temperature = fit_temperature(valid_logits[known], torch.tensor(valid_gold)[known])
    calibration = _calibration_record(valid_logits, valid_gold, temperature)

    def embed(texts: list[str]) -> np.ndarray:
        return compute_outputs(model, tokenizer, texts, settings.max_length, device)[1].numpy()

    novelty = fit_novelty(spec, embed, train_texts, targets.numpy(), valid_texts, ood_texts, console)

    manifest = manifest_header(
        spec, base, device.type,
        train_rows=len(data.train), valid_rows=len(data.valid), valid_source=data.valid_source,
        label_counts={lab: sum(ex.label == lab for ex in data.train) for lab in labels},
    )  # fmt: skip
    manifest |= {
        "labels": labels,
        "fit": {k: v for k, v in asdict(result).items() if k != "history"},
        "history": result.history,
        "calibration": {k: calibration[k] for k in ("temperature", "ece_before", "ece_after")},
        "novelty": novelty.info if novelty else None,
    }

    if novelty:
        calibration["novelty"] = novelty.scores

    def write_weights(tmp: Path) -> None:
        model.save(tmp)
        tokenizer.save_pretrained(tmp / ENCODER_DIR)
        if novelty:
            novelty.save(tmp)

    def on_runtime(encoder: torch.nn.Module) -> tuple[dict, dict]:
        """Calibrate the classifier again with `encoder` (another runtime's copy) in place of the trained one."""
        served = EncoderClassifier(encoder, len(labels))
        served.head.load_state_dict(model.head.state_dict())
        served.eval()
        logits, pooled = compute_outputs(served, tokenizer, valid_texts, settings.max_length, torch.device("cpu"))
        own = fit_temperature(logits[known], torch.tensor(valid_gold)[known])
        facts = {"valid_accuracy": float((logits.argmax(-1).numpy() == valid_gold).mean()),
                 "torch_valid_accuracy": float((valid_logits.argmax(-1).numpy() == valid_gold).mean()),
                 "agreement_with_torch": float((logits.argmax(-1) == valid_logits.argmax(-1)).float().mean())}
        if novelty:  # the torch model's novelty threshold, on this runtime's embeddings
            facts["valid_novelty_escalated"] = float(np.mean([not novelty.accepts(v) for v in novelty.score(pooled.numpy())]))
        return _calibration_record(logits, valid_gold, own), facts

    def score(tmp: Path) -> tuple[dict, dict]:
        calibrate_on_runtimes(tmp, manifest, calibration, model.encoder, on_runtime, console)
        specialist = ClassifySpecialist(tmp, manifest, model, tokenizer, device)
        metrics = {"validation": classification_metrics([ex.label for ex in data.valid], specialist.predict(valid_texts))}
        if data.test:
            test_pred = specialist.predict([ex.text for ex in data.test])
            metrics["test"] = classification_metrics([ex.label for ex in data.test], test_pred)
            metrics["test"]["file"] = str(spec.test)
        return calibration, metrics

    return save_specialist(out, force, manifest, write_weights, score, write_classify_card, inputs=train_texts)


def _calibration_record(logits: torch.Tensor, gold: np.ndarray, temperature: float) -> dict:
    raw = torch.softmax(logits, -1).max(-1)
    scaled = torch.softmax(logits / temperature, -1).max(-1)
    correct = scaled.indices.numpy() == gold
    curve = ConfidenceCurve.from_predictions(scaled.values.numpy(), correct)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw.values.numpy(), raw.indices.numpy() == gold),
        "ece_after": expected_calibration_error(scaled.values.numpy(), correct),
        "reliability": reliability_bins(scaled.values.numpy(), correct),
        "points": curve.points(),
        "curve": curve.to_dict(),
    }


def _macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over the labels present in `gold` (the early-stopping score)."""
    return float(f1_score(gold, predicted, labels=np.unique(gold[gold >= 0]), average="macro", zero_division=0))
