"""Answering a review item: one code path for `smallfleet review answer` and the console.

The answer is checked by the item's task and stored in its canonical form; whether the
specialist's guess was right by it is stored beside it as a `review` judgement (ground truth
for live quality), and the answered item becomes a labelled example for retraining.
"""

from __future__ import annotations

from collections.abc import Callable

from smallfleet.errors import ConfigError
from smallfleet.store import Database
from smallfleet.store.reviews import PENDING, get, record_answer
from smallfleet.tasks import SavedTask


def answer_review(db: Database, task_of: Callable[[str], SavedTask], item_id: int, answer: str,
                  reviewer: str | None = None, pending_only: bool = False) -> dict:  # fmt: skip
    """Record `answer` for review item `item_id`; returns the item as stored.

    Args:
        task_of: the trained task called `name`.
        reviewer: who answered (a key name, or what `--reviewer` says).
        pending_only: refuse an item already answered (the console: two people on one item).

    Raises:
        ConfigError: no such item, or (with `pending_only`) it was answered already.
        DataError: the answer is not valid for the item's task, with the reason.
    """
    item = get(db, item_id)
    if pending_only and item["status"] != PENDING:
        raise ConfigError(f"review #{item_id} was already answered ({item['answer']!r} by {item['reviewer'] or 'someone'})")
    guess_right = None
    if item["task"]:
        task = task_of(item["task"])
        answer = task.check_answer(answer)
        guess_right = None if item["guess"] is None else task.agrees(item["guess"], answer)
    record_answer(db, item, answer, reviewer, guess_right)
    return get(db, item_id)
