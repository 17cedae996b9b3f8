"""Train a generative specialist: fit a LoRA adapter on a small instruction-tuned causal LM
(default SmolLM2-135M-Instruct), then generate greedy answers for validation rows and fit
a logistic map from each answer's token log-probabilities (mean and minimum) to the chance
it is "good" (ROUGE-L >= `quality_bar` against the reference). The saved specialist is
the adapter, that calibration and a card; the base is named by reference and SHA-256,
never copied.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from smallfleet.calibration import ConfidenceCurve, LogisticMap, expected_calibration_error, reliability_bins
from smallfleet.data import holdout_split
from smallfleet.models.resolve import resolve_base_model
from smallfleet.models.runtime import choose_runtime, export_adapter, shared_base
from smallfleet.models.runtime.base import Decoding, Generation
from smallfleet.tasks.generate.card import write_generate_card
from smallfleet.tasks.generate.data import load_pairs, load_references
from smallfleet.tasks.generate.metrics import answering, generation_metrics, rouge_per_answer, score_answers
from smallfleet.tasks.generate.specialist import ADAPTER_DIR, GenerateSpecialist, adapter_name, logprob_features
from smallfleet.tasks.recipe import fit_novelty, manifest_header, out_of_scope_texts, save_specialist
from smallfleet.tasks.spec import TaskSpec
from smallfleet.training.artifacts import check_output


def train_generator(spec: TaskSpec, out: Path, force: bool = False, console: Console | None = None) -> dict:
    """Fit a LoRA adapter for `spec`, calibrate its confidence, and save adapter + card into `out`.

    Args:
        spec: the task: data files, field mapping (`text` = input, `output` = target), base, settings.
        out: specialist folder; written atomically. Checkpoints go to a hidden sibling and are resumed.
        force: replace a specialist already in `out`.
        console: where progress and warnings go.

    Returns:
        The saved metrics: validation (and test when the task has a test file).
    """
    from smallfleet.models.runtime.hf import embed_inputs, load_causal_lm
    from smallfleet.tasks.generate.lora import attach_lora, train_lora

    console = console or Console(stderr=True)
    check_output(out, force)
    settings, fields = spec.settings, spec.fields
    base = resolve_base_model(spec.base)
    train = load_pairs(spec.train, fields.text, fields.output)
    if spec.valid:
        valid, valid_source = load_pairs(spec.valid, fields.text, fields.output), str(spec.valid)
    else:
        train, valid, how = holdout_split(train, settings.valid_fraction, settings.seed)
        valid_source = f"{how} of {spec.train.name}"
    test = load_pairs(spec.test, fields.text, fields.output) if spec.test else None
    calib = valid[: settings.valid_rows]
    ood_texts = out_of_scope_texts(spec)  # read before training: a bad file fails now, not after it

    model, tokenizer = load_causal_lm(base)
    model = attach_lora(model, settings)
    console.print(f"[bold]{spec.name}[/]: {len(train)} train / {len(valid)} valid rows, base {spec.base}, "
                  f"{settings.max_steps} steps of {settings.batch_size}x{settings.gradient_accumulation}")
    checkpoint = out.resolve().parent / f".{out.resolve().name}.checkpoint"
    result = train_lora(model, tokenizer, [(e.text, e.label) for e in train], settings, checkpoint, console, spec.name)

    novelty = fit_novelty(spec, lambda texts: embed_inputs(model, tokenizer, texts, settings.max_length),
                          novelty_sample([e.text for e in train], settings.seed), None,
                          novelty_sample([e.text for e in valid], settings.seed), ood_texts, console)  # fmt: skip
    greedy = Decoding(max_new_tokens=settings.max_new_tokens)
    runtime = choose_runtime(base)
    manifest = manifest_header(spec, base, train_rows=len(train), valid_rows=len(valid), calibration_rows=len(calib),
                               valid_source=valid_source)  # fmt: skip
    manifest |= {
        "fit": {"steps": result.steps, "seconds": result.seconds, "resumed_from": result.resumed_from,
                "answer_tokens": result.answer_tokens, "first_loss": result.history[0]["loss"],
                "last_loss": float(np.mean([h["loss"] for h in result.history[-10:]]))},
        "history": result.history,
        "confidence": {"constant": 0.5, "runtime": runtime},
        "novelty": novelty.info | {"embedding": "bare base model, mean-pooled last hidden state of the input"}
        if novelty else None,
    }  # fmt: skip

    def write_weights(tmp: Path) -> None:
        model.save_pretrained(tmp / ADAPTER_DIR)
        export_adapter(tmp / ADAPTER_DIR, base, console)  # e.g. the llama.cpp (GGUF) copy
        if novelty:
            novelty.save(tmp)

    def calibrate(tmp: Path) -> tuple[dict, dict]:
        if runtime == "transformers":  # the model in memory; llama.cpp loads the adapter just saved
            served, adapter = _InMemory(model, tokenizer), None
        else:
            served, adapter = shared_base(base, runtime), adapter_name(tmp)
            served.add_adapter(adapter, tmp / ADAPTER_DIR)
        specialist = GenerateSpecialist(tmp, manifest, served, adapter)
        with answering(console, f"{spec.name}: calibrating on validation answers ({runtime})", len(calib)) as done:
            started = time.perf_counter()
            gens = specialist.generate([e.text for e in calib], greedy, on_batch=done)
            seconds = time.perf_counter() - started
        refs = [[e.label] for e in calib]
        rouge_l = np.array([s["rougeL"] for s in rouge_per_answer([g.text for g in gens], refs)])
        features = np.array([logprob_features(g) for g in gens])
        good = rouge_l >= settings.quality_bar
        confidence_map = LogisticMap.fit(features, good)
        manifest["confidence"] = confidence_map.to_dict() | {"features": ["mean_logprob", "min_logprob"],
                                                             "runtime": runtime}  # fmt: skip
        confidence = np.array([confidence_map(f) for f in features])
        curve = ConfidenceCurve.from_predictions(confidence, good)
        calibration = {"quality_bar": settings.quality_bar, "good_rate": float(good.mean()), "runtime": runtime,
                       "ece": expected_calibration_error(confidence, good),
                       "reliability": reliability_bins(confidence, good), "points": curve.points(),
                       "curve": curve.to_dict()}  # fmt: skip
        if novelty:
            calibration["novelty"] = novelty.scores
        metrics = {"validation": generation_metrics([g.text for g in gens], refs, [g.tokens for g in gens],
                                                    [g.ttft_ms for g in gens], seconds)}  # fmt: skip
        metrics["validation"]["calibration"] = {"quality_bar": settings.quality_bar, "good_rate": float(good.mean()),
                                                "ece": calibration["ece"], "good_at_50": curve.accuracy_at_coverage(0.5)}
        if test:
            specialist.confidence_map = confidence_map
            metrics["test"] = score_answers(specialist, test, load_references(spec.test, test), greedy, console=console)
            metrics["test"]["file"] = str(spec.test)
        return calibration, metrics

    metrics = save_specialist(out, force, manifest, write_weights, calibrate, write_generate_card,
                              inputs=[e.text for e in train])
    shutil.rmtree(checkpoint, ignore_errors=True)
    return metrics


NOVELTY_ROWS = 2000
"""Most training (and validation) inputs the novelty statistics are fitted (and thresholded) on: a seeded sample."""


def novelty_sample(texts: list[str], seed: int) -> list[str]:
    """Up to NOVELTY_ROWS of `texts`, a seeded sample (embedding every input of a large set is slow on a CPU)."""
    return texts if len(texts) <= NOVELTY_ROWS else random.Random(seed).sample(texts, NOVELTY_ROWS)


class _InMemory:
    """The model being trained, behind the runtime's `generate` signature (validation before saving)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts: list[str], adapter: str | None, decoding: Decoding) -> list[Generation]:
        from smallfleet.models.runtime.hf import generate

        return generate(self.model, self.tokenizer, prompts, decoding)
