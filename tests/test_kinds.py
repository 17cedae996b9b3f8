"""Every task kind through the same commands, as a user runs them: train from a fleet file,
`predict --text`, `predict --input/--output`, `eval --json`, serve with an upstream and a review
tier, `review answer` (a valid and an invalid answer), `review export` and `logs --export`,
and train again from each exported file with no edits.

The kinds differ only in their data and answers (the KINDS table below); the steps are the same.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from cli_process import run
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Kind:
    """One kind's data and answers; the test steps are shared."""

    task: str
    """The fleet-file task (YAML flow mapping without name/train)."""
    texts: list[str]
    """Four request texts."""
    answers: list[str]
    """Four valid answers (upstream replies and review answers), two of each label for classify."""
    invalid: str
    """An answer `review answer` must refuse."""
    refused: str
    """Words of the refusal message."""
    answer_key: str
    """Key of `predict`'s answer."""
    retrain: list[str] = field(default_factory=list)
    """`train` flags for retraining from an exported file (besides --kind, --train, --out)."""


def _write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _classify(data: Path, work: Path) -> tuple[Kind, Path, dict]:
    kind = Kind(
        task=f"{{kind: classify, train: {data / 'reviews_train.csv'}, fields: {{text: review, label: rating_label}}, "
        "training: {epochs: 3, max_length: 64}}",
        texts=["Broke after two days.", "Love it, five stars!", "Meh, it is fine I guess.", "Terrible support."],
        answers=["negative", "positive", "positive", "negative"],
        invalid="great", refused="is not a label of task",
        answer_key="label",
        retrain=["--text-field", "review", "--label-field", "rating_label", "--epochs", "1", "--max-length", "32"],
    )
    return kind, data / "reviews_test.csv", {"review": "Absolutely love it, best purchase this year!"}


def _extract(shared: Path, work: Path) -> tuple[Kind, Path, dict]:
    rows = [json.loads(line) for line in (shared / "bitext_support" / "all.jsonl").read_text().splitlines()]
    random.Random(7).shuffle(rows)
    taken, out = {}, []
    for r in rows:
        if taken.get(r["entity_type"], 0) < 25:
            taken[r["entity_type"]] = taken.get(r["entity_type"], 0) + 1
            out.append({"text": r["text"], "fields": {r["entity_type"]: r["entity_value"]} if r["entity_type"] else {}})
    train, test = _write(out[40:], work / "bitext_train.jsonl"), _write(out[:40], work / "bitext_test.jsonl")
    schema = ROOT / "bench" / "schemas" / "bitext_support.json"
    kind = Kind(
        task=f"{{kind: extract, train: {train}, schema: {schema}, fields: {{label: fields}}, "
        "training: {epochs: 3, max_length: 48, batch_size: 16}}",
        texts=["please cancel order 4455667", "I need invoice 99812 again", "upgrade me to the Platinum plan",
               "where is order 1200345"],  # fmt: skip
        answers=['{"order_id": "4455667"}', '{"invoice_id": "99812"}', '{"account_type": "platinum"}',
                 '{"order_id": "1200345"}'],  # fmt: skip
        invalid='{"account_type": "Diamond"}', refused="not a valid record for task",
        answer_key="fields",
        retrain=["--schema", schema, "--epochs", "1", "--max-length", "32"],
    )
    return kind, test, {"text": "how do I cancel order 123456?"}


def _generate(shared: Path, work: Path) -> tuple[Kind, Path, dict]:
    pytest.importorskip("peft")
    from smallfleet.models.catalog import SMOLLM2_135M

    if SMOLLM2_135M.locate() is None:
        pytest.skip(f"needs the base model: {SMOLLM2_135M.install_command}")
    src = [json.loads(line) for line in (shared / "dialogsum" / "train.jsonl").read_text().splitlines()]
    short = [{"dialogue": r["dialogue"], "summary": r["summary"]} for r in src if len(r["dialogue"].split()) < 60]
    train, test = _write(short[:24], work / "dialog_train.jsonl"), _write(short[24:27], work / "dialog_test.jsonl")
    steps = "{max_steps: 3, batch_size: 2, gradient_accumulation: 1, max_length: 128, max_new_tokens: 8, valid_rows: 2}"
    kind = Kind(
        task=f"{{kind: generate, train: {train}, fields: {{text: dialogue, output: summary}}, generation: {steps}}}",
        texts=["#Person1#: Is the pool open?\n#Person2#: Until nine.", "#Person1#: Lunch?\n#Person2#: Sure, at one.",
               "#Person1#: Where is the bank?\n#Person2#: Next to the park.", "#Person1#: Hi.\n#Person2#: Hello."],
        answers=["The pool is open until nine.", "They will have lunch at one.", "The bank is next to the park.",
                 "They greet each other."],
        invalid="   ", refused="must be a non-empty text",
        answer_key="text",
        retrain=["--input-field", "dialogue", "--output-field", "summary", "--max-steps", "2", "--batch-size", "2",
                 "--gradient-accumulation", "1", "--max-length", "96", "--max-new-tokens", "6", "--valid-rows", "2"],
    )
    return kind, test, {"dialogue": short[30]["dialogue"]}


