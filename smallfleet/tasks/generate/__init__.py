"""Task kind `generate`: input text -> output text (summaries, draft replies).

The specialist is a LoRA adapter on a small causal LM shared by every adapter on the
same base (`specialist.py`); `lora.py` and `train.py` are its recipe, `metrics.py` its
ROUGE scores and report, `card.py` its card.
"""

from __future__ import annotations

from pathlib import Path

from smallfleet.errors import DataError
from smallfleet.tasks.generate.settings import GenerateSettings
from smallfleet.tasks.kind import QualityTable, TaskKind


GENERATE_PRIOR = 0.3
"""The audit's score of free text: another kind must fit more than this share of answers to win."""


class GenerateKind(TaskKind):
    name = "generate"
    summary = "text -> text, LoRA on a small LLM"
    settings_class = GenerateSettings
    cpu_seconds_per_answer = 2.0
    settings_key = "generation"
    default_base = "smollm2-135m"
    fields = ("text", "output")
    eval_options = frozenset({"compare_base"})
    exports_adapter = True

    def train(self, spec, out, force=False, console=None) -> dict:
        from smallfleet.tasks.generate.train import train_generator

        return train_generator(spec, out, force, console)

    def load(self, folder: Path):
        from smallfleet.tasks.generate.specialist import GenerateSpecialist

        return GenerateSpecialist.load(folder)

    def item_scores(self, answers: dict) -> list[float] | None:
        return answers.get("score")

    def evaluate(self, specialist, data, console, fields, limit=None, **options) -> dict:
        from smallfleet.tasks.generate.metrics import evaluate_file

        return evaluate_file(specialist, data, console, fields, limit, compare_base=bool(options.get("compare_base")))

    def print_report(self, metrics, console, title) -> None:
        from smallfleet.tasks.generate.metrics import print_generation_report

        print_generation_report(metrics, console, title, baseline=metrics.get("base_zero_shot"))

    def training_row(self, manifest: dict, input: str, answer: str) -> dict:
        fields = manifest["fields"]
        return {fields["text"]: input, fields["output"]: answer}

    def export_adapter(self, folder, manifest, out, base_model=None, force=False) -> dict:
        from smallfleet.tasks.generate.export import export_peft

        return export_peft(folder, manifest, out, base_model, force)

    def check_answer(self, manifest: dict, answer: str) -> str:
        if not answer.strip():
            raise DataError(f"an answer for task {manifest['name']!r} must be a non-empty text")
        return answer.strip()

    def looks_like(self, inputs: list[str], answers: list[str]) -> float:
        """Any text: a fixed score, so a cluster is generation when no narrower kind fits better."""
        return GENERATE_PRIOR if answers else 0.0

    def distill_rows(self, inputs: list[str], answers: list[str], folder: Path) -> tuple[list[dict], dict]:
        """`{input, output}` rows: the frontier's text kept as it is."""
        rows = [{"input": i, "output": a} for i, a in zip(inputs, answers, strict=True) if a.strip()]
        return rows, {"fields": {"text": "input", "output": "output"}}

    def quality_table(self, metrics: dict) -> QualityTable:
        rows = [[name, metrics[key]] for key, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"))
                if key in metrics]  # fmt: skip
        good = (metrics.get("calibration") or {}).get("good_rate")
        if good is not None:
            rows.append([f"good answers (ROUGE-L >= {metrics['calibration']['quality_bar']})", good])
        return QualityTable("ROUGE F1 against the references", ["measure", "value"], rows,
                            f"{metrics.get('n', '?')} answers, {metrics.get('words_mean', 0):.0f} words on average",
                            f"ROUGE-L {metrics['rougeL']:.3f}" if "rougeL" in metrics else "")  # fmt: skip

    def agrees(self, manifest: dict, answer: str, reference: str) -> bool:
        """A good answer, as the calibration counts one: ROUGE-L F1 against the reference at the quality bar."""
        from smallfleet.tasks.generate.metrics import rouge_per_answer

        if not answer.strip() or not reference.strip():
            return False
        (scores,) = rouge_per_answer([answer], [[reference]])
        return scores["rougeL"] >= manifest["generation"]["quality_bar"]


KIND = GenerateKind()
