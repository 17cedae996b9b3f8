"""Task kind `extract`: text -> a JSON object of typed fields (order number, amount, date...).

The specialist tags spans with an encoder, normalizes each value to its schema type,
validates the record, and gives per-field and per-record calibrated confidence. A
record that misses a required field or has a value failing its type is marked
invalid, so the gateway escalates it whatever its confidence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from smallfleet.eval.extraction import print_extraction_report
from smallfleet.extraction.data import load_bio_rows, load_value_rows
from smallfleet.extraction.predict import Extraction, Extractor, Platt
from smallfleet.extraction.schema import Schema
from smallfleet.extraction.tagger import EncoderTagger
from smallfleet.extraction.train import score, train_extractor, values_field
from smallfleet.models.encoder import ENCODER_DIR, pick_device
from smallfleet.tasks.base import Answer, AnswerOptions, EscalationRequest, Specialist
from smallfleet.training.artifacts import MANIFEST, read_json


class ExtractSpecialist(Specialist):
    """A saved extraction tagger with its schema and calibration."""

    kind = "extract"

    def __init__(self, folder: Path, manifest: dict, extractor: Extractor):
        super().__init__(folder, manifest)
        self.extractor = extractor
        self.schema = extractor.schema

    @classmethod
    def load(cls, folder: Path) -> ExtractSpecialist:
        from transformers import AutoTokenizer

        manifest = read_json(folder / MANIFEST)
        calibration = read_json(folder / "calibration.json")
        device = pick_device()
        extractor = Extractor(
            model=EncoderTagger.load(folder, len(manifest["labels"])).to(device),
            tokenizer=AutoTokenizer.from_pretrained(folder / ENCODER_DIR),
            schema=Schema.from_dict(manifest["schema"], f"{folder / MANIFEST}: schema"),
            labels=manifest["labels"],
            max_length=manifest["training"]["max_length"],
            stride=manifest["stride"],
            device=device,
            temperature=calibration["temperature"],
            field_platt=Platt(**calibration["field_platt"]),
            record_platt=Platt(**calibration["record_platt"]),
        )
        return cls(folder, manifest, extractor)

    def extract(self, texts: list[str]) -> list[Extraction]:
        """Records, confidences and validity for `texts`."""
        return self.extractor.extract(texts) if texts else []

    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        return [self._to_answer(x) for x in self.extract(texts)]

    def predict(self, texts: list[str]) -> list[ExtractPrediction]:
        """What `smallfleet predict` prints per text: record, confidences, validity."""
        return [ExtractPrediction(self._to_answer(x)) for x in self.extract(texts)]

    def _to_answer(self, x: Extraction) -> Answer:
        fields = {
            name: {"value": x.record.get(name), "confidence": round(x.confidence[name], 6)}
            for name in self.schema.names
        }
        return Answer(
            content=json.dumps(x.record, ensure_ascii=False),
            confidence=x.record_confidence,
            valid=x.valid,
            detail={"fields": fields, "problems": x.problems},
        )

    def escalation_request(self, text: str) -> EscalationRequest:
        schema = json.dumps(self.schema.to_json_schema(), indent=2)
        instruction = (
            f"Extract fields from the user's text for the task '{self.name}'. Reply with one JSON object only, "
            f"no prose and no code fences, that validates against this JSON Schema:\n{schema}\n"
            "Omit a field (or use null) when the text does not give it. Write dates as YYYY-MM-DD, numbers as JSON "
            "numbers without currency, and enum fields as exactly one of their listed members."
        )
        return EscalationRequest(
            messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}],
            response_format={"type": "json_object"},
        )

    def parse_escalation(self, reply: str) -> Answer | None:
        """The reply's JSON object, normalized and validated; None when it is not JSON or fails the schema."""
        record = parse_json_object(reply)
        if record is None:
            return None
        normalized, problems = self.schema.normalize_record({k: v for k, v in record.items() if v is not None})
        if problems:
            return None
        ordered = {n: normalized[n] for n in self.schema.names if n in normalized}
        fields = {n: {"value": ordered.get(n), "confidence": 1.0} for n in self.schema.names}
        return Answer(content=json.dumps(ordered, ensure_ascii=False), confidence=1.0, detail={"fields": fields})


@dataclass
class ExtractPrediction:
    """One extraction as `smallfleet predict` writes it."""

    answer: Answer

    def to_dict(self) -> dict:
        return {
            "record": json.loads(self.answer.content),
            "confidence": round(self.answer.confidence, 6),
            "valid": self.answer.valid,
            **self.answer.detail,
        }


SPECIALIST = ExtractSpecialist
train = train_extractor


def parse_json_object(reply: str) -> dict | None:
    """The JSON object in a model reply (bare, or inside a ```json fence); None when there is none."""
    text = reply.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def evaluate(specialist: ExtractSpecialist, data: Path, console: Console, **fields: str | None) -> dict:
    """Score `specialist` on the labelled file `data` and print the report.

    Args:
        fields: `text` / `label` (gold values object) / `tokens` / `tags` field names overriding
            those the specialist was trained with.
    """
    trained = specialist.manifest.get("fields", {})
    bio = specialist.manifest.get("format") == "bio"
    if bio:
        loaded = load_bio_rows(
            data,
            fields.get("tokens") or trained.get("tokens") or "tokens",
            fields.get("tags") or trained.get("tags") or "tags",
        )
    else:
        label = fields.get("label") or trained.get("label", "label")
        loaded = load_value_rows(
            data, specialist.schema, fields.get("text") or trained.get("text", "text"), values_field(data, label)
        )
    metrics, _ = score(specialist.extractor, loaded.examples, bio)
    metrics["data"] = str(data)
    if not bio:
        metrics["unaligned_values"] = len(loaded.unaligned)
    print_extraction_report(metrics, console, title=f"{specialist.name} on {data}")
    return metrics


def print_report(metrics: dict, console: Console, title: str) -> None:
    """Print one split's metrics as written by `train`."""
    print_extraction_report(metrics, console, title=title)
