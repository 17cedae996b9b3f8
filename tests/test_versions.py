"""Task versions: list, promote and roll back, followed by a running gateway under load."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections import Counter

import openai
import pytest
from cli_process import cli
from fleet_copy import copy_fleet
from gateway_process import GatewayProcess

from smallfleet.flywheel.versions import version_folder

TICKET = "I was charged twice for order 88412, please refund the extra payment"


@pytest.fixture
def fleet(fleet_dir, tmp_path):
    """A copy of the test fleet (versions change its fleet.json) with a second version of support_ticket."""
    return copy_fleet(fleet_dir, tmp_path / "fleet", second_version="support_ticket")


def test_versions_promote_and_rollback_from_the_shell(fleet):
    listed = json.loads(cli("versions", str(fleet), "--task", "support_ticket", "--json").stdout)
    assert [(v["version"], v["served"]) for v in listed] == [("v1", True), ("v2", False)]
    assert listed[0]["metrics"]["test"]["accuracy"] > 0.5 and listed[1]["folder"] == "_versions/support_ticket/v2"
    missing = cli("promote", str(fleet), "--task", "support_ticket", "--version", "v9", check=False)
    assert missing.returncode == 1 and "has no version 'v9' (versions: v1, v2)" in missing.stderr
    assert "nothing to roll back to" in cli("rollback", str(fleet), "--task", "support_ticket", check=False).stderr
    assert "support_ticket" in cli("versions", str(fleet)).stdout  # the table
    cli("promote", str(fleet), "--task", "support_ticket", "--version", "v2")
    index = json.loads((fleet / "fleet.json").read_text())["tasks"]["support_ticket"]
    assert (index["served"], index["folder"]) == ("v2", "_versions/support_ticket/v2")
    assert "serving v1" in cli("rollback", str(fleet), "--task", "support_ticket").stdout
    assert json.loads((fleet / "fleet.json").read_text())["tasks"]["support_ticket"]["folder"] == "support_ticket"
    shutil.rmtree(version_folder(fleet, "support_ticket", "v2"))
    gone = cli("promote", str(fleet), "--task", "support_ticket", "--version", "v2", check=False)
    assert gone.returncode == 1 and "missing its folder" in gone.stderr


def test_a_running_gateway_switches_versions_under_load_without_an_error(fleet, tmp_path):
    db = tmp_path / "v.db"
    seen: list[tuple[float, str | int]] = []  # (time, version) or (time, error)
    stop = threading.Event()
    with GatewayProcess(fleet, "--db", f"sqlite:///{db}", "--threshold", "support_ticket=0") as gw:
        def load() -> None:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=60)
            while not stop.is_set():
                try:
                    r = client.chat.completions.create(model="fleet/support_ticket",
                                                       messages=[{"role": "user", "content": TICKET}])
                    seen.append((time.monotonic(), r.model_extra["smallfleet"]["version"]))
                except Exception as exc:  # any failure is what this test is about
                    seen.append((time.monotonic(), f"error: {exc}"))

        clients = [threading.Thread(target=load) for _ in range(4)]
        for c in clients:
            c.start()

        def wait_for(version: str) -> float:
            switched = time.monotonic()
            deadline = switched + 60
            while not any(t > switched and v == version for t, v in seen[-8:]):
                assert time.monotonic() < deadline, f"still not serving {version}: {Counter(v for _, v in seen)}"
                time.sleep(0.05)
            return switched

        time.sleep(1)
        before_promote = time.monotonic()  # the gateway may switch before the promote command has exited
        cli("promote", str(fleet), "--task", "support_ticket", "--version", "v2")
        promoted = wait_for("v2")
        time.sleep(1)
        cli("rollback", str(fleet), "--task", "support_ticket")
        rolled = wait_for("v1")
        time.sleep(1)
        stop.set()
        for c in clients:
            c.join()
        output = gw.output()
    counts = Counter(v for _, v in seen)
    assert set(counts) == {"v1", "v2"}, counts  # no errors at all
    assert counts["v2"] > 0 and all(v == "v1" for t, v in seen if t < before_promote)
    assert "support_ticket: now serving v2 (was v1)" in output and "now serving v1 (was v2)" in output
    logged = Counter(v for (v,) in sqlite3.connect(db).execute("select version from requests"))
    assert logged == counts and rolled > promoted


def test_a_shadow_version_answers_live_requests_after_the_response(fleet, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    bad = cli("serve", str(fleet), "--db", url, "--shadow", "support_ticket=v7", check=False)
    assert bad.returncode == 1 and "has no version 'v7' (versions: v1, v2)" in bad.stderr
    with GatewayProcess(fleet, "--db", url, "--threshold", "support_ticket=0", "--shadow", "support_ticket=v2") as gw:
        assert "shadow: support_ticket v2 answers live requests after v1" in " ".join(gw.output().split())
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        answers = [client.chat.completions.create(model="fleet/support_ticket", messages=[
            {"role": "user", "content": text}]) for text in (TICKET, "my parcel never arrived", "reset my password")]
        assert all(a.model_extra["smallfleet"]["version"] == "v1" for a in answers)  # v2 only shadows
        db = sqlite3.connect(tmp_path / "s.db")
        deadline = time.monotonic() + 60
        while db.execute("select count(*) from shadow").fetchone()[0] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    rows = db.execute("select request_id, version, served_version, answer, agrees_served from shadow").fetchall()
    assert sorted(rows) == sorted((a.id, "v2", "v1", a.choices[0].message.content, 1) for a in answers)  # a copy of v1
    listed = json.loads(cli("versions", str(fleet), "--task", "support_ticket", "--json", "--db", url).stdout)
    assert listed[1]["shadow"] == {"requests": 3, "agrees_served": 1.0, "escalated": 0, "agrees_final": None}
    assert "shadow" not in listed[0]
