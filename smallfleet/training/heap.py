"""Give freed training memory back to the system instead of keeping it in malloc's heaps (glibc).

glibc serves an allocation above its mmap threshold from a mapping of its own and unmaps it on
free, but it raises the threshold each time such a block is freed (up to 32 MB). After that,
activations of that size come from its heaps, which keep what is freed. A training step
allocates and frees gigabytes of activations of many sizes. Measured on SmolLM2-135M LoRA steps
of 8x2 dialogues at 512 tokens with activation checkpointing, 2 cores (`bench/generate.py
--memory`): peak RSS 11.2 GiB with the moving threshold, 2.5 GiB with a fixed 4 MB one, at about
a quarter more time per step (the mapped pages are faulted in afresh each time); 1 MB gave
1.9 GiB at a third more. `mallopt` fixes the threshold for the rest of the process;
`MALLOC_MMAP_THRESHOLD_` (bytes, glibc's own variable) picks another.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD_BYTES = 4 << 20
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own variable: a user who sets it keeps their value


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Serve every allocation of `threshold` bytes or more from its own mapping, returned to the system on free.

    Returns whether it was set: False off Linux, without glibc's `mallopt`, or when the user set `MALLOC_MMAP_THRESHOLD_`.
    """
    if not sys.platform.startswith("linux") or ENV in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
