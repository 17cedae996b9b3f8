"""One small causal LM in memory, serving many LoRA adapters.

Generative specialists are LoRA adapters on a shared base. `shared_base(resolved)`
returns the process-wide base model (keyed by its resolved location and runtime),
loading it the first time; each specialist then adds its adapter under its own name.

Two runtimes decode:
- transformers (`SharedBase`, always available): the base dequantized to fp32, adapters
  through peft. A request runs with `adapter_names=[...]` (peft's per-row adapter
  selection), so no global "active adapter" is switched, and one worker thread merges
  concurrent calls, of any adapters, into one batch.
- llama.cpp (`llama_cpp.LlamaCppBase`, the optional `fast` extra): the GGUF as shipped,
  adapters converted to GGUF and switched per request; several times faster on a CPU.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from smallfleet.config import RUNTIME_ENV, RUNTIMES
from smallfleet.errors import SpecialistError
from smallfleet.models.resolve import ResolvedModel

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Decoding:
    """How to decode one call."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Generation:
    """One generated answer with its token log-probabilities and timings."""

    text: str
    logprobs: list[float]
    ttft_ms: float
    seconds: float

    @property
    def tokens(self) -> int:
        return len(self.logprobs)


def require_generate_extra() -> None:
    """Fail with the install command when the `generate` extra's packages are missing.

    Raises:
        SpecialistError: peft, gguf, accelerate or rouge-score is not installed.
    """
    import importlib.util

    missing = [m for m in ("peft", "gguf", "accelerate", "rouge_score") if importlib.util.find_spec(m) is None]
    if missing:
        raise SpecialistError(
            f"kind generate needs {', '.join(missing)}: pip install 'smallfleet[generate]' (or peft gguf accelerate rouge-score)"
        )


def load_causal_lm(base: ResolvedModel):
    """Load the base causal LM (fp32, GGUF dequantized) and its tokenizer, left-padding for batches."""
    require_generate_extra()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.path, gguf_file=base.gguf_file)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base.path, gguf_file=base.gguf_file, dtype=torch.float32)
    return model.eval(), tokenizer


def base_fingerprint(base: ResolvedModel) -> str:
    """SHA-256 of the base weights file (GGUF) or of the folder's config and weight files."""
    root = Path(base.path)
    files = [root / base.gguf_file] if base.gguf_file else sorted(
        p for p in root.iterdir() if p.suffix in (".json", ".safetensors", ".bin")
    )
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def build_prompt(tokenizer, text: str, instruction: str, max_input_tokens: int) -> str:
    """Chat-templated prompt for `text`, the input cut to `max_input_tokens` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_input_tokens:
        text = tokenizer.decode(ids[:max_input_tokens])
    messages = ([{"role": "system", "content": instruction}] if instruction else []) + [
        {"role": "user", "content": text}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class TextStream:
    """Turns generated token ids into text pieces as they form (any runtime).

    Text that could be the start of a stop sequence, or half of a multi-byte character,
    is held back until the next token settles it.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: list[str], on_text: Callable[[str], None] | None):
        self.decode, self.stop, self.on_text = decode, stop, on_text
        self.tokens: list[int] = []
        self.sent = 0
        self.hold = max((len(s) for s in stop), default=1) - 1

    def add(self, ids: list[int]) -> bool:
        """Take new token ids; True once a stop sequence has appeared."""
        self.tokens.extend(ids)
        return self._emit(final=False)

    def finish(self) -> None:
        self._emit(final=True)

    def _emit(self, final: bool) -> bool:
        if self.on_text is None and not self.stop:
            return False
        text, stopped = cut_at_stop(self.decode(self.tokens), self.stop)
        if self.on_text is None:
            return stopped
        safe = len(text) if (final or stopped) else len(text) - self.hold
        if not final and text.endswith("\ufffd"):  # half of a multi-byte character
            safe = min(safe, len(text) - 1)
        if safe > self.sent:
            self.on_text(text[self.sent : safe])
            self.sent = safe
        return stopped


