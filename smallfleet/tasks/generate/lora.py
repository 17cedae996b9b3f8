"""Step-based LoRA fine-tuning of a causal LM on (input, answer) pairs.

Each example is the chat-templated prompt followed by the answer and the end-of-turn
token; the loss counts answer tokens only, and the vocabulary projection runs on those
positions only (`answer_loss`). With `gradient_checkpointing` each layer's activations
are recomputed in the backward pass instead of kept, and freed activations go back to the
system (`training.heap`). Micro-batches are drawn from
length-sorted buckets (little padding), summed over `gradient_accumulation` into one
optimizer step. Every `checkpoint_every` steps the adapter, optimizer, schedule and
position in the data stream are saved, so an interrupted run resumes where it was.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from smallfleet.tasks.generate.settings import GenerateSettings
from smallfleet.models.runtime.base import build_prompt
from smallfleet.data.batches import length_bucketed_batches
from smallfleet.training.heap import fix_mmap_threshold

IGNORE = -100
BUCKET_BATCHES = 32  # micro-batches per length-sorted bucket
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STATE_FILE = "trainer_state.pt"


@dataclass
class LoraResult:
    """What a LoRA run did."""

    steps: int
    seconds: float
    resumed_from: int
    history: list[dict]
    answer_tokens: int


def encode_pair(tokenizer, text: str, answer: str, instruction: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end of turn, and labels that mask the prompt."""
    answer_ids = tokenizer(answer.strip(), add_special_tokens=False)["input_ids"][: max_length // 2]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    overhead = len(tokenizer(build_prompt(tokenizer, "", instruction, 0), add_special_tokens=False)["input_ids"])
    prompt = build_prompt(tokenizer, text, instruction, max(8, max_length - len(answer_ids) - overhead))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def answer_loss(model, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens (labels != IGNORE) of a peft causal LM.

    The same value as transformers' own loss, but the output layer runs on the answer positions only:
    full-vocabulary logits for every prompt token are the largest tensors of a step (49,152 floats per
    token for SmolLM2), and the prompt is most of each row.
    """
    base = model.get_base_model()
    hidden = base.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def micro_batches(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless stream of index batches: pass after pass of length-bucketed batches in random order."""
    rng = random.Random(seed)
    while True:
        yield from length_bucketed_batches(lengths, batch_size, rng, BUCKET_BATCHES)


def attach_lora(model, settings: GenerateSettings):
    """Wrap `model` with fresh LoRA adapters on every attention and MLP projection."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings.seed)
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=TARGET_MODULES,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train_lora(
    model, tokenizer, pairs: list[tuple[str, str]], settings: GenerateSettings, checkpoint: Path, console: Console, name: str
) -> LoraResult:
    """Fine-tune the LoRA weights of the peft `model` on (input, answer) `pairs`.

    Args:
        model: a peft model from `attach_lora`; trained in place.
        tokenizer: its tokenizer (chat template, eos).
        pairs: training inputs and target answers.
        settings: steps, batch, accumulation, learning rate, lengths.
        checkpoint: folder for resumable checkpoints; resumed from when it holds a matching one.
        console: where progress goes.
        name: task name shown in the progress bar.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    fix_mmap_threshold()
    encoded = [encode_pair(tokenizer, t, a, settings.instruction, settings.max_length) for t, a in pairs]
    run_id = _run_id(settings, pairs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    warmup = max(1, int(settings.warmup_ratio * settings.max_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (settings.max_steps - s) / max(1, settings.max_steps - warmup)))
    )
    step, history = 0, []
    state_path = checkpoint / STATE_FILE
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        if state["run_id"] == run_id:
            set_peft_model_state_dict(model, state["adapter"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            step, history = state["step"], state["history"]
            console.print(f"[cyan]resuming[/] {name} from step {step} ({checkpoint})")
        else:
            console.print(f"[yellow]warning[/] {checkpoint} holds a checkpoint of other data or settings; starting over")
    resumed_from = step
    stream = micro_batches([len(ids) for ids, _ in encoded], settings.batch_size, settings.seed)
    for _ in range(step * settings.gradient_accumulation):  # skip what the resumed run already consumed
        next(stream)
    if settings.gradient_checkpointing:
        _checkpointing(model.get_base_model(), True)
    model.train()
    started = time.perf_counter()
    answer_tokens = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"{name} LoRA", total=settings.max_steps, completed=step)
        while step < settings.max_steps:
            total = 0.0
            for _ in range(settings.gradient_accumulation):
                ids, labels = _pad([encoded[i] for i in next(stream)], tokenizer.pad_token_id)
                loss = answer_loss(model, ids, (labels != -1).long(), labels.masked_fill(labels == -1, IGNORE))
                (loss / settings.gradient_accumulation).backward()
                total += loss.item() / settings.gradient_accumulation
                answer_tokens += int((labels >= 0).sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            history.append({"step": step, "loss": round(total, 4), "lr": schedule.get_last_lr()[0]})
            progress.update(bar, advance=1, description=f"{name} LoRA loss {total:.3f}")
            if not console.is_terminal and step % 10 == 0:  # logs get a line now and then instead of a live bar
                rate = (time.perf_counter() - started) / (step - resumed_from)
                console.print(f"{name} step {step}/{settings.max_steps} loss {total:.3f} "
                              f"({rate:.1f} s/step, ETA {rate * (settings.max_steps - step) / 60:.1f} min)")
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < settings.max_steps:
                checkpoint.mkdir(parents=True, exist_ok=True)
                state = {"run_id": run_id, "adapter": get_peft_model_state_dict(model), "step": step,
                         "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "history": history}
                torch.save(state, state_path.with_suffix(".tmp"))
                state_path.with_suffix(".tmp").replace(state_path)
    if settings.gradient_checkpointing:
        _checkpointing(model.get_base_model(), False)
    model.eval()
    return LoraResult(step, time.perf_counter() - started, resumed_from, history, answer_tokens)


def _checkpointing(model, on: bool) -> None:
    """Turn activation checkpointing on (non-reentrant: no input grads needed; LoRA dropout replays its RNG) or off."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the older name warns there
        model.activation_checkpointing_enable({"use_reentrant": False}) if on else model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_enable({"use_reentrant": False}) if on else model.gradient_checkpointing_disable()


def _pad(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row; padded label positions are -1 (mask) and become IGNORE in the loss."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
    return ids, labels


def _run_id(settings: GenerateSettings, pairs: list[tuple[str, str]]) -> str:
    """Fingerprint of settings and data: a checkpoint is only resumed by the same run."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for text, answer in pairs:
        digest.update(text.encode())
        digest.update(answer.encode())
    return digest.hexdigest()
