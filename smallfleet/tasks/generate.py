"""Task kind `generate`: input text -> output text (summaries, draft replies).

Training fits a LoRA adapter on a small instruction-tuned causal LM (default
SmolLM2-135M-Instruct), then generates greedy answers for validation rows and fits
a logistic map from the answer's token log-probabilities (mean and minimum) to the
chance it is "good" (ROUGE-L >= `quality_bar` against the reference). The saved
specialist is the adapter, that calibration and a card; the base model is named by
reference and SHA-256, never copied. Loaded specialists share one base in memory
(`models.causal_lm.shared_base`), each answering with its own adapter.
"""

from __future__ import annotations

import hashlib
import math
import platform
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import smallfleet
from smallfleet.calibration import ConfidenceCurve, expected_calibration_error, reliability_bins
from smallfleet.config import TaskSpec
from smallfleet.data import Example, load_examples
from smallfleet.data.load import read_rows, summarize_problems
from smallfleet.errors import DataError, SpecialistError
from smallfleet.eval.generation import generation_metrics, print_generation_report, rouge_per_answer
from smallfleet.models.causal_lm import (
    Decoding,
    Generation,
    base_fingerprint,
    build_prompt,
    choose_runtime,
    shared_base,
)
from smallfleet.models.resolve import resolve_base_model
from smallfleet.tasks.base import Answer, AnswerOptions, EscalationRequest, Specialist
from smallfleet.training.artifacts import MANIFEST, check_output, fingerprint_files, read_json, staged_folder, write_json

ADAPTER_DIR = "adapter"
GENERATE_BATCH = 8


class GenerateSpecialist(Specialist):
    """A LoRA adapter on a shared base model, with log-probability confidence."""

    kind = "generate"

    def __init__(self, folder: Path, manifest: dict, base, adapter: str | None):
        super().__init__(folder, manifest)
        self.base = base
        self.adapter = adapter
        self.instruction: str = manifest["generation"]["instruction"]
        self.max_new_tokens: int = manifest["generation"]["max_new_tokens"]
        self.max_input_tokens: int = manifest["generation"]["max_length"]
        self.confidence_map: dict = manifest["confidence"]

    @classmethod
    def load(cls, folder: Path) -> GenerateSpecialist:
        manifest = read_json(folder / MANIFEST)
        resolved = resolve_base_model(manifest["base"]["ref"])
        base = shared_base(resolved)
        if getattr(base, "fingerprint", None) is None:
            base.fingerprint = base_fingerprint(resolved)
        if base.fingerprint != manifest["base"]["sha256"]:
            raise SpecialistError(
                f"{folder}: its adapter was trained on base {manifest['base']['ref']!r} with SHA-256 "
                f"{manifest['base']['sha256'][:16]}, but that name now resolves to {resolved.path} "
                f"with SHA-256 {base.fingerprint[:16]}; install the original base or retrain"
            )
        adapter = adapter_name(folder)
        base.add_adapter(adapter, folder / ADAPTER_DIR)
        return cls(folder, manifest, base, adapter)

    def decoding(self, options: AnswerOptions | None) -> Decoding:
        """Decoding settings for one request: the client's options over the specialist's defaults."""
        options = options or AnswerOptions()
        return Decoding(
            max_new_tokens=options.max_tokens or self.max_new_tokens,
            temperature=options.temperature or 0.0,
            top_p=options.top_p if options.top_p is not None else 1.0,
            stop=list(options.stop or []),
        )

    def prompts(self, texts: list[str]) -> list[str]:
        return [build_prompt(self.base.tokenizer, t, self.instruction, self.max_input_tokens) for t in texts]

    def generate(self, texts: list[str], decoding: Decoding, with_adapter: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> list[Generation]:
        """Raw generations in batches of similar length; `with_adapter=False` prompts the bare base.

        Args:
            on_batch: called with the number of texts each finished batch answered (progress).
        """
        prompts = self.prompts(texts)
        order = sorted(range(len(texts)), key=lambda i: len(prompts[i]))
        out: list[Generation | None] = [None] * len(texts)
        for start in range(0, len(order), GENERATE_BATCH):
            idx = order[start : start + GENERATE_BATCH]
            batch = self.base.generate([prompts[i] for i in idx], self.adapter if with_adapter else None, decoding)
            for i, gen in zip(idx, batch):
                out[i] = gen
            if on_batch is not None:
                on_batch(len(idx))
        return out

    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        return [self._as_answer(g) for g in self.generate(texts, self.decoding(options))]

    def stream(self, text: str, options: AnswerOptions | None = None) -> Iterator[str]:
        """Yield pieces of the answer to `text` as tokens are generated."""
        return self.base.stream(self.prompts([text])[0], self.adapter, self.decoding(options))

    def _as_answer(self, gen: Generation) -> Answer:
        mean_lp, min_lp = logprob_features(gen)
        return Answer(
            content=gen.text,
            confidence=calibrated(self.confidence_map, mean_lp, min_lp),
            valid=bool(gen.text),
            detail={"tokens": gen.tokens, "mean_logprob": mean_lp, "min_logprob": min_lp, "ttft_ms": gen.ttft_ms},
        )

    def escalation_request(self, text: str) -> EscalationRequest:
        system = [{"role": "system", "content": self.instruction}] if self.instruction else []
        return EscalationRequest(messages=system + [{"role": "user", "content": text}])


SPECIALIST = GenerateSpecialist


def adapter_name(folder: Path) -> str:
    """The name a specialist's adapter gets on its shared base (unique per folder)."""
    return "a" + hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]


