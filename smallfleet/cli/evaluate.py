"""`smallfleet eval`: score a specialist on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from smallfleet.cli.options import runtime_option, use_runtime
from smallfleet.cli.settings_flags import field_flags, split_field_flags
from smallfleet.guarantee import DEFAULT_DELTA, cascade_on, guaranteed_threshold


@click.command("eval")
@click.argument("specialist", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Labelled data (JSONL or CSV).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the metrics here as JSON.")
@field_flags(as_trained=True)
@click.option("--input-field", help="Same as --text-field (the input of a generate task).")
@click.option("--limit", type=int, help="Score only the first N rows.")
@click.option("--ood", "ood_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Out-of-scope texts (JSONL or CSV, in the text field): adds the `ood` section, how well novelty "
              "and confidence tell them from --data's texts.")
@click.option("--compare-base", is_flag=True, help="Generate: also score the bare base model zero-shot, side by side.")
@click.option("--target", type=click.FloatRange(0, 1, min_open=True),
              help="Quality target of the cascade section [default: the task's, else 0.95].")
@click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Allowed probability that accepted answers miss the target [default: the task's, else 0.05].")
@runtime_option
def command(specialist, data, json_out, input_field, limit, compare_base, target, delta, runtime, ood_file, **flags):
    """Evaluate SPECIALIST on --data.

    For classify specialists: prints accuracy, macro-F1, expected calibration error (ECE), the risk-coverage
    table (accuracy on the most confident 80/90/95/100% of inputs), per-label
    scores and the most confused label pairs. The JSON holds the same numbers:
    `n`, `accuracy`, `macro_f1`, `ece`, `coverage`, `per_label`, `confused`.

    For extract specialists: per-field precision/recall/F1, whole-record exact match,
    schema-valid rate, record ECE and risk-coverage (exact match on the most confident
    records); for BIO data also span-level micro F1 (conlleval/seqeval style). The JSON
    holds `f1` (span micro F1 for BIO data, else field micro F1), `exact_match`,
    `per_field` (field -> F1), `n`, `schema_valid`, `coverage`, `fields`.

    For generate specialists: ROUGE-1/2/L F1 on a 0-1 scale (`rouge1`, `rouge2`, `rougeL`, best of the
    row's `references` list when the file has one, else its output field), `n`, output length, time to
    first token and tokens/s; with --compare-base also `base_zero_shot` with the same numbers.

    Every kind adds `cascade`: the escalation threshold chosen on the specialist's validation data with
    its guarantee at --target and --delta, and what it does on --data: `target`, `delta`, `threshold`,
    `coverage` (share accepted), `accepted_accuracy` (accuracy, exact record match, or good-answer rate
    of the accepted answers), `guaranteed_lower_bound`, `supported`, `validation_coverage`.

    With --ood, `ood`: AUROC of novelty for --data's texts vs the out-of-scope ones (`auroc`; and of
    1 - confidence, `auroc_confidence`), the share of in-distribution rows flagged when 95% of out-of-scope
    ones are (`fpr_at_95tpr`), the share of each group the served thresholds escalate (`escalated_in`,
    `escalated_ood`; by test: `escalated_in_novelty`, `escalated_ood_confidence`, ...) and each row's novelty.
    """
    from smallfleet.tasks import SavedTask

    use_runtime(runtime)
    task = SavedTask.open(specialist)
    fields, _ = split_field_flags(flags)
    if input_field:
        fields["text"] = input_field
    options = {"compare_base": True} if compare_base else {}
    wrong = [f"--{f}-field" for f in fields if f not in task.kind.fields]
    wrong += [f"--{o.replace('_', '-')}" for o in options if o not in task.kind.eval_options]
    if wrong:
        raise click.UsageError(f"{wrong[0]} does not apply to {task.kind.name} specialists")
    console = Console()
    loaded = task.load()
    metrics = task.kind.evaluate(loaded, data, console, fields, limit, **options)
    stored = task.manifest.get("cascade") or {}
    guarantee = guaranteed_threshold(task.confidence_curve(), target or stored.get("target", 0.95),
                                     delta or stored.get("delta", DEFAULT_DELTA))  # fmt: skip
    answers = metrics.pop("answers")
    metrics["cascade"] = cascade = cascade_on(guarantee, answers["confidence"], answers["correct"])
    quality = "-" if cascade["accepted_accuracy"] is None else f"{cascade['accepted_accuracy']:.4f}"
    console.print(f"cascade on {data}: {guarantee.describe()}; here {cascade['coverage']:.1%} accepted, "
                  f"accepted quality {quality}")  # fmt: skip
    if ood_file:
        metrics["ood"] = ood = ood_section(loaded, data, ood_file, fields.get("text"), limit, guarantee.threshold)
        auc = "-" if ood["auroc"] is None else f"{ood['auroc']:.3f}"
        console.print(f"out-of-scope ({ood_file}): novelty AUROC {auc}, 1 - confidence AUROC "
                      f"{ood['auroc_confidence']:.3f}; escalated {ood['escalated_ood']:.1%} of {ood['n_ood']} "
                      f"out-of-scope and {ood['escalated_in']:.1%} of {ood['n_in']} in-distribution rows")  # fmt: skip
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def ood_section(specialist, data: Path, ood_file: Path, text_field: str | None, limit: int | None,
                confidence_threshold: float) -> dict:  # fmt: skip
    """The `ood` section of `eval --ood`: the specialist answers --data's texts and the out-of-scope ones."""
    from smallfleet.novelty import ood_report
    from smallfleet.tasks.recipe import read_texts

    field = text_field or specialist.manifest["fields"]["text"]
    inside = specialist.answer(read_texts(data, field)[:limit])
    outside = specialist.answer(read_texts(ood_file, field))
    threshold = specialist.novelty.threshold if specialist.novelty else None
    return ood_report([a.novelty for a in inside], [a.novelty for a in outside], [a.confidence for a in inside],
                      [a.confidence for a in outside], confidence_threshold, threshold)  # fmt: skip
