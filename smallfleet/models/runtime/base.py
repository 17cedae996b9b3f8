"""What every decoding runtime shares: decoding settings, results, prompts and the `AdapterRuntime` base.

Nothing here depends on a runtime; `hf` (transformers) and `llama_cpp` build on it, and the
factory in `smallfleet.models.runtime` picks between them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smallfleet.errors import SpecialistError
from smallfleet.models.resolve import ResolvedModel


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


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop sequence, and whether one was found."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


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


class AdapterRuntime:
    """A base model loaded once on one runtime, serving the LoRA adapters added to it by name.

    Subclasses (`hf.SharedBase`, `llama_cpp.LlamaCppBase`) set `tokenizer`, load adapters in
    `add_adapter` and decode in `_generate`; callers use `generate` and `stream`.

    A subclass is a member of the `smallfleet.runtimes` registry under its `runtime` name.
    The factory (`smallfleet.models.runtime.choose_runtime`) asks it, through the class
    methods below, whether it can run a base: `check` when the runtime is asked for by name,
    `auto_ok` when `auto` picks, trying the runtimes with the highest `auto_priority` first.
    """

    runtime = ""
    """The registry name of this runtime."""
    auto_priority = 0
    """Order in which `auto` tries the runtimes: higher first."""
    resolved: ResolvedModel
    adapters: dict
    embeds = False
    """Whether `embed` gives the base model's embedding of an input (what a generate specialist's novelty needs)."""

    @classmethod
    def auto_ok(cls, resolved: ResolvedModel) -> bool:
        """Whether `auto` may pick this runtime for `resolved` (default: yes, it runs any base)."""
        return True

    @classmethod
    def check(cls, resolved: ResolvedModel) -> None:
        """Raise SpecialistError, naming the fix, when this runtime cannot run `resolved` (default: it can)."""

    @classmethod
    def export_adapter(cls, adapter_dir: Path, resolved: ResolvedModel) -> Path | None:
        """Save this runtime's own copy of the peft adapter just trained in `adapter_dir`, if it needs one.

        Returns:
            The file written, or None (the default: the runtime loads the peft adapter as it is).

        Raises:
            SpecialistError: the adapter cannot be converted for this runtime.
        """
        return None

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

    def embed(self, texts: list[str], max_tokens: int) -> np.ndarray:
        """The bare base model's embedding of each input text (no adapter, no prompt around it), (n, d).

        Runtimes with `embeds` implement it; generate specialists measure novelty on it.

        Args:
            texts: the inputs, as the user sent them.
            max_tokens: each text is cut to this many tokens (the prompt's input budget).
        """
        raise NotImplementedError(f"runtime {self.runtime} gives no input embedding")

    def _generate(self, prompts: list[str], adapter: str | None, decoding: Decoding, on_text) -> list[Generation]:
        raise NotImplementedError
