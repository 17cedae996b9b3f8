"""Find where each gold value sits in its text, and turn BIO-tagged tokens into text with spans.

Value-labelled data only says *what* a field's value is ("total": "9.00"), but the
tagger learns *where* it is. Alignment compares text and value with case and
whitespace removed, first exactly (every occurrence, at word boundaries), then
approximately (least edit distance, tolerating OCR noise such as BND for BHD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FUZZY_RATE = 0.2  # edits allowed per value character in approximate matches


@dataclass(frozen=True)
class Span:
    """A field's value at characters [start, end) of the text."""

    field: str
    start: int
    end: int


def _compact(text: str) -> tuple[str, list[int]]:
    """Casefolded text without whitespace, and each kept character's index in the original."""
    chars, index = [], []
    for i, ch in enumerate(text):
        if not ch.isspace():
            chars.append(ch.lower())
            index.append(i)
    return "".join(chars), index


def _at_boundary(text: str, start: int, end: int) -> bool:
    """The match does not cut a word or number in two ("9.00" inside "19.00")."""
    left = start == 0 or not (text[start - 1].isalnum() and text[start].isalnum())
    right = end == len(text) or not (text[end - 1].isalnum() and text[end].isalnum())
    return left and right


def _best_end(pattern: str, text: str) -> tuple[int, int]:
    """(edit distance, end index) of the substring of `text` closest to `pattern` (Sellers' algorithm).

    Row by row over the pattern; the within-row insertion chain is a running minimum.
    """
    t = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    positions = np.arange(len(t) + 1)
    row = np.zeros(len(t) + 1, dtype=np.int64)  # a match may start anywhere: row 0 is all zeros
    for i, ch in enumerate(pattern, start=1):
        cost = (t != ord(ch)).astype(np.int64)
        best = np.empty_like(row)
        best[0] = i
        best[1:] = np.minimum(row[:-1] + cost, row[1:] + 1)
        row = np.minimum.accumulate(best - positions) + positions
    end = int(np.argmin(row))
    return int(row[end]), end


def find_value(text: str, value: str, fuzzy: bool = True) -> list[tuple[int, int]]:
    """Character spans of `value` in `text`: all exact occurrences, else the closest approximate one, else [].

    Args:
        text: the input text.
        value: the gold value as written (any case or spacing).
        fuzzy: allow an approximate match (up to FUZZY_RATE edits per character).
    """
    compact_text, index = _compact(text)
    compact_value, _ = _compact(value)
    if not compact_value or not compact_text:
        return []
    spans, at = [], compact_text.find(compact_value)
    while at >= 0:
        start, end = index[at], index[at + len(compact_value) - 1] + 1
        if _at_boundary(text, start, end):
            spans.append((start, end))
        at = compact_text.find(compact_value, at + 1)
    if spans or not fuzzy or len(compact_value) < 4:
        return spans
    distance, end = _best_end(compact_value, compact_text)
    if end == 0 or distance > max(1, int(FUZZY_RATE * len(compact_value))):
        return []
    # the start is the end of the best match of the reversed value in the reversed prefix
    _, rev_end = _best_end(compact_value[::-1], compact_text[:end][::-1])
    start = end - rev_end
    if start >= end:
        return []
    return [(index[start], index[end - 1] + 1)]


def align_values(text: str, values: dict[str, str]) -> tuple[list[Span], list[str]]:
    """Spans for each field value in `text`, and the fields whose value was not found.

    Overlapping spans of different fields are resolved in favour of the longer one.
    """
    spans, missing = [], []
    for name, value in values.items():
        if value is None or str(value).strip() == "":
            continue
        found = find_value(text, str(value))
        if not found:
            missing.append(name)
        spans += [Span(name, s, e) for s, e in found]
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start - s.end):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start), missing


def bio_to_spans(tokens: list[str], tags: list[str]) -> tuple[str, list[Span], list[tuple[int, int]]]:
    """Join tokens with spaces; return (text, entity spans, each token's character span).

    An I- tag that does not continue an entity of its type starts one (as conlleval does).
    """
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    text = " ".join(tokens)
    spans, current = [], None
    for (start, end), tag in zip(offsets, tags):
        kind, _, name = tag.partition("-")
        if kind == "I" and current is not None and current[0] == name:
            current[2] = end
            continue
        if current is not None:
            spans.append(Span(*current))
            current = None
        if kind in ("B", "I"):
            current = [name, start, end]
    if current is not None:
        spans.append(Span(*current))
    return text, spans, offsets


def spans_to_bio(spans: list[Span], offsets: list[tuple[int, int]]) -> list[str]:
    """BIO tags for tokens at `offsets` from character spans (a token takes the span it starts in)."""
    tags = ["O"] * len(offsets)
    for span in spans:
        inside = [i for i, (s, _) in enumerate(offsets) if span.start <= s < span.end]
        for k, i in enumerate(inside):
            tags[i] = ("B-" if k == 0 else "I-") + span.field
    return tags
