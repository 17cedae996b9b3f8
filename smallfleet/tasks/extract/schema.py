"""The output schema of an extraction task: a JSON Schema object with typed properties.

Supported property types are string, number, integer, date (`"type": "date"` or
`"type": "string", "format": "date"`) and enum (`"enum": [...]`, with or without
`"type": "string"`). Values found in text are normalized to their type (dates to
ISO-8601, amounts to numbers, enums to their canonical member) and a record is
valid when every required field is present and every value has its type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smallfleet.errors import ConfigError

FIELD_TYPES = ("string", "number", "integer", "date", "enum")
_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


class NormalizeError(ValueError):
    """A value could not be read as its field's type."""


@dataclass
class FieldSpec:
    """One property of the schema."""

    name: str
    type: str
    description: str = ""
    enum: list[str] = field(default_factory=list)
    dayfirst: bool = True
    """For dates: read 03/04/2018 as 3 April (most receipts outside the US)."""

    def normalize(self, value: Any) -> Any:
        """`value` converted to this field's type.

        Raises:
            NormalizeError: the value cannot be read as this type.
        """
        if value is None:
            raise NormalizeError("no value")
        if self.type == "string":
            text = " ".join(str(value).split())
            if not text:
                raise NormalizeError("empty string")
            return text
        if self.type in ("number", "integer"):
            return _to_number(value, self.type == "integer")
        if self.type == "date":
            return _to_date(str(value), self.dayfirst)
        return _to_enum(str(value), self.enum)

    def to_json_schema(self) -> dict:
        out: dict[str, Any] = {"type": "string", "format": "date"} if self.type == "date" else {"type": self.type}
        if self.type == "enum":
            out = {"type": "string", "enum": list(self.enum)}
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class Schema:
    """The fields an extraction task returns, in declaration order."""

    fields: dict[str, FieldSpec]
    required: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.fields)

    def normalize_record(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Normalize each value to its type; returns (record, problems) without raising.

        A value that fails its type is kept as given and named in the problems, as is
        a missing required field or an unknown key.
        """
        record, problems = {}, []
        for name, value in values.items():
            spec = self.fields.get(name)
            if spec is None:
                problems.append(f"unknown field {name!r}")
                continue
            if value is None or value == "":
                continue
            try:
                record[name] = spec.normalize(value)
            except NormalizeError as exc:
                record[name] = value
                problems.append(f"{name}: {value!r} is not a valid {spec.type} ({exc})")
        problems += [f"missing required field {name!r}" for name in self.required if name not in record]
        return record, problems

    def to_json_schema(self) -> dict:
        """The schema as a standard JSON Schema object (for prompts and cards)."""
        out = {"type": "object", "properties": {n: f.to_json_schema() for n, f in self.fields.items()}}
        if self.required:
            out["required"] = list(self.required)
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "schema") -> Schema:
        """Parse a JSON Schema object.

        Raises:
            ConfigError: the schema is malformed; the message names the property and the allowed types.
        """
        if not isinstance(raw, dict) or not isinstance(raw.get("properties"), dict) or not raw["properties"]:
            raise ConfigError(f"{where}: expected a JSON Schema object with a non-empty 'properties' mapping")
        if raw.get("type", "object") != "object":
            raise ConfigError(f"{where}: top-level 'type' must be 'object', got {raw['type']!r}")
        fields = {name: _parse_property(name, prop, where) for name, prop in raw["properties"].items()}
        required = raw.get("required") or []
        if not isinstance(required, list) or any(r not in fields for r in required):
            unknown = [r for r in required if r not in fields] if isinstance(required, list) else required
            raise ConfigError(
                f"{where}: 'required' names unknown properties {unknown!r} (properties: {', '.join(fields)})"
            )
        return cls(fields, list(required))

    @classmethod
    def from_file(cls, path: str | Path) -> Schema:
        """Read a schema from a JSON file."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"schema file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_tags(cls, tags: set[str]) -> Schema:
        """An all-optional string schema with one field per BIO entity type (`B-city` -> city)."""
        names = sorted({t.split("-", 1)[1] for t in tags if t != "O" and "-" in t})
        return cls({n: FieldSpec(n, "string") for n in names}, [])


def _parse_property(name: str, prop: Any, where: str) -> FieldSpec:
    if not _NAME.match(name):
        raise ConfigError(f"{where}: property name {name!r} must start with a letter and hold letters, digits, _ . -")
    if not isinstance(prop, dict):
        raise ConfigError(f'{where}: property {name!r} must be an object like {{"type": "string"}}')
    typ = prop.get("type")
    description = str(prop.get("description", ""))
    if "enum" in prop or typ == "enum":
        members = prop.get("enum")
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: property {name!r} of type enum needs a non-empty 'enum' list")
        return FieldSpec(name, "enum", description, [str(m) for m in members])
    if typ == "string" and prop.get("format") == "date":
        typ = "date"
    if typ not in FIELD_TYPES:
        raise ConfigError(f"{where}: property {name!r} has unknown type {typ!r} (allowed: {', '.join(FIELD_TYPES)})")
    return FieldSpec(name, typ, description, dayfirst=bool(prop.get("dayfirst", True)))


def _to_number(value: Any, integer: bool) -> int | float:
    if isinstance(value, bool):
        raise NormalizeError("a boolean is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = re.sub(r"(?i)\b(rm|usd|eur|gbp|myr|sgd)\b|[$€£¥\s]", "", str(value))
        if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
            text = text.replace(",", "")  # 1,234.50
        elif re.fullmatch(r"-?\d+,\d{1,2}", text):
            text = text.replace(",", ".")  # 12,50 (decimal comma)
        try:
            number = float(text)
        except ValueError:
            raise NormalizeError("not a number") from None
    if integer:
        if number != int(number):
            raise NormalizeError("not a whole number")
        return int(number)
    return round(number, 6)


def _to_date(text: str, dayfirst: bool) -> str:
    from dateutil import parser

    cleaned = text.strip().strip(".,:;")
    if not re.search(r"\d", cleaned):
        raise NormalizeError("no digits in date")
    try:
        parsed = parser.parse(cleaned, dayfirst=dayfirst, default=datetime(2000, 1, 1))
    except (ValueError, OverflowError, parser.ParserError):
        raise NormalizeError("not a date") from None
    return parsed.date().isoformat()


def _to_enum(text: str, members: list[str]) -> str:
    def key(s: str) -> str:
        return re.sub(r"[\W_]+", "", s.casefold())

    wanted = key(text)
    for member in members:
        if key(member) == wanted:
            return member
    raise NormalizeError(f"not one of {', '.join(members)}")


ENUM_MAX = 8
"""A string field with at most this many distinct values (each seen at least twice) is inferred as an enum."""
REQUIRED_SHARE = 0.95
"""A field present in at least this share of the records is inferred as required."""


def infer_schema(records: list[dict]) -> dict:
    """A JSON Schema that fits `records` (objects of scalar values): each key a property typed `integer` or
    `number` when every value is one, else `string` (an enum when few values repeat); keys present in nearly
    every record required. A starting point for the user to edit."""
    values: dict[str, list] = {}
    for record in records:
        for key, value in record.items():
            if value is not None and value != "":
                values.setdefault(key, []).append(value)
    properties = {}
    for key, seen in values.items():
        if all(isinstance(v, int) and not isinstance(v, bool) for v in seen):
            properties[key] = {"type": "integer"}
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen):
            properties[key] = {"type": "number"}
        else:
            texts = [str(v) for v in seen]
            distinct = set(texts)
            if len(distinct) <= ENUM_MAX and len(texts) >= 2 * len(distinct) and len(texts) >= 10:
                properties[key] = {"enum": sorted(distinct)}
            else:
                properties[key] = {"type": "string"}
    required = [k for k, seen in values.items() if len(seen) >= REQUIRED_SHARE * len(records)]
    return {"type": "object", "properties": properties, "required": required}
