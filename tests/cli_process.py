"""Run the `smallfleet` command as a user does: a subprocess, offline."""

from __future__ import annotations

import os
import subprocess
import sys

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, check: bool = True) -> subprocess.CompletedProcess:
    """`smallfleet ARGS...`; with `check`, a non-zero exit fails with the command's output."""
    proc = subprocess.run([sys.executable, "-m", "smallfleet", *map(str, args)], capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"smallfleet {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