def _save_gguf_copy(adapter_dir: Path, base, console: Console) -> None:
    """Save the adapter's llama.cpp (GGUF) copy beside it, when the base is a llama-architecture GGUF."""
    from smallfleet.models import llama_cpp

    if not base.gguf_file:
        return
    gguf_base = Path(base.path) / base.gguf_file
    try:
        llama_cpp.export_lora_gguf(adapter_dir, adapter_dir / llama_cpp.ADAPTER_GGUF, *llama_cpp.gguf_heads(gguf_base))
    except SpecialistError as exc:
        console.print(f"[yellow]warning[/] no llama.cpp copy of the adapter: {exc}")


def logprob_features(gen: Generation) -> tuple[float, float]:
    """Mean (length-normalized) and minimum token log-probability of an answer."""
    if not gen.logprobs:
        return -20.0, -20.0
    return float(np.mean(gen.logprobs)), float(np.min(gen.logprobs))


def calibrated(confidence_map: dict, mean_lp: float, min_lp: float) -> float:
    """Probability that an answer is good, from the logistic map fitted on validation."""
    if "constant" in confidence_map:
        return float(confidence_map["constant"])
    z = confidence_map["intercept"] + confidence_map["coef"][0] * mean_lp + confidence_map["coef"][1] * min_lp
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))


def fit_confidence(features: np.ndarray, good: np.ndarray) -> dict:
    """Logistic regression of good-vs-not on (mean, min) log-probability; a constant when one class is missing."""
    from sklearn.linear_model import LogisticRegression

    if good.all() or not good.any():
        return {"constant": float(good.mean())}
    fitted = LogisticRegression(C=1.0).fit(features, good)
    return {"coef": [float(c) for c in fitted.coef_[0]], "intercept": float(fitted.intercept_[0]),
            "features": ["mean_logprob", "min_logprob"]}


def load_pairs(path: Path, input_field: str, output_field: str, need_output: bool = True) -> list[Example]:
    """Rows of `path` as Examples (text = input, label = target), rejecting empty inputs or targets."""
    examples = load_examples(path, input_field, output_field)
    problems = [f"{ex.where}: empty {input_field!r}" for ex in examples if not ex.text.strip()]
    if need_output:
        problems += [f"{ex.where}: empty {output_field!r}" for ex in examples if not (ex.label or "").strip()]
    if problems:
        raise DataError(summarize_problems(problems, f"{len(problems)} unusable row(s) in {path}"))
    return examples


