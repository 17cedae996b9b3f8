"""Novelty: the statistics a specialist is saved with, what they score, and the gateway escalating
what the specialist has never seen (real MiniLM specialists of the session fleet, a real gateway)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess

from smallfleet.errors import DataError
from smallfleet.novelty import NOVELTY_FILE, NoveltyModel, auroc
from smallfleet.tasks import TaskSpec, load_specialist
from smallfleet.tasks.recipe import out_of_scope_texts
from smallfleet.training.settings import TrainSettings


def texts(path, field="text") -> list[str]:
    return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scored(ticket_specialist, quickstart_data):
    """The ticket specialist's answers to its test tickets and to the out-of-scope requests."""
    specialist = load_specialist(ticket_specialist)
    inside, outside = texts(quickstart_data / "tickets_test.jsonl"), texts(quickstart_data / "out_of_scope.jsonl")
    return specialist, dict(zip(inside, specialist.answer(inside))), dict(zip(outside, specialist.answer(outside)))


def test_novelty_statistics_are_saved_with_the_specialist_and_reported(ticket_specialist, fleet_dir, scored):
    specialist, _, _ = scored
    info = json.loads((ticket_specialist / "specialist.json").read_text())["novelty"]
    assert (ticket_specialist / NOVELTY_FILE).is_file()
    assert info["method"] == "mahalanobis" and info["source"].startswith("95% quantile")
    assert info["valid_escalated"] <= 0.05 and info["valid_rows"] > 0
    assert specialist.novelty.threshold == pytest.approx(info["threshold"])
    assert specialist.novelty.arrays["means"].shape == (6, 384)  # one mean per ticket category
    assert "accept novelty <=" in (ticket_specialist / "README.md").read_text()
    index = json.loads((fleet_dir / "fleet.json").read_text())
    assert index["tasks"]["support_ticket"]["novelty"]["threshold"] == info["threshold"]
    assert index["router"]["novelty"]["threshold"] is not None


def test_requests_far_from_the_training_data_get_higher_novelty(scored):
    _, inside, outside = scored
    novelty_in = [a.novelty for a in inside.values()]
    novelty_out = [a.novelty for a in outside.values()]
    assert np.median(novelty_out) > np.quantile(novelty_in, 0.9)
    assert auroc(novelty_in, novelty_out) > 0.9
    # the softmax alone separates them worse: that is why novelty is a second test
    assert auroc(novelty_in, novelty_out) > auroc([1 - a.confidence for a in inside.values()],
                                                  [1 - a.confidence for a in outside.values()])  # fmt: skip


def test_the_gateway_escalates_a_novel_request_and_says_why(fleet_dir, scored):
    specialist, inside, outside = scored
    far = max(outside, key=lambda t: outside[t].novelty)
    near = min(inside, key=lambda t: inside[t].novelty)
    assert outside[far].novelty > specialist.novelty.threshold >= inside[near].novelty
    with FakeUpstream() as upstream, GatewayProcess(fleet_dir, "--escalate-to", upstream.base_url,
                                                    "--escalate-model", "frontier", "--threshold",
                                                    "support_ticket=0") as gw:  # fmt: skip
        upstream.mode = "reply:other"
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)

        def ask(text: str) -> dict:
            r = client.chat.completions.create(model="fleet/support_ticket", messages=[{"role": "user", "content": text}])
            return r.model_extra["smallfleet"]

        accepted, escalated = ask(near), ask(far)
        started = gw.output()
    assert not accepted["escalated"] and "escalation_reason" not in accepted
    assert accepted["novelty"] == pytest.approx(inside[near].novelty, rel=1e-3)
    # confidence alone (threshold 0) would have kept it: the novelty test sent it on
    assert escalated["escalated"] and escalated["escalation_reason"] == ["novelty"]
    assert escalated["novelty"] > specialist.novelty.threshold
    assert "accept novelty <=" in started and "of validation" in started


def test_a_specialist_saved_without_novelty_statistics_still_answers(ticket_specialist, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(ticket_specialist, old)
    (old / NOVELTY_FILE).unlink()
    manifest = json.loads((old / "specialist.json").read_text())
    del manifest["novelty"]
    (old / "specialist.json").write_text(json.dumps(manifest))
    specialist = load_specialist(old)
    answer = specialist.answer(["I was charged twice for my order"])[0]
    assert specialist.novelty is None and answer.novelty is None and answer.content == "billing"


def test_eval_ood_writes_the_ood_section(ticket_specialist, quickstart_data, tmp_path):
    out = tmp_path / "eval.json"
    subprocess.run([sys.executable, "-m", "smallfleet", "eval", str(ticket_specialist), "--data",
                    str(quickstart_data / "tickets_test.jsonl"), "--ood", str(quickstart_data / "out_of_scope.jsonl"),
                    "--json", str(out)], check=True, capture_output=True)  # fmt: skip
    ood = json.loads(out.read_text())["ood"]
    assert ood["n_in"] == 90 and ood["n_ood"] == 60
    assert ood["auroc"] > 0.9 and ood["fpr_at_95tpr"] < 0.5
    assert 0 <= ood["escalated_in"] <= 1 and ood["escalated_ood"] >= ood["escalated_ood_novelty"] > 0.5
    assert ood["escalated_in_novelty"] <= 0.15
    assert 0 <= ood["auroc_confidence"] <= 1 and len(ood["novelty_ood"]) == 60


def test_threshold_from_validation_and_tuned_on_out_of_scope():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 16)) + np.repeat(np.eye(16)[:4] * 6, 100, axis=0)
    labels = np.repeat(np.arange(4), 100)
    valid = rng.normal(size=(200, 16)) + np.repeat(np.eye(16)[:4] * 6, 50, axis=0)
    far = rng.normal(size=(100, 16)) + np.eye(16)[8] * 6  # a direction no class lies in
    for method in ("mahalanobis", "knn"):
        model = NoveltyModel.fit(method, train, labels)
        info = model.set_threshold(model.score(valid), 0.05)
        assert info["valid_escalated"] <= 0.05
        assert (model.score(far) > model.threshold).mean() > 0.9, method
        tuned = model.set_threshold(model.score(valid), 0.05, model.score(far))
        assert tuned["valid_escalated"] <= 0.05 and tuned["out_of_scope_escalated"] > 0.9
        assert tuned["source"].startswith("tuned on 100 out-of-scope")


def test_a_bad_out_of_scope_file_is_refused_before_training(quickstart_data, tmp_path):
    bad = tmp_path / "oos.jsonl"
    bad.write_text('{"text": "What is the capital of Australia?"}\n{"prompt": "no text here"}\n')
    spec = TaskSpec(name="t", train=quickstart_data / "tickets_train.jsonl", settings=TrainSettings(out_of_scope=bad))
    with pytest.raises(DataError, match=r"oos.jsonl:2: .*'text'"):
        out_of_scope_texts(spec)