class _Streamer:
    """transformers streamer hook: time to first token, and (batch of one) text pieces as they form."""

    def __init__(self, tokenizer, stop: list[str], on_text: Callable[[str], None] | None):
        self.text = TextStream(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), stop, on_text)
        self.calls, self.first = 0, None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 1:  # the prompt
            return
        if self.first is None:
            self.first = time.perf_counter()
        if self.text.on_text is not None:
            self.text.add(value.reshape(-1).tolist())

    def end(self) -> None:
        if self.text.on_text is not None:
            self.text.finish()


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop sequence, and whether one was found."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generate(
    model,
    tokenizer,
    prompts: list[str],
    decoding: Decoding,
    adapter_names: list[str] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[Generation]:
    """Generate one answer per prompt with its token log-probabilities (not thread-safe: see SharedBase).

    Args:
        model: a causal LM or peft model in eval mode.
        tokenizer: its tokenizer, left-padding.
        prompts: chat-templated prompts (see `build_prompt`).
        decoding: greedy or sampled decoding, token cap, stop sequences.
        adapter_names: per-prompt peft adapter names (peft model only); None = its active adapter.
        on_text: called with each new piece of text (only for a single prompt).
    """
    tok = tokenizer
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    streamer = _Streamer(tok, decoding.stop, on_text if len(prompts) == 1 else None)
    kwargs = dict(
        max_new_tokens=decoding.max_new_tokens,
        do_sample=decoding.temperature > 0,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        streamer=streamer,
    )
    if decoding.temperature > 0:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if decoding.stop:
        kwargs.update(stop_strings=decoding.stop, tokenizer=tok)
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    if decoding.seed is not None:
        torch.manual_seed(decoding.seed)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, **kwargs)
    seconds = time.perf_counter() - started
    ttft = ((streamer.first or time.perf_counter()) - started) * 1000
    new = out.sequences[:, enc["input_ids"].shape[1] :]
    logprobs = torch.log_softmax(torch.stack(out.logits, 1).float(), -1).gather(-1, new[..., None])[..., 0]
    results = []
    for row, lps in zip(new.tolist(), logprobs.tolist()):
        n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        text, _ = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), decoding.stop)
        results.append(Generation(text=text.strip(), logprobs=lps[:n], ttft_ms=ttft, seconds=seconds))
    return results


class AdapterRuntime:
    """A base model loaded once on one runtime, serving the LoRA adapters added to it by name.

    Subclasses (`SharedBase`, `llama_cpp.LlamaCppBase`) set `tokenizer`, load adapters in
    `add_adapter` and decode in `_generate`; callers use `generate` and `stream`.
    """

    runtime = ""
    resolved: ResolvedModel
    adapters: dict

    def generate(
        self,
        prompts: list[str],
        adapter: str | None,
        decoding: Decoding,
        on_text: Callable[[str], None] | None = None,
    ) -> list[Generation]:
        """Generate one answer per prompt with `adapter` (None = the bare base model); thread-safe.

        Args:
            prompts: chat-templated prompts (see `build_prompt`).
            adapter: adapter name given to `add_adapter`, or None.
            decoding: greedy or sampled decoding, token cap, stop sequences.
            on_text: called with each new piece of text (only for a single prompt).
        """
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(f"adapter {adapter!r} is not loaded on {self.resolved.ref}")
        return self._generate(prompts, adapter, decoding, on_text)

    def stream(self, prompt: str, adapter: str | None, decoding: Decoding) -> Iterator[str]:
        """Yield text pieces of one answer as its tokens are generated."""
        return stream_pieces(lambda on_text: self.generate([prompt], adapter, decoding, on_text))

    def add_adapter(self, name: str, folder: Path) -> None:
        raise NotImplementedError

    def _generate(self, prompts: list[str], adapter: str | None, decoding: Decoding, on_text) -> list[Generation]:
        raise NotImplementedError


MAX_BATCH_ROWS = 16
"""Most prompts the transformers runtime decodes in one batch (rows of several requests and adapters)."""


@dataclass
class _Job:
    """One caller's prompts waiting for the base model."""

    prompts: list[str]
    adapter: str | None
    decoding: Decoding
    on_text: Callable[[str], None] | None
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Generation] | None = None
    error: BaseException | None = None


