"""Personal data found in text and replaced by typed placeholders (`<EMAIL_1>`), then put back.

Used before a request goes to an external tier (each tier's `redact` list) and for the request
log (`serving.log_inputs: redacted`).

Why rules and not a detection library: Microsoft Presidio, the maintained choice, needs a spaCy
language model for its engine, and spaCy's models are released outside PyPI (only unofficial
re-uploads are there); GLiNER-style detectors load their weights from a model hub. Neither can be
installed offline from PyPI. So the structured kinds use patterns with the checks their formats
carry, which is what Presidio's own recognizers for them do: e-mail addresses, card numbers (13-19
digits passing the Luhn check), IBANs (country, check digits, mod-97 = 1), phone numbers (an
international `+` form, or grouped digits with separators; dates, card numbers and IBANs excluded).
Person names have no offline model, so `person` finds the names text marks as names: after a
title (Mr, Ms, Dr...), "my name is"/"this is"/"I am", and on the line after a sign-off
("Thanks,", "Regards,"...). Names elsewhere are not found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from smallfleet.errors import ConfigError

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,4}(?![\w-])")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_NAME = r"[A-Z][a-z'’-]+(?: [A-Z][a-z'’-]+){0,2}"
_PERSON = [
    re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.? ({_NAME})"),
    re.compile(rf"\b(?:[Mm]y name is|[Tt]his is|I am|I'm) ({_NAME})\b"),
    re.compile(rf"(?:^|\n)[ \t]*(?:Thanks|Thank you|Regards|Best regards|Kind regards|Best|Cheers|Sincerely|Many thanks)"
               rf"[,!.]?[ \t]*\n[ \t]*({_NAME})[ \t]*(?=\n|$)"),  # fmt: skip
]
_NOT_NAMES = {"Support", "Team", "Customer", "The", "Your", "Our", "Sorry", "Hello", "Hi", "Not", "Still", "Very",
              "Really", "So", "Just", "Writing", "Here", "Going", "Trying", "Unable", "Happy", "Glad"}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """Whether a card number's digits pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether an IBAN (spaces allowed) has a valid ISO 13616 check: the rearranged number mod 97 is 1."""
    s = iban.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _emails(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL.finditer(text):
        yield m.span()


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield m.span()


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        if iban_valid(m.group()):
            yield m.span()


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for m in _PHONE.finditer(text):
        found = m.group()
        digits = re.sub(r"\D", "", found)
        if not 7 <= len(digits) <= 15 or _DATE.fullmatch(found):
            continue
        if found.startswith("+") or "(" in found or len(re.findall(r"[ .-]", found)) >= 2:
            yield m.span()  # one separator alone (`12-34`) is more often a reference than a phone number


def _persons(text: str) -> Iterator[tuple[int, int]]:
    for pattern in _PERSON:
        for m in pattern.finditer(text):
            start, end = m.span(1)
            words = m.group(1).split()
            while words and words[-1] in _NOT_NAMES:  # "I am Very ..." is not a name
                end -= len(words.pop()) + 1
            if words and words[0] not in _NOT_NAMES:
                yield start, end


DETECTORS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": _emails, "card": _cards, "iban": _ibans, "phone": _phones, "person": _persons,
}  # fmt: skip
"""Kind -> its detector. Order matters: a span taken by an earlier kind is not taken again (a card number is
not also a phone number)."""
KINDS = tuple(DETECTORS)


def check_kinds(kinds: list[str], where: str) -> None:
    """ConfigError naming an unknown kind in `kinds`."""
    for kind in kinds:
        if kind not in DETECTORS:
            raise ConfigError(f"{where}: unknown kind of personal data {kind!r} (kinds: {', '.join(KINDS)})")


def find(text: str, kinds: list[str] | tuple[str, ...] = KINDS) -> list[tuple[int, int, str]]:
    """The spans of personal data of `kinds` in `text`, as (start, end, kind), in order, not overlapping."""
    taken: list[tuple[int, int, str]] = []
    for kind in DETECTORS:
        if kind not in kinds:
            continue
        for start, end in DETECTORS[kind](text):
            if all(end <= s or start >= e for s, e, _ in taken):
                taken.append((start, end, kind))
    return sorted(taken)


class Redaction:
    """Replaces personal data by typed placeholders, the same value by the same placeholder throughout, and puts
    it back in text that carries the placeholders (an upstream's answer)."""

    def __init__(self, kinds: list[str] | tuple[str, ...] = KINDS):
        self.kinds = kinds
        self.originals: dict[str, str] = {}  # placeholder -> value
        self._placeholders: dict[tuple[str, str], str] = {}  # (kind, value) -> placeholder
        self._counts: dict[str, int] = {}

    def redact(self, text: str) -> str:
        """`text` with each detected value replaced by its placeholder, e.g. `<EMAIL_1>`."""
        out, last = [], 0
        for start, end, kind in find(text, self.kinds):
            value = text[start:end]
            placeholder = self._placeholders.get((kind, value))
            if placeholder is None:
                self._counts[kind] = self._counts.get(kind, 0) + 1
                placeholder = f"<{kind.upper()}_{self._counts[kind]}>"
                self._placeholders[(kind, value)] = placeholder
                self.originals[placeholder] = value
            out += [text[last:start], placeholder]
            last = end
        return "".join(out) + text[last:]

    def restore(self, text: str) -> str:
        """`text` with every placeholder this redaction made replaced by its original value."""
        if not self.originals:
            return text
        pattern = re.compile("|".join(re.escape(p) for p in sorted(self.originals, key=len, reverse=True)))
        return pattern.sub(lambda m: self.originals[m.group()], text)

    def redact_messages(self, messages: list[dict]) -> list[dict]:
        """Chat messages with their text redacted (string contents and the text of content parts)."""
        out = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                content = self.redact(content)
            elif isinstance(content, list):
                content = [{**p, "text": self.redact(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                           else p for p in content]  # fmt: skip
            out.append({**message, "content": content})
        return out


def redact(text: str, kinds: list[str] | tuple[str, ...] = KINDS) -> str:
    """`text` with personal data of `kinds` replaced by typed placeholders."""
    return Redaction(kinds).redact(text)
