"""The `smallfleet` command as a user runs it (subprocesses, real files, real model)."""

import json

import httpx
import pytest
from cli_process import run
from gateway_process import GatewayProcess


@pytest.fixture(scope="module")
def review_specialist(tmp_path_factory, quickstart_data):
    out = tmp_path_factory.mktemp("cli") / "reviews"
    run(
        "train", "--kind", "classify", "--train", quickstart_data / "reviews_train.csv",
        "--text-field", "review", "--label-field", "rating_label", "--epochs", "10", "--patience", "3", "--out", out,
    )  # fmt: skip
    return out


def test_train_eval_json_has_the_documented_keys(review_specialist, quickstart_data, tmp_path):
    report = tmp_path / "eval.json"
    proc = run("eval", review_specialist, "--data", quickstart_data / "reviews_test.csv", "--json", report)
    metrics = json.loads(report.read_text())
    assert {"accuracy", "macro_f1", "ece", "n", "coverage", "per_label", "confused"} <= set(metrics)
    assert set(metrics["coverage"]) == {"0.8", "0.9", "0.95", "1.0"}
    assert metrics["n"] == 45 and metrics["accuracy"] >= 0.7  # chance is 0.33
    assert "risk-coverage" in proc.stdout and "macro-F1" in proc.stdout
    cascade = metrics["cascade"]
    assert set(cascade) >= {"target", "delta", "threshold", "coverage", "accepted_accuracy", "guaranteed_lower_bound"}
    assert (cascade["target"], cascade["delta"]) == (0.95, 0.05) and "answers" not in metrics
    if cascade["supported"]:
        assert cascade["guaranteed_lower_bound"] >= 0.95
    else:  # too few validation rows to promise 95%: nothing is accepted, and the reason is printed
        said = " ".join(proc.stdout.split())
        assert cascade["coverage"] == 0 and cascade["rows_needed"] and "cannot guarantee 95%" in said
    run("eval", review_specialist, "--data", quickstart_data / "reviews_test.csv", "--target", "0.7", "--delta", "0.2",
        "--json", report)
    loose = json.loads(report.read_text())["cascade"]
    assert (loose["target"], loose["delta"]) == (0.7, 0.2) and loose["supported"] and loose["coverage"] > 0
    assert loose["guaranteed_lower_bound"] >= 0.7


def test_predict_text_and_file(review_specialist, tmp_path):
    proc = run("predict", review_specialist, "--text", "Absolutely love it, best purchase this year!")
    answer = json.loads(proc.stdout)
    assert answer["label"] == "positive" and 0 < answer["confidence"] <= 1 and len(answer["top_k"]) == 3
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"review": t}) + "\n" for t in ["Broke after two days. Refund please.", "ok"]))
    out = tmp_path / "out" / "pred.jsonl"
    run("predict", review_specialist, "--input", src, "--output", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["Broke after two days. Refund please.", "ok"]
    assert rows[0]["label"] == "negative"


def test_bad_input_gets_one_clear_message_and_exit_1(review_specialist, quickstart_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": oops}\n')
    cases = [
        (["train", "--train", bad, "--out", tmp_path / "x"], f"{bad}:2: not valid JSON"),
        (["train", "--train", quickstart_data / "tickets_train.jsonl", "--base", "gpt-17", "--out", tmp_path / "x"],
         "unknown base model 'gpt-17'"),
        (["train", "--train", quickstart_data / "tickets_train.jsonl", "--label-field", "nope", "--out", tmp_path / "x"],
         "field 'nope' does not exist"),
        (["train", "--train", quickstart_data / "reviews_train.csv", "--text-field", "review",
          "--label-field", "rating_label", "--out", review_specialist], "already holds a specialist"),
        (["eval", tmp_path, "--data", bad], "does not hold a specialist"),
    ]  # fmt: skip
    for args, message in cases:
        proc = run(*args, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_fleet_yaml_trains_every_task_into_one_folder(tmp_path, quickstart_data):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"name: mini\ndefaults: {{training: {{epochs: 1}}}}\ntasks:\n"
        f"  - {{name: reviews, train: {quickstart_data / 'reviews_train.csv'}, "
        f"fields: {{text: review, label: rating_label}}}}\n"
        f"  - {{name: tickets, train: {quickstart_data / 'tickets_train.jsonl'}, "
        f"test: {quickstart_data / 'tickets_test.jsonl'}, fields: {{label: category}}}}\n"
    )
    run("train", fleet, "--out", tmp_path / "fleet", "--max-length", "64")
    index = json.loads((tmp_path / "fleet" / "fleet.json").read_text())
    assert set(index["tasks"]) == {"reviews", "tickets"}
    assert index["tasks"]["tickets"]["metrics"]["test"]["n"] == 90
    for name in ("reviews", "tickets"):
        manifest = json.loads((tmp_path / "fleet" / name / "specialist.json").read_text())
        assert manifest["name"] == name and manifest["training"]["max_length"] == 64


def test_help_explains_every_command():
    for cmd in ("train", "eval", "predict", "models"):
        proc = run(cmd, "--help")
        assert "Usage: " in proc.stdout and len(proc.stdout.splitlines()) > 5


def test_revoking_every_key_keeps_the_gateway_closed_until_keys_open(tmp_path):
    db = ["--db", f"sqlite:///{tmp_path / 'keys.db'}"]
    assert "stays closed" in " ".join(run("keys", "--help").stdout.split())
    assert "every key is revoked" in " ".join(run("keys", "open", "--help").stdout.split())
    run("keys", "create", tmp_path, "ci", *db)
    refused = run("keys", "open", tmp_path, *db, "--yes", check=False)
    assert refused.returncode == 1 and "key 'ci' is still active" in refused.stderr
    run("keys", "revoke", tmp_path, "ci", *db)
    assert "ci" in run("keys", "list", tmp_path, *db).stdout  # revoked, still on record: keys stay required
    assert "gateway open" in run("keys", "open", tmp_path, *db, "--yes").stdout
    assert "ci" not in run("keys", "list", tmp_path, *db).stdout


def test_serve_on_a_public_address_without_keys_refuses_to_start(tmp_path):
    db = ["--db", f"sqlite:///{tmp_path / 'open.db'}"]
    for host in ("0.0.0.0", "::", "192.168.1.20", "gateway.example.com"):
        refused = run("serve", tmp_path, "--host", host, *db, check=False)
        assert refused.returncode == 1 and f"refusing to serve on {host} with no API key" in refused.stderr
        assert "--insecure" in refused.stderr and "keys create" in refused.stderr
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):  # loopback: on to loading the (missing) fleet
        empty = run("serve", tmp_path, "--host", host, *db, check=False)
        assert empty.returncode == 1 and "refusing" not in empty.stderr and "--escalate-to" in empty.stderr


def test_serve_on_a_public_address_needs_a_key_or_insecure(fleet_dir, tmp_path):
    db = ["--db", f"sqlite:///{tmp_path / 'public.db'}"]
    with GatewayProcess(fleet_dir, "--host", "0.0.0.0", "--insecure", *db) as gw:  # open, as the operator asked
        assert httpx.get(gw.base_url + "/models").status_code == 200
    key = run("keys", "create", fleet_dir, "ops", *db).stdout.strip()
    with GatewayProcess(fleet_dir, "--host", "0.0.0.0", *db) as gw:  # a key exists: starts, and asks for it
        assert httpx.get(gw.base_url + "/models").status_code == 401
        assert httpx.get(gw.base_url + "/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
