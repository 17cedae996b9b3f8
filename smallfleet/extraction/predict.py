"""From a text to a validated record with calibrated confidences.

Tagging gives spans with a raw confidence; each field keeps its most confident
span whose text normalizes to the field's type. Field confidences (present or
absent) and record confidences (the lowest over required fields, or over all
fields when none is required) are mapped to probabilities of being right by
Platt scaling fitted on validation records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from smallfleet.extraction.align import Span
from smallfleet.extraction.schema import NormalizeError, Schema
from smallfleet.extraction.tagger import EncoderTagger, FoundSpan, decode_spans, token_logits


@dataclass
class Platt:
    """p = sigmoid(a * logit(raw) + b), fitted on validation correctness; identity by default."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, raw: float) -> float:
        raw = min(max(raw, 1e-6), 1 - 1e-6)
        z = self.a * np.log(raw / (1 - raw)) + self.b
        return float(1 / (1 + np.exp(-z)))

    @classmethod
    def fit(cls, raw: list[float], correct: list[bool]) -> Platt:
        """Fit on (raw confidence, was it right); identity when all answers agree."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(correct, dtype=int)
        if len(y) < 10 or y.min() == y.max():
            return cls()
        x = np.clip(np.asarray(raw, dtype=float), 1e-6, 1 - 1e-6)
        x = np.log(x / (1 - x)).reshape(-1, 1)
        model = LogisticRegression(C=100.0).fit(x, y)
        return cls(float(model.coef_[0, 0]), float(model.intercept_[0]))


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
    field_platt: Platt = field(default_factory=Platt)
    record_platt: Platt = field(default_factory=Platt)

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
        confidence = {n: self.field_platt(c) for n, c in raw_conf.items()}
        basis = self.schema.required or self.schema.names
        raw_record = min(confidence[n] for n in basis)
        return Extraction(record, confidence, self.record_platt(raw_record), problems, spans, raw_conf, raw_record)


def span_text(text: str, span: Span) -> str:
    """The span's characters with runs of whitespace (line breaks in receipts) made single spaces."""
    return " ".join(text[span.start : span.end].split())
