"""Task kinds: one package per kind (`classify/`, `extract/`, `generate/`), found through one registry."""

from smallfleet.tasks.kind import KINDS, SavedTask, TaskKind, get_kind, load_specialist
from smallfleet.tasks.spec import FieldMap, TaskSpec
from smallfleet.tasks.specialist import Answer, AnswerOptions, EscalationRequest, Specialist

__all__ = [
    "KINDS", "Answer", "AnswerOptions", "EscalationRequest", "FieldMap", "SavedTask", "Specialist", "TaskKind",
    "TaskSpec", "get_kind", "load_specialist",
]
