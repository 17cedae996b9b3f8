"""CLI flags generated from dataclasses: the field mapping (`--text-field`, ...) and every task
kind's settings (`--epochs`, `--max-steps`, `--schema`, ...).

Flag = YAML key = field name (dashes for underscores); the help text is the field's
docstring, and says which kinds take the setting and with which default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import click

from smallfleet.settings import field_docs, field_type
from smallfleet.tasks import KINDS, FieldMap, get_kind

FIELD_SUFFIX = "_field"


def _click_type(typ: type):
    return click.Path(dir_okay=False, path_type=Path) if typ is Path else typ


def field_flags(as_trained: bool = False) -> Callable[[Callable], Callable]:
    """A decorator adding `--<name>-field` for each FieldMap field.

    Args:
        as_trained: the default is the field the specialist was trained with (eval, predict).
    """
    docs = field_docs(FieldMap)

    def add(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(FieldMap)):
            default = "; default: as trained" if as_trained else (f"; default: {f.default}" if f.default else "")
            kinds = ", ".join(n for n in KINDS.names() if f.name in get_kind(n).fields)
            command = click.option(
                f"--{f.name}-field", f"{f.name}{FIELD_SUFFIX}", help=f"{docs.get(f.name, '')} [{kinds}{default}]"
            )(command)
        return command

    return add


def settings_flags(command: Callable) -> Callable:
    """Add one flag per setting of any registered kind; the help names the kinds and their defaults."""
    seen: dict[str, list[tuple[str, type, object, str]]] = {}
    for name in KINDS.names():
        cls = get_kind(name).settings_class
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, []).append((name, field_type(cls, f.name), f.default, docs.get(f.name, "")))
    for setting, takers in reversed(list(seen.items())):
        command = click.option(
            f"--{setting.replace('_', '-')}", setting, type=_click_type(takers[0][1]), default=None,
            help=_help(takers),
        )(command)  # fmt: skip
    return command


def _help(takers: list[tuple[str, type, object, str]]) -> str:
    """The field docstring with the kinds that take the setting and their defaults; one clause per distinct docstring."""

    def shown(value: object) -> str | None:
        return None if value is None or value == "" else repr(value) if isinstance(value, str) else str(value)

    by_doc: dict[str, list[tuple[str, object]]] = {}
    for kind, _, default, doc in takers:
        by_doc.setdefault(doc.rstrip("."), []).append((kind, shown(default)))
    clauses = []
    for doc, kinds in by_doc.items():
        by_default: dict[str | None, list[str]] = {}
        for kind, default in kinds:
            by_default.setdefault(default, []).append(kind)
        if len(by_default) == 1:
            default = next(iter(by_default))
            note = ", ".join(k for k, _ in kinds) + (f"; default {default}" if default else "")
        else:
            note = "default " + "; ".join(f"{d} for {', '.join(ks)}" for d, ks in by_default.items())
        if len(by_doc) == 1:
            clauses.append(f"{doc}. [{note}]")
        else:
            clauses.append(f"{', '.join(k for k, _ in kinds)}: {doc}" + (f" [{note.split('; ', 1)[1]}]." if "; " in note else "."))
    return " ".join(clauses)


def split_field_flags(flags: dict) -> tuple[dict[str, str], dict[str, object]]:
    """(FieldMap field -> value, setting -> value) of the flags that were given."""
    fields = {k[: -len(FIELD_SUFFIX)]: v for k, v in flags.items() if k.endswith(FIELD_SUFFIX) and v is not None}
    settings = {k: v for k, v in flags.items() if not k.endswith(FIELD_SUFFIX) and v is not None}
    return fields, settings


def dataclass_flags(cls: type) -> Callable[[Callable], Callable]:
    """A decorator adding one flag per field of settings dataclass `cls` (`--on-drift/--no-on-drift` for a bool),
    default None (= as recorded, or the field's default), help = the field's docstring."""
    docs = field_docs(cls)

    def add(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            typ = field_type(cls, f.name)
            flag = f.name.replace("_", "-")
            default = "" if f.default is None else f" [default: {f.default}]"
            if typ is bool:
                option = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=docs.get(f.name, "") + default)
            else:
                option = click.option(f"--{flag}", f.name, type=_click_type(typ), default=None,
                                      help=docs.get(f.name, "") + default)  # fmt: skip
            command = option(command)
        return command

    return add
