"""A generative specialist's adapter as a plain PEFT folder, the format GPU servers load.

vLLM's multi-LoRA serving (`vllm serve BASE --enable-lora --lora-modules NAME=FOLDER`) and
`peft.PeftModel.from_pretrained` both read a folder holding `adapter_config.json` and
`adapter_model.safetensors`. The specialist already keeps its adapter in that form
(`adapter/`); the export copies it, names the base by the id the GPU server loads it from
(`base_model_name_or_path`, which a local training path would break elsewhere), and leaves
the llama.cpp (GGUF) copy and the peft card behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smallfleet.errors import ConfigError
from smallfleet.tasks.generate.specialist import ADAPTER_DIR
from smallfleet.training.artifacts import read_json, staged_folder

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
EXPORT_CARD = "smallfleet-export.json"
"""Where the export notes what it came from (task, version, base and its SHA-256); servers ignore it."""


def hub_base(manifest: dict) -> str | None:
    """The hub id of the specialist's base: the catalog's for a packaged model, the path of a hub one; else None."""
    from smallfleet.models.resolve import packaged_models

    base = manifest["base"]
    if base.get("source") == "hub":
        return base["path"]
    packaged = packaged_models().get(base.get("ref", ""))
    return packaged.hub_id if packaged else None


def export_peft(folder: Path, manifest: dict, out: Path, base_model: str | None = None, force: bool = False) -> dict:
    """Write the adapter of the specialist in `folder` as a PEFT folder `out`.

    Args:
        folder: the specialist's folder (its `adapter/` is read).
        manifest: its manifest.
        out: the folder to write (replaced whole with `force`).
        base_model: the base's id for the GPU server (e.g. a hub id); default: the base's hub id when known.

    Returns:
        What the export card says: {task, base_model, trained_on, rank, target_modules, files}.

    Raises:
        ConfigError: no base id is known and none was given, or the adapter files are missing.
    """
    base_model = base_model or hub_base(manifest)
    if not base_model:
        raise ConfigError(f"{folder}: the base {manifest['base'].get('ref')!r} has no known hub id; pass --base-model "
                          "with the id or path the GPU server loads it from")  # fmt: skip
    source = Path(folder) / ADAPTER_DIR
    missing = [name for name in PEFT_FILES if not (source / name).is_file()]
    if missing:
        raise ConfigError(f"{source} lacks {', '.join(missing)}: not a PEFT adapter folder (retrain the task)")
    config = read_json(source / "adapter_config.json")
    config["base_model_name_or_path"] = base_model
    card = {"task": manifest.get("name", Path(folder).name), "base_model": base_model,
            "trained_on": {k: manifest["base"].get(k) for k in ("ref", "gguf_file", "sha256")},
            "rank": config.get("r"), "target_modules": sorted(config.get("target_modules") or []),
            "files": list(PEFT_FILES)}  # fmt: skip
    with staged_folder(Path(out), force, marker=EXPORT_CARD) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(source / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        (tmp / EXPORT_CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card
