"""Run the `smallfleet` command as a user does: a subprocess, offline."""

from __future__ import annotations

import os
import subprocess
import sys

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, check: bool = True, columns: int | None = None) -> subprocess.CompletedProcess:
    """`smallfleet ARGS...`; with `check`, a non-zero exit fails with the command's output.

    `columns`: the terminal width the command sees (rich wraps its output at 80 columns by default).
    """
    env = {**ENV, "COLUMNS": str(columns)} if columns else ENV
    proc = subprocess.run([sys.executable, "-m", "smallfleet", *map(str, args)], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"smallfleet {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    """`run` with output 200 columns wide, so messages and tables come out on one line each."""
    return run(*args, check=check, columns=200)