class SharedBase(AdapterRuntime):
    """A base causal LM loaded once (transformers), with named LoRA adapters added by the specialists that use it.

    Calls from any thread queue their prompts; one worker thread decodes them, putting the
    prompts of concurrent calls that share decoding settings into one batch even when they
    use different adapters (peft's per-row `adapter_names`), so two tasks on one base
    share each forward pass instead of taking turns.
    """

    runtime = "transformers"

    def __init__(self, resolved: ResolvedModel):
        self.resolved = resolved
        self.model, self.tokenizer = load_causal_lm(resolved)
        self.adapters: dict[str, str] = {}
        self.batches = 0
        """Forward-pass batches run so far (tests read it to see calls merged)."""
        self._lock = threading.Lock()  # guards the model while adapters are added
        self._pending: list[_Job] = []
        self._wake = threading.Condition()
        threading.Thread(target=self._work, name="smallfleet-generate", daemon=True).start()

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load the peft adapter saved in `folder` under `name` (no-op when already there)."""
        from peft import PeftModel

        with self._lock:
            if name in self.adapters:
                return
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
            self.model.eval()
            self.adapters[name] = str(folder)

    def _generate(self, prompts: list[str], adapter: str | None, decoding: Decoding, on_text) -> list[Generation]:
        job = _Job(prompts, adapter, decoding, on_text)
        with self._wake:
            self._pending.append(job)
            self._wake.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _take(self) -> list[_Job]:
        """The oldest waiting call plus the waiting calls that can share its batch."""
        with self._wake:
            while not self._pending:
                self._wake.wait()
            first = self._pending.pop(0)
            jobs, rows = [first], len(first.prompts)
            if first.on_text is None:
                for job in list(self._pending):
                    fits = rows + len(job.prompts) <= MAX_BATCH_ROWS
                    if job.on_text is None and job.decoding == first.decoding and fits:
                        self._pending.remove(job)
                        jobs.append(job)
                        rows += len(job.prompts)
            return jobs

    def _work(self) -> None:
        from peft import PeftModel

        while True:
            jobs = self._take()
            try:
                with self._lock:
                    prompts = [p for job in jobs for p in job.prompts]
                    names = [job.adapter or BASE_ADAPTER for job in jobs for _ in job.prompts]
                    model = self.model
                    gens = generate(model, self.tokenizer, prompts, jobs[0].decoding,
                                    names if isinstance(model, PeftModel) else None, jobs[0].on_text)
                    self.batches += 1
                for job in jobs:
                    job.result, gens = gens[: len(job.prompts)], gens[len(job.prompts) :]
            except BaseException as exc:  # handed to every caller in the batch
                for job in jobs:
                    job.error = exc
            for job in jobs:
                job.done.set()


def stream_pieces(run: Callable[[Callable[[str], None]], object]) -> Iterator[str]:
    """Run `run(on_text)` on a thread and yield the text pieces it reports, re-raising its error."""
    pieces: queue.Queue = queue.Queue()
    done = object()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(pieces.put)
        except BaseException as exc:  # re-raised in the consumer's thread below
            failure.append(exc)
        finally:
            pieces.put(done)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    while (piece := pieces.get()) is not done:
        yield piece
    worker.join()
    if failure:
        raise failure[0]


def choose_runtime(resolved: ResolvedModel, runtime: str | None = None) -> str:
    """The decoding runtime for `resolved`: `runtime`, else $SMALLFLEET_RUNTIME, else auto.

    auto picks llama.cpp when llama-cpp-python is installed (the `fast` extra), the base is a
    llama-architecture GGUF file and there is no GPU; transformers otherwise.

    Raises:
        SpecialistError: an unknown runtime, or llama.cpp asked for where it cannot run.
    """
    import os

    from smallfleet.models import llama_cpp

    runtime = runtime or os.environ.get(RUNTIME_ENV) or "auto"
    if runtime not in RUNTIMES:
        raise SpecialistError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    if runtime == "auto":
        fast = resolved.gguf_file and not torch.cuda.is_available()
        return "llama.cpp" if fast and llama_cpp.supports(Path(resolved.path) / resolved.gguf_file) else "transformers"
    if runtime == "llama.cpp":
        if not llama_cpp.available():
            raise SpecialistError("runtime llama.cpp needs llama-cpp-python >= 0.3.36: `make setup-fast`, or see "
                                  "README, 'Faster generation'")
        if not resolved.gguf_file:
            raise SpecialistError(f"runtime llama.cpp needs a GGUF base; {resolved.ref} is a transformers folder")
    return runtime


_BASES: dict[tuple[str, str | None, str], AdapterRuntime] = {}
_BASES_LOCK = threading.Lock()


def shared_base(resolved: ResolvedModel, runtime: str | None = None) -> AdapterRuntime:
    """The process-wide base for `resolved` on the chosen runtime (see `choose_runtime`), loaded on first use.

    Returns:
        An `AdapterRuntime`: `SharedBase` (transformers) or `llama_cpp.LlamaCppBase`.
    """
    runtime = choose_runtime(resolved, runtime)
    key = (str(Path(resolved.path).resolve()), resolved.gguf_file, runtime)
    with _BASES_LOCK:
        if key not in _BASES:
            if runtime == "llama.cpp":
                from smallfleet.models.llama_cpp import LlamaCppBase

                _BASES[key] = LlamaCppBase(resolved)
            else:
                _BASES[key] = SharedBase(resolved)
        return _BASES[key]


def loaded_bases(runtime: str | None = None) -> int:
    """How many base models this process holds, on `runtime` or on any (tests check adapters share one)."""
    return sum(1 for key in _BASES if runtime in (None, key[2]))
