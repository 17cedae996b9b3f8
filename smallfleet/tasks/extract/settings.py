"""How an extraction specialist is fine-tuned: the encoder settings plus the output schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smallfleet.training.settings import TrainSettings


@dataclass
class ExtractSettings(TrainSettings):
    """Encoder fine-tuning settings of an extract task, and the record it returns."""

    schema: Path | None = None
    """JSON Schema file of the output record (properties typed string, number, integer, date or enum; `required`); optional with BIO data, where it is derived from the tags."""
