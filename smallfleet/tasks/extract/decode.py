"""From a text to a validated record with calibrated confidences.

Tagging gives spans with a raw confidence; each field keeps its most confident
span whose text normalizes to the field's type. Field confidences (present or
absent) and record confidences (the lowest over required fields, or over all
fields when none is required) are mapped to probabilities of being right by
Platt scaling (the shared `calibration.LogisticMap` on the logit) fitted on validation records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from smallfleet.calibration import LogisticMap, logit
from smallfleet.tasks.extract.align import Span
from smallfleet.tasks.extract.schema import NormalizeError, Schema
from smallfleet.tasks.extract.tagger import EncoderTagger, FoundSpan, decode_spans, token_logits


PLATT_IDENTITY = LogisticMap(coef=[1.0], intercept=0.0)
"""Platt scaling that leaves a confidence as it is (before calibration, or when it cannot be fitted)."""


def fit_platt(raw: list[float], correct: list[bool]) -> LogisticMap:
    """Platt scaling p = sigmoid(a * logit(raw) + b) fitted on (raw confidence, was it right);
    the identity with fewer than 10 rows or when all answers agree."""
    return LogisticMap.fit([[logit(r)] for r in raw], correct, c=100.0, min_rows=10, fallback=PLATT_IDENTITY)


def platt(scaling: LogisticMap, raw: float) -> float:
    """Apply Platt scaling to a raw confidence."""
    return scaling([logit(raw)])


@dataclass
class Extraction:
    """One text's extraction: normalized record, per-field confidence, validity."""

    record: dict
    confidence: dict[str, float]
    """Calibrated probability that each field is right (its value, or its absence)."""
    record_confidence: float
    problems: list[str]
    spans: list[FoundSpan] = field(default_factory=list)
    raw_confidence: dict[str, float] = field(default_factory=dict)
    raw_record_confidence: float = 0.0
    embedding: torch.Tensor | None = None
    """The text's pooled embedding (what novelty is measured on)."""

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass
class Extractor:
    """A trained tagger plus its schema and calibration."""

    model: EncoderTagger
    tokenizer: object
    schema: Schema
    labels: list[str]
    max_length: int
    stride: int
    device: torch.device
    temperature: float = 1.0
    field_platt: LogisticMap = field(default_factory=lambda: PLATT_IDENTITY)
    record_platt: LogisticMap = field(default_factory=lambda: PLATT_IDENTITY)

    def extract(self, texts: list[str]) -> list[Extraction]:
        """Extract a record from each text (an empty text gives an empty record)."""
        scores = token_logits(self.model, self.tokenizer, texts, self.max_length, self.stride, self.device)
        return [self._record(text, s) for text, s in zip(texts, scores)]

    def _record(self, text: str, scores) -> Extraction:
        spans, absent = decode_spans(scores, self.labels, self.temperature)
        record, raw_conf, problems = {}, {}, []
        for name, spec in self.schema.fields.items():
            candidates = sorted((s for s in spans if s.span.field == name), key=lambda s: -s.confidence)
            if not candidates:
                raw_conf[name] = absent[name]
                continue
            chosen, value = None, None
            for cand in candidates:
                try:
                    value = spec.normalize(span_text(text, cand.span))
                    chosen = cand
                    break
                except NormalizeError:
                    continue
            if chosen is None:
                chosen = candidates[0]
                value = span_text(text, chosen.span)
                problems.append(f"{name}: {value!r} is not a valid {spec.type}")
            record[name] = value
            raw_conf[name] = chosen.confidence
        problems += [f"missing required field {n!r}" for n in self.schema.required if n not in record]
        confidence = {n: platt(self.field_platt, c) for n, c in raw_conf.items()}
        basis = self.schema.required or self.schema.names
        raw_record = min(confidence[n] for n in basis)
        return Extraction(record, confidence, platt(self.record_platt, raw_record), problems, spans, raw_conf, raw_record,
                          scores.pooled)  # fmt: skip


def span_text(text: str, span: Span) -> str:
    """The span's characters with runs of whitespace (line breaks in receipts) made single spaces."""
    return " ".join(text[span.start : span.end].split())
