"""Task kinds: one module per kind (`classify`, ...), each training and loading its specialist."""

from smallfleet.tasks.base import KINDS, Prediction, Specialist, load_specialist

__all__ = ["KINDS", "Prediction", "Specialist", "load_specialist"]
