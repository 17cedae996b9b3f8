"""peft LoRA adapters as GGUF files for llama.cpp: the adapter on its own, or merged into a copy of its base.

**The adapter file** (`export_lora_gguf`) follows llama.cpp's `convert_lora_to_gguf.py` for
llama-architecture models: peft module names map to GGUF tensor names, lora_A/lora_B are stored
as `<tensor>.lora_a`/`.lora_b` in fp16, and the rows of lora_B for the query and key projections
get the rotary permutation the base conversion applied to those weights. llama.cpp applies it at
run time: two extra small matrix products on every adapted projection of every layer, per token.

**The merged model** (`merge_lora_into_gguf`) is the base with W + (alpha / r) B A written into
its weights, so a token costs what it costs the bare base. The adapted weights are stored as Q8_0
by default, not in the base's 4-bit type: re-rounding W + BA to the base's own 4-bit grid puts
most weights back where they were, since a LoRA update is small next to a 4-bit step. Every other
tensor (embeddings, norms) and every metadata key is copied as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from smallfleet.errors import SpecialistError

# peft module name -> llama.cpp tensor name
GGUF_NAMES = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
MERGED_TYPES = ("Q8_0", "F16", "F32", "same")
"""What a merged model's adapted weights can be stored as; `same` re-rounds each to its base tensor's type."""


def _permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary row order for q/k (convert_hf_to_gguf `LlamaModel.permute`)."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def gguf_heads(base_gguf: Path) -> tuple[int, int]:
    """(attention heads, key/value heads) read from a llama-architecture GGUF file.

    Raises:
        SpecialistError: the GGUF holds another architecture (its q/k layout is not llama's).
    """
    import gguf

    return _heads(gguf.GGUFReader(str(base_gguf)), base_gguf.name)


def _heads(reader, name: str) -> tuple[int, int]:
    """`gguf_heads` of the GGUF file open in `reader` (named `name` in the error)."""

    def value(key: str):
        field = reader.fields[key]
        return field.parts[field.data[0]]

    arch = bytes(value("general.architecture")).decode()
    if arch != "llama":
        raise SpecialistError(f"{name}: LoRA export supports llama-architecture bases, not {arch!r}")
    return int(value("llama.attention.head_count")[0]), int(value("llama.attention.head_count_kv")[0])


def _lora_pairs(adapter_dir: Path, n_head: int, n_head_kv: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(GGUF weight name, lora_A, lora_B in the base GGUF's row order) for each adapted projection, float32."""
    from safetensors.numpy import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
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
        yield f"blk.{layer}.{GGUF_NAMES[module]}.weight", lora_a, lora_b


def export_lora_gguf(adapter_dir: Path, out_file: Path, n_head: int, n_head_kv: int) -> Path:
    """Write the peft adapter in `adapter_dir` as a llama.cpp LoRA GGUF file.

    Args:
        adapter_dir: folder with adapter_config.json and adapter_model.safetensors.
        out_file: the .gguf file to write.
        n_head: attention heads of the base (query permutation).
        n_head_kv: key/value heads of the base (key permutation).
    """
    import gguf

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for target, lora_a, lora_b in _lora_pairs(adapter_dir, n_head, n_head_kv):
        writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(lora_a, dtype=np.float16))
        writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(lora_b, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def lora_deltas(adapter_dir: Path, n_head: int, n_head_kv: int) -> dict[str, np.ndarray]:
    """GGUF weight name -> the adapter's update (alpha / r) B A (alpha / sqrt(r) with rsLoRA), float32."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    r = config["r"]
    scale = config["lora_alpha"] / (np.sqrt(r) if config.get("use_rslora") else r)
    return {target: scale * (b @ a) for target, a, b in _lora_pairs(adapter_dir, n_head, n_head_kv)}


def merge_lora_into_gguf(base_gguf: Path, adapter_dir: Path, out_file: Path, merged_type: str = "Q8_0") -> Path:
    """Write `out_file`: the GGUF `base_gguf` with the peft adapter in `adapter_dir` added into its weights.

    Written under a temporary name and renamed, so a crash never leaves a half-written model behind.

    Args:
        base_gguf: the base model file (llama architecture).
        adapter_dir: folder with adapter_config.json and adapter_model.safetensors.
        out_file: the merged model file to write.
        merged_type: one of MERGED_TYPES: what the adapted weights are stored as.
    """
    import gguf

    if merged_type not in MERGED_TYPES:
        raise SpecialistError(f"merged_type must be one of {', '.join(MERGED_TYPES)}, not {merged_type!r}")
    reader = gguf.GGUFReader(str(base_gguf))
    deltas = lora_deltas(adapter_dir, *_heads(reader, base_gguf.name))
    tmp = out_file.with_name(f"{out_file.name}.{os.getpid()}.tmp")  # two gateways may merge the same adapter at once
    writer = gguf.GGUFWriter(str(tmp), bytes(reader.fields["general.architecture"].parts[-1]).decode())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer writes these itself
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type)
    for tensor in reader.tensors:
        delta = deltas.pop(tensor.name, None)
        if delta is None:
            writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
            continue
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(delta.shape) + delta
        qtype = tensor.tensor_type if merged_type == "same" else gguf.GGMLQuantizationType[merged_type]
        try:
            data = gguf.quants.quantize(weight, qtype)
        except (NotImplementedError, gguf.quants.QuantError):  # a type gguf cannot write: keep 8 bits
            qtype = gguf.GGMLQuantizationType.Q8_0
            data = gguf.quants.quantize(weight, qtype)
        writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=qtype)
    if deltas:
        raise SpecialistError(f"{adapter_dir}: the base {base_gguf.name} has no tensor {sorted(deltas)[0]}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_file)
    return out_file
