"""Batches of rows of similar length (less padding, faster steps): the one rule for training
and for inference."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, window_batches: int = 50
) -> list[list[int]]:
    """One pass over the data: shuffle, then sort by length within windows of `window_batches` batches,
    so batches hold similar lengths (less padding, faster steps) while their order stays random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * window_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def by_length(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Inference: row indices in batches of similar length, shortest first (callers put results back in order)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
