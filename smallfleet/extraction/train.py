"""Train an extraction specialist: align values, tag spans, calibrate, save.

The tagger is fine-tuned with the shared loop (early stopping on validation F1:
span-level for BIO data, field-level otherwise). Calibration then fits, on
validation, a temperature on token logits and Platt scaling of field and record
confidence against whether the field / whole record came out right.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console

import smallfleet
from smallfleet.calibration import ConfidenceCurve, expected_calibration_error, fit_temperature, reliability_bins
from smallfleet.config import TaskSpec
from smallfleet.errors import ConfigError
from smallfleet.eval.extraction import extraction_metrics, same_value
from smallfleet.extraction.align import spans_to_bio
from smallfleet.extraction.data import ExtractData, ExtractExample, load_bio_rows, load_value_rows
from smallfleet.extraction.predict import Extractor, Platt
from smallfleet.extraction.schema import Schema
from smallfleet.extraction.tagger import IGNORE, EncoderTagger, bio_labels, make_windows, token_logits, window_targets
from smallfleet.models.encoder import ENCODER_DIR, load_base_encoder, pick_device
from smallfleet.models.resolve import resolve_base_model
from smallfleet.training.artifacts import MANIFEST, check_output, fingerprint_files, staged_folder, write_json
from smallfleet.training.loop import fit

VALUES_FIELDS = ("fields", "values")  # tried, in order, when rows lack the `label` field


def stride_for(max_length: int) -> int:
    """Tokens shared by consecutive windows: a quarter of the window."""
    return max(1, max_length // 4)


@dataclass
class TaskData:
    train: ExtractData
    valid: ExtractData
    test: ExtractData | None
    schema: Schema
    bio: bool
    valid_source: str


def values_field(path: Path, label: str) -> str:
    """The field holding the gold values object: `label` if rows have it, else `fields` or `values`."""
    from smallfleet.data.load import read_rows

    _, first = next(read_rows(path))
    if label in first or label != "label":
        return label
    return next((f for f in VALUES_FIELDS if f in first), label)


def load_task_data(spec: TaskSpec) -> TaskData:
    """Load (and split when no validation file is given) a task's data; derive the schema from tags if needed."""
    bio = bool(spec.fields.tokens or spec.fields.tags)
    if bio:
        tokens, tags = spec.fields.tokens or "tokens", spec.fields.tags or "tags"
        files = [load_bio_rows(p, tokens, tags) if p else None for p in (spec.train, spec.valid, spec.test)]
        seen = {t for data in files if data for ex in data.examples for t in ex.tags}
        schema = Schema.from_file(spec.schema) if spec.schema else Schema.from_tags(seen)
        unknown = sorted({t[2:] for t in seen if t != "O"} - set(schema.names))
        if unknown:
            raise ConfigError(f"{spec.schema}: the data tags field {unknown[0]!r}, which the schema does not declare")
    else:
        if spec.schema is None:
            raise ConfigError(
                f"task {spec.name!r}: value-labelled data needs --schema (or --tokens-field/--tags-field for BIO data)"
            )
        schema = Schema.from_file(spec.schema)
        files = [
            load_value_rows(p, schema, spec.fields.text, values_field(p, spec.fields.label)) if p else None
            for p in (spec.train, spec.valid, spec.test)
        ]
    train, valid, test = files
    source = str(spec.valid)
    if valid is None:
        import random

        order = list(range(len(train.examples)))
        random.Random(spec.training.seed).shuffle(order)
        cut = max(1, int(round(spec.training.valid_fraction * len(order))))
        held = set(order[:cut])
        valid = ExtractData([train.examples[i] for i in sorted(held)], 0, [])
        train = ExtractData([e for i, e in enumerate(train.examples) if i not in held], train.values, train.unaligned)
        source = f"{spec.training.valid_fraction:.0%} random split of {spec.train.name} (seed {spec.training.seed})"
    return TaskData(train, valid, test, schema, bio, source)


def gold_record(schema: Schema, example: ExtractExample) -> dict:
    """The example's gold values normalized to the schema (a value that fails its type stays as written)."""
    return schema.normalize_record(example.values)[0]


def score(extractor: Extractor, examples: list[ExtractExample], bio: bool) -> tuple[dict, list]:
    """Extraction metrics of `extractor` on `examples`, and its extractions."""
    out = extractor.extract([e.text for e in examples])
    gold = [gold_record(extractor.schema, e) for e in examples]
    gold_tags = pred_tags = None
    if bio:
        gold_tags = [e.tags for e in examples]
        pred_tags = [spans_to_bio([s.span for s in x.spans], e.word_offsets) for x, e in zip(out, examples)]
    metrics = extraction_metrics(
        gold,
        [x.record for x in out],
        [x.record_confidence for x in out],
        [x.valid for x in out],
        extractor.schema.names,
        gold_tags,
        pred_tags,
    )
    return metrics, out


