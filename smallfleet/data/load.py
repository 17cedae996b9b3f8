"""Read labelled examples from JSONL and CSV files with a field mapping.

Every row remembers the file and line it came from so that later validation
errors can point at it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallfleet.errors import DataError

MAX_REPORTED = 10  # problems listed in one error message before "... and N more"


@dataclass(frozen=True)
class Example:
    """One row: input text, optional gold label, and where it came from."""

    text: str
    label: str | None
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row dict) from a JSONL or CSV file.

    Raises:
        DataError: the file is missing or empty, a JSONL line is not a JSON object,
            or the file type is not recognised.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv", ".ndjson"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl or .csv")
    seen_any = False
    with path.open(encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise DataError(f"{path}: file is empty (no CSV header)")
            for row in reader:
                seen_any = True
                yield reader.line_num, row
        else:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                seen_any = True
                yield lineno, row
    if not seen_any:
        raise DataError(f"{path}: file is empty (no data rows)")


def load_examples(path: str | Path, text_field: str = "text", label_field: str | None = "label") -> list[Example]:
    """Load examples from `path`, mapping `text_field` and `label_field`.

    With `label_field=None` the labels are left empty (inputs for prediction).
    Empty texts and missing labels are not rejected here; `validate` reports them.

    Raises:
        DataError: the file is malformed, or a mapped field is absent from the file
            (one message naming the fields that do exist) or from some rows
            (messages naming file and line).
    """
    path = Path(path)
    examples: list[Example] = []
    missing: list[str] = []
    columns: set[str] = set()
    wanted = [f for f in (text_field, label_field) if f]
    for lineno, row in read_rows(path):
        columns.update(row)
        absent = [f for f in wanted if f not in row]
        if absent:
            missing.append(f"{path}:{lineno}: missing field {', '.join(repr(a) for a in absent)}")
            continue
        label = row[label_field] if label_field else None
        examples.append(
            Example(
                text=_as_text(row[text_field]),
                label=None if label is None else _as_text(label),
                file=str(path),
                line=lineno,
            )
        )
    for f in wanted:
        if f not in columns:
            raise DataError(
                f"{path}: field {f!r} does not exist in this file (fields found: {', '.join(sorted(columns))})"
            )
    if missing:
        raise DataError(summarize_problems(missing, f"{len(missing)} row(s) of {path} lack a mapped field"))
    return examples


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def summarize_problems(problems: list[str], headline: str) -> str:
    lines = [headline + ":"] + ["  " + p for p in problems[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        lines.append(f"  ... and {len(problems) - MAX_REPORTED} more")
    return "\n".join(lines)
