"""The one rule for holding out validation rows when a task gives no validation file."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


def holdout_split(
    rows: list[T], fraction: float, seed: int, label: Callable[[T], Hashable] | None = None
) -> tuple[list[T], list[T], str]:
    """Split `rows` into (train, valid, description), the same way for the same seed and rows.

    With `label`, the split is stratified: about `fraction` of each label is held out, keeping at
    least one of each label in training (a label seen once stays in training). Without it, a
    seeded random `fraction` (at least one row) is held out.

    Args:
        rows: the training rows.
        fraction: share held out (0 < fraction < 1).
        seed: split seed.
        label: the row's label, for a stratified split.
    """
    rng = random.Random(seed)
    if label is None:
        order = list(range(len(rows)))
        rng.shuffle(order)
        held = set(order[: max(1, int(round(fraction * len(rows))))])
        train = [r for i, r in enumerate(rows) if i not in held]
        return train, [r for i, r in enumerate(rows) if i in held], f"{fraction:.0%} random split (seed {seed})"
    by_label: dict[Hashable, list[T]] = defaultdict(list)
    for row in rows:
        by_label[label(row)].append(row)
    train, valid = [], []
    for key in sorted(by_label, key=str):
        group = by_label[key][:]
        rng.shuffle(group)
        n_valid = min(len(group) - 1, max(1, round(len(group) * fraction))) if len(group) > 1 else 0
        valid.extend(group[:n_valid])
        train.extend(group[n_valid:])
    rng.shuffle(train)
    rng.shuffle(valid)
    return train, valid, f"{fraction:.0%} stratified split (seed {seed})"
