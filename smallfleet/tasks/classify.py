"""Task kind `classify`: text -> one label from a fixed set.

Training fine-tunes an encoder with a mean-pooled linear head, stops early on
validation macro-F1, fits a temperature on validation logits, and saves the
specialist (weights, tokenizer, labels, settings, calibration, metrics, card).
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from sklearn.metrics import f1_score

import smallfleet
from smallfleet.calibration import ConfidenceCurve, expected_calibration_error, fit_temperature, reliability_bins
from smallfleet.card import write_card
from smallfleet.config import FieldMap, TaskSpec
from smallfleet.data import Example, load_examples, stratified_split, validate_classification
from smallfleet.eval.classification import classification_metrics
from smallfleet.eval.report import print_classification_report
from smallfleet.models.encoder import ENCODER_DIR, EncoderClassifier, load_base_encoder, pick_device
from smallfleet.models.resolve import resolve_base_model
from smallfleet.tasks.base import Answer, AnswerOptions, EscalationRequest, Prediction, Specialist
from smallfleet.training.artifacts import (
    MANIFEST,
    check_output,
    fingerprint_files,
    read_json,
    staged_folder,
    write_json,
)
from smallfleet.training.loop import fit

PREDICT_BATCH = 64
TOP_K = 3


def _batches(tokenizer, texts: list[str], max_length: int, device: torch.device, batch_size: int = PREDICT_BATCH):
    """Yield (original indices, tensors) for `texts`, batched by similar length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        yield idx, {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def compute_logits(model, tokenizer, texts: list[str], max_length: int, device: torch.device) -> torch.Tensor:
    """Raw logits for `texts`, in input order."""
    out = torch.empty(len(texts), model.head.out_features)
    with torch.inference_mode():
        for idx, batch in _batches(tokenizer, texts, max_length, device):
            out[idx] = model(**batch).float().cpu()
    return out


class ClassifySpecialist(Specialist):
    """A saved classifier with calibrated confidence."""

    kind = "classify"

    def __init__(self, folder: Path, manifest: dict, model: EncoderClassifier, tokenizer, device: torch.device):
        super().__init__(folder, manifest)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.labels: list[str] = manifest["labels"]
        self.temperature: float = manifest["calibration"]["temperature"]
        self.max_length: int = manifest["training"]["max_length"]

    @classmethod
    def load(cls, folder: Path) -> ClassifySpecialist:
        from transformers import AutoTokenizer

        manifest = read_json(folder / MANIFEST)
        model = EncoderClassifier.load(folder, len(manifest["labels"]))
        tokenizer = AutoTokenizer.from_pretrained(folder / ENCODER_DIR)
        return cls(folder, manifest, model, tokenizer, pick_device())

    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Calibrated class probabilities, shape (len(texts), len(labels))."""
        logits = compute_logits(self.model, self.tokenizer, texts, self.max_length, self.device)
        return torch.softmax(logits / self.temperature, dim=-1)

    def predict(self, texts: list[str], top_k: int = TOP_K) -> list[Prediction]:
        if not texts:
            return []
        probs = self.probabilities(texts)
        values, indices = probs.topk(min(top_k, len(self.labels)), dim=-1)
        return [
            Prediction(
                label=self.labels[int(ix[0])],
                confidence=float(vals[0]),
                top_k=[(self.labels[int(i)], float(v)) for v, i in zip(vals, ix)],
            )
            for vals, ix in zip(values, indices)
        ]

    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        return [
            Answer(content=p.label, confidence=p.confidence, detail={"top_k": p.to_dict()["top_k"]})
            for p in self.predict(texts)
        ]

    def escalation_request(self, text: str) -> EscalationRequest:
        labels = "\n".join(f"- {label}" for label in self.labels)
        instruction = (
            f"Classify the text for the task '{self.name}'. Answer with exactly one label from this list "
            f"and nothing else:\n{labels}"
        )
        return EscalationRequest(
            messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}]
        )

    def parse_escalation(self, reply: str) -> Answer | None:
        label = match_label(reply, self.labels)
        return None if label is None else Answer(content=label, confidence=1.0)


SPECIALIST = ClassifySpecialist


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def match_label(reply: str, labels: list[str]) -> str | None:
    """Map a model's free-text reply to one of `labels`, or None when it names none or several.

    Accepts the exact label, a case/punctuation variant ("Card Arrival." -> card_arrival),
    or a reply that mentions exactly one label as a whole phrase.
    """
    normalized = {_norm(label): label for label in labels}
    reply_norm = _norm(reply)
    if reply_norm in normalized:
        return normalized[reply_norm]
    found = {label for key, label in normalized.items() if key and re.search(rf"\b{re.escape(key)}\b", reply_norm)}
    # a label that is a sub-phrase of another found label ("card" in "card arrival") does not count twice
    found = {a for a in found if not any(a != b and _norm(a) in _norm(b) for b in found)}
    return found.pop() if len(found) == 1 else None


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
        train, valid = stratified_split(train, spec.training.valid_fraction, spec.training.seed)
        source = f"{spec.training.valid_fraction:.0%} stratified split of {spec.train.name} (seed {spec.training.seed})"
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
    for warning in data.warnings:
        console.print(f"[yellow]warning[/] {spec.name}: {warning}")
    labels = sorted({ex.label for ex in data.train})
    index = {label: i for i, label in enumerate(labels)}
    settings = spec.training
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

    manifest = {
        "kind": "classify",
        "name": spec.name,
        "smallfleet_version": smallfleet.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "labels": labels,
        "base": {"ref": spec.base, "source": base.source, "path": base.path},
        "fields": asdict(spec.fields),
        "training": asdict(settings),
        "fit": {k: v for k, v in asdict(result).items() if k != "history"},
        "history": result.history,
        "data": {
            "train_rows": len(data.train),
            "valid_rows": len(data.valid),
            "valid_source": data.valid_source,
            "label_counts": {lab: sum(ex.label == lab for ex in data.train) for lab in labels},
            "fingerprint": fingerprint_files([spec.train, spec.valid]),
        },
        "calibration": {k: calibration[k] for k in ("temperature", "ece_before", "ece_after")},
        "machine": {"device": device.type, "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
    }
    with staged_folder(out, force) as tmp:
        model.save(tmp)
        tokenizer.save_pretrained(tmp / ENCODER_DIR)
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / "calibration.json", calibration)
        specialist = ClassifySpecialist(tmp, manifest, model, tokenizer, device)
        metrics = {"validation": classification_metrics([ex.label for ex in data.valid], specialist.predict(valid_texts))}
        if data.test:
            test_pred = specialist.predict([ex.text for ex in data.test])
            metrics["test"] = classification_metrics([ex.label for ex in data.test], test_pred)
            metrics["test"]["file"] = str(spec.test)
        write_json(tmp / "metrics.json", metrics)
        write_card(tmp, manifest, metrics, calibration)
    return metrics


train = train_classifier


def evaluate(specialist: ClassifySpecialist, data: Path, console: Console, **fields: str | None) -> dict:
    """Score `specialist` on the labelled file `data` and print the report.

    Args:
        fields: `text` / `label` field names overriding those the specialist was trained with; `limit`: first N rows.
    """
    from smallfleet.data.validate import check_rows

    trained = specialist.manifest.get("fields", {})
    text_field = fields.get("text") or trained.get("text", "text")
    label_field = fields.get("label") or trained.get("label", "label")
    examples = load_examples(data, text_field, label_field)[: fields.get("limit") or None]
    check_rows(examples, str(data))
    metrics = classification_metrics([ex.label for ex in examples], specialist.predict([ex.text for ex in examples]))
    metrics["data"] = str(data)
    print_classification_report(metrics, console, title=f"{specialist.name} on {data}")
    return metrics


def print_report(metrics: dict, console: Console, title: str) -> None:
    """Print one split's metrics as written by `train`."""
    print_classification_report(metrics, console, title=title)


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
