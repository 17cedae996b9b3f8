"""Load extraction data: text plus gold field values, or tokens with BIO tags.

Both shapes become the same `ExtractExample`: a text with character spans of each
field. Value rows are aligned to their text (see align.py); values that cannot be
found are counted and reported, never silently dropped from the gold record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smallfleet.data.load import read_rows, summarize_problems
from smallfleet.errors import DataError
from smallfleet.tasks.extract.align import Span, align_values, bio_to_spans
from smallfleet.tasks.extract.schema import Schema


VALUES_FIELDS = ("fields", "values")  # tried, in order, when rows lack the `label` field


@dataclass
class ExtractExample:
    """One row: the text, its gold values and where they are, and where the row came from."""

    text: str
    values: dict[str, str]
    spans: list[Span]
    file: str
    line: int
    word_offsets: list[tuple[int, int]] | None = None
    """For BIO rows: each token's character span (for span-level scoring)."""
    tags: list[str] | None = None
    """For BIO rows: the gold tags."""
    unaligned: list[str] = field(default_factory=list)
    """Fields whose gold value was not found in the text."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ExtractData:
    """Examples of one file and what loading them found."""

    examples: list[ExtractExample]
    values: int
    unaligned: list[str]
    """One line per gold value not found in its text (file:line, field, value)."""


def load_value_rows(path: Path, schema: Schema, text_field: str, values_field: str) -> ExtractData:
    """Read rows of text plus a JSON object of gold values, and align each value to its text.

    Raises:
        DataError: a row lacks a field, has an empty text, gold values that are not an
            object or name fields the schema does not declare (each names file and line),
            or not a single value could be found in its text.
    """
    examples, problems, unaligned, n_values = [], [], [], 0
    for lineno, row in read_rows(path):
        where = f"{path}:{lineno}"
        if text_field not in row or values_field not in row:
            absent = [f for f in (text_field, values_field) if f not in row]
            problems.append(f"{where}: missing field {', '.join(repr(a) for a in absent)} (fields: {', '.join(row)})")
            continue
        text, values = row[text_field], row[values_field]
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: empty text in field {text_field!r}; nothing to extract from")
            continue
        if not isinstance(values, dict):
            problems.append(
                f"{where}: field {values_field!r} must be a JSON object of field values, got {type(values).__name__}"
            )
            continue
        unknown = sorted(set(values) - set(schema.fields))
        if unknown:
            problems.append(
                f"{where}: value for {unknown[0]!r}, which the schema does not declare (fields: {', '.join(schema.names)})"
            )
            continue
        values = {k: str(v) for k, v in values.items() if v is not None and str(v).strip()}
        spans, missing = align_values(text, values)
        n_values += len(values)
        unaligned += [f"{where}: {name} = {values[name]!r} does not occur in the text" for name in missing]
        examples.append(ExtractExample(text, values, spans, str(path), lineno, unaligned=missing))
    if problems:
        raise DataError(summarize_problems(problems, f"{len(problems)} row(s) of {path} cannot be used"))
    if n_values and len(unaligned) == n_values:
        raise DataError(
            summarize_problems(unaligned, f"{path}: none of the {n_values} gold value(s) occurs in its text")
        )
    return ExtractData(examples, n_values, unaligned)


def load_bio_rows(path: Path, tokens_field: str, tags_field: str) -> ExtractData:
    """Read rows of tokens with one BIO tag each.

    Raises:
        DataError: a row lacks a field, has no tokens, a tag count that differs from its
            token count, or a tag that is not O / B-x / I-x (each names file and line).
    """
    examples, problems = [], []
    for lineno, row in read_rows(path):
        where = f"{path}:{lineno}"
        tokens, tags = row.get(tokens_field), row.get(tags_field)
        if not isinstance(tokens, list) or not isinstance(tags, list):
            problems.append(
                f"{where}: fields {tokens_field!r} and {tags_field!r} must be lists (fields: {', '.join(row)})"
            )
            continue
        if not tokens or not any(str(t).strip() for t in tokens):
            problems.append(f"{where}: empty text (no tokens in {tokens_field!r}); nothing to extract from")
            continue
        if len(tokens) != len(tags):
            problems.append(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            continue
        bad = [t for t in tags if t != "O" and not (t[:2] in ("B-", "I-") and len(t) > 2)]
        if bad:
            problems.append(f"{where}: tag {bad[0]!r} is not O, B-<field> or I-<field>")
            continue
        text, spans, offsets = bio_to_spans([str(t) for t in tokens], tags)
        values: dict[str, str] = {}
        for span in spans:
            values.setdefault(span.field, text[span.start : span.end])
        examples.append(ExtractExample(text, values, spans, str(path), lineno, offsets, list(tags)))
    if problems:
        raise DataError(summarize_problems(problems, f"{len(problems)} row(s) of {path} cannot be used"))
    return ExtractData(examples, sum(len(e.spans) for e in examples), [])


def check_example(text: str, values: dict[str, str]) -> list[Span]:
    """Align one row's values, raising a clear error for an empty text or a value not in the text.

    Raises:
        DataError: the text is empty, or some value does not occur in it.
    """
    if not text or not text.strip():
        raise DataError("the text is empty; there is nothing to extract fields from")
    spans, missing = align_values(text, values)
    if missing:
        name = missing[0]
        raise DataError(
            f"field {name!r}: value {values[name]!r} does not occur in the text (even allowing for case, spacing and OCR noise)"
        )
    return spans


def values_field(path: Path, label: str) -> str:
    """The field holding the gold values object: `label` if rows have it, else `fields` or `values`."""
    _, first = next(read_rows(path))
    if label in first or label != "label":
        return label
    return next((f for f in VALUES_FIELDS if f in first), label)
