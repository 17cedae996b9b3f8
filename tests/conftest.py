"""Shared fixtures: the shipped quickstart data, the shared real datasets, and
specialists trained once per session (real MiniLM, real data, CPU)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in `pytest -n N` processes (`make test`)
if WORKER and "OMP_NUM_THREADS" not in os.environ:
    # N test processes share the cores: each trains (and starts gateways, which inherit this) on its share,
    # instead of every one spinning up a thread per core (oversubscribed OpenMP threads slow each other badly).
    # Set before anything imports torch: its OpenMP runtime reads the variable once, when it loads.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))

from smallfleet.settings import datasets_dir  # noqa: E402
from smallfleet.tasks import FieldMap, TaskSpec  # noqa: E402
from smallfleet.training.settings import TrainSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def quickstart_data() -> Path:
    return QUICKSTART / "data"


def missing(message: str) -> None:
    """Skip a test whose outside requirement is missing; under CI (CI=true) fail it instead, so it never passes unseen."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared public datasets; a clear failure (not a skip) when missing under CI."""
    path = datasets_dir()
    if not (path / "README.md").is_file():
        missing(f"shared datasets not found at {path}; set SMALLFLEET_DATASETS to their folder")
    return path


def postgres_bin(program: str) -> str | None:
    """A PostgreSQL server program: on PATH, else where Debian's packages put it (/usr/lib/postgresql/<v>/bin)."""
    found = shutil.which(program)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=lambda p: int(Path(p).parts[-3]))
    return versions[-1] if versions else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a loopback port, on a fresh data folder; its SQLAlchemy URL.

    Skipped where the server is not installed, failed under CI (`make test` installs it: `make postgres`)."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL server binaries (initdb) not installed: run `make postgres`")
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        missing("the psycopg driver is not installed: pip install -e '.[postgres]'")
    from fake_upstream import free_port

    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user in a folder it can reach
    tmp_path = Path(tempfile.mkdtemp(prefix="smallfleet-pg-"))
    data = tmp_path / "pg"
    data.mkdir()
    runas = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if runas:
        shutil.chown(data, "postgres")
        shutil.chown(tmp_path, "postgres")
    port = free_port()
    subprocess.run([*runas, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*runas, pg_ctl, "-D", str(data), "-o", f"-p {port} -k {tmp_path} -h 127.0.0.1",
                    "-l", str(tmp_path / "pg.log"), "-w", "start"], check=True, capture_output=True)  # fmt: skip
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*runas, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(tmp_path, ignore_errors=True)


def ticket_task(data: Path, **training) -> TaskSpec:
    """The quickstart support-ticket task with short training for tests."""
    return TaskSpec(
        name="support_ticket",
        train=data / "tickets_train.jsonl",
        test=data / "tickets_test.jsonl",
        fields=FieldMap(text="text", label="category"),
        settings=TrainSettings(epochs=4, **training),
    )


def review_task(data: Path, **training) -> TaskSpec:
    """The quickstart review-sentiment task (CSV) with short training for tests."""
    return TaskSpec(
        name="review_sentiment",
        train=data / "reviews_train.csv",
        test=data / "reviews_test.csv",
        fields=FieldMap(text="review", label="rating_label"),
        settings=TrainSettings(epochs=4, **training),
    )


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory, quickstart_data) -> Path:
    """The quickstart's two tasks and their router (with out-of-scope texts), trained once per session,
    with the human review queue as the last escalation tier."""
    from smallfleet.config import FleetSpec, RouterSpec, TierSpec
    from smallfleet.fleet import train_fleet

    spec = FleetSpec(
        name="testfleet",
        tasks=[ticket_task(quickstart_data), review_task(quickstart_data)],
        tiers=[TierSpec(name="human", kind="review")],
        router=RouterSpec(out_of_scope=quickstart_data / "out_of_scope.jsonl", training=TrainSettings(epochs=3)),
    )
    out = tmp_path_factory.mktemp("fleet") / "testfleet"
    if not WORKER:
        train_fleet(spec, out)
        return out
    # under pytest-xdist the first process to get here trains it for all of them; each serves its own copy,
    # since gateways write their journals and locks into the fleet folder
    from filelock import FileLock

    trained = tmp_path_factory.getbasetemp().parent / "trained-testfleet"
    with FileLock(f"{trained}.lock"):
        if not (trained / "fleet.json").is_file():
            train_fleet(spec, trained)
    shutil.copytree(trained, out)
    return out


@pytest.fixture(scope="session")
def ticket_specialist(fleet_dir) -> Path:
    """A real MiniLM support-ticket specialist (the test fleet's), trained once for the whole session."""
    return fleet_dir / "support_ticket"
