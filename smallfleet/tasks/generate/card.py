"""The model card of a generative specialist: base model, data, settings, loss, ROUGE and
what its confidence means."""

from __future__ import annotations

from pathlib import Path

from smallfleet.tasks.card import CardParts, write_card


def write_generate_card(folder: Path, manifest: dict, metrics: dict, calibration: dict) -> None:
    """Write README.md (the card) and the calibration plots into the specialist folder `folder`."""
    base, data, fit, gen = manifest["base"], manifest["data"], manifest["fit"], manifest["generation"]
    scores = [
        "ROUGE F1 with stemming, 0-100, best of the references per answer; greedy answers generated on the "
        f"{manifest['confidence'].get('runtime', 'transformers')} runtime"
        f"{' (`adapter/adapter.gguf` is the adapter for llama.cpp)' if base['gguf_file'] else ''}.",
        "",
        "| split | n | ROUGE-1 | ROUGE-2 | ROUGE-L | words/answer | tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, m in metrics.items():
        scores.append(
            f"| {split} | {m['n']} | {100 * m['rouge1']:.2f} | {100 * m['rouge2']:.2f} | {100 * m['rougeL']:.2f} "
            f"| {m['words_mean']:.1f} | {m['tokens_per_second']:.1f} |"
        )
    parts = CardParts(
        intro=[
            f"LoRA adapter (folder `adapter/`) on `{base['ref']}` ({base['source']}: `{base['path']}`"
            f"{'/' + base['gguf_file'] if base['gguf_file'] else ''}, SHA-256 `{base['sha256'][:16]}`), trained by "
            f"smallfleet {manifest['smallfleet_version']} on {manifest['created']}. The base is not copied: "
            "loading this specialist needs that base model installed.",
            "",
            f"Input field `{manifest['fields']['text']}` -> output field `{manifest['fields']['output']}`. "
            f"Instruction: {gen['instruction'] or '(none)'!r}.",
        ],
        data=[
            f"- train: {data['train_rows']} rows; validation: {data['valid_rows']} rows ({data['valid_source']}), "
            f"{data['calibration_rows']} of them generated for calibration"
        ],
        fit=(
            f"{fit['steps']} optimizer steps in {fit['seconds']:.0f} s ({fit['answer_tokens']} answer tokens"
            f"{', resumed from step ' + str(fit['resumed_from']) if fit['resumed_from'] else ''}); "
            f"loss {fit['first_loss']:.3f} at step 1, {fit['last_loss']:.3f} over the last 10 steps."
        ),
        scores=scores,
        confidence=[
            "Confidence is the probability that an answer is good, where good means ROUGE-L >= "
            f"{calibration['quality_bar']} against the reference. It is a logistic map of the answer's mean "
            "(length-normalized) and minimum token log-probability, fitted on the validation answers: "
            f"`{manifest['confidence']}`. On validation {calibration['good_rate']:.0%} of answers were good; "
            f"ECE {calibration['ece']:.3f}. Requests below the task's threshold escalate."
        ],
    )
    write_card(folder, manifest, "generation", calibration, parts)
