"""Task kind `extract`: text -> a JSON object of typed fields (order number, amount, date...).

The specialist tags spans with an encoder and normalizes them to a JSON Schema
(`schema.py`, `align.py`, `tagger.py`, `decode.py`, `specialist.py`); `train.py` is its
recipe, `data.py` reads value-labelled or BIO rows, `metrics.py` scores and reports,
`card.py` writes the card.
"""

from __future__ import annotations

import json
from pathlib import Path

from smallfleet.errors import DataError
from smallfleet.tasks.extract.settings import ExtractSettings
from smallfleet.tasks.kind import AnswerForm, QualityTable, TaskKind


def _parse_object(text: str) -> dict | None:
    """The JSON object an answer holds (a fenced code block allowed), or None."""
    text = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _json_object(text: str) -> bool:
    return bool(_parse_object(text))


class ExtractKind(TaskKind):
    name = "extract"
    summary = "text -> JSON object of fields"
    settings_class = ExtractSettings
    cpu_seconds_per_answer = 0.03
    default_base = "minilm"
    fields = ("text", "label", "tokens", "tags")

    def train(self, spec, out, force=False, console=None) -> dict:
        from smallfleet.tasks.extract.train import train_extractor

        return train_extractor(spec, out, force, console)

    def load(self, folder: Path):
        from smallfleet.tasks.extract.specialist import ExtractSpecialist

        return ExtractSpecialist.load(folder)

    def item_scores(self, answers: dict) -> list[float] | None:
        return answers.get("score")

    def evaluate(self, specialist, data, console, fields, limit=None, **options) -> dict:
        from smallfleet.tasks.extract.metrics import evaluate_file

        return evaluate_file(specialist, data, console, fields, limit)

    def print_report(self, metrics, console, title) -> None:
        from smallfleet.tasks.extract.metrics import print_extraction_report

        print_extraction_report(metrics, console, title=title)

    def quality_table(self, metrics: dict) -> QualityTable:
        rows = [[f, s["precision"], s["recall"], s["f1"]] for f, s in (metrics.get("spans") or metrics["fields"]).items()]
        note = f"exact record match {metrics['exact_match']:.3f}, schema-valid {metrics['schema_valid']:.3f}"
        return QualityTable("per-field precision, recall and F1", ["field", "precision", "recall", "F1"], rows, note,
                            f"F1 {metrics['f1']:.3f}, exact {metrics['exact_match']:.3f}")  # fmt: skip

    def check_answer(self, manifest: dict, answer: str) -> str:
        from smallfleet.tasks.extract.schema import Schema
        from smallfleet.tasks.extract.specialist import canonical_record

        schema = Schema.from_dict(manifest["schema"], f"task {manifest['name']!r}: schema")
        try:
            record = canonical_record(schema, answer)
        except DataError as exc:
            raise DataError(f"not a valid record for task {manifest['name']!r}: {exc}") from None
        return json.dumps(record, ensure_ascii=False)

    def looks_like(self, inputs: list[str], answers: list[str]) -> float:
        """JSON objects, or text copied from the input: the share of answers that parse as a JSON object with at
        least one key, or else are a span of their input (ignoring case and spacing) that does not repeat
        across inputs."""
        if not answers:
            return 0.0
        records = sum(1 for a in answers if _json_object(a))
        if records:
            return records / len(answers)
        spans = [" ".join(a.split()).casefold() for a, text in zip(answers, inputs, strict=True)
                 if a.strip() and " ".join(a.split()).casefold() in " ".join(text.split()).casefold()]  # fmt: skip
        return len(spans) / len(answers) * (len(set(spans)) / max(len(spans), 1))

    def distill_rows(self, inputs: list[str], answers: list[str], folder: Path) -> tuple[list[dict], dict]:
        """`{text, fields}` rows from answers that are JSON objects, checked against a JSON Schema inferred from
        them and written to `folder/schema.json` (kept as the user edited it when it is already there)."""
        from smallfleet.tasks.extract.schema import infer_schema

        records = [(text, _parse_object(a)) for text, a in zip(inputs, answers, strict=True)]
        records = [(text, r) for text, r in records if r is not None]
        if not records:
            raise DataError("no answer is a JSON object: an extraction task learns from JSON answers")
        path = Path(folder) / "schema.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(infer_schema([r for _, r in records]), indent=2, ensure_ascii=False) + "\n")
        return [{"text": text, "fields": r} for text, r in records], {"settings": {"schema": path}}

    def answer_form(self, manifest: dict, guess: str | None) -> AnswerForm:
        """One input per schema field (a select for an enum, a date or number input by type), pre-filled with
        the guess's values; required fields are marked so the browser checks them before sending."""
        from smallfleet.tasks.extract.form import record_form

        return record_form(manifest, guess)

    def training_row(self, manifest: dict, input: str, answer: str) -> dict:
        """Value-labelled tasks: the text and the record; BIO tasks: whitespace tokens and the record's tags."""
        from smallfleet.tasks.extract.align import align_values, bio_to_spans, spans_to_bio

        fields, record = manifest["fields"], json.loads(answer)
        if manifest.get("format") != "bio":
            return {fields["text"]: input, manifest.get("values_field") or fields["label"]: record}
        tokens = input.split()
        text, _, offsets = bio_to_spans(tokens, ["O"] * len(tokens))
        spans, _ = align_values(text, {k: str(v) for k, v in record.items()})
        return {fields["tokens"] or "tokens": tokens, fields["tags"] or "tags": spans_to_bio(spans, offsets)}

    def input_texts(self, spec) -> list[str]:
        """The training texts; for BIO rows the tokens joined by spaces."""
        from smallfleet.data import read_rows

        field = spec.fields.tokens or spec.fields.text
        texts = []
        for _, row in read_rows(spec.train):
            value = row.get(field, row.get(spec.fields.text))
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            if isinstance(value, str) and value.strip():
                texts.append(value)
        return texts


KIND = ExtractKind()
