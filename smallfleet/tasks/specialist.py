"""What every specialist offers the code around it.

The gateway only talks to the Specialist interface below: `answer` gives the content
plus a calibrated confidence, `escalation_request` / `parse_escalation` turn a request
into a prompt for a bigger model and map its reply back, and the validation curve in
`calibration.json` is what the cascade threshold is chosen from. The accept-or-escalate
decision itself is made once, in the gateway.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from smallfleet.calibration import ConfidenceCurve
from smallfleet.errors import SmallfleetError
from smallfleet.models.encoder_runtime import choose_encoder_runtime, runtime_calibration
from smallfleet.novelty import NoveltyModel, describe_novelty
from smallfleet.training.artifacts import CALIBRATION, MANIFEST, read_json

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
    novelty: float | None = None
    """How far the input lies from the training data (see `novelty.py`); None when the specialist has no novelty statistics."""
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

    def __init__(self, folder: Path, manifest: dict, calibration_runtime: str | None = None):
        self.folder = folder
        self.manifest = manifest
        self.calibration_runtime = calibration_runtime
        """The encoder runtime the model answers on (e.g. onnx): its calibration record is used when training made
        one there; None = the trained model's calibration."""
        self.novelty: NoveltyModel | None = NoveltyModel.load(folder, manifest.get("novelty"))
        """Novelty statistics and threshold saved with the specialist; None = no novelty test (older folders)."""

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

    @abstractmethod
    def prediction(self, text: str, answer: Answer) -> dict:
        """What `smallfleet predict` prints for `text`: the answer in the kind's own keys, with `confidence`."""

    def confidence_curve(self) -> ConfidenceCurve:
        """Validation correctness-vs-confidence curve recorded at training time (calibration.json), on the runtime
        the model answers on when training calibrated it there too."""
        return confidence_curve(self.folder, self.calibration_runtime)

    can_stream: ClassVar[bool] = False
    """True when `stream` yields the answer piece by piece as it is generated."""

    def stream(self, text: str, options: AnswerOptions | None = None) -> Iterator[str]:
        """Yield pieces of the answer to `text` (kinds with `can_stream`)."""
        raise NotImplementedError(f"{self.kind} specialists do not stream")

    def novelty_line(self) -> str:
        """`serve`'s start-up words about the novelty test this specialist runs (threshold and what it escalates)."""
        return describe_novelty(self.manifest.get("novelty"))

    def serving_note(self) -> str:
        """Extra words for `serve`'s start-up line about this specialist (e.g. its runtime)."""
        return ""

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.folder.name)


def confidence_curve(folder: Path, runtime: str | None = None) -> ConfidenceCurve:
    """The validation correctness-vs-confidence curve saved in a specialist folder, without loading the model:
    the one measured on `runtime` when training made one there, else the trained model's. Without `runtime`, the
    runtime this process would serve the folder on (`--runtime`, else auto), so that thresholds computed offline
    (fleet.json, distill, gates) are those of the model that answers."""
    folder = Path(folder)
    calibration = read_json(folder / CALIBRATION)
    if runtime is None and calibration.get("runtimes"):
        try:
            runtime = choose_encoder_runtime(folder, read_json(folder / MANIFEST)).name
        except SmallfleetError:  # a runtime asked for that cannot run here: loading the model will say so
            runtime = None
    return ConfidenceCurve.from_dict(runtime_calibration(calibration, runtime)["curve"] if runtime else calibration["curve"])
