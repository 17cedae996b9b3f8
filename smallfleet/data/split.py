"""Seeded stratified split of training rows into train and validation."""

from __future__ import annotations

import random
from collections import defaultdict

from smallfleet.data.load import Example


def stratified_split(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out about `fraction` of each label for validation, keeping at least one of each in training.

    Args:
        examples: labelled rows.
        fraction: share of each label to hold out (0 < fraction < 1).
        seed: the same seed and rows always give the same split.
    """
    by_label: dict[str | None, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    rng = random.Random(seed)
    train, valid = [], []
    for label in sorted(by_label, key=str):
        group = by_label[label][:]
        rng.shuffle(group)
        n_valid = min(len(group) - 1, max(1, round(len(group) * fraction))) if len(group) > 1 else 0
        valid.extend(group[:n_valid])
        train.extend(group[n_valid:])
    rng.shuffle(train)
    rng.shuffle(valid)
    return train, valid
