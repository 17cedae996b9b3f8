"""Span tagging with an encoder: a linear BIO head per token, overlapping windows for long texts.

A text longer than the window is cut into windows of `max_length` tokens that
overlap by `stride` tokens; every window is a training example, and at prediction
time a token seen by several windows gets the mean of their logits, so nothing is
truncated and tokens near a window edge also get context from the next window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from smallfleet.data.batches import by_length
from smallfleet.models.encoder import ENCODER_DIR, mean_pool, quiet_transformers
from smallfleet.tasks.extract.align import Span

HEAD_FILE = "tagger_head.safetensors"
PREDICT_BATCH = 32
IGNORE = -100


class EncoderTagger(nn.Module):
    """Encoder -> dropout -> linear layer over the BIO labels, for every token."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(hidden))

    def save(self, folder: Path) -> None:
        """Write the encoder (transformers format) and the head (safetensors) into `folder`."""
        self.encoder.save_pretrained(folder / ENCODER_DIR)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(folder / HEAD_FILE))

    @classmethod
    def load(cls, folder: Path, num_labels: int) -> EncoderTagger:
        """Rebuild a saved tagger from `folder` (offline)."""
        from transformers import AutoModel

        quiet_transformers()
        model = cls(AutoModel.from_pretrained(folder / ENCODER_DIR), num_labels)
        model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
        return model.eval()


def bio_labels(fields: list[str]) -> list[str]:
    """The tag set for `fields`: O, then B-/I- per field."""
    return ["O"] + [f"{p}-{name}" for name in fields for p in ("B", "I")]


@dataclass
class Window:
    """One encoder input: a slice of one text's tokens."""

    text_index: int
    input_ids: list[int]
    offsets: list[tuple[int, int] | None]
    """Character span of each token in the text; None for special tokens."""


def make_windows(tokenizer, texts: list[str], max_length: int, stride: int) -> list[Window]:
    """Cut each text into overlapping windows of at most `max_length` tokens."""
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    windows = []
    for k, ids in enumerate(enc["input_ids"]):
        special = enc["special_tokens_mask"][k]
        offsets = [None if sp or s == e else (s, e) for (s, e), sp in zip(enc["offset_mapping"][k], special)]
        windows.append(Window(enc["overflow_to_sample_mapping"][k], ids, offsets))
    return windows


def window_targets(window: Window, spans: list[Span], index: dict[str, int]) -> list[int]:
    """Gold label id of each token of `window` (IGNORE for special tokens)."""
    out = []
    for off in window.offsets:
        if off is None:
            out.append(IGNORE)
            continue
        label = 0
        for span in spans:
            if off[0] < span.end and off[1] > span.start:
                first = off[0] <= span.start
                label = index[("B-" if first else "I-") + span.field]
                break
        out.append(label)
    # a span whose first token is not at its exact start still begins with B
    for i in range(len(out)):
        if out[i] > 0 and (i == 0 or out[i - 1] not in (out[i], out[i] - 1)) and (out[i] % 2 == 0):
            out[i] -= 1
    return out


@dataclass
class TokenScores:
    """Per-token mean logits of one text, tokens in text order."""

    offsets: list[tuple[int, int]]
    logits: torch.Tensor
    pooled: torch.Tensor | None = None
    """The text's embedding: the mean over its windows of each window's mean-pooled token states (novelty's input)."""


def token_logits(
    model: EncoderTagger, tokenizer, texts: list[str], max_length: int, stride: int, device
) -> list[TokenScores]:
    """Logits of every token of every text, averaged over the windows that contain it."""
    windows = make_windows(tokenizer, texts, max_length, stride)
    sums: list[dict[tuple[int, int], torch.Tensor]] = [{} for _ in texts]
    counts: list[dict[tuple[int, int], int]] = [{} for _ in texts]
    pooled = torch.zeros(len(texts), model.head.in_features)
    windows_per_text = torch.zeros(len(texts), 1)
    with torch.inference_mode():
        for idx in by_length([len(w.input_ids) for w in windows], PREDICT_BATCH):
            batch = [windows[i] for i in idx]
            padded = tokenizer.pad({"input_ids": [w.input_ids for w in batch]}, return_tensors="pt")
            ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
            hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = model.head(hidden).float().cpu()
            for w, emb in zip(batch, mean_pool(hidden, mask).float().cpu()):
                pooled[w.text_index] += emb
                windows_per_text[w.text_index] += 1
            for w, row in zip(batch, logits):
                for pos, off in enumerate(w.offsets):
                    if off is None:
                        continue
                    acc = sums[w.text_index]
                    acc[off] = acc[off] + row[pos] if off in acc else row[pos].clone()
                    counts[w.text_index][off] = counts[w.text_index].get(off, 0) + 1
    pooled /= windows_per_text.clamp(min=1)
    out = []
    for acc, cnt, emb in zip(sums, counts, pooled):
        keys = sorted(acc)
        stacked = torch.stack([acc[k] / cnt[k] for k in keys]) if keys else torch.empty(0, model.head.out_features)
        out.append(TokenScores(keys, stacked, emb))
    return out


@dataclass
class FoundSpan:
    """A predicted span and its raw confidence (least per-token probability of being in the field)."""

    span: Span
    confidence: float


def decode_spans(
    scores: TokenScores, labels: list[str], temperature: float
) -> tuple[list[FoundSpan], dict[str, float]]:
    """Predicted spans of one text, and per field the probability that it is absent from the text.

    A token's probability of belonging to field f is P(B-f) + P(I-f); a span's
    confidence is the least of these over its tokens. An I- tag that does not
    continue its field starts a new span.
    """
    fields = [lab[2:] for lab in labels[1::2]]
    if len(scores.offsets) == 0:
        return [], {f: 1.0 for f in fields}
    probs = torch.softmax(scores.logits / temperature, dim=-1).numpy()
    in_field = probs[:, 1::2] + probs[:, 2::2]  # (tokens, fields)
    absent = {f: float(1.0 - in_field[:, j].max()) for j, f in enumerate(fields)}
    tags = probs.argmax(-1)
    found, current = [], None
    for t, tag in enumerate(tags):
        j = (tag - 1) // 2 if tag > 0 else -1
        continuing = current is not None and tag > 0 and tag % 2 == 0 and current[0] == j
        if continuing:
            current[2] = t
            continue
        if current is not None:
            found.append(current)
            current = None
        if tag > 0:
            current = [j, t, t]
    if current is not None:
        found.append(current)
    merged: list[list[int]] = []
    for j, first, last in found:
        # a span cannot begin inside a word: "30" "." "30" tagged B B B is one value, 30.30
        if merged and merged[-1][0] == j and scores.offsets[merged[-1][2]][1] == scores.offsets[first][0]:
            merged[-1][2] = last
        else:
            merged.append([j, first, last])
    spans = []
    for j, first, last in merged:
        conf = float(np.min(in_field[first : last + 1, j]))
        spans.append(FoundSpan(Span(fields[j], scores.offsets[first][0], scores.offsets[last][1]), conf))
    return spans, absent
