"""Generative specialists: real LoRA runs of a few steps on DialogSum with the packaged
SmolLM2-135M, reload, two adapters served at once from one base, streaming, CLI eval."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("rouge_score")

from smallfleet.tasks import FieldMap, TaskSpec  # noqa: E402
from smallfleet.tasks.generate.settings import GenerateSettings  # noqa: E402
from smallfleet.models.catalog import SMOLLM2_135M  # noqa: E402

if SMOLLM2_135M.locate() is None:
    pytest.skip(f"needs the base model: {SMOLLM2_135M.install_command}", allow_module_level=True)

ROWS = 64
INSTRUCTION = "Summarize the dialogue."


def _slice(src: Path, dst: Path, start: int, n: int, max_words: int = 110) -> Path:
    """Short dialogues only, so a few CPU steps are enough."""
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    rows = [r for r in rows if len(r["dialogue"].split()) <= max_words][start : start + n]
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def _train(folder: Path, data: Path, output: str, name: str) -> tuple[Path, dict]:
    from smallfleet.tasks.generate.train import train_generator

    settings = GenerateSettings(
        max_steps=10, batch_size=4, gradient_accumulation=1, learning_rate=2e-3, max_length=192,
        max_new_tokens=16, valid_rows=4, checkpoint_every=5, instruction=INSTRUCTION,
    )
    spec = TaskSpec(
        name=name, kind="generate", train=data / "train.jsonl", valid=data / "dev.jsonl", test=data / "test.jsonl",
        fields=FieldMap(text="dialogue", output=output), settings=settings,
    )
    out = folder / name
    return out, train_generator(spec, out)


@pytest.fixture(scope="session")
def dialog_data(tmp_path_factory, shared_datasets) -> Path:
    src = shared_datasets / "dialogsum"
    folder = tmp_path_factory.mktemp("dialogsum")
    _slice(src / "train.jsonl", folder / "train.jsonl", 0, ROWS)
    _slice(src / "dev.jsonl", folder / "dev.jsonl", 0, 4)
    _slice(src / "test.jsonl", folder / "test.jsonl", 0, 3)
    return folder


@pytest.fixture(scope="session")
def summary_specialist(tmp_path_factory, dialog_data) -> tuple[Path, dict]:
    return _train(tmp_path_factory.mktemp("gen"), dialog_data, "summary", "dialog_summary")


@pytest.fixture(scope="session")
def topic_specialist(tmp_path_factory, dialog_data) -> tuple[Path, dict]:
    return _train(tmp_path_factory.mktemp("gen"), dialog_data, "topic", "dialog_topic")


def test_lora_loss_falls_and_only_the_adapter_is_saved(summary_specialist):
    folder, metrics = summary_specialist
    manifest = json.loads((folder / "specialist.json").read_text())
    losses = [h["loss"] for h in manifest["history"]]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    assert (folder / "adapter" / "adapter_config.json").is_file()
    # LoRA only, in peft's format and as the llama.cpp copy: the 135M base in fp32 would be ~540 MB
    assert (folder / "adapter" / "adapter_model.safetensors").stat().st_size < 20e6
    assert (folder / "adapter" / "adapter.gguf").stat().st_size < 20e6
    assert len(manifest["base"]["sha256"]) == 64
    assert "Confidence" in (folder / "README.md").read_text()
    assert not list(folder.parent.glob(".dialog_summary.checkpoint"))  # removed once saved
    assert metrics["test"]["n"] == 3 and 0 < metrics["test"]["rougeL"] <= 1


def test_reload_gives_identical_greedy_output(summary_specialist, dialog_data):
    from smallfleet.tasks import load_specialist

    folder, metrics = summary_specialist
    texts = [json.loads(line)["dialogue"] for line in (dialog_data / "test.jsonl").read_text().splitlines()]
    answers = load_specialist(folder).answer(texts)
    assert [a.content for a in answers] == [s["output"] for s in metrics["test"]["samples"]]
    for a in answers:
        assert 0 <= a.confidence <= 1
        assert set(a.detail) == {"tokens", "mean_logprob", "min_logprob", "ttft_ms"}
        assert a.detail["min_logprob"] <= a.detail["mean_logprob"] <= 0


def test_two_adapters_share_one_base_and_answer_concurrently(summary_specialist, topic_specialist, dialog_data):
    from smallfleet.models.runtime import loaded_bases
    from smallfleet.tasks import load_specialist

    summary, topic = load_specialist(summary_specialist[0]), load_specialist(topic_specialist[0])
    assert summary.base is topic.base and loaded_bases(summary.base.runtime) == 1
    texts = [json.loads(line)["dialogue"] for line in (dialog_data / "test.jsonl").read_text().splitlines()][:2]
    expected = {"summary": summary.answer(texts), "topic": topic.answer(texts)}
    results: dict[str, list] = {}

    def ask(name, specialist):
        results[name] = specialist.answer(texts)

    threads = [threading.Thread(target=ask, args=(n, s)) for n, s in (("summary", summary), ("topic", topic))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("summary", "topic"):
        assert [a.content for a in results[name]] == [a.content for a in expected[name]]
    # each adapter does its own task: topics are a few words, summaries are sentences
    assert all(len(a.content.split()) <= 5 for a in results["topic"]), [a.content for a in results["topic"]]
    assert all(len(a.content.split()) > 5 for a in results["summary"]), [a.content for a in results["summary"]]
    # the bare base (no adapter) answers differently from the topic adapter
    base = topic.generate(texts[:1], topic.decoding(None), with_adapter=False)[0].text
    assert base != results["topic"][0].content


def test_stream_max_tokens_stop_and_sampling(summary_specialist, dialog_data):
    from smallfleet.tasks import load_specialist
    from smallfleet.tasks import AnswerOptions

    specialist = load_specialist(summary_specialist[0])
    text = json.loads((dialog_data / "test.jsonl").read_text().splitlines()[0])["dialogue"]
    pieces = list(specialist.stream(text))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == specialist.answer([text])[0].content
    short = specialist.answer([text], AnswerOptions(max_tokens=4))[0]
    assert short.detail["tokens"] <= 4
    full = specialist.answer([text])[0].content
    stop = full.split()[2]
    stopped = specialist.answer([text], AnswerOptions(stop=[stop]))[0].content
    assert stop not in stopped and full.startswith(stopped)
    assert "".join(specialist.stream(text, AnswerOptions(stop=[stop]))).strip() == stopped
    sampled = specialist.answer([text], AnswerOptions(temperature=1.0, top_p=0.95, max_tokens=8))[0]
    assert sampled.detail["tokens"] <= 8


def test_cli_eval_writes_rouge(summary_specialist, dialog_data, tmp_path):
    from click.testing import CliRunner

    from smallfleet.cli import main

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        main, ["eval", str(summary_specialist[0]), "--data", str(dialog_data / "test.jsonl"), "--limit", "2",
               "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 2 and metrics["rouge_scale"] == "0-1"
    assert all(0 <= metrics[k] <= 1 for k in ("rouge1", "rouge2", "rougeL"))


def test_train_rejects_empty_target(tmp_path):
    from smallfleet.errors import DataError
    from smallfleet.tasks.generate.data import load_pairs

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dialogue": "hi", "summary": "greeting"}\n{"dialogue": "bye", "summary": " "}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: empty 'summary'"):
        load_pairs(bad, "dialogue", "summary")


def test_adapter_exports_to_llama_cpp_gguf(summary_specialist, tmp_path):
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from smallfleet.models.runtime import gguf_lora

    folder = summary_specialist[0]
    heads = gguf_lora.gguf_heads(SMOLLM2_135M.locate())
    assert heads == (9, 3)  # SmolLM2-135M: 9 query heads, 3 key/value heads
    path = gguf_lora.export_lora_gguf(folder / "adapter", tmp_path / "lora.gguf", *heads)
    reader = gguf.GGUFReader(str(path))
    names = {t.name: t for t in reader.tensors}
    assert len(names) == 30 * 7 * 2  # 30 layers x 7 projections x (lora_a, lora_b)
    peft = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    key = next(k for k in peft if "layers.0.self_attn.q_proj.lora_B" in k)
    exported = np.asarray(names["blk.0.attn_q.weight.lora_b"].data).reshape(peft[key].shape)
    # the rows are permuted for llama.cpp's rotary layout, never changed
    assert not np.array_equal(exported, peft[key])
    assert np.array_equal(np.sort(exported, axis=0), np.sort(peft[key].astype(np.float16), axis=0))


def test_adapter_merges_into_a_copy_of_the_base_gguf(summary_specialist, tmp_path):
    """The merged model holds W + (alpha/r) B A in the adapted weights (to Q8_0 precision), everything else as is."""
    import gguf
    import numpy as np

    from smallfleet.errors import SpecialistError
    from smallfleet.models.runtime import gguf_lora

    base_file, adapter = SMOLLM2_135M.locate(), summary_specialist[0] / "adapter"
    merged = gguf_lora.merge_lora_into_gguf(base_file, adapter, tmp_path / "merged.gguf")
    assert [f.name for f in tmp_path.iterdir()] == ["merged.gguf"]  # no temporary file left
    base, out = gguf.GGUFReader(str(base_file)), gguf.GGUFReader(str(merged))
    assert {f for f in base.fields} == {f for f in out.fields}
    assert out.fields["tokenizer.chat_template"].contents() == base.fields["tokenizer.chat_template"].contents()
    deltas = gguf_lora.lora_deltas(adapter, *gguf_lora.gguf_heads(base_file))
    assert len(deltas) == 30 * 7
    tensors = {t.name: t for t in out.tensors}
    for t in base.tensors:
        m = tensors[t.name]
        if t.name not in deltas:  # embeddings and norms: byte for byte
            assert m.tensor_type == t.tensor_type and np.array_equal(m.data, t.data), t.name
            continue
        assert m.tensor_type == gguf.GGMLQuantizationType.Q8_0
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(deltas[t.name].shape) + deltas[t.name]
        got = gguf.quants.dequantize(m.data, m.tensor_type).reshape(want.shape)
        step = np.abs(want.reshape(-1, 32)).max(axis=1) / 127  # Q8_0: one scale per block of 32, kept in fp16
        assert (np.abs(got - want).reshape(-1, 32) <= 0.6 * step[:, None] + 1e-6).all(), t.name
    with pytest.raises(SpecialistError, match="merged_type must be one of"):
        gguf_lora.merge_lora_into_gguf(base_file, adapter, tmp_path / "x.gguf", merged_type="Q2")


def test_lora_checkpoint_resumes(dialog_data, tmp_path):
    from rich.console import Console

    from smallfleet.models.runtime.hf import load_causal_lm
    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.tasks.generate.lora import attach_lora, train_lora

    rows = [json.loads(line) for line in (dialog_data / "train.jsonl").read_text().splitlines()][:4]
    pairs = [(r["dialogue"], r["summary"]) for r in rows]
    settings = GenerateSettings(max_steps=2, batch_size=1, max_length=64, gradient_accumulation=1, checkpoint_every=1)
    model, tokenizer = load_causal_lm(resolve_base_model("smollm2-135m"))
    model = attach_lora(model, settings)
    # the second run finds the step-1 checkpoint and reloads adapter and optimizer state from it
    runs = [train_lora(model, tokenizer, pairs, settings, tmp_path, Console(), "t") for _ in range(2)]
    assert (tmp_path / "trainer_state.pt").is_file()
    assert runs[0].resumed_from == 0 and runs[1].resumed_from == 1
    assert runs[1].history[0] == runs[0].history[0] and len(runs[1].history) == 2


def test_answer_only_loss_and_checkpointing_give_transformers_loss_and_gradients(dialog_data):
    """The memory savings of LoRA training (bench/generate.py --memory) change nothing a run learns."""
    import torch

    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.models.runtime.hf import load_causal_lm
    from smallfleet.tasks.generate.lora import IGNORE, _checkpointing, _pad, answer_loss, attach_lora, encode_pair

    rows = [json.loads(line) for line in (dialog_data / "train.jsonl").read_text().splitlines()][:3]
    model, tokenizer = load_causal_lm(resolve_base_model("smollm2-135m"))
    model = attach_lora(model, GenerateSettings(lora_dropout=0.0))
    for name, p in model.named_parameters():  # LoRA B starts at zero, which would leave every A gradient zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    ids, labels = _pad([encode_pair(tokenizer, r["dialogue"], r["summary"], "", 96) for r in rows], tokenizer.pad_token_id)
    attention, labels = (labels != -1).long(), labels.masked_fill(labels == -1, IGNORE)
    model.train()

    def loss_and_grads(loss_fn):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full, full_grads = loss_and_grads(lambda: model(input_ids=ids, attention_mask=attention, labels=labels).loss)
    _checkpointing(model.get_base_model(), True)
    mine, my_grads = loss_and_grads(lambda: answer_loss(model, ids, attention, labels))
    _checkpointing(model.get_base_model(), False)
    assert mine == pytest.approx(full, abs=1e-5)
    assert all(g.abs().sum() > 0 for g in full_grads)
    for a, b in zip(full_grads, my_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_training_sets_a_fixed_mmap_threshold_unless_the_user_did(monkeypatch):
    import sys

    from smallfleet.training.heap import ENV, fix_mmap_threshold

    monkeypatch.setenv(ENV, "65536")
    assert fix_mmap_threshold() is False
    monkeypatch.delenv(ENV)
    assert fix_mmap_threshold() is sys.platform.startswith("linux")


def test_fleet_yaml_generation_settings(tmp_path):
    from smallfleet.config import FleetSpec
    from smallfleet.errors import ConfigError

    (tmp_path / "fleet.yaml").write_text(
        "name: f\ntasks:\n  - name: summaries\n    kind: generate\n    train: d.jsonl\n"
        "    fields: {text: dialogue, output: summary}\n    generation: {max_steps: 30, lora_r: 4}\n"
    )
    task = FleetSpec.from_file(tmp_path / "fleet.yaml").tasks[0]
    assert (task.base, task.fields.output, task.settings.max_steps, task.settings.lora_r) == (
        "smollm2-135m", "summary", 30, 4)
    (tmp_path / "bad.yaml").write_text(
        "name: f\ntasks:\n  - name: s\n    kind: generate\n    train: d.jsonl\n    generation: {max_step: 3}\n"
    )
    with pytest.raises(ConfigError, match=r"task 's': generation: unknown key 'max_step'"):
        FleetSpec.from_file(tmp_path / "bad.yaml")


def test_gateway_serves_two_adapters_and_streams_tokens(summary_specialist, topic_specialist, tmp_path):
    """`smallfleet serve` over a fleet of two adapters on one base, driven by the openai client."""
    import openai
    from gateway_process import GatewayProcess

    fleet = tmp_path / "genfleet"
    fleet.mkdir()
    tasks = {p.name: {"kind": "generate", "folder": str(p)} for p in (summary_specialist[0], topic_specialist[0])}
    (fleet / "fleet.json").write_text(json.dumps({"name": "gen", "tasks": tasks}))
    dialogue = "#Person1#: Can I return these shoes? They are too small.\n#Person2#: Sure, do you have the receipt?"
    with GatewayProcess(fleet) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": dialogue}]
        summary = client.chat.completions.create(model="fleet/dialog_summary", messages=messages, max_tokens=12)
        topic = client.chat.completions.create(model="fleet/dialog_topic", messages=messages, max_tokens=12)
        sf = summary.model_extra["smallfleet"]
        assert sf["task"] == "dialog_summary" and sf["tier"] == "specialist" and 0 <= sf["confidence"] <= 1
        assert summary.usage.completion_tokens <= 12
        assert len(topic.choices[0].message.content.split()) < len(summary.choices[0].message.content.split()) + 3
        chunks = list(client.chat.completions.create(model="fleet/dialog_summary", messages=messages, max_tokens=12,
                                                     stream=True))  # fmt: skip
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(pieces) > 1  # token by token, not one block
        assert "".join(pieces) == summary.choices[0].message.content  # greedy: the same answer
        assert chunks[-1].model_extra["smallfleet"]["task"] == "dialog_summary"



def _runtime_base(runtime: str, summary_specialist, topic_specialist):
    """The shared base on `runtime` with both test adapters, plus a prompt builder."""
    from smallfleet.models.runtime import llama_cpp
    from smallfleet.models.runtime import shared_base
    from smallfleet.models.runtime.base import build_prompt
    from smallfleet.models.resolve import resolve_base_model

    if runtime.startswith("llama.cpp") and not llama_cpp.available():
        pytest.skip("llama-cpp-python is not installed (README, 'Faster generation')")
    base = shared_base(resolve_base_model("smollm2-135m"), runtime)
    assert base.runtime == runtime
    base.add_adapter("t-summary", summary_specialist[0] / "adapter")
    base.add_adapter("t-topic", topic_specialist[0] / "adapter")
    return base, lambda texts: [build_prompt(base.tokenizer, t, INSTRUCTION, 192) for t in texts]


@pytest.mark.parametrize("runtime", ["transformers", "llama.cpp", "llama.cpp-lora"])
def test_each_runtime_switches_adapters_per_request(runtime, summary_specialist, topic_specialist, dialog_data):
    """Whatever runtime the environment picks, both runtimes run each request with its own adapter."""
    from smallfleet.models.runtime.base import Decoding

    base, prompts = _runtime_base(runtime, summary_specialist, topic_specialist)
    texts = [json.loads(line)["dialogue"] for line in (dialog_data / "test.jsonl").read_text().splitlines()][:2]
    greedy = Decoding(max_new_tokens=16)
    order = ["t-summary", "t-topic", None, "t-topic", "t-summary"]  # back and forth, base in between
    runs = [base.generate(prompts(texts), name, greedy) for name in order]
    text = [[g.text for g in run] for run in runs]
    assert text[0] == text[4] and text[1] == text[3]  # switching leaves no trace
    assert all(len(t.split()) <= 5 for t in text[1]), text[1]
    assert all(len(t.split()) > 5 for t in text[0]), text[0]
    assert text[2] != text[1]
    for gen in (g for run in runs for g in run):
        assert gen.tokens == len(gen.logprobs) <= 16 and all(lp <= 0 for lp in gen.logprobs)
        assert gen.ttft_ms > 0
    pieces = list(base.stream(prompts(texts[:1])[0], "t-summary", greedy))
    assert len(pieces) > 1 and "".join(pieces).strip() == text[0][0]


def test_transformers_batches_concurrent_calls_of_different_adapters(summary_specialist, topic_specialist,
                                                                     dialog_data):
    """Calls queued while the model is busy run as one batch, each row with its own adapter."""
    from smallfleet.models.runtime.base import Decoding

    base, prompts = _runtime_base("transformers", summary_specialist, topic_specialist)
    texts = [json.loads(line)["dialogue"] for line in (dialog_data / "test.jsonl").read_text().splitlines()][:2]
    greedy = Decoding(max_new_tokens=12)
    jobs = [(None, texts[:1]), ("t-summary", texts), ("t-topic", texts)]
    solo = [[g.text for g in base.generate(prompts(t), name, greedy)] for name, t in jobs]
    results: dict[int, list[str]] = {}

    def call(i: int) -> None:
        name, t = jobs[i]
        results[i] = [g.text for g in base.generate(prompts(t), name, greedy)]

    def wait_for(condition) -> None:
        for _ in range(24000):  # up to 2 minutes: a loaded CI machine may not schedule the worker for a while
            if condition():
                return
            threading.Event().wait(0.005)
        raise AssertionError("the generation worker did not pick up the queued call")

    before, taken = base.batches, base.taken
    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    with base._lock:  # the model is busy: the worker takes job 0 and waits, jobs 1 and 2 queue up
        threads[0].start()
        wait_for(lambda: base.taken == taken + 1)  # job 0 is queued and taken (not merely not yet queued)
        threads[1].start()
        threads[2].start()
        wait_for(lambda: len(base._pending) == 2)
    for t in threads:
        t.join()
    assert base.batches - before == 2  # job 0 alone, then jobs 1 and 2 (two adapters) in one batch
    assert [results[i] for i in range(3)] == solo


def test_runtime_choice_errors_name_the_fix(monkeypatch):
    from smallfleet.errors import SpecialistError
    from smallfleet.models.runtime import llama_cpp
    from smallfleet.models.runtime import choose_runtime
    from smallfleet.models.resolve import ResolvedModel, resolve_base_model

    folder = ResolvedModel(ref="./my-model", path="./my-model", source="local")
    gguf = ResolvedModel(ref="smollm2-135m", path="/x", source="package", gguf_file="m.gguf")
    with pytest.raises(SpecialistError, match="unknown runtime 'vllm'"):
        choose_runtime(gguf, "vllm")
    monkeypatch.setenv("SMALLFLEET_RUNTIME", "transformers")
    assert choose_runtime(gguf) == "transformers"  # the environment's choice
    assert choose_runtime(folder, "auto") == "transformers"  # llama.cpp only runs GGUF bases
    if llama_cpp.available():
        with pytest.raises(SpecialistError, match="needs a GGUF base; ./my-model is a transformers folder"):
            choose_runtime(folder, "llama.cpp")
        assert choose_runtime(resolve_base_model("smollm2-135m"), "auto") == "llama.cpp"  # a llama-architecture GGUF
    monkeypatch.setattr(llama_cpp, "available", lambda: False)
    assert choose_runtime(gguf, "auto") == "transformers"
    with pytest.raises(SpecialistError, match="needs llama-cpp-python"):
        choose_runtime(gguf, "llama.cpp")


def test_escalated_generate_requests_become_training_rows(summary_specialist, tmp_path):
    """Below its threshold a generate task escalates; the frontier's answers export as (dialogue, summary) rows."""
    import subprocess
    import sys

    import openai
    from fake_upstream import FakeUpstream
    from gateway_process import GatewayProcess

    fleet = tmp_path / "genfleet"
    fleet.mkdir()
    folder = summary_specialist[0]
    (fleet / "fleet.json").write_text(json.dumps({"name": "gen", "tasks": {folder.name: {"folder": str(folder)}}}))
    db = f"sqlite:///{tmp_path / 'log.db'}"
    dialogue = "#Person1#: Is the pool open today?\n#Person2#: Yes, until nine."
    with FakeUpstream() as upstream:
        upstream.mode = "reply:Person2 says the pool is open until nine."
        args = ["--db", db, "--escalate-to", upstream.base_url, "--escalate-model", "big", "--threshold",
                f"{folder.name}=2"]  # fmt: skip
        with GatewayProcess(fleet, *args) as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            reply = client.chat.completions.create(model=f"fleet/{folder.name}",
                                                   messages=[{"role": "user", "content": dialogue}])  # fmt: skip
        assert reply.model_extra["smallfleet"]["escalated"] is True
        assert reply.choices[0].message.content == "Person2 says the pool is open until nine."
        assert upstream.calls[-1]["body"]["messages"][-1]["content"] == dialogue
    out = tmp_path / "flywheel.jsonl"
    subprocess.run([sys.executable, "-m", "smallfleet", "logs", str(fleet), "--db", db, "--task", folder.name,
                    "--export", str(out)], check=True, capture_output=True)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"dialogue": dialogue, "summary": "Person2 says the pool is open until nine."}]


