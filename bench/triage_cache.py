"""Embeddings of a dataset's texts, computed once and kept in a cache folder outside the repo."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """$SMALLFLEET_BENCH_CACHE, else <tmp>/smallfleet-bench-cache."""
    return Path(os.environ.get("SMALLFLEET_BENCH_CACHE") or Path(tempfile.gettempdir()) / "smallfleet-bench-cache")


def cached_embeddings(texts: list[str], base: str = "minilm") -> np.ndarray:
    """Embeddings of `texts` (smallfleet.triage.embed.Embedder), read from the cache when they were made before."""
    from smallfleet.triage.embed import MAX_LENGTH, Embedder

    key = hashlib.sha256("\x00".join([base, str(MAX_LENGTH), *texts]).encode()).hexdigest()[:20]
    path = cache_dir() / f"triage-{base}-{key}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 1024 < 32 or done == total:
            print(f"  embedded {done}/{total} ({done / (time.perf_counter() - started):.0f} texts/s)", file=sys.stderr)

    vectors = Embedder(base).embed(texts, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors
