"""What every specialist offers, and how a saved one is found by its kind."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from smallfleet.errors import SpecialistError
from smallfleet.training.artifacts import MANIFEST, read_json

# task kind -> module defining a Specialist subclass named in its SPECIALIST attribute
KINDS = {"classify": "smallfleet.tasks.classify"}


@dataclass
class Prediction:
    """One answer: the label, its calibrated confidence, and the top alternatives."""

    label: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in self.top_k],
        }


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
    def predict(self, texts: list[str]) -> list[Prediction]:
        """Answer each text, with calibrated confidence."""

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
    module = importlib.import_module(KINDS[kind])
    return module.SPECIALIST.load(folder)
