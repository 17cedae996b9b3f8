"""`serve --workers N`: N gateway processes on one port, forked from one loaded fleet.

Gunicorn's arbiter does the process work: it binds the port once, forks the workers, restarts
one that dies and stops them all on SIGTERM or Ctrl-C. Each worker runs the same FastAPI app on
uvicorn (`uvicorn_worker.UvicornWorker`).

The fleet is loaded once, in the parent, before the fork (gunicorn's `preload_app`), so every
model's weights are shared copy-on-write between the workers rather than loaded N times; RSS
counts those shared pages in every worker, PSS divides them between the workers
(bench/gateway.py reports both). Threads and pooled connections do not survive a fork: the
objects that own them re-create them in each worker (`smallfleet/forking.py`). The models load
on one thread: a torch thread pool started before a fork hangs the children, and ONNX Runtime
and llama.cpp size their pools at load, so each worker's models run on one thread and N workers
use N cores.

Everything that must be one across the workers already lives in the database (the request log,
reviews, keys and budgets, console sessions, versions via fleet.json), as it does across
replicas. `/metrics` adds up every worker's counters through prometheus_client's multiprocess
mode, and only one worker at a time runs the periodic drift check.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

from smallfleet.serve.metrics import gather_across_processes, process_ended

log = logging.getLogger("smallfleet.workers")
DRIFT_LOCK = ".drift.lock"
"""A file in the fleet folder: the worker holding its lock runs the periodic drift check."""


def prepare() -> Path:
    """Set up what the workers share before anything is loaded: the metrics folder. Returns that folder."""
    folder = Path(tempfile.mkdtemp(prefix="smallfleet-metrics-"))
    gather_across_processes(folder)
    return folder


def run(app, host: str, port: int, workers: int, log_level: str, metrics_folder: Path) -> None:
    """Serve `app` on host:port with `workers` forked processes until stopped."""
    from gunicorn.app.base import BaseApplication

    bind = f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"

    def child_exit(_server, worker) -> None:
        process_ended(worker.pid)

    options = {
        "bind": bind, "workers": workers, "worker_class": "uvicorn_worker.UvicornWorker", "preload_app": True,
        "loglevel": log_level, "accesslog": None, "proc_name": "smallfleet", "child_exit": child_exit,
        "timeout": 120,  # a worker whose event loop is stuck this long is restarted
        "graceful_timeout": 30,  # seconds a stopping worker has to answer its requests and flush its log rows
        "keepalive": 5,
    }  # fmt: skip

    class Gateway(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    try:
        Gateway().run()
    finally:
        shutil.rmtree(metrics_folder, ignore_errors=True)


def runs_drift_checks(fleet_folder: Path):
    """In a worker: a held lock (keep the returned file open) when this worker is the one that runs the drift
    checks, else None. A worker that dies releases it; the one gunicorn starts in its place takes it."""
    try:
        handle = open(fleet_folder / DRIFT_LOCK, "a")
    except OSError as exc:  # a read-only fleet folder: no worker can take the lock, so none checks
        log.warning("drift checks are off: %s cannot be created (%s)", fleet_folder / DRIFT_LOCK, exc)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    os.set_inheritable(handle.fileno(), False)
    return handle
