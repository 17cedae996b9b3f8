"""Optional llama.cpp runtime: export a specialist's LoRA adapter to GGUF and decode with it.

llama.cpp (through `llama-cpp-python`, the `fast` extra) runs the base GGUF as shipped
(Q4_1) and applies a LoRA adapter converted to GGUF. The conversion follows llama.cpp's
`convert_lora_to_gguf.py` for llama-architecture models: peft module names map to GGUF
tensor names, lora_A/lora_B are stored as `<tensor>.lora_a`/`.lora_b`, and the rows of
lora_B for the query and key projections get the same rotary permutation that the base
conversion applied to those weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from smallfleet.errors import SpecialistError
from smallfleet.models.causal_lm import Generation

# peft module name -> llama.cpp tensor name
GGUF_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}


def available() -> bool:
    """True when llama-cpp-python is installed."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary row order for q/k (convert_hf_to_gguf `LlamaModel.permute`)."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def gguf_heads(base_gguf: Path) -> tuple[int, int]:
    """(attention heads, key/value heads) read from a llama-architecture GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))

    def value(key: str) -> int:
        field = reader.fields[key]
        return int(field.parts[field.data[0]][0])

    return value("llama.attention.head_count"), value("llama.attention.head_count_kv")


def export_lora_gguf(adapter_dir: Path, out_file: Path, n_head: int, n_head_kv: int) -> Path:
    """Write the peft adapter in `adapter_dir` as a llama.cpp LoRA GGUF file.

    Args:
        adapter_dir: folder with adapter_config.json and adapter_model.safetensors.
        out_file: the .gguf file to write.
        n_head: attention heads of the base (query permutation).
        n_head_kv: key/value heads of the base (key permutation).
    """
    import json

    import gguf
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for name in sorted(tensors):
        if ".lora_A." not in name:
            continue
        parts = name.split(".")
        layer, module = int(parts[parts.index("layers") + 1]), parts[parts.index("lora_A") - 1]
        if module not in GGUF_NAMES:
            raise SpecialistError(f"{adapter_dir}: LoRA on {module!r} has no llama.cpp equivalent")
        lora_a = tensors[name].astype(np.float32)
        lora_b = tensors[name.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        if module in ("q_proj", "k_proj"):
            lora_b = _permute(lora_b, n_head if module == "q_proj" else n_head_kv)
        target = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
        writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(lora_a))
        writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(lora_b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


class LlamaCppRunner:
    """One llama.cpp model (the base GGUF) with one LoRA adapter applied, greedy or sampled."""

    def __init__(self, base_gguf: Path, lora_gguf: Path | None, threads: int, n_ctx: int = 1024, logprobs: bool = False):
        from llama_cpp import Llama

        # token log-probabilities need logits at every position (slower prompt processing)
        self.logprobs = logprobs
        self.llm = Llama(
            model_path=str(base_gguf), lora_path=str(lora_gguf) if lora_gguf else None,
            n_ctx=n_ctx, n_threads=threads, logits_all=logprobs, verbose=False,
        )

    def generate(self, prompt: str, max_new_tokens: int, temperature: float = 0.0) -> Generation:
        """Decode one answer to the chat-templated `prompt` (token log-probabilities when the runner keeps them)."""
        started = time.perf_counter()
        first = None
        text, logprobs = [], []
        for chunk in self.llm(prompt, max_tokens=max_new_tokens, temperature=temperature, stream=True,
                              logprobs=1 if self.logprobs else None):
            if first is None:
                first = time.perf_counter()
            choice = chunk["choices"][0]
            text.append(choice["text"])
            if choice.get("logprobs") and choice["logprobs"].get("token_logprobs"):
                logprobs += [lp for lp in choice["logprobs"]["token_logprobs"] if lp is not None]
        seconds = time.perf_counter() - started
        if not self.logprobs:  # one chunk per token when streaming
            logprobs = [0.0] * len(text)
        return Generation(text="".join(text).strip(), logprobs=logprobs,
                          ttft_ms=((first or started) - started) * 1000, seconds=seconds)
