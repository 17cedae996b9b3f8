"""The transformers runtime: the base dequantized to fp32, LoRA adapters through peft (always available).

A request runs with `adapter_names=[...]` (peft's per-row adapter selection), so no global
"active adapter" is switched, and one worker thread merges concurrent calls, of any
adapters, into one batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smallfleet.forking import renew_after_fork
from smallfleet.models.resolve import ResolvedModel
from smallfleet.models.runtime.base import (
    AdapterRuntime,
    Decoding,
    Generation,
    TextStream,
    cut_at_stop,
    require_generate_extra,
)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


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


EMBED_BATCH = 16
EMBED_LAYER = -1
"""Which hidden state `embed_inputs` mean-pools: the last (after the final norm); see bench/ood.py for the layers compared."""


def embed_inputs(model, tokenizer, texts: list[str], max_tokens: int, layer: int = EMBED_LAYER) -> np.ndarray:
    """The bare base model's mean-pooled hidden state of each input text, (n, hidden) float32 (not thread-safe).

    A peft model runs with its adapters disabled, so every specialist on the base shares one embedding.

    Args:
        model: a causal LM or peft model in eval mode.
        tokenizer: its tokenizer.
        texts: the inputs, without the prompt around them.
        max_tokens: each text is cut to this many tokens.
        layer: which hidden state is pooled (-1 = the last).
    """
    from contextlib import nullcontext

    from smallfleet.data.batches import by_length

    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with torch.inference_mode(), off:
        for idx in by_length([len(t) for t in texts], EMBED_BATCH):
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_tokens, add_special_tokens=False)  # fmt: skip
            # positions counted from each text's first token, so padding (left, for decoding) changes nothing
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            hidden = model(**enc, position_ids=positions, output_hidden_states=True).hidden_states[layer].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).numpy()
    return out


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

    Runs any base, so `auto` falls back to it (the defaults of `auto_ok`, `check` and
    `auto_priority`).
    """

    runtime = "transformers"
    embeds = True

    def __init__(self, resolved: ResolvedModel):
        self.resolved = resolved
        self.model, self.tokenizer = load_causal_lm(resolved)
        self.adapters: dict[str, str] = {}
        self.batches = 0
        """Forward-pass batches run so far (tests read it to see calls merged)."""
        self.taken = 0
        """Calls the worker has taken off the queue so far."""
        self._start()
        renew_after_fork(self)

    def _start(self) -> None:
        self._lock = threading.Lock()  # guards the model while adapters are added
        self._pending: list[_Job] = []
        self._wake = threading.Condition()
        threading.Thread(target=self._work, name="smallfleet-generate", daemon=True).start()

    def after_fork(self) -> None:
        """A forked worker (`serve --workers`) decodes on its own thread: the parent's did not come along."""
        self._start()

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

    def embed(self, texts: list[str], max_tokens: int) -> np.ndarray:
        """The bare base model's mean-pooled hidden state of each input (`embed_inputs`), between decoding batches."""
        with self._lock:
            return embed_inputs(self.model, self.tokenizer, texts, max_tokens)

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
            self.taken += len(jobs)
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
