"""The optional llama.cpp runtimes: the base GGUF as shipped, with specialists' LoRA adapters in GGUF.

llama.cpp (through `llama-cpp-python`, the `fast` extra) is several times faster than the
transformers runtime on a CPU, so `auto` prefers it where it can run. Two runtimes:
- `llama.cpp`: each adapter merged into its own copy of the base (`gguf_lora.merge_lora_into_gguf`,
  written once beside the adapter), so an adapted token costs what a bare one does;
- `llama.cpp-lora`: one base as shipped (Q4_1), each adapter converted to GGUF and applied at
  run time, switched per request. Slower per token, but one base in memory for any number of adapters.
"""

from __future__ import annotations

import atexit
import functools
import threading
import time
from pathlib import Path

import numpy as np

from smallfleet.errors import SpecialistError
from smallfleet.models.resolve import ResolvedModel
from smallfleet.models.runtime.base import AdapterRuntime, Decoding, Generation, TextStream, cut_at_stop
from smallfleet.models.runtime.gguf_lora import export_lora_gguf, gguf_heads, merge_lora_into_gguf


def available() -> bool:
    """True when llama-cpp-python is installed and new enough (0.3.36: adapters set per context)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return False
    import llama_cpp

    return hasattr(llama_cpp, "llama_set_adapters_lora")


def supports(base_gguf: Path) -> bool:
    """True when llama-cpp-python is usable and `base_gguf` is a llama-architecture model (LoRA export works)."""
    return available() and _llama_architecture(base_gguf)


@functools.cache
def _llama_architecture(base_gguf: Path) -> bool:
    """Whether `base_gguf` holds a llama-architecture model (read once per file: every specialist load asks)."""
    try:
        gguf_heads(base_gguf)
    except SpecialistError:
        return False
    return True


ADAPTER_GGUF = "adapter.gguf"
"""The llama.cpp copy of a peft adapter, saved beside it when a specialist is trained."""
MERGED_GGUF = "merged.gguf"
"""The base with the adapter merged in, written beside the adapter the first time the `llama.cpp` runtime loads it."""


def adapter_gguf(adapter_dir: Path, base_gguf: Path, cache: Path) -> Path:
    """The adapter's GGUF file: the one saved with it, else a fresh export into `cache`."""
    saved = adapter_dir / ADAPTER_GGUF
    if saved.is_file():
        return saved
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{len(list(cache.iterdir()))}-{adapter_dir.parent.name}.gguf"
    return export_lora_gguf(adapter_dir, out, *gguf_heads(base_gguf))


def merged_gguf(adapter_dir: Path, base_gguf: Path, cache: Path) -> Path:
    """The base with the adapter merged in: the file saved beside the adapter, else written there (or into `cache`
    when the specialist's folder is read-only)."""
    saved = adapter_dir / MERGED_GGUF
    adapter_file = adapter_dir / "adapter_model.safetensors"
    if saved.is_file() and saved.stat().st_mtime >= adapter_file.stat().st_mtime:
        return saved
    try:
        return merge_lora_into_gguf(base_gguf, adapter_dir, saved)
    except OSError:  # a read-only folder or file system
        cache.mkdir(parents=True, exist_ok=True)
        return merge_lora_into_gguf(base_gguf, adapter_dir, cache / f"{len(list(cache.iterdir()))}-merged.gguf")