BUILDERS = {"classify": _classify, "extract": _extract, "generate": _generate}


@pytest.fixture(scope="module", params=list(BUILDERS))
def trained(request, tmp_path_factory, quickstart_data, shared_datasets):
    """(kind name, Kind, fleet folder, test file, one input row): a one-task fleet trained through the CLI."""
    name = request.param
    work = tmp_path_factory.mktemp(name)
    kind, test, row = BUILDERS[name](quickstart_data if name == "classify" else shared_datasets, work)
    (work / "fleet.yaml").write_text(
        f"name: {name}\ntiers: [{{name: human, kind: review}}]\ntasks:\n  - {{name: task, {kind.task[1:]}\n"
    )
    run("train", work / "fleet.yaml", "--out", work / "fleet")
    return name, kind, work / "fleet", test, row


def test_predict_and_eval_work_for_every_kind(trained, tmp_path):
    name, kind, fleet, test, row = trained
    text = next(iter(row.values()))
    line = json.loads(run("predict", fleet / "task", "--text", text).stdout)
    assert 0 <= line["confidence"] <= 1 and kind.answer_key in line, line
    src = _write([row, row], tmp_path / "in.jsonl")
    run("predict", fleet / "task", "--input", src, "--output", tmp_path / "out.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(kind.answer_key in x and "confidence" in x for x in lines)
    run("eval", fleet / "task", "--data", test, "--json", tmp_path / "eval.json")
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["n"] >= 3 and 0 <= metrics["cascade"]["coverage"] <= 1 and metrics["cascade"]["delta"] == 0.05


def test_review_and_upstream_answers_become_training_data_for_every_kind(trained, tmp_path):
    name, kind, fleet, _, _ = trained
    db = ["--db", f"sqlite:///{tmp_path / 'log.db'}"]
    with FakeUpstream() as upstream:
        args = [*db, "--escalate-to", upstream.base_url, "--escalate-model", "big", "--escalate-retries", "0",
                "--threshold", "task=2"]  # fmt: skip
        with GatewayProcess(fleet, *args) as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)

            def ask(text: str) -> dict:
                r = client.chat.completions.create(model="fleet/task", messages=[{"role": "user", "content": text}])
                return r.model_extra["smallfleet"]

            for text, answer in zip(kind.texts, kind.answers):  # the frontier answers
                upstream.mode = f"reply:{answer}"
                assert ask(text)["tier"] == "escalate"
            upstream.mode = "fail"  # the frontier is down: the requests wait for a person
            reviews = [ask(text)["review"]["id"] for text in kind.texts]

    refused = run("review", "answer", fleet, reviews[0], kind.invalid, *db, check=False)
    assert refused.returncode == 1 and kind.refused in refused.stderr and "Traceback" not in refused.stderr
    for item, answer in zip(reviews, kind.answers):
        run("review", "answer", fleet, item, answer, *db)
    exported = {"review": tmp_path / "review.jsonl", "logs": tmp_path / "logs.jsonl"}
    run("review", "export", fleet, "--task", "task", "--out", exported["review"], *db)
    run("logs", fleet, "--task", "task", "--export", exported["logs"], *db)
    for source, path in exported.items():
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(rows) == 4, (source, rows)
        out = tmp_path / f"again-{source}"
        run("train", "--kind", name, "--train", path, "--out", out, *kind.retrain)
        assert json.loads((out / "specialist.json").read_text())["data"]["train_rows"] >= 2