def test_export_for_vllm_writes_a_peft_folder_that_answers_like_the_served_adapter(summary_specialist, dialog_data,
                                                                                  tmp_path):  # fmt: skip
    from click.testing import CliRunner
    from peft import PeftModel

    from smallfleet.cli import main
    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.models.runtime import shared_base
    from smallfleet.models.runtime.base import Decoding, build_prompt
    from smallfleet.models.runtime.hf import generate, load_causal_lm

    folder = summary_specialist[0]
    out = tmp_path / "adapters"
    result = CliRunner().invoke(main, ["export", str(folder), "--format", "vllm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = out / "dialog_summary"
    assert sorted(p.name for p in exported.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          "smallfleet-export.json"]  # fmt: skip
    config = json.loads((exported / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the catalog's hub id
    assert config["peft_type"] == "LORA" and config["r"] == 16
    assert f"--enable-lora --max-lora-rank 16 --lora-modules dialog_summary={exported.resolve()}" in result.output
    again = CliRunner().invoke(main, ["export", str(folder), "--out", str(out), "--base-model", "/models/smollm2"])
    assert again.exit_code == 1 and "--force" in again.output
    forced = CliRunner().invoke(main, ["export", str(folder), "--out", str(out), "--base-model", "/models/smollm2",
                                       "--force"])  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert json.loads((exported / "adapter_config.json").read_text())["base_model_name_or_path"] == "/models/smollm2"

    # peft loads the folder on the base, and answers exactly as the served adapter does
    resolved = resolve_base_model("smollm2-135m")
    model, tokenizer = load_causal_lm(resolved)
    peft_model = PeftModel.from_pretrained(model, exported).eval()
    texts = [json.loads(line)["dialogue"] for line in (dialog_data / "test.jsonl").read_text().splitlines()][:2]
    prompts = [build_prompt(tokenizer, t, INSTRUCTION, 192) for t in texts]
    greedy = Decoding(max_new_tokens=16)
    served = shared_base(resolved, "transformers")
    served.add_adapter("t-export", folder / "adapter")
    want = served.generate(prompts, "t-export", greedy)
    got = generate(peft_model, tokenizer, prompts, greedy)
    assert [g.text for g in got] == [w.text for w in want]
    for g, w in zip(got, want):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    with peft_model.disable_adapter():  # the adapter is what makes the answers: without it they differ
        bare = generate(peft_model, tokenizer, prompts, greedy)
    assert max(abs(a - b) for bg in zip(bare, got) for a, b in zip(bg[0].logprobs, bg[1].logprobs)) > 0.01


def test_export_refuses_a_kind_without_an_adapter(tmp_path):
    from smallfleet.errors import ConfigError
    from smallfleet.tasks import get_kind

    with pytest.raises(ConfigError, match=r"task kind 'classify' has no adapter to export \(kinds that do: generate\)"):
        get_kind("classify").export_adapter(tmp_path, {"name": "t"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
@pytest.mark.parametrize("runtime", ["transformers", "llama.cpp"])
def test_novelty_from_the_base_models_embedding_of_the_input(runtime, summary_specialist, dialog_data):
    """Novelty statistics are fitted on the bare base model's embedding of the training inputs; on either runtime,
    an SMS or a banking question lies farther from them than a held-out dialogue, fails the novelty test, and the
    answer carries its novelty."""
    from smallfleet.models.resolve import resolve_base_model
    from smallfleet.models.runtime import llama_cpp, shared_base
    from smallfleet.tasks.generate.specialist import GenerateSpecialist, adapter_name
    from smallfleet.tasks.generate.train import _InMemory
    from smallfleet.training.artifacts import MANIFEST, read_json

    if runtime.startswith("llama.cpp") and not llama_cpp.available():
        pytest.skip("llama-cpp-python is not installed (README, 'Faster generation')")
    folder, _ = summary_specialist
    manifest = read_json(folder / MANIFEST)
    info = manifest["novelty"]
    assert info["method"] == "mahalanobis" and info["threshold"] > 0 and (folder / "novelty.npz").is_file()
    assert "accept novelty <=" in (folder / "README.md").read_text()
    base = shared_base(resolve_base_model("smollm2-135m"), runtime)
    base.add_adapter(adapter_name(folder), folder / "adapter")
    specialist = GenerateSpecialist(folder, manifest, base, adapter_name(folder))
    dialogues = [json.loads(line)["dialogue"] for line in (dialog_data / "test.jsonl").read_text().splitlines()]
    odd = ["WINNER!! As a valued network customer you have been selected to receive a 900 prize reward! Call now.",
           "I still have not received my new card, how long does delivery take?"]
    novelty = specialist.input_novelty(dialogues + odd)
    assert max(novelty[: len(dialogues)]) < min(novelty[len(dialogues) :]), novelty
    assert all(not specialist.novelty.accepts(n) for n in novelty[len(dialogues) :])
    answer = specialist.answer(odd[:1])[0]
    assert answer.novelty == pytest.approx(novelty[len(dialogues)], rel=1e-3)
    assert specialist.prediction(odd[0], answer)["novelty"] == round(answer.novelty, 6)
    assert specialist.novelty_line().startswith("accept novelty <=")
    # a model without an input embedding (here: the one being trained, before saving) runs without the test, and says so
    bare = GenerateSpecialist(folder, manifest, _InMemory(None, None), None)
    assert bare.novelty is None and bare.input_novelty(odd) == [None, None]
    assert bare.novelty_line().startswith("novelty test off (runtime in training gives no input embedding")
