"""What every specialist offers, and how a saved one is found by its kind.

Each task kind lives in one module of this package (see KINDS). The module defines:

- `SPECIALIST`: the Specialist subclass that loads and answers;
- `train(spec, out, force, console) -> dict`: trains a specialist into `out`, returns its metrics;
- `evaluate(specialist, data, console, **fields) -> dict`: scores a saved specialist on a labelled file
  and prints the report.

The gateway only talks to the Specialist interface below: `answer` gives the content
plus a calibrated confidence, `escalation_request` / `parse_escalation` turn a request
into a prompt for a bigger model and map its reply back, and `confidence_curve` is the
validation curve the cascade threshold is chosen from.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import ClassVar

from smallfleet.calibration import ConfidenceCurve
from smallfleet.errors import SpecialistError
from smallfleet.training.artifacts import MANIFEST, read_json

# task kind -> module defining SPECIALIST, train() and evaluate()
KINDS = {
    "classify": "smallfleet.tasks.classify",
    "extract": "smallfleet.tasks.extract",
    "generate": "smallfleet.tasks.generate",
}


def kind_module(kind: str) -> ModuleType:
    """The module implementing task kind `kind`."""
    if kind not in KINDS:
        raise SpecialistError(f"unknown task kind {kind!r} (known: {', '.join(KINDS)})")
    return importlib.import_module(KINDS[kind])


@dataclass
class Prediction:
    """One classification: the label, its calibrated confidence, and the top alternatives."""

    label: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in self.top_k],
        }


@dataclass
class AnswerOptions:
    """Per-request generation options from the client (kinds that do not generate ignore them)."""

    max_tokens: int | None = None
    """Most new tokens to generate."""
    temperature: float | None = None
    """Sampling temperature; 0 or None = greedy."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    stop: list[str] | None = None
    """Stop sequences; generation ends before any of them."""
    json_mode: bool = False
    """The client asked for a JSON object (`response_format: {"type": "json_object"}`)."""


@dataclass
class Answer:
    """A specialist's (or an upstream tier's) reply to one request, as the gateway returns it."""

    content: str
    """Assistant message content: a label, a JSON object's text, or generated text."""
    confidence: float
    """Calibrated probability that the answer is right, 0..1."""
    valid: bool = True
    """False when the answer is known to be unusable (e.g. fails its schema): escalate whatever the confidence."""
    detail: dict = field(default_factory=dict)
    """Kind-specific extras: top_k labels, per-field confidence, token counts..."""


@dataclass
class EscalationRequest:
    """What to send an upstream chat model for one request of this task."""

    messages: list[dict]
    """Chat messages (OpenAI format)."""
    response_format: dict | None = None
    """e.g. {"type": "json_object"} when the reply must be JSON."""


class Specialist(ABC):
    """A fine-tuned model for one narrow task, loaded from its folder."""

    kind: ClassVar[str]

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest

    @classmethod
    @abstractmethod
    def load(cls, folder: Path) -> Specialist:
        """Load the specialist saved in `folder`."""

    @abstractmethod
    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        """Answer each text with content and calibrated confidence."""

    def escalation_request(self, text: str) -> EscalationRequest:
        """The prompt an upstream model gets for `text`; by default the text itself."""
        return EscalationRequest(messages=[{"role": "user", "content": text}])

    def parse_escalation(self, reply: str) -> Answer | None:
        """Map an upstream reply back to an answer of this task; None when it cannot be used."""
        reply = reply.strip()
        return Answer(content=reply, confidence=1.0) if reply else None

    def confidence_curve(self) -> ConfidenceCurve:
        """Validation correctness-vs-confidence curve recorded at training time (calibration.json)."""
        return ConfidenceCurve.from_dict(read_json(self.folder / "calibration.json")["curve"])

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.folder.name)


def load_specialist(folder: str | Path) -> Specialist:
    """Load whatever specialist is saved in `folder`, dispatching on its kind.

    Raises:
        SpecialistError: the folder does not hold a specialist or its kind is unknown.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise SpecialistError(f"{folder} does not hold a specialist (no {MANIFEST}); train one with `smallfleet train`")
    manifest = read_json(folder / MANIFEST)
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise SpecialistError(f"{folder}: unknown specialist kind {kind!r} (known: {', '.join(KINDS)})")
    return kind_module(kind).SPECIALIST.load(folder)
