"""A saved classifier: text -> one label of a fixed set, with calibrated confidence."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from smallfleet.data.batches import by_length
from smallfleet.models.encoder import ENCODER_DIR, EncoderClassifier, pick_device
from smallfleet.models.encoder_runtime import runtime_calibration, serving_encoder
from smallfleet.tasks.specialist import Answer, AnswerOptions, EscalationRequest, Specialist
from smallfleet.training.artifacts import MANIFEST, read_json


@dataclass
class Prediction:
    """One classification: the label, its calibrated confidence, and the top alternatives."""

    label: str
    confidence: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    novelty: float | None = None

    def to_dict(self) -> dict:
        out = {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_k": [{"label": lab, "confidence": round(p, 6)} for lab, p in self.top_k],
        }
        if self.novelty is not None:
            out["novelty"] = round(self.novelty, 6)
        return out


PREDICT_BATCH = 64
TOP_K = 3


def _batches(tokenizer, texts: list[str], max_length: int, device: torch.device, batch_size: int = PREDICT_BATCH):
    """Yield (original indices, tensors) for `texts`, batched by similar length."""
    for idx in by_length([len(t) for t in texts], batch_size):
        enc = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        yield idx, {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def compute_logits(model, tokenizer, texts: list[str], max_length: int, device: torch.device) -> torch.Tensor:
    """Raw logits for `texts`, in input order."""
    return compute_outputs(model, tokenizer, texts, max_length, device)[0]


def compute_outputs(model, tokenizer, texts: list[str], max_length: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Raw logits and the pooled embeddings they were computed from, for `texts`, in input order."""
    logits = torch.empty(len(texts), model.head.out_features)
    pooled = torch.empty(len(texts), model.head.in_features)
    with torch.inference_mode():
        for idx, batch in _batches(tokenizer, texts, max_length, device):
            emb = model.pool(batch["input_ids"], batch["attention_mask"])
            pooled[idx] = emb.float().cpu()
            logits[idx] = model.head(emb).float().cpu()
    return logits, pooled


class ClassifySpecialist(Specialist):
    """A saved classifier with calibrated confidence."""

    kind = "classify"

    def __init__(self, folder: Path, manifest: dict, model: EncoderClassifier, tokenizer, device: torch.device,
                 runtime: str | None = None, runtime_words: str = ""):  # fmt: skip
        super().__init__(folder, manifest, runtime)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.labels: list[str] = manifest["labels"]
        self.temperature: float = runtime_calibration(manifest["calibration"], runtime)["temperature"]
        self.max_length: int = manifest["training"]["max_length"]
        self.runtime_words = runtime_words

    @classmethod
    def load(cls, folder: Path, runtime: str | None = None) -> ClassifySpecialist:
        """The classifier in `folder`, its encoder on `runtime` (None = $SMALLFLEET_ENCODER_RUNTIME, else auto)."""
        from transformers import AutoTokenizer

        manifest = read_json(folder / MANIFEST)
        model = EncoderClassifier.load(folder, len(manifest["labels"]))
        model.encoder, chosen = serving_encoder(folder, manifest, model.encoder, runtime)
        tokenizer = AutoTokenizer.from_pretrained(folder / ENCODER_DIR)
        return cls(folder, manifest, model, tokenizer, chosen.device(pick_device()), chosen.name,
                   chosen.describe(manifest))  # fmt: skip

    def serving_note(self) -> str:
        return f"encoder on {self.runtime_words}" if self.runtime_words else ""

    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """Calibrated class probabilities, shape (len(texts), len(labels))."""
        logits = compute_logits(self.model, self.tokenizer, texts, self.max_length, self.device)
        return torch.softmax(logits / self.temperature, dim=-1)

    def predict(self, texts: list[str], top_k: int = TOP_K) -> list[Prediction]:
        """Label, calibrated confidence, top alternatives and (with novelty statistics) novelty of each text."""
        if not texts:
            return []
        logits, pooled = compute_outputs(self.model, self.tokenizer, texts, self.max_length, self.device)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        novelty = self.novelty.score(pooled.numpy()) if self.novelty else [None] * len(texts)
        values, indices = probs.topk(min(top_k, len(self.labels)), dim=-1)
        return [
            Prediction(
                label=self.labels[int(ix[0])],
                confidence=float(vals[0]),
                top_k=[(self.labels[int(i)], float(v)) for v, i in zip(vals, ix)],
                novelty=None if nov is None else float(nov),
            )
            for vals, ix, nov in zip(values, indices, novelty)
        ]

    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        return [
            Answer(content=p.label, confidence=p.confidence, novelty=p.novelty, detail={"top_k": p.to_dict()["top_k"]})
            for p in self.predict(texts)
        ]

    def escalation_request(self, text: str) -> EscalationRequest:
        labels = "\n".join(f"- {label}" for label in self.labels)
        instruction = (
            f"Classify the text for the task '{self.name}'. Answer with exactly one label from this list "
            f"and nothing else:\n{labels}"
        )
        return EscalationRequest(
            messages=[{"role": "system", "content": instruction}, {"role": "user", "content": text}]
        )

    def parse_escalation(self, reply: str) -> Answer | None:
        label = match_label(reply, self.labels)
        return None if label is None else Answer(content=label, confidence=1.0)

    def prediction(self, text: str, answer: Answer) -> dict:
        out = {"text": text, "label": answer.content, "confidence": round(answer.confidence, 6),
               "top_k": answer.detail["top_k"]}  # fmt: skip
        if answer.novelty is not None:
            out["novelty"] = round(answer.novelty, 6)
        return out


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def match_label(reply: str, labels: list[str]) -> str | None:
    """Map a model's free-text reply to one of `labels`, or None when it names none or several.

    Accepts the exact label, a case/punctuation variant ("Card Arrival." -> card_arrival),
    or a reply that mentions exactly one label as a whole phrase.
    """
    normalized = {_norm(label): label for label in labels}
    reply_norm = _norm(reply)
    if reply_norm in normalized:
        return normalized[reply_norm]
    found = {label for key, label in normalized.items() if key and re.search(rf"\b{re.escape(key)}\b", reply_norm)}
    # a label that is a sub-phrase of another found label ("card" in "card arrival") does not count twice
    found = {a for a in found if not any(a != b and _norm(a) in _norm(b) for b in found)}
    return found.pop() if len(found) == 1 else None
