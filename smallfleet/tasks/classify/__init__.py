"""Task kind `classify`: text -> one label from a fixed set (ticket routing, intents, sentiment).

The specialist is an encoder with a mean-pooled linear head and temperature-scaled
confidence (`specialist.py`); `train.py` is its recipe, `metrics.py` its scores and
report, `card.py` its model card.
"""

from __future__ import annotations

from pathlib import Path

from smallfleet.errors import DataError
from smallfleet.tasks.kind import AnswerForm, QualityTable, TaskKind
from smallfleet.training.settings import TrainSettings


MAX_LABELS = 200
"""More distinct answers than this are not a label set."""
MAX_LABEL_WORDS = 6


def _label_key(answer: str) -> str:
    return " ".join(answer.strip().rstrip(".").split()).casefold()


class ClassifyKind(TaskKind):
    name = "classify"
    summary = "text -> label"
    settings_class = TrainSettings
    cpu_seconds_per_answer = 0.02
    default_base = "minilm"
    fields = ("text", "label")

    def train(self, spec, out, force=False, console=None) -> dict:
        from smallfleet.tasks.classify.train import train_classifier

        return train_classifier(spec, out, force, console)

    def load(self, folder: Path):
        from smallfleet.tasks.classify.specialist import ClassifySpecialist

        return ClassifySpecialist.load(folder)

    def evaluate(self, specialist, data, console, fields, limit=None, **options) -> dict:
        from smallfleet.tasks.classify.metrics import evaluate_file

        return evaluate_file(specialist, data, console, fields, limit)

    def print_report(self, metrics, console, title) -> None:
        from smallfleet.tasks.classify.metrics import print_classification_report

        print_classification_report(metrics, console, title=title)

    def training_row(self, manifest: dict, input: str, answer: str) -> dict:
        fields = manifest["fields"]
        return {fields["text"]: input, fields["label"]: answer}

    def check_answer(self, manifest: dict, answer: str) -> str:
        labels = manifest["labels"]
        if answer not in labels:
            raise DataError(f"{answer!r} is not a label of task {manifest['name']!r} (labels: {', '.join(labels)})")
        return answer

    def answer_form(self, manifest: dict, guess: str | None) -> AnswerForm:
        """One button per label, the guess pre-selected."""
        return AnswerForm("choice", options=list(manifest["labels"]), value=guess or "")

    def looks_like(self, inputs: list[str], answers: list[str]) -> float:
        """Short answers from a small set: the share of answers that are short and repeat (a label seen at least
        `MIN_LABEL_SHARE` of the time, or twice), zero when the distinct answers are too many to be labels."""
        norm = [" ".join(a.split()).strip().casefold() for a in answers if a.strip()]
        if not norm:
            return 0.0
        counts: dict[str, int] = {}
        for a in norm:
            counts[a] = counts.get(a, 0) + 1
        if len(counts) > MAX_LABELS or len(counts) > 0.5 * len(norm):
            return 0.0
        short = [a for a in norm if len(a.split()) <= MAX_LABEL_WORDS and counts[a] >= 2]
        return len(short) / len(norm)

    def distill_rows(self, inputs: list[str], answers: list[str], folder: Path) -> tuple[list[dict], dict]:
        """`{text, label}` rows; answers that differ only in case, spacing or a trailing period are one label,
        written as the frontier wrote it most often, so the specialist answers in the frontier's own strings."""
        forms: dict[str, dict[str, int]] = {}
        for a in answers:
            key = _label_key(a)
            if key:
                forms.setdefault(key, {}).setdefault(a.strip(), 0)
                forms[key][a.strip()] += 1
        canonical = {key: max(seen, key=lambda f: seen[f]) for key, seen in forms.items()}
        rows = [{"text": text, "label": canonical[_label_key(a)]} for text, a in zip(inputs, answers, strict=True)
                if _label_key(a)]  # fmt: skip
        if len(canonical) < 2:
            raise DataError(f"the answers hold {len(canonical)} distinct label(s); a classifier needs at least 2")
        return rows, {}

    def answer_mix(self, manifest: dict) -> dict[str, int] | None:
        return dict(manifest.get("data", {}).get("label_counts") or {}) or None

    def quality_table(self, metrics: dict) -> QualityTable:
        pairs = metrics.get("confused", [])[:10]
        return QualityTable("most confused label pairs", ["true label", "predicted", "count"],
                            [[p["gold"], p["predicted"], p["count"]] for p in pairs],
                            "" if pairs else "no confusions on this split",
                            f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}")  # fmt: skip


KIND = ClassifyKind()
