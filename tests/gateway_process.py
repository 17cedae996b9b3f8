"""Start `smallfleet serve` as a real process on a loopback port, the way users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fake_upstream import free_port


class GatewayProcess:
    def __init__(self, fleet: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [sys.executable, "-m", "smallfleet", "serve", str(fleet), "--port", str(self.port), *args]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.log = Path(fleet).parent / f"gateway-{self.port}.log"

    def __enter__(self) -> GatewayProcess:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.proc.kill()
        raise RuntimeError(f"gateway did not come up:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()  # SIGTERM: uvicorn shuts down, the ledger flushes
        self.proc.wait(timeout=30)


def fleet_with_tiers(fleet_dir: Path, folder: Path, tiers: list[dict]) -> Path:
    """The test fleet with these tiers in place of its own (its specialists linked, not copied)."""
    folder.mkdir()
    for item in fleet_dir.iterdir():
        if item.name != "fleet.json" and not item.name.endswith(".db"):
            (folder / item.name).symlink_to(item)
    index = json.loads((fleet_dir / "fleet.json").read_text())
    (folder / "fleet.json").write_text(json.dumps({**index, "tiers": tiers}))
    return folder


def metric(text: str, sample: str) -> float | None:
    """The value of one Prometheus sample, e.g. `name{label="x"}`, in a /metrics page."""
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == sample:
            return float(line.rsplit(" ", 1)[1])
    return None