def load_references(path: Path, examples: list[Example]) -> list[list[str]]:
    """Each row's references: its `references` list when the file has one (e.g. DialogSum test), else the target."""
    extra = {lineno: row.get("references") for lineno, row in read_rows(path)}
    return [list(extra.get(ex.line) or []) or [ex.label or ""] for ex in examples]


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
    from smallfleet.generate_card import write_generate_card
    from smallfleet.models.causal_lm import load_causal_lm
    from smallfleet.training.lora import attach_lora, train_lora

    console = console or Console(stderr=True)
    check_output(out, force)
    settings, fields = spec.generation, spec.fields
    base = resolve_base_model(spec.base)
    train = load_pairs(spec.train, fields.text, fields.output)
    if spec.valid:
        valid, valid_source = load_pairs(spec.valid, fields.text, fields.output), str(spec.valid)
    else:
        shuffled = train[:]
        random.Random(settings.seed).shuffle(shuffled)
        cut = max(2, int(len(shuffled) * settings.valid_fraction))
        valid, train = shuffled[:cut], shuffled[cut:]
        valid_source = f"{settings.valid_fraction:.0%} random split of {spec.train.name} (seed {settings.seed})"
    test = load_pairs(spec.test, fields.text, fields.output) if spec.test else None
    calib = valid[: settings.valid_rows]

    model, tokenizer = load_causal_lm(base)
    model = attach_lora(model, settings)
    console.print(f"[bold]{spec.name}[/]: {len(train)} train / {len(valid)} valid rows, base {spec.base}, "
                  f"{settings.max_steps} steps of {settings.batch_size}x{settings.gradient_accumulation}")
    checkpoint = out.resolve().parent / f".{out.resolve().name}.checkpoint"
    result = train_lora(model, tokenizer, [(e.text, e.label) for e in train], settings, checkpoint, console, spec.name)

    greedy = Decoding(max_new_tokens=settings.max_new_tokens)
    runtime = choose_runtime(base)
    manifest = {
        "kind": "generate",
        "name": spec.name,
        "smallfleet_version": smallfleet.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": {"ref": spec.base, "source": base.source, "path": base.path, "gguf_file": base.gguf_file,
                 "sha256": base_fingerprint(base)},
        "fields": asdict(fields),
        "generation": asdict(settings),
        "fit": {"steps": result.steps, "seconds": result.seconds, "resumed_from": result.resumed_from,
                "answer_tokens": result.answer_tokens, "first_loss": result.history[0]["loss"],
                "last_loss": float(np.mean([h["loss"] for h in result.history[-10:]]))},
        "history": result.history,
        "data": {"train_rows": len(train), "valid_rows": len(valid), "calibration_rows": len(calib),
                 "valid_source": valid_source, "fingerprint": fingerprint_files([spec.train, spec.valid])},
        "confidence": {"constant": 0.5, "runtime": runtime},
        "machine": {"torch_threads": torch.get_num_threads(), "python": platform.python_version()},
    }
    with staged_folder(out, force) as tmp:
        model.save_pretrained(tmp / ADAPTER_DIR)
        _save_gguf_copy(tmp / ADAPTER_DIR, base, console)
        if runtime == "transformers":  # the model in memory; llama.cpp loads the adapter just saved
            served, adapter = _InMemory(model, tokenizer), None
        else:
            served, adapter = shared_base(base, runtime), adapter_name(tmp)
            served.add_adapter(adapter, tmp / ADAPTER_DIR)
        specialist = GenerateSpecialist(tmp, manifest, served, adapter)
        with _answering(console, f"{spec.name}: calibrating on validation answers ({runtime})", len(calib)) as done:
            started = time.perf_counter()
            gens = specialist.generate([e.text for e in calib], greedy, on_batch=done)
            seconds = time.perf_counter() - started
        refs = [[e.label] for e in calib]
        rouge_l = np.array([s["rougeL"] for s in rouge_per_answer([g.text for g in gens], refs)])
        features = np.array([logprob_features(g) for g in gens])
        good = rouge_l >= settings.quality_bar
        manifest["confidence"] = fit_confidence(features, good) | {"runtime": runtime}
        confidence = np.array([calibrated(manifest["confidence"], *f) for f in features])
        curve = ConfidenceCurve.from_predictions(confidence, good)
        calibration = {"quality_bar": settings.quality_bar, "good_rate": float(good.mean()), "runtime": runtime,
                       "ece": expected_calibration_error(confidence, good),
                       "reliability": reliability_bins(confidence, good), "points": curve.points(),
                       "curve": curve.to_dict()}
        metrics = {"validation": generation_metrics([g.text for g in gens], refs, [g.tokens for g in gens],
                                                    [g.ttft_ms for g in gens], seconds)}
        metrics["validation"]["calibration"] = _calibration_summary(calibration, curve)
        if test:
            metrics["test"] = _score(specialist, test, load_references(spec.test, test), greedy, console=console)
            metrics["test"]["file"] = str(spec.test)
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / "calibration.json", calibration)
        write_json(tmp / "metrics.json", metrics)
        write_generate_card(tmp, manifest, metrics, calibration)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return metrics


