"""Does llama.cpp keep its decoding speed when torch has run in the same process?

A gateway serving classify and generate tasks runs torch (encoders, the router) on its
worker threads and llama.cpp beside it. llama.cpp built with OpenMP (its default) shares
libgomp with torch and slows down there; the README's build (`-DGGML_OPENMP=OFF`) should
not. This measures llama.cpp's decoding speed with a specialist's adapter in two fresh
processes: alone, and after torch ran a generation on another thread. Prints a table and
writes bench/results/llama_threads.json (keyed by whether the installed build uses OpenMP,
so running it once per build keeps both).

    python bench/llama_threads.py runs/dialogsum      # any generate specialist folder
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common import HERE, machine, write_json

from smallfleet.settings import datasets_dir
from smallfleet.models.runtime import RUNTIME_ENV

PROMPTS = 4


def decode_speed(folder: Path, texts: list[str], max_new_tokens: int, torch_first: bool) -> float:
    """llama.cpp decode tokens/s of the specialist in `folder` (run in a fresh process)."""
    from smallfleet.models.runtime import shared_base
    from smallfleet.models.runtime.base import Decoding
    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.tasks import load_specialist

    os.environ[RUNTIME_ENV] = "llama.cpp"
    specialist = load_specialist(folder)
    if torch_first:  # the transformers runtime decodes on its own worker thread
        torch_base = shared_base(resolve_base_model(specialist.manifest["base"]["ref"]), "transformers")
        torch_base.generate(specialist.prompts(texts[:1]), None, Decoding(max_new_tokens=8))
    specialist.generate(texts[:1], Decoding(max_new_tokens=4))  # warm-up
    gens = [specialist.generate([t], Decoding(max_new_tokens=max_new_tokens))[0] for t in texts]
    return sum(g.tokens - 1 for g in gens) / sum(g.seconds - g.ttft_ms / 1000 for g in gens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specialist", type=Path, help="a generate specialist folder")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    import llama_cpp

    openmp = "OPENMP = 1" in llama_cpp.llama_print_system_info().decode()
    rows = [json.loads(line)["dialogue"] for line in (datasets_dir() / "dialogsum/test.jsonl").open()][:PROMPTS]
    speeds = {}
    for label, torch_first in (("alone", False), ("after torch on another thread", True)):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            speeds[label] = pool.apply(decode_speed, (args.specialist, rows, args.max_new_tokens, torch_first))
    build = "OpenMP" if openmp else "no OpenMP"
    table = Table(title=f"llama.cpp + LoRA decode tokens/s, build with {build}")
    table.add_column("process")
    table.add_column("tokens/s", justify="right")
    for label, speed in speeds.items():
        table.add_row(label, f"{speed:.1f}")
    Console().print(table)
    path = HERE / "results" / "llama_threads.json"
    payload = json.loads(path.read_text()) if path.is_file() else {}
    payload[build] = {"machine": machine(), "specialist": str(args.specialist), "decode_tokens_per_second": speeds}
    write_json("llama_threads", payload)
    print(f"after/alone: {speeds['after torch on another thread'] / speeds['alone']:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
