"""Name -> implementation registries for the project's families (task kinds, tiers, runtimes).

Every member, built-in or third-party, is found the same way: an entry point in the
family's group (smallfleet's own are declared in its `pyproject.toml`), or a call to
`register()` (tests, notebooks). Nothing is imported until a name is asked for, so
listing the names of a family is cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from smallfleet.errors import ConfigError, SmallfleetError

T = TypeVar("T")


class Registry(Generic[T]):
    """The members of one family by name, loaded on first use.

    Args:
        group: entry-point group, e.g. `smallfleet.task_kinds`.
        what: how an error names a member, e.g. "task kind".
    """

    def __init__(self, group: str, what: str):
        self.group = group
        self.what = what
        self._refs: dict[str, Callable[[], T]] = {}
        self._loaded: dict[str, T] = {}
        self._scanned = False
        self._lock = threading.Lock()

    def register(self, name: str, member: T) -> None:
        """Add (or replace) the member called `name`."""
        with self._lock:
            self._scan()
            self._loaded[name] = member
            self._refs[name] = lambda: member

    def names(self) -> list[str]:
        """Every registered name, in registration order (built-ins first)."""
        with self._lock:
            self._scan()
            return list(self._refs)

    def get(self, name: str, error: type[SmallfleetError] = ConfigError) -> T:
        """The member called `name`.

        Raises:
            `error`: no member has that name; the message lists the known ones.
        """
        with self._lock:
            self._scan()
            if name not in self._refs:
                known = ", ".join(self._refs) or f"none: is smallfleet installed (`pip install -e .`)? group {self.group}"
                raise error(f"unknown {self.what} {name!r} (known: {known})")
            if name not in self._loaded:
                self._loaded[name] = self._refs[name]()
            return self._loaded[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in sorted(entry_points(group=self.group), key=lambda e: (not e.value.startswith("smallfleet."), e.name)):
            self._refs.setdefault(ep.name, ep.load)
