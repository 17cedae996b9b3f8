"""What every settings group shares: range checks, `replace`, building from a YAML mapping
with clear errors, and the per-field docstrings that CLI help is generated from.

A settings group is a plain dataclass whose fields each carry a one-line docstring (the
string literal under the field). Those docstrings are the single source of a setting's
help text: `smallfleet train --help` reads them through `field_docs`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from smallfleet.errors import ConfigError


class Settings:
    """Mixin for settings dataclasses: `replace` and range checking."""

    def replace(self, **changes: Any):
        """Return a copy with the given settings changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self, group: str, checks: dict[str, bool]) -> None:
        """Raise ConfigError naming the first setting whose check is False.

        Args:
            group: what the settings are called in the message, e.g. "training".
            checks: field name -> whether its value is in range.
        """
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{group} setting {name}={getattr(self, name)!r} is out of range")


def field_type(cls: type, name: str) -> type:
    """The plain type of field `name` (X for `X | None`)."""
    typ = get_type_hints(cls)[name]
    if get_origin(typ) is list:  # list[X]: a list
        return list
    if get_args(typ):  # Optional[X] / X | None: the non-None member
        typ = next(t for t in get_args(typ) if t is not type(None))
    return typ


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its one-line docstring, for `cls` and the dataclasses it inherits from."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            is_field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            if is_field and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def build(cls: type, values: Any, where: str, base_dir: Path | None = None) -> Any:
    """Build dataclass `cls` from a mapping, naming any unknown or mistyped key.

    Args:
        cls: the settings dataclass.
        values: the mapping read from YAML.
        where: prefix of error messages (file and key path).
        base_dir: relative paths in Path fields resolve against this folder.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a dict, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    reject_unknown(values, known, where)
    kwargs = {}
    for key, value in values.items():
        typ = field_type(cls, key)
        if value is None:
            kwargs[key] = None
            continue
        if typ is list and not isinstance(value, list):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {value!r}")
        try:
            kwargs[key] = typ(value)
            if typ is int and float(value) != kwargs[key]:
                raise ValueError(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: key '{key}' must be a {typ.__name__}, got {value!r}") from None
        if typ is Path and base_dir is not None:
            kwargs[key] = resolve_path(value, base_dir)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def resolve_path(value: Any, base_dir: Path) -> Path:
    """`value` as a path: `$VARS` expanded (`$SMALLFLEET_DATASETS` defaults to the shared datasets),
    relative to `base_dir` unless absolute."""
    import os

    expanded = os.path.expandvars(str(value).replace("$SMALLFLEET_DATASETS", str(datasets_dir())))
    p = Path(expanded).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def reject_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def datasets_dir() -> Path:
    """Folder of the shared public datasets: $SMALLFLEET_DATASETS or ../shared/datasets beside the checkout."""
    import os

    env = os.environ.get("SMALLFLEET_DATASETS")
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parent.parent.parent / "shared" / "datasets").resolve()
