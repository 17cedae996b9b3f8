"""Extraction specialists trained on small slices of the real shared datasets: the CLI command
shape, F1 bounds, long texts through overlapping windows, and escalation replies."""

import json
import random
from pathlib import Path

import pytest
from cli_process import run

from smallfleet.tasks import load_specialist

ROOT = Path(__file__).resolve().parent.parent
BITEXT_SCHEMA = ROOT / "bench" / "schemas" / "bitext_support.json"




def bitext_slice(shared: Path, per_type: int, seed: int) -> list[dict]:
    """Up to `per_type` utterances of each entity type (and as many without one), as text + fields rows."""
    rows = [json.loads(line) for line in (shared / "bitext_support" / "all.jsonl").read_text().splitlines()]
    random.Random(seed).shuffle(rows)
    taken: dict[str, int] = {}
    out = []
    for r in rows:
        if taken.get(r["entity_type"], 0) < per_type:
            taken[r["entity_type"]] = taken.get(r["entity_type"], 0) + 1
            fields = {r["entity_type"]: r["entity_value"]} if r["entity_type"] else {}
            out.append({"text": r["text"], "fields": fields})
    return out


def write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def bitext(shared_datasets, tmp_path_factory):
    """A bitext entity specialist trained through the CLI (value-labelled rows + schema), and its test file."""
    work = tmp_path_factory.mktemp("bitext")
    rows = bitext_slice(shared_datasets, 60, seed=3)
    random.Random(5).shuffle(rows)
    cut = len(rows) * 3 // 4
    train, test = write(rows[:cut], work / "train.jsonl"), write(rows[cut:], work / "test.jsonl")
    out = work / "spec"
    run(
        "train", "--kind", "extract", "--train", train, "--schema", BITEXT_SCHEMA, "--out", out,
        "--epochs", "4", "--batch-size", "16", "--max-length", "64",
    )  # fmt: skip
    return out, test


def test_bitext_entities_cli_train_and_eval(bitext, tmp_path):
    out, test = bitext
    report = tmp_path / "eval.json"
    run("eval", out, "--data", test, "--json", report)
    metrics = json.loads(report.read_text())
    assert {"f1", "exact_match", "per_field", "n", "schema_valid", "coverage"} <= set(metrics)
    assert metrics["n"] > 90
    # measured: f1 0.88, exact match 0.90, order_id 0.70 (bitext gold ids drop the text's leading zeros)
    assert metrics["f1"] >= 0.75, metrics["per_field"]
    assert metrics["exact_match"] >= 0.75
    assert metrics["per_field"]["order_id"] >= 0.5 and metrics["per_field"]["account_type"] >= 0.8
    card = (out / "README.md").read_text()
    assert "extract specialist" in card and "gold values not found in their text:" in card


def test_answer_gives_json_confidence_and_validity(bitext):
    spec = load_specialist(bitext[0])
    answers = spec.answer(
        ["I want to cancel order 113542617735902 now", "how do I upgrade to the Platinum account", ""]
    )
    first = json.loads(answers[0].content)
    assert first == {"order_id": "113542617735902"}
    assert answers[0].valid and 0 < answers[0].confidence <= 1
    assert answers[0].detail["fields"]["order_id"]["value"] == "113542617735902"
    assert json.loads(answers[1].content) == {"account_type": "Platinum"}  # enum: canonical member
    assert json.loads(answers[2].content) == {}  # empty text: empty record, no crash
    curve = spec.confidence_curve()
    assert len(curve.confidence) > 0


def test_long_text_is_windowed_not_truncated(bitext):
    spec = load_specialist(bitext[0])
    assert spec.extractor.max_length == 64
    filler = "I have been a loyal customer for many years and I have a few questions about my purchases. " * 12
    [answer] = spec.answer([filler + "Please cancel order 113542617735902 today."])
    assert json.loads(answer.content).get("order_id") == "113542617735902"


def test_escalation_request_and_parse_escalation(bitext):
    spec = load_specialist(bitext[0])
    request = spec.escalation_request("cancel order 123")
    assert request.response_format == {"type": "json_object"}
    assert "JSON object only" in request.messages[0]["content"] and '"order_id"' in request.messages[0]["content"]
    assert request.messages[1] == {"role": "user", "content": "cancel order 123"}
    good = spec.parse_escalation('```json\n{"order_id": "123", "refund_amount": "$12.50", "person_name": null}\n```')
    assert json.loads(good.content) == {"order_id": "123", "refund_amount": 12.5} and good.valid
    assert spec.parse_escalation('{"account_type": "platinum"}').content == '{"account_type": "Platinum"}'
    for bad in (
        "Sure! The order is 123.",
        '["123"]',
        '{"refund_amount": "a lot"}',
        '{"account_type": "Diamond"}',
        '{"colour": "red"}',
    ):
        assert spec.parse_escalation(bad) is None, bad


