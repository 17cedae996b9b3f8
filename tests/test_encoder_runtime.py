"""Encoder specialists served int8 on ONNX Runtime: exported and calibrated at training, chosen by `auto`,
`--runtime torch` keeps fp32, an older specialist gets its export on first load."""

import json
import shutil

import pytest
from cli_process import cli
from conftest import missing

from smallfleet.models.encoder_runtime import ENCODER_RUNTIME_ENV
from smallfleet.models.encoder_runtime.onnx import ONNX_FILE, OnnxEncoder, available
from smallfleet.tasks import load_specialist
from smallfleet.tasks.classify.specialist import ClassifySpecialist
from smallfleet.tasks.specialist import confidence_curve
from smallfleet.training.artifacts import read_json, write_json


@pytest.fixture(autouse=True)
def onnx_installed(monkeypatch):
    if not available():
        missing("onnxruntime is not installed (pip install 'smallfleet[onnx]')")
    monkeypatch.delenv(ENCODER_RUNTIME_ENV, raising=False)


def texts(quickstart_data, n=60):
    return [json.loads(line)["text"] for line in (quickstart_data / "tickets_test.jsonl").open()][:n]


def test_training_exports_the_int8_encoder_and_calibrates_the_specialist_on_it(ticket_specialist):
    assert (ticket_specialist / ONNX_FILE).is_file()
    manifest = read_json(ticket_specialist / "specialist.json")
    onnx = manifest["runtimes"]["onnx"]
    assert onnx["file"] == ONNX_FILE and "int8" in onnx["quantization"]
    assert onnx["agreement_with_torch"] >= 0.9 and abs(onnx["valid_accuracy"] - onnx["torch_valid_accuracy"]) <= 0.05
    own = read_json(ticket_specialist / "calibration.json")["runtimes"]["onnx"]
    assert own["temperature"] == manifest["calibration"]["runtimes"]["onnx"]["temperature"] == onnx["temperature"]
    assert own["temperature"] != manifest["calibration"]["temperature"]  # refitted on the int8 model's logits
    assert own["curve"] != read_json(ticket_specialist / "calibration.json")["curve"]
    card = " ".join((ticket_specialist / "README.md").read_text().split())
    assert f"Served on `onnx` ({onnx['quantization']})" in card and f"temperature {own['temperature']:.4f}" in card


def test_auto_serves_on_onnx_with_its_own_calibration_and_torch_stays_available(ticket_specialist, quickstart_data):
    onnx, torch_ = load_specialist(ticket_specialist), ClassifySpecialist.load(ticket_specialist, runtime="torch")
    assert isinstance(onnx.model.encoder, OnnxEncoder) and not isinstance(torch_.model.encoder, OnnxEncoder)
    assert onnx.temperature == read_json(ticket_specialist / "specialist.json")["runtimes"]["onnx"]["temperature"]
    assert torch_.temperature == read_json(ticket_specialist / "specialist.json")["calibration"]["temperature"]
    assert onnx.confidence_curve().to_dict() != torch_.confidence_curve().to_dict()
    # offline thresholds (fleet.json, distill, gates) come from the curve of the runtime that would serve the folder
    assert confidence_curve(ticket_specialist).to_dict() == onnx.confidence_curve().to_dict()
    assert "onnx int8" in onnx.serving_note() and "torch fp32" in torch_.serving_note()
    a, b = onnx.predict(texts(quickstart_data)), torch_.predict(texts(quickstart_data))
    assert sum(x.label == y.label for x, y in zip(a, b)) >= 0.9 * len(a)
    assert max(abs(x.confidence - y.confidence) for x, y in zip(a, b)) < 0.25


def test_an_answer_on_onnx_does_not_depend_on_the_requests_batched_with_it(ticket_specialist, quickstart_data):
    # dynamic int8 quantizes activations per tensor: run together, texts would change each other's answers
    specialist, batch = load_specialist(ticket_specialist), texts(quickstart_data)
    together, alone = specialist.predict(batch), [specialist.predict([t])[0] for t in batch]
    assert [p.label for p in together] == [p.label for p in alone]
    assert max(abs(p.confidence - q.confidence) for p, q in zip(together, alone)) < 1e-5
    assert max(abs(p.novelty - q.novelty) for p, q in zip(together, alone)) < 1e-3


def test_the_folder_curve_follows_the_runtime_asked_for(ticket_specialist, monkeypatch):
    monkeypatch.setenv(ENCODER_RUNTIME_ENV, "torch")
    assert confidence_curve(ticket_specialist).to_dict() == ClassifySpecialist.load(
        ticket_specialist).confidence_curve().to_dict()
    assert confidence_curve(ticket_specialist).to_dict() != confidence_curve(ticket_specialist, "onnx").to_dict()


def test_predict_runs_on_the_runtime_asked_for(ticket_specialist):
    text = "I was charged twice for order 1182, please refund one"
    for runtime in ("onnx", "torch"):
        out = json.loads(cli("predict", ticket_specialist, "--runtime", runtime, "--text", text).stdout)
        assert out["label"] == "billing"
    bad = cli("predict", ticket_specialist, "--runtime", "tensorrt", "--text", text, check=False)
    assert bad.returncode == 2 and "tensorrt" in bad.stderr


def test_an_older_specialist_stays_on_torch_unless_asked_and_then_is_exported_once(ticket_specialist, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(ticket_specialist, old)
    shutil.rmtree(old / "onnx")
    manifest = read_json(old / "specialist.json")
    del manifest["runtimes"], manifest["calibration"]["runtimes"]
    write_json(old / "specialist.json", manifest)
    calibration = read_json(old / "calibration.json")
    del calibration["runtimes"]
    write_json(old / "calibration.json", calibration)

    auto = load_specialist(old)
    assert not isinstance(auto.model.encoder, OnnxEncoder) and not (old / ONNX_FILE).exists()
    forced = ClassifySpecialist.load(old, runtime="onnx")
    assert isinstance(forced.model.encoder, OnnxEncoder) and (old / ONNX_FILE).is_file()
    assert forced.temperature == manifest["calibration"]["temperature"]  # no int8 calibration of its own
    assert "torch's calibration" in forced.serving_note()
    assert not list((old / "onnx").glob("tmp*"))  # the export was staged and moved in whole


def test_a_folder_it_may_not_write_is_exported_elsewhere(ticket_specialist, tmp_path, monkeypatch):
    import smallfleet.models.encoder_runtime.onnx as onnx_runtime

    old = tmp_path / "readonly"
    shutil.copytree(ticket_specialist, old)
    shutil.rmtree(old / "onnx")
    real = onnx_runtime.export_int8

    def refuse_in_folder(encoder, out):
        if old in out.parents:
            raise PermissionError(13, "Permission denied", str(out))
        return real(encoder, out)

    monkeypatch.setattr(onnx_runtime, "export_int8", refuse_in_folder)
    served = ClassifySpecialist.load(old, runtime="onnx")
    assert isinstance(served.model.encoder, OnnxEncoder) and old not in served.model.encoder.path.parents
    assert not (old / "onnx").exists()
