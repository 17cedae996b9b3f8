"""Prompt templates: the fixed text around the variable part of a task's user turns.

A template is the system prompt (exact) and the user turn's common prefix and suffix. They
are found per system prompt: a run of at least `MIN_WORDS` leading (then trailing) words
shared by at least `min_size` user turns marks a template; its prefix is then the longest
common prefix of the turns that share it, cut back to a word boundary (so a variable part
never loses half a word). What is left between prefix and suffix is the task's input.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import asdict, dataclass

MIN_WORDS = 3
"""Shortest run of shared words that counts as a template."""
MIN_CHARS = 12
MAX_WORDS = 12
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Template:
    """The fixed parts of a task's requests: `system` prompt (None: none), and the user turn's `prefix` and `suffix`."""

    system: str | None
    prefix: str = ""
    suffix: str = ""

    def matches(self, system: str | None, user: str) -> bool:
        """Whether a request with this system prompt and user turn was written from this template."""
        if (system or None) != self.system:
            return False
        if not (self.prefix or self.suffix) and self.system is None:
            return False
        return (len(user) > len(self.prefix) + len(self.suffix) and user.startswith(self.prefix)
                and user.endswith(self.suffix))  # fmt: skip

    def strip(self, user: str) -> str:
        """The variable part of a user turn written from this template."""
        end = len(user) - len(self.suffix) if self.suffix else len(user)
        return user[len(self.prefix) : end].strip()

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Template:
        return cls(data.get("system"), data.get("prefix", ""), data.get("suffix", ""))


def find_templates(texts: list[str], min_size: int) -> list[tuple[str, str, list[int]]]:
    """The templates among user turns that share a system prompt: (prefix, suffix, indices of the turns).

    Args:
        texts: The user turns.
        min_size: Fewest turns that make a template.
    """
    found = []
    left = list(range(len(texts)))
    for reverse in (False, True):
        groups = _shared_runs([texts[i] for i in left], min_size, reverse)
        taken = set()
        for members in groups:
            idx = [left[m] for m in members]
            prefix = _common([texts[i] for i in idx], reverse=False)
            suffix = _common([texts[i] for i in idx], reverse=True)
            found.append((prefix, suffix, idx))
            taken.update(idx)
        left = [i for i in left if i not in taken]
    return found


def _shared_runs(texts: list[str], min_size: int, reverse: bool) -> list[list[int]]:
    """Groups of turns sharing a leading (trailing, `reverse`) run of words that at least `min_size` turns share."""
    runs = [_runs(t, reverse) for t in texts]
    counts = Counter(r for rs in runs for r in rs)
    chosen: dict[str, list[int]] = {}
    for i, rs in enumerate(runs):
        good = [r for r in rs if counts[r] >= min_size]
        if good:
            chosen.setdefault(good[0], []).append(i)  # the shortest shared run: the template, not template + a word
    return [m for m in chosen.values() if len(m) >= min_size]


def _runs(text: str, reverse: bool) -> list[str]:
    """The text's leading (trailing) runs of MIN_WORDS..MAX_WORDS words at least MIN_CHARS long, shortest first."""
    words = _WORD.findall(text.strip())
    if reverse:
        words = words[::-1]
    out = []
    for k in range(MIN_WORDS, min(MAX_WORDS, len(words) - 1) + 1):  # leave at least one word to vary
        part = words[:k]
        run = "".join(part[::-1] if reverse else part).strip()
        if len(run) >= MIN_CHARS:
            out.append(run)
    return out


def _common(texts: list[str], reverse: bool) -> str:
    """The longest common prefix (suffix) of `texts`, cut back to a word boundary."""
    if reverse:
        return _common([t[::-1] for t in texts], reverse=False)[::-1]
    common = os.path.commonprefix(texts)
    shortest = min(len(t) for t in texts)
    if len(common) == shortest:  # one text is all template: nothing variable left, so keep none of it
        return ""
    if common and not common[-1].isspace() and not all(t[len(common)].isspace() for t in texts):
        cut = max(common.rfind(" "), common.rfind("\n"), common.rfind("\t"))
        common = common[: cut + 1]
    return common
