"""The rest of the flywheel: a paired bootstrap gate for graded kinds, the frozen slice set aside at first
training, and the router refit (and hot-reloaded) when retraining changed what a task serves."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from rich.console import Console

from smallfleet.data import read_rows
from smallfleet.flywheel.gate import GateSettings, bootstrap_worse, decide
from smallfleet.store import Database
from smallfleet.tasks import TaskSpec, get_kind
from smallfleet.tasks.extract.metrics import record_f1
from smallfleet.training.artifacts import MANIFEST, read_json

from test_retrain import TRAFFIC, log_traffic


def test_graded_kinds_are_gated_by_a_paired_bootstrap_on_their_item_scores():
    assert get_kind("classify").item_scores({"correct": [True], "score": [1.0]}) is None  # McNemar on right/wrong
    for kind in ("extract", "generate"):
        assert get_kind(kind).item_scores({"correct": [True, False], "score": [0.9, 0.4]}) == [0.9, 0.4]
    gold = [{"a": "x", "b": 2}, {"a": "x"}, {}, {"a": "x"}]
    assert record_f1(gold, [{"a": "x", "b": 3}, {"a": "x"}, {}, {"b": 1}], ["a", "b"]) == [0.5, 1.0, 1.0, 0.0]

    served = [0.8, 0.6, 0.9, 0.7] * 25
    same = bootstrap_worse(served, served, 0.05, 0.01)
    assert same["improvement"] == 0 and same["lower_bound"] == 0 and not same["worse"]
    lower = bootstrap_worse(served, [s - 0.1 for s in served], 0.05, 0.01)  # 0.1 worse on every item
    assert lower["worse"] and lower["lower_bound"] == pytest.approx(-0.1)
    slightly = bootstrap_worse(served, [s - 0.005 for s in served], 0.05, 0.01)  # within the margin
    assert not slightly["worse"]

    right = [True] * 100
    settings = GateSettings(alpha=0.05, max_ece=0.5, margin=0.01)
    graded = {"served": right, "candidate": right, "served_scores": served, "candidate_scores": [s - 0.1 for s in served]}
    decision = decide({"frozen set": graded}, [0.9] * 100, right, 0.5, 0.5, settings)
    assert not decision["passed"] and decision["why"] == "failed: not worse on frozen set"
    assert decision["tests"]["frozen set"]["test"] == "paired bootstrap" and "bootstrap" in decision["checks"][0]["detail"]
    graded["candidate_scores"] = [s + 0.05 for s in served]
    assert decide({"frozen set": graded}, [0.9] * 100, right, 0.5, 0.5, settings)["passed"]


def test_a_task_without_a_test_file_gets_a_frozen_slice_never_trained_on(quickstart_data, tmp_path):
    from smallfleet.fleet import FROZEN_SHARE, set_aside_frozen
    from smallfleet.tasks import FieldMap

    task = TaskSpec(name="tickets", train=quickstart_data / "tickets_train.jsonl",
                    fields=FieldMap(text="text", label="category"))  # fmt: skip
    held = set_aside_frozen(task, tmp_path)
    kept = [r["text"] for _, r in read_rows(held.train)]
    frozen = [r["text"] for _, r in read_rows(held.test)]
    assert len(frozen) == round(FROZEN_SHARE * 360) and len(kept) + len(frozen) == 360 and not set(kept) & set(frozen)
    assert held.test == tmp_path / "_frozen" / "tickets" / "frozen.jsonl" and "never trained on" in held.test_note
    again = set_aside_frozen(task, tmp_path / "again")  # seeded: the same slice every time
    assert [r["text"] for _, r in read_rows(again.test)] == frozen
    with_test = TaskSpec(name="t", train=task.train, test=quickstart_data / "tickets_test.jsonl", fields=task.fields)
    assert set_aside_frozen(with_test, tmp_path) is with_test


def test_the_router_is_refit_on_labelled_traffic_and_a_running_gateway_follows(fleet_dir, tmp_path):
    from smallfleet.flywheel.router_refit import refit_router
    from smallfleet.flywheel.taskdata import TRAFFIC_IDS
    from smallfleet.serve.fleet import ServedFleet
    from smallfleet.serve.reload import FleetWatcher

    fleet = tmp_path / "fleet"
    shutil.copytree(fleet_dir, fleet, ignore=shutil.ignore_patterns("*.db*", "*.log"))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    log_traffic(url, TRAFFIC)
    # the served support_ticket version has seen the traffic (as `retrain` records it on promotion)
    (fleet / "support_ticket" / TRAFFIC_IDS).write_text(json.dumps([f"chatcmpl-t{i}" for i in range(len(TRAFFIC))]))
    served = ServedFleet.load(fleet)
    watcher = FleetWatcher(served)
    old_router, old_batcher = served.router, served.router_batcher
    before = read_json(fleet / "_router" / MANIFEST)["data"]

    entry = refit_router(fleet, Database(url), Console(quiet=True), "test")
    assert entry["folder"] == "_versions/_router/r1" and entry["previous"] == ["_router"]
    index = read_json(fleet / "fleet.json")
    assert index["router"]["folder"] == entry["folder"] and index["router"]["cascade"]["target"] == 0.95
    after = read_json(fleet / entry["folder"] / MANIFEST)["data"]
    rows = lambda d: d["train_rows"] + d["valid_rows"]  # noqa: E731
    assert rows(after) == rows(before) + len(TRAFFIC)  # every traffic text is new to the router

    async def follow():
        swapped = await watcher.check()
        route = (await served.router_batcher.submit("the parcel went to my old address"))[0]
        return swapped, route

    swapped, route = asyncio.run(follow())
    assert swapped == ["_router"] and served.router is not old_router and served.router_folder == entry["folder"]
    assert route.task == "support_ticket"
    old_batcher.close()  # the watcher retires it a few seconds later; the event loop is gone by then
    served.close()
