"""One small causal LM in memory, serving many LoRA adapters, on a choice of decoding runtimes.

Generative specialists are LoRA adapters on a shared base. `shared_base(resolved)`
returns the process-wide base model (keyed by its resolved location and runtime),
loading it the first time; each specialist then adds its adapter under its own name.

The runtimes are the `smallfleet.runtimes` registry (`RUNTIMES_REGISTRY`): subclasses of
`base.AdapterRuntime`, found by name and imported only when used. smallfleet ships two:
- transformers (`hf.SharedBase`, always available): the base dequantized to fp32, adapters
  through peft, concurrent calls of any adapters merged into one batch.
- llama.cpp (`llama_cpp.LlamaCppBase`, the optional `fast` extra): the GGUF as shipped,
  adapters converted to GGUF and switched per request; several times faster on a CPU.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from smallfleet.errors import SpecialistError
from smallfleet.models.resolve import ResolvedModel
from smallfleet.models.runtime.base import AdapterRuntime
from smallfleet.registry import Registry

RUNTIME_ENV = "SMALLFLEET_RUNTIME"
"""Environment variable naming the runtime when the caller names none."""
AUTO = "auto"

RUNTIMES_REGISTRY: Registry[type[AdapterRuntime]] = Registry("smallfleet.runtimes", "runtime")


def runtime_names() -> tuple[str, ...]:
    """`auto` and the name of every registered runtime (nothing is imported)."""
    return (AUTO, *RUNTIMES_REGISTRY.names())


def choose_runtime(resolved: ResolvedModel, runtime: str | None = None) -> str:
    """The decoding runtime for `resolved`: `runtime`, else $SMALLFLEET_RUNTIME, else auto.

    auto asks the registered runtimes, highest `auto_priority` first, whether they suit
    `resolved` (`auto_ok`) and takes the first that does: with smallfleet's own, llama.cpp
    when llama-cpp-python is installed (the `fast` extra), the base is a llama-architecture
    GGUF file and there is no GPU; transformers otherwise. A runtime named explicitly
    checks that it can run `resolved` (`check`).

    Raises:
        SpecialistError: an unknown runtime, or a runtime asked for where it cannot run.
    """
    runtime = runtime or os.environ.get(RUNTIME_ENV) or AUTO
    names = runtime_names()
    if runtime not in names:
        raise SpecialistError(f"unknown runtime {runtime!r} (choose from {', '.join(names)})")
    if runtime != AUTO:
        RUNTIMES_REGISTRY.get(runtime, error=SpecialistError).check(resolved)
        return runtime
    candidates = [(name, RUNTIMES_REGISTRY.get(name, error=SpecialistError)) for name in names[1:]]
    for name, cls in sorted(candidates, key=lambda item: -item[1].auto_priority):  # stable: ties keep registry order
        if cls.auto_ok(resolved):
            return name
    raise SpecialistError(f"no runtime can run {resolved.ref} (tried {', '.join(names[1:]) or 'none'})")


def export_adapter(adapter_dir: Path, resolved: ResolvedModel, console=None) -> list[Path]:
    """Save every registered runtime's own copy of a freshly trained peft adapter beside it (e.g. llama.cpp's GGUF).

    A runtime that cannot convert it is warned about on `console` (a rich Console; stderr when None), not raised:
    the specialist still runs on the others.

    Returns:
        The files written.
    """
    written = []
    for name in RUNTIMES_REGISTRY.names():
        try:
            path = RUNTIMES_REGISTRY.get(name, error=SpecialistError).export_adapter(Path(adapter_dir), resolved)
        except SpecialistError as exc:
            if console is None:
                from rich.console import Console

                console = Console(stderr=True)
            console.print(f"[yellow]warning[/] no {name} copy of the adapter: {exc}")
            continue
        if path is not None:
            written.append(path)
    return written


_BASES: dict[tuple[str, str | None, str], AdapterRuntime] = {}
_BASES_LOCK = threading.Lock()


def shared_base(resolved: ResolvedModel, runtime: str | None = None) -> AdapterRuntime:
    """The process-wide base for `resolved` on the chosen runtime (see `choose_runtime`), loaded on first use.

    Returns:
        An `AdapterRuntime`: the registered class of that runtime (`hf.SharedBase`, `llama_cpp.LlamaCppBase`, ...).
    """
    runtime = choose_runtime(resolved, runtime)
    key = (str(Path(resolved.path).resolve()), resolved.gguf_file, runtime)
    with _BASES_LOCK:
        if key not in _BASES:
            _BASES[key] = RUNTIMES_REGISTRY.get(runtime, error=SpecialistError)(resolved)
        return _BASES[key]


def loaded_bases(runtime: str | None = None) -> int:
    """How many base models this process holds, on `runtime` or on any (tests check adapters share one)."""
    return sum(1 for key in _BASES if runtime in (None, key[2]))
