"""Check labelled data before training.

Errors (training cannot sensibly start): empty texts, missing labels, a label with
fewer than two training examples. Warnings (training goes on, the user is told
once, summarized): exact duplicates (dropped), one text with conflicting labels,
evaluation rows that also appear in training, evaluation labels never trained on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from smallfleet.data.load import Example, summarize_problems
from smallfleet.errors import DataError

MIN_PER_LABEL = 2


@dataclass
class ValidationReport:
    """Summary of what validation found and changed."""

    warnings: list[str] = field(default_factory=list)
    dropped_duplicates: int = 0


def check_rows(examples: list[Example], name: str, need_labels: bool = True) -> None:
    """Raise one DataError listing every empty text or missing label in `examples`."""
    problems = []
    for ex in examples:
        if not ex.text.strip():
            problems.append(f"{ex.where}: empty text")
        elif need_labels and (ex.label is None or not ex.label.strip()):
            problems.append(f"{ex.where}: missing label")
    if problems:
        raise DataError(summarize_problems(problems, f"{len(problems)} invalid row(s) in {name} data"))


def validate_classification(
    train: list[Example], valid: list[Example] | None = None, test: list[Example] | None = None
) -> tuple[list[Example], ValidationReport]:
    """Validate classification data; return de-duplicated training rows and a report.

    Raises:
        DataError: a row has an empty text or missing label, or a training label has
            fewer than MIN_PER_LABEL examples.
    """
    report = ValidationReport()
    check_rows(train, "training")
    for rows, name in ((valid, "validation"), (test, "test")):
        if rows is not None:
            check_rows(rows, name)

    deduped = _drop_duplicates(train, report)
    counts = Counter(ex.label for ex in deduped)
    rare = sorted(label for label, n in counts.items() if n < MIN_PER_LABEL)
    if rare:
        first = {ex.label: ex.where for ex in reversed(deduped)}
        listed = [f"{first[label]}: label {label!r} has {counts[label]} example(s)" for label in rare]
        raise DataError(
            summarize_problems(listed, f"{len(rare)} label(s) have fewer than {MIN_PER_LABEL} training examples")
            + "\nAdd examples for these labels or remove them."
        )
    if len(counts) < 2:
        raise DataError(f"{train[0].file}: only one label ({next(iter(counts))!r}); a classifier needs at least two")

    train_texts = {_key(ex.text) for ex in deduped}
    for rows, name in ((valid, "validation"), (test, "test")):
        if not rows:
            continue
        leaked = [ex.where for ex in rows if _key(ex.text) in train_texts]
        if leaked:
            report.warnings.append(
                f"{len(leaked)} of {len(rows)} {name} rows also appear in the training data "
                f"(e.g. {', '.join(leaked[:3])}); their scores will be optimistic"
            )
        unseen = sorted({ex.label for ex in rows} - set(counts))
        if unseen:
            report.warnings.append(
                f"{name} data has {len(unseen)} label(s) never seen in training "
                f"({', '.join(map(repr, unseen[:5]))}); those rows cannot be predicted correctly"
            )
    return deduped, report


def _drop_duplicates(examples: list[Example], report: ValidationReport) -> list[Example]:
    by_text: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_text[_key(ex.text)].append(ex)
    kept, conflicts = [], []
    for group in by_text.values():
        labels = Counter(ex.label for ex in group)
        if len(labels) > 1:
            conflicts.append(f"{group[0].where} ({', '.join(f'{k!r}' for k in labels)})")
        seen = set()
        for ex in group:
            if ex.label not in seen:
                seen.add(ex.label)
                kept.append(ex)
    dropped = len(examples) - len(kept)
    if dropped:
        report.dropped_duplicates = dropped
        report.warnings.append(f"dropped {dropped} exact duplicate training row(s)")
    if conflicts:
        report.warnings.append(
            f"{len(conflicts)} training text(s) carry conflicting labels, e.g. {'; '.join(conflicts[:3])}"
        )
    kept.sort(key=lambda ex: (ex.file, ex.line))
    return kept


def _key(text: str) -> str:
    return " ".join(text.split())