train = train_generator


class _InMemory:
    """The model being trained, behind SharedBase's `generate` signature (validation before saving)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts: list[str], adapter: str | None, decoding: Decoding) -> list[Generation]:
        from smallfleet.models.causal_lm import generate

        return generate(self.model, self.tokenizer, prompts, decoding)


def _calibration_summary(calibration: dict, curve: ConfidenceCurve) -> dict:
    return {"quality_bar": calibration["quality_bar"], "good_rate": calibration["good_rate"],
            "ece": calibration["ece"], "good_at_50": curve.accuracy_at_coverage(0.5)}


@contextmanager
def _answering(console: Console | None, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Progress of generating `total` answers: yields the callback that counts finished ones.

    A live bar on a terminal (cleared when done); in a log, a line at every tenth.
    """
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    done, started = 0, time.perf_counter()

    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            nonlocal done
            before, done = done, done + n
            progress.advance(bar, n)
            if not console.is_terminal and done * 10 // total > before * 10 // total:
                rate = (time.perf_counter() - started) / done
                console.print(f"{description}: {done}/{total} (ETA {rate * (total - done) / 60:.1f} min)")

        yield advance


def _score(specialist: GenerateSpecialist, examples: list[Example], refs: list[list[str]], decoding: Decoding,
           with_adapter: bool = True, console: Console | None = None) -> dict:
    what = "fine-tuned" if with_adapter else "base zero-shot"
    with _answering(console, f"{specialist.name}: {what} answers", len(examples)) as done:
        started = time.perf_counter()
        gens = specialist.generate([e.text for e in examples], decoding, with_adapter, on_batch=done)
        seconds = time.perf_counter() - started
    metrics = generation_metrics([g.text for g in gens], refs, [g.tokens for g in gens], [g.ttft_ms for g in gens],
                                 seconds)
    metrics["samples"] = [{"input": e.text[:300], "output": g.text, "reference": r[0]}
                          for e, g, r in list(zip(examples, gens, refs))[:3]]
    return metrics


def evaluate(specialist: GenerateSpecialist, data: Path, console: Console, **fields) -> dict:
    """Score `specialist` on `data` (ROUGE vs the output field or a `references` list) and print the report.

    Args:
        fields: `text`/`label` (= input/output) field overrides, `limit` (first N rows), `compare_base`
            (also score the bare base model zero-shot on the same rows, side by side).
    """
    trained = specialist.manifest.get("fields", {})
    input_field = fields.get("text") or trained.get("text", "text")
    output_field = fields.get("label") or fields.get("output") or trained.get("output", "output")
    examples = load_pairs(data, input_field, output_field)[: fields.get("limit") or None]
    refs = load_references(data, examples)
    greedy = Decoding(max_new_tokens=specialist.max_new_tokens)
    metrics = _score(specialist, examples, refs, greedy, console=console)
    metrics["data"] = str(data)
    if fields.get("compare_base"):
        metrics["base_zero_shot"] = _score(specialist, examples, refs, greedy, with_adapter=False, console=console)
    print_report(metrics, console, title=f"{specialist.name} on {data}")
    return metrics


def print_report(metrics: dict, console: Console, title: str) -> None:
    """Print one split's metrics as written by `train` or `evaluate`."""
    print_generation_report(metrics, console, title, baseline=metrics.get("base_zero_shot"))
