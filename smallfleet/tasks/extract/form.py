"""The console's answer form for an extract task: one input per schema field, typed as the
schema says, so the browser validates a record before it is sent (the server checks it
again through `check_answer`)."""

from __future__ import annotations

import json

from smallfleet.tasks.extract.schema import Schema
from smallfleet.tasks.kind import AnswerForm, FormField

INPUTS = {"string": "text", "number": "number", "integer": "number", "date": "date", "enum": "select"}
"""Schema field type -> HTML input type."""


def record_form(manifest: dict, guess: str | None) -> AnswerForm:
    """The record form of the task in `manifest`, pre-filled with the values of the JSON record `guess`."""
    schema = Schema.from_dict(manifest["schema"], f"task {manifest.get('name')!r}: schema")
    values = _record(guess)
    fields = []
    for name, spec in schema.fields.items():
        value = values.get(name)
        fields.append(FormField(
            name=name, input=INPUTS.get(spec.type, "text"), required=name in schema.required,
            options=list(spec.enum), description=spec.description, value="" if value is None else str(value),
            step="1" if spec.type == "integer" else "any",
        ))  # fmt: skip
    return AnswerForm("record", fields=fields, value=guess or "")


def _record(guess: str | None) -> dict:
    """The guess as a dict; an empty one when it is not a JSON object (the form then starts blank)."""
    try:
        record = json.loads(guess or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
