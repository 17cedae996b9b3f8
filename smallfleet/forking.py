"""Objects that own a thread or a connection pool, made ready again in a forked child.

`serve --workers N` loads the fleet once and forks N workers from it, so the weights are
shared between them (copy-on-write) instead of loaded N times. A thread does not survive
`os.fork`, and a database connection must not be used by two processes, so each object that
owns one registers here and its `after_fork()` runs first thing in every child.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def after_fork(self) -> None:
        """Make the object usable in a child this process just forked (new threads, new locks, no shared sockets)."""


_owners: weakref.WeakSet = weakref.WeakSet()


def renew_after_fork(owner: ForkAware) -> None:
    """Call `owner.after_fork()` in every child forked from now on, for as long as `owner` lives."""
    _owners.add(owner)


def _in_child() -> None:
    for owner in list(_owners):
        owner.after_fork()


os.register_at_fork(after_in_child=_in_child)