def train_extractor(spec: TaskSpec, out: Path, force: bool = False, console: Console | None = None) -> dict:
    """Train, calibrate, evaluate and save an extraction specialist for `spec` into `out`.

    Args:
        spec: the task: data files, schema, field mapping, base model and training settings.
        out: specialist folder; written atomically.
        force: replace a specialist already in `out`.
        console: where progress and warnings go.

    Returns:
        The saved metrics (validation, and test when the task has a test file).
    """
    console = console or Console(stderr=True)
    check_output(out, force)
    base = resolve_base_model(spec.base)
    data = load_task_data(spec)
    if data.train.unaligned:
        console.print(
            f"[yellow]warning[/] {spec.name}: {len(data.train.unaligned)} of {data.train.values} gold values could not "
            f"be aligned to their text; their rows are left out of training, e.g. {data.train.unaligned[0]}"
        )
    train_rows = [e for e in data.train.examples if not e.unaligned]
    labels = bio_labels(data.schema.names)
    index = {lab: i for i, lab in enumerate(labels)}
    settings, device = spec.training, pick_device()
    stride = stride_for(settings.max_length)

    encoder, tokenizer = load_base_encoder(base.path, base.gguf_file)
    torch.manual_seed(settings.seed)
    model = EncoderTagger(encoder, len(labels)).to(device)
    windows = make_windows(tokenizer, [e.text for e in train_rows], settings.max_length, stride)
    targets = [window_targets(w, train_rows[w.text_index].spans, index) for w in windows]
    extractor = Extractor(model, tokenizer, data.schema, labels, settings.max_length, stride, device)

    def step_loss(batch: list[int]) -> torch.Tensor:
        padded = tokenizer.pad({"input_ids": [windows[i].input_ids for i in batch]}, return_tensors="pt")
        width = padded["input_ids"].shape[1]
        gold = torch.tensor([targets[i] + [IGNORE] * (width - len(targets[i])) for i in batch])
        logits = model(padded["input_ids"].to(device), padded["attention_mask"].to(device))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), gold.flatten().to(device), ignore_index=IGNORE)

    def evaluate() -> float:
        return score(extractor, data.valid.examples, data.bio)[0]["f1"]

    console.print(
        f"[bold]{spec.name}[/]: {len(train_rows)} train ({len(windows)} windows of <= {settings.max_length} tokens) / "
        f"{len(data.valid.examples)} valid rows, {len(data.schema.names)} fields, base {spec.base} on {device.type}"
    )
    result = fit(model, [len(w.input_ids) for w in windows], step_loss, evaluate, settings, console, spec.name)
    calibration = calibrate(extractor, data.valid.examples)

    manifest = {
        "kind": "extract",
        "name": spec.name,
        "smallfleet_version": smallfleet.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "schema": data.schema.to_json_schema(),
        "labels": labels,
        "format": "bio" if data.bio else "values",
        "stride": stride,
        "base": {"ref": spec.base, "source": base.source, "path": base.path},
        "fields": asdict(spec.fields),
        "training": asdict(settings),
        "fit": {k: v for k, v in asdict(result).items() if k != "history"},
        "history": result.history,
        "data": {
            "train_rows": len(train_rows),
            "train_windows": len(windows),
            "valid_rows": len(data.valid.examples),
            "valid_source": data.valid_source,
            "values": data.train.values,
            "unaligned": len(data.train.unaligned),
            "unaligned_examples": data.train.unaligned[:10],
            "fingerprint": fingerprint_files([spec.train, spec.valid, spec.schema]),
        },
        "calibration": {k: v for k, v in calibration.items() if k not in ("curve", "points", "reliability")},
        "machine": {
            "device": device.type,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
    }
    from smallfleet.extraction.card import write_extract_card

    with staged_folder(out, force) as tmp:
        model.save(tmp)
        tokenizer.save_pretrained(tmp / ENCODER_DIR)
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / "calibration.json", calibration)
        metrics = {"validation": score(extractor, data.valid.examples, data.bio)[0]}
        if data.test:
            metrics["test"] = score(extractor, data.test.examples, data.bio)[0]
            metrics["test"]["file"] = str(spec.test)
        write_json(tmp / "metrics.json", metrics)
        write_extract_card(tmp, manifest, metrics)
    return metrics


def calibrate(extractor: Extractor, examples: list[ExtractExample]) -> dict:
    """Fit temperature, field and record Platt scaling on validation; return calibration.json's content."""
    texts = [e.text for e in examples]
    scores = token_logits(
        extractor.model, extractor.tokenizer, texts, extractor.max_length, extractor.stride, extractor.device
    )
    index = {lab: i for i, lab in enumerate(extractor.labels)}
    logits, gold = [], []
    for s, e in zip(scores, examples):
        tags = _token_tags(s.offsets, e, index)
        logits.append(s.logits)
        gold += tags
    extractor.temperature = fit_temperature(torch.cat(logits), torch.tensor(gold)) if gold else 1.0
    extractor.field_platt, extractor.record_platt = Platt(), Platt()
    out = extractor.extract(texts)
    golds = [gold_record(extractor.schema, e) for e in examples]
    raw, right = [], []
    for x, g in zip(out, golds):
        for name in extractor.schema.names:
            raw.append(x.raw_confidence[name])
            right.append(_field_right(name, g, x.record))
    extractor.field_platt = Platt.fit(raw, right)
    out = extractor.extract(texts)
    exact = [all(_field_right(n, g, x.record) for n in extractor.schema.names) for x, g in zip(out, golds)]
    before = [x.raw_record_confidence for x in out]
    extractor.record_platt = Platt.fit(before, exact)
    after = [extractor.record_platt(c) for c in before]
    curve = ConfidenceCurve.from_predictions(after, exact)
    return {
        "temperature": extractor.temperature,
        "field_platt": asdict(extractor.field_platt),
        "record_platt": asdict(extractor.record_platt),
        "ece_before": expected_calibration_error(before, exact),
        "ece_after": expected_calibration_error(after, exact),
        "reliability": reliability_bins(after, exact),
        "points": curve.points(),
        "curve": curve.to_dict(),
    }


def _field_right(name: str, gold: dict, predicted: dict) -> bool:
    if name not in gold or name not in predicted:
        return name not in gold and name not in predicted
    return same_value(gold[name], predicted[name])


def _token_tags(offsets: list[tuple[int, int]], example: ExtractExample, index: dict[str, int]) -> list[int]:
    """Gold label id of each token (by character offsets) of one example."""
    from smallfleet.extraction.tagger import Window

    return window_targets(Window(0, [], list(offsets)), example.spans, index)
