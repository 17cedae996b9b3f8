"""The fine-tuning loop shared by every encoder task: batching, optimizer and
schedule, progress with ETA, early stopping on a validation score, best-epoch restore.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from smallfleet.data.batches import length_bucketed_batches
from smallfleet.training.settings import TrainSettings


@dataclass
class FitResult:
    """What happened during fine-tuning."""

    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    model: nn.Module,
    lengths: Sequence[int],
    step_loss: Callable[[list[int]], torch.Tensor],
    evaluate: Callable[[], float],
    settings: TrainSettings,
    console: Console | None = None,
    description: str = "training",
) -> FitResult:
    """Fine-tune `model`, keeping the weights of the best validation epoch.

    Args:
        model: network whose `head` parameters get `head_learning_rate`, the rest `learning_rate`.
        lengths: token length of each training example (for bucketing).
        step_loss: returns the loss of a batch given example indices (model in train mode).
        evaluate: returns the validation score, higher is better (model in eval mode).
        settings: epochs, batch size, learning rates, patience, seed.
        console: where progress is drawn; None draws to stderr.
        description: label shown beside the progress bar.
    """
    from transformers import get_linear_schedule_with_warmup

    seed_everything(settings.seed)
    rng = random.Random(settings.seed)
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": settings.learning_rate}, {"params": head, "lr": settings.head_learning_rate}],
        weight_decay=settings.weight_decay,
    )
    steps_per_epoch = -(-len(lengths) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)

    best_score, best_epoch, best_state, history = -float("inf"), 0, None, []
    since_best, started = 0, time.monotonic()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.3f} valid {task.fields[valid]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    with progress:
        bar = progress.add_task(description, total=total, epoch=1, loss=0.0, valid="-")
        epoch = 0
        for epoch in range(1, settings.epochs + 1):
            model.train()
            running, seen = 0.0, 0
            for batch in length_bucketed_batches(lengths, settings.batch_size, rng):
                loss = step_loss(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running, seen = running + loss.item(), seen + 1
                progress.update(bar, advance=1, epoch=epoch, loss=running / seen)
            model.eval()
            with torch.inference_mode():
                score = evaluate()
            history.append({"epoch": epoch, "train_loss": running / max(seen, 1), "valid_score": score})
            progress.update(bar, valid=f"{score:.4f}")
            progress.console.print(
                f"{description} epoch {epoch}/{settings.epochs}: train loss {running / max(seen, 1):.4f}, "
                f"valid score {score:.4f} ({time.monotonic() - started:.0f} s)"
            )
            if score > best_score:
                best_score, best_epoch, since_best = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= settings.patience:
                    progress.update(bar, total=epoch * steps_per_epoch, completed=epoch * steps_per_epoch)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        best_score=best_score,
        epochs_run=epoch,
        stopped_early=epoch < settings.epochs,
        seconds=time.monotonic() - started,
        history=history,
    )
