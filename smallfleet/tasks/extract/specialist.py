"""A saved extraction specialist: text -> a JSON object of typed fields.

The specialist tags spans with an encoder, normalizes each value to its schema type,
validates the record, and gives per-field and per-record calibrated confidence. A
record that misses a required field or has a value failing its type is marked
invalid, so the gateway escalates it whatever its confidence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from smallfleet.calibration import LogisticMap
from smallfleet.errors import DataError
from smallfleet.models.encoder import ENCODER_DIR, pick_device
from smallfleet.models.encoder_runtime import runtime_calibration, serving_encoder
from smallfleet.tasks.extract.decode import Extraction, Extractor
from smallfleet.tasks.extract.schema import Schema
from smallfleet.tasks.extract.tagger import EncoderTagger
from smallfleet.tasks.specialist import Answer, AnswerOptions, EscalationRequest, Specialist
from smallfleet.training.artifacts import CALIBRATION, MANIFEST, read_json


class ExtractSpecialist(Specialist):
    """A saved extraction tagger with its schema and calibration."""

    kind = "extract"

    def __init__(self, folder: Path, manifest: dict, extractor: Extractor, runtime: str | None = None,
                 runtime_words: str = ""):  # fmt: skip
        super().__init__(folder, manifest, runtime)
        self.extractor = extractor
        self.schema = extractor.schema
        self.runtime_words = runtime_words

    @classmethod
    def load(cls, folder: Path, runtime: str | None = None) -> ExtractSpecialist:
        """The extractor in `folder`, its encoder on `runtime` (None = $SMALLFLEET_ENCODER_RUNTIME, else auto)."""
        from transformers import AutoTokenizer

        manifest = read_json(folder / MANIFEST)
        model = EncoderTagger.load(folder, len(manifest["labels"]))
        model.encoder, chosen = serving_encoder(folder, manifest, model.encoder, runtime)
        calibration = runtime_calibration(read_json(folder / CALIBRATION), chosen.name)
        device = chosen.device(pick_device())
        extractor = Extractor(
            model=model.to(device),
            tokenizer=AutoTokenizer.from_pretrained(folder / ENCODER_DIR),
            schema=Schema.from_dict(manifest["schema"], f"{folder / MANIFEST}: schema"),
            labels=manifest["labels"],
            max_length=manifest["training"]["max_length"],
            stride=manifest["stride"],
            device=device,
            temperature=calibration["temperature"],
            field_platt=LogisticMap.from_dict(calibration["field_platt"]),
            record_platt=LogisticMap.from_dict(calibration["record_platt"]),
        )
        return cls(folder, manifest, extractor, chosen.name, chosen.describe(manifest))

    def serving_note(self) -> str:
        return f"encoder on {self.runtime_words}" if self.runtime_words else ""

    def extract(self, texts: list[str]) -> list[Extraction]:
        """Records, confidences and validity for `texts`."""
        return self.extractor.extract(texts) if texts else []

    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        found = self.extract(texts)
        novelty = [None] * len(found)
        if self.novelty and found:
            novelty = [float(v) for v in self.novelty.score(torch.stack([x.embedding for x in found]).numpy())]
        return [self._to_answer(x, n) for x, n in zip(found, novelty)]

    def prediction(self, text: str, answer: Answer) -> dict:
        out = {
            "text": text,
            "fields": json.loads(answer.content),
            "confidence": round(answer.confidence, 6),
            "valid": answer.valid,
            "field_confidence": {name: f["confidence"] for name, f in answer.detail["fields"].items()},
            "problems": answer.detail.get("problems", []),
        }
        if answer.novelty is not None:
            out["novelty"] = round(answer.novelty, 6)
        return out

    def _to_answer(self, x: Extraction, novelty: float | None = None) -> Answer:
        fields = {
            name: {"value": x.record.get(name), "confidence": round(x.confidence[name], 6)}
            for name in self.schema.names
        }
        return Answer(
            content=json.dumps(x.record, ensure_ascii=False),
            confidence=x.record_confidence,
            valid=x.valid,
            novelty=novelty,
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
        try:
            record = canonical_record(self.schema, reply)
        except DataError:
            return None
        fields = {n: {"value": record.get(n), "confidence": 1.0} for n in self.schema.names}
        return Answer(content=json.dumps(record, ensure_ascii=False), confidence=1.0, detail={"fields": fields})


def canonical_record(schema: Schema, reply: str) -> dict:
    """The JSON object in `reply` (bare or fenced), normalized to `schema`, fields in schema order.

    Raises:
        DataError: `reply` holds no JSON object, or a value fails its type, or a required field is missing.
    """
    record = parse_json_object(reply)
    if record is None:
        raise DataError(f"not a JSON object: {reply[:80]!r}")
    normalized, problems = schema.normalize_record({k: v for k, v in record.items() if v is not None})
    if problems:
        raise DataError("; ".join(problems))
    return {n: normalized[n] for n in schema.names if n in normalized}


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