class LlamaCppBase(AdapterRuntime):
    """The base GGUF loaded once in llama.cpp, with each adapter merged into a copy of it (`merge`), or applied
    to the one base per request.

    Prompts are built with the base's Hugging Face chat template and decoded by
    our own loop over `llama_decode`, so greedy and sampled decoding, stop sequences and
    token log-probabilities (for confidence) work as in the transformers runtime. One
    context decodes one prompt at a time: llama.cpp applies adapters per context, and on
    two cores one stream already keeps both busy.
    """

    runtime = "llama.cpp"
    auto_priority = 10
    embeds = True
    merge = True
    """Each adapter merged into a copy of the base (one model per adapter), not applied at run time."""

    @classmethod
    def auto_ok(cls, resolved: ResolvedModel) -> bool:
        """llama-cpp-python is installed, the base is a llama-architecture GGUF file and there is no GPU."""
        if not resolved.gguf_file:
            return False
        import torch

        return not torch.cuda.is_available() and supports(Path(resolved.path) / resolved.gguf_file)

    @classmethod
    def check(cls, resolved: ResolvedModel) -> None:
        """Raise SpecialistError when llama-cpp-python is missing or the base is not a GGUF file."""
        if not available():
            raise SpecialistError("runtime llama.cpp needs llama-cpp-python >= 0.3.36: `make setup-fast`, or see "
                                  "README, 'Faster generation'")
        if not resolved.gguf_file:
            raise SpecialistError(f"runtime llama.cpp needs a GGUF base; {resolved.ref} is a transformers folder")

    @classmethod
    def export_adapter(cls, adapter_dir: Path, resolved: ResolvedModel) -> Path | None:
        """Save the adapter's GGUF copy (`ADAPTER_GGUF`) beside it when the base is a GGUF file (`llama.cpp-lora`;
        `llama.cpp` writes its merged model the first time it loads the adapter).

        Needs only the `gguf` package, not llama-cpp-python: a specialist trained here runs fast where it is installed.
        """
        if cls.merge or not resolved.gguf_file:
            return None
        gguf_base = Path(resolved.path) / resolved.gguf_file
        return export_lora_gguf(adapter_dir, adapter_dir / ADAPTER_GGUF, *gguf_heads(gguf_base))

    def __init__(self, resolved: ResolvedModel, threads: int | None = None, n_ctx: int = 2048):
        import tempfile

        import torch
        from llama_cpp import Llama
        from transformers import AutoTokenizer

        if not resolved.gguf_file:
            raise SpecialistError(f"llama.cpp needs a GGUF base; {resolved.ref} is a transformers folder")
        self.resolved = resolved
        self.gguf = Path(resolved.path) / resolved.gguf_file
        threads = threads or torch.get_num_threads()
        self._open = lambda path: Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads,
                                        n_threads_batch=threads, flash_attn=True, verbose=False)  # fmt: skip
        self.llm = self._open(self.gguf)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
        self.ends = {self.llm.token_eos(), self.tokenizer.eos_token_id}
        self.adapters: dict[str, object] = {}
        self._cache = Path(tempfile.mkdtemp(prefix="smallfleet-lora-"))
        self._lock = threading.Lock()
        # free the model while llama_cpp is still importable: at interpreter exit its own __del__ can run after
        # the module's functions are gone and prints a traceback
        atexit.register(self.llm.close)

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load the peft adapter in `folder` under `name`: the base with it merged in (written when missing), or
        with `merge` off its GGUF copy (exported when missing)."""
        import llama_cpp as lc

        with self._lock:
            if name in self.adapters:
                return
            if self.merge:
                model = self._open(merged_gguf(Path(folder), self.gguf, self._cache))
                atexit.register(model.close)
                self.adapters[name] = model
                return
            path = adapter_gguf(Path(folder), self.gguf, self._cache)
            adapter = lc.llama_adapter_lora_init(self.llm.model, str(path).encode())
            if not adapter:
                raise SpecialistError(f"llama.cpp could not load the adapter {path}")
            self.adapters[name] = adapter  # freed with the model

    def _generate(self, prompts: list[str], adapter: str | None, decoding: Decoding, on_text) -> list[Generation]:
        rng = np.random.default_rng(decoding.seed)
        with self._lock:
            llm = self._use(adapter)
            return [self._one(llm, p, decoding, rng, on_text if len(prompts) == 1 else None) for p in prompts]

    def embed(self, texts: list[str], max_tokens: int) -> np.ndarray:
        """The bare base model's mean-pooled last hidden state (after the final norm) of each input text, (n, d).

        llama.cpp's per-token embeddings of the text, with no adapter and no prompt around it, decoded
        in chunks of the context's batch size; the same quantity as the transformers runtime's `embed`.
        """
        import llama_cpp as lc

        llm = self.llm
        out = np.zeros((len(texts), llm.n_embd()), dtype=np.float32)
        with self._lock:
            self._use(None)
            lc.llama_set_embeddings(llm.ctx, True)
            try:
                for row, text in enumerate(texts):
                    ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:max_tokens] or [llm.token_eos()]
                    llm.reset()
                    llm._ctx.kv_cache_clear()
                    total = np.zeros(llm.n_embd(), dtype=np.float64)
                    for start in range(0, len(ids), llm.n_batch):
                        chunk = ids[start : start + llm.n_batch]
                        llm._batch.set_batch(chunk, n_past=start, logits_all=True)
                        llm._ctx.decode(llm._batch)
                        for i in range(len(chunk)):
                            total += np.ctypeslib.as_array(lc.llama_get_embeddings_ith(llm.ctx, i), shape=(llm.n_embd(),))
                    out[row] = total / len(ids)
            finally:
                lc.llama_set_embeddings(llm.ctx, False)
                llm.reset()
        return out

    def _use(self, adapter: str | None):
        """The model that answers with `adapter` (None: the bare base), made ready for it."""
        import ctypes

        import llama_cpp as lc

        if self.merge:
            return self.llm if adapter is None else self.adapters[adapter]
        if adapter is None:
            status = lc.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        else:
            adapters = (lc.llama_adapter_lora_p_ctypes * 1)(self.adapters[adapter])
            status = lc.llama_set_adapters_lora(self.llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        if status != 0:
            raise SpecialistError(f"llama.cpp could not switch to adapter {adapter!r} (status {status})")
        return self.llm

    def _one(self, llm, prompt: str, decoding: Decoding, rng, on_text) -> Generation:
        import llama_cpp as lc

        n_vocab = llm.n_vocab()
        started = time.perf_counter()
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        budget = min(decoding.max_new_tokens, llm.n_ctx() - len(ids))
        if budget < 1:
            raise SpecialistError(f"prompt of {len(ids)} tokens leaves no room in the {llm.n_ctx()}-token context")
        stream = TextStream(lambda t: self.tokenizer.decode(t, skip_special_tokens=True), decoding.stop, on_text)
        llm.reset()
        llm.eval(ids)
        first, tokens, logprobs = None, [], []
        for _ in range(budget):
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            token = pick_token(logits, decoding, rng)
            logprobs.append(float(log_softmax(logits)[token]))
            tokens.append(token)
            first = first or time.perf_counter()
            if token in self.ends or stream.add([token]):
                break
            llm.eval([token])
        stream.finish()
        text, _ = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), decoding.stop)
        return Generation(text=text.strip(), logprobs=logprobs, ttft_ms=((first or started) - started) * 1000,
                          seconds=time.perf_counter() - started)


class LlamaCppLora(LlamaCppBase):
    """llama.cpp with one base in memory and each adapter applied at run time, switched per request."""

    runtime = "llama.cpp-lora"
    auto_priority = 9
    merge = False


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def pick_token(logits: np.ndarray, decoding: Decoding, rng: np.random.Generator) -> int:
    """Greedy (temperature 0) or temperature + nucleus (top_p) sampling, as transformers does it."""
    if decoding.temperature <= 0:
        return int(logits.argmax())
    probs = np.exp(log_softmax(logits / decoding.temperature))
    if decoding.top_p < 1.0:
        order = np.argsort(-probs)
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), decoding.top_p)) + 1]
        probs = np.zeros_like(probs)
        probs[keep] = np.exp(log_softmax(logits[keep] / decoding.temperature))
    return int(rng.choice(len(probs), p=probs / probs.sum()))
