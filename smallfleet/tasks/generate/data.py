"""Generate data: (input, target) rows, and the reference texts an answer is scored against."""

from __future__ import annotations

from pathlib import Path

from smallfleet.data import Example, load_examples
from smallfleet.data.load import read_rows, summarize_problems
from smallfleet.errors import DataError


def load_pairs(path: Path, input_field: str, output_field: str, need_output: bool = True) -> list[Example]:
    """Rows of `path` as Examples (text = input, label = target), rejecting empty inputs or targets."""
    examples = load_examples(path, input_field, output_field)
    problems = [f"{ex.where}: empty {input_field!r}" for ex in examples if not ex.text.strip()]
    if need_output:
        problems += [f"{ex.where}: empty {output_field!r}" for ex in examples if not (ex.label or "").strip()]
    if problems:
        raise DataError(summarize_problems(problems, f"{len(problems)} unusable row(s) in {path}"))
    return examples


def load_references(path: Path, examples: list[Example]) -> list[list[str]]:
    """Each row's references: its `references` list when the file has one (e.g. DialogSum test), else the target."""
    extra = {lineno: row.get("references") for lineno, row in read_rows(path)}
    return [list(extra.get(ex.line) or []) or [ex.label or ""] for ex in examples]