def test_snips_slice_span_f1(shared_datasets, tmp_path):
    from smallfleet.tasks import FieldMap, TaskSpec
    from smallfleet.tasks.extract.settings import ExtractSettings
    from smallfleet.tasks.extract.train import train_extractor

    snips = shared_datasets / "snips"
    rows = (snips / "train.jsonl").read_text().splitlines()
    rows = rows[:: len(rows) // 400][:400]  # spread over the file, all intents
    task = TaskSpec(
        name="snips_slice", kind="extract", train=write([json.loads(r) for r in rows], tmp_path / "train.jsonl"),
        valid=write([json.loads(r) for r in (snips / "validation.jsonl").read_text().splitlines()[:200]], tmp_path / "v.jsonl"),
        fields=FieldMap(tokens="tokens", tags="tags"), settings=ExtractSettings(epochs=4, batch_size=16, max_length=64),
    )  # fmt: skip
    metrics = train_extractor(task, tmp_path / "spec")["validation"]
    assert metrics["n"] == 200
    assert metrics["f1"] == metrics["span_f1"] >= 0.5, metrics["per_field"]  # measured 0.61


def test_cli_predict_and_clear_errors(bitext, tmp_path):
    out, test = bitext
    proc = run("predict", out, "--text", "I need to cancel purchase 113542617735902")
    answer = json.loads(proc.stdout)
    assert answer["fields"] == {"order_id": "113542617735902"} and answer["valid"] is True
    assert 0 < answer["confidence"] <= 1 and set(answer["field_confidence"]) >= {"order_id"}
    bad_schema = tmp_path / "schema.json"
    bad_schema.write_text(json.dumps({"type": "object", "properties": {"when": {"type": "timestamp"}}}))
    cases = [
        (["--train", test], "value-labelled data needs --schema"),
        (
            ["--train", test, "--schema", bad_schema],
            "property 'when' has unknown type 'timestamp' (allowed: string, number",
        ),
        (
            ["--train", test, "--schema", BITEXT_SCHEMA, "--label-field", "text"],
            "must be a JSON object of field values",
        ),
    ]
    for args, message in cases:
        proc = run("train", "--kind", "extract", "--out", tmp_path / "x", *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()


def test_gateway_returns_json_and_escalates_with_the_schema(bitext, tmp_path):
    """`fleet/<extract task>` through the real gateway: JSON content, response_format honored,
    and an escalated request that gets the schema and validates the upstream's JSON."""
    import openai
    from fake_upstream import FakeUpstream
    from gateway_process import GatewayProcess

    folder = bitext[0]
    task = load_specialist(folder).name
    with FakeUpstream() as upstream:
        args = ["--db", f"sqlite:///{tmp_path / 'x.db'}", "--escalate-to", upstream.base_url, "--escalate-model", "m"]
        with GatewayProcess(folder, *args, "--threshold", f"{task}=0") as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            r = client.chat.completions.create(
                model=f"fleet/{task}", response_format={"type": "json_object"},
                messages=[{"role": "user", "content": "I want to cancel order 113542617735902 now"}],
            )  # fmt: skip
            assert json.loads(r.choices[0].message.content) == {"order_id": "113542617735902"}
            assert r.model_extra["smallfleet"]["tier"] == "specialist"
        with GatewayProcess(folder, *args, "--threshold", f"{task}=2") as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            upstream.mode = 'reply:{"order_id": "777", "refund_amount": "$5"}'
            r = client.chat.completions.create(model=f"fleet/{task}", messages=[{"role": "user", "content": "refund 777"}])
            assert json.loads(r.choices[0].message.content) == {"order_id": "777", "refund_amount": 5.0}
            sent = upstream.calls[-1]["body"]
            assert sent["response_format"] == {"type": "json_object"} and '"order_id"' in sent["messages"][0]["content"]
            upstream.mode = "reply:no idea"
            with pytest.raises(openai.APIStatusError) as err:  # no further tier: 502 naming the unusable reply
                client.chat.completions.create(model=f"fleet/{task}", messages=[{"role": "user", "content": "refund 777"}])
            assert err.value.status_code == 502 and "reply could not be used for task" in err.value.message
