"""Train an extraction specialist: align values, tag spans, calibrate, save.

The tagger is fine-tuned with the shared loop (early stopping on validation F1:
span-level for BIO data, field-level otherwise). Calibration then fits, on
validation, a temperature on token logits and Platt scaling of field and record
confidence against whether the field / whole record came out right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from smallfleet.calibration import ConfidenceCurve, expected_calibration_error, fit_temperature, reliability_bins
from smallfleet.data import holdout_split
from smallfleet.errors import ConfigError
from smallfleet.tasks.extract.metrics import gold_record, same_value, score
from smallfleet.tasks.extract.data import ExtractData, ExtractExample, load_bio_rows, load_value_rows, values_field
from smallfleet.tasks.extract.card import write_extract_card
from smallfleet.tasks.extract.decode import PLATT_IDENTITY, Extractor, fit_platt, platt
from smallfleet.tasks.extract.schema import Schema
from smallfleet.tasks.extract.tagger import IGNORE, EncoderTagger, bio_labels, make_windows, token_logits, window_targets
from smallfleet.models.encoder import ENCODER_DIR, load_base_encoder, pick_device
from smallfleet.models.resolve import resolve_base_model
from smallfleet.tasks.recipe import (
    calibrate_on_runtimes, fit_novelty, manifest_header, out_of_scope_texts, save_specialist,
)  # fmt: skip
from smallfleet.tasks.spec import TaskSpec
from smallfleet.training.artifacts import check_output
from smallfleet.training.loop import fit

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


def load_task_data(spec: TaskSpec) -> TaskData:
    """Load (and split when no validation file is given) a task's data; derive the schema from tags if needed."""
    bio = bool(spec.fields.tokens or spec.fields.tags)
    schema_file = spec.settings.schema
    if bio:
        tokens, tags = spec.fields.tokens or "tokens", spec.fields.tags or "tags"
        files = [load_bio_rows(p, tokens, tags) if p else None for p in (spec.train, spec.valid, spec.test)]
        seen = {t for data in files if data for ex in data.examples for t in ex.tags}
        schema = Schema.from_file(schema_file) if schema_file else Schema.from_tags(seen)
        unknown = sorted({t[2:] for t in seen if t != "O"} - set(schema.names))
        if unknown:
            raise ConfigError(f"{schema_file}: the data tags field {unknown[0]!r}, which the schema does not declare")
    else:
        if schema_file is None:
            raise ConfigError(
                f"task {spec.name!r}: value-labelled data needs --schema (or --tokens-field/--tags-field for BIO data)"
            )
        schema = Schema.from_file(schema_file)
        files = [
            load_value_rows(p, schema, spec.fields.text, values_field(p, spec.fields.label)) if p else None
            for p in (spec.train, spec.valid, spec.test)
        ]
    train, valid, test = files
    source = str(spec.valid)
    if valid is None:
        settings = spec.settings
        kept, held, how = holdout_split(train.examples, settings.valid_fraction, settings.seed)
        valid = ExtractData(held, 0, [])
        train = ExtractData(kept, train.values, train.unaligned)
        source = f"{how} of {spec.train.name}"
    return TaskData(train, valid, test, schema, bio, source)


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
    ood_texts = out_of_scope_texts(spec)
    if data.train.unaligned:
        console.print(
            f"[yellow]warning[/] {spec.name}: {len(data.train.unaligned)} of {data.train.values} gold values could not "
            f"be aligned to their text; their rows are left out of training, e.g. {data.train.unaligned[0]}"
        )
    train_rows = [e for e in data.train.examples if not e.unaligned]
    labels = bio_labels(data.schema.names)
    index = {lab: i for i, lab in enumerate(labels)}
    settings, device = spec.settings, pick_device()
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

    def embed(texts: list[str]) -> np.ndarray:
        scores = token_logits(model, tokenizer, texts, settings.max_length, stride, device)
        return torch.stack([s.pooled for s in scores]).numpy()

    # one Gaussian around all training texts: an extract task has no classes to keep means of
    novelty = fit_novelty(spec, embed, [e.text for e in train_rows], None, [e.text for e in data.valid.examples],
                          ood_texts, console)  # fmt: skip

    manifest = manifest_header(
        spec, base, device.type,
        train_rows=len(train_rows), train_windows=len(windows), valid_rows=len(data.valid.examples),
        valid_source=data.valid_source, values=data.train.values, unaligned=len(data.train.unaligned),
        unaligned_examples=data.train.unaligned[:10],
    )  # fmt: skip
    manifest |= {
        "schema": data.schema.to_json_schema(),
        "labels": labels,
        "format": "bio" if data.bio else "values",
        "values_field": None if data.bio else values_field(spec.train, spec.fields.label),
        "stride": stride,
        "fit": {k: v for k, v in asdict(result).items() if k != "history"},
        "history": result.history,
        "calibration": {k: v for k, v in calibration.items() if k not in ("curve", "points", "reliability")},
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
        """Calibrate the extractor again with `encoder` (another runtime's copy) in place of the trained one."""
        served = EncoderTagger(encoder, len(labels))
        served.head.load_state_dict(model.head.state_dict())
        other = Extractor(served.eval(), tokenizer, data.schema, labels, settings.max_length, stride, torch.device("cpu"))
        record = calibrate(other, data.valid.examples)
        return record, {"valid_f1": score(other, data.valid.examples, data.bio)[0]["f1"],
                        "torch_valid_f1": score(extractor, data.valid.examples, data.bio)[0]["f1"]}  # fmt: skip

    def evaluate(tmp: Path) -> tuple[dict, dict]:
        calibrate_on_runtimes(tmp, manifest, calibration, model.encoder, on_runtime, console)
        metrics = {"validation": score(extractor, data.valid.examples, data.bio)[0]}
        if data.test:
            metrics["test"] = score(extractor, data.test.examples, data.bio)[0]
            metrics["test"]["file"] = str(spec.test)
        return calibration, metrics

    return save_specialist(out, force, manifest, write_weights, evaluate, write_extract_card,
                           inputs=[e.text for e in train_rows])


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
    extractor.field_platt = extractor.record_platt = PLATT_IDENTITY
    out = extractor.extract(texts)
    golds = [gold_record(extractor.schema, e) for e in examples]
    raw, right = [], []
    for x, g in zip(out, golds):
        for name in extractor.schema.names:
            raw.append(x.raw_confidence[name])
            right.append(_field_right(name, g, x.record))
    extractor.field_platt = fit_platt(raw, right)
    out = extractor.extract(texts)
    exact = [all(_field_right(n, g, x.record) for n in extractor.schema.names) for x, g in zip(out, golds)]
    before = [x.raw_record_confidence for x in out]
    extractor.record_platt = fit_platt(before, exact)
    after = [platt(extractor.record_platt, c) for c in before]
    curve = ConfidenceCurve.from_predictions(after, exact)
    return {
        "temperature": extractor.temperature,
        "field_platt": extractor.field_platt.to_dict(),
        "record_platt": extractor.record_platt.to_dict(),
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
    from smallfleet.tasks.extract.tagger import Window

    return window_targets(Window(0, [], list(offsets)), example.spans, index)
