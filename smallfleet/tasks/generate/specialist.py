"""A saved generative specialist: a LoRA adapter on a shared base model, with log-probability confidence."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from smallfleet.calibration import LogisticMap
from smallfleet.data.batches import by_length
from smallfleet.errors import SpecialistError
from smallfleet.models.resolve import fingerprint_base, resolve_base_model
from smallfleet.models.runtime import shared_base
from smallfleet.models.runtime.base import Decoding, Generation, build_prompt
from smallfleet.novelty import describe_novelty
from smallfleet.tasks.specialist import Answer, AnswerOptions, EscalationRequest, Specialist
from smallfleet.training.artifacts import MANIFEST, read_json

ADAPTER_DIR = "adapter"
GENERATE_BATCH = 8


class GenerateSpecialist(Specialist):
    """A LoRA adapter on a shared base model, with log-probability confidence."""

    kind = "generate"

    def __init__(self, folder: Path, manifest: dict, base, adapter: str | None):
        super().__init__(folder, manifest)
        self.base = base
        self.adapter = adapter
        self.instruction: str = manifest["generation"]["instruction"]
        self.max_new_tokens: int = manifest["generation"]["max_new_tokens"]
        self.max_input_tokens: int = manifest["generation"]["max_length"]
        self.confidence_map = LogisticMap.from_dict(manifest["confidence"])
        self.novelty_off = None
        """Why the novelty statistics saved with the specialist are not used (its runtime gives no input embedding)."""
        if self.novelty and not getattr(base, "embeds", False):
            self.novelty = None
            self.novelty_off = f"runtime {getattr(base, 'runtime', 'in training')} gives no input embedding"

    @classmethod
    def load(cls, folder: Path) -> GenerateSpecialist:
        manifest = read_json(folder / MANIFEST)
        resolved = resolve_base_model(manifest["base"]["ref"])
        base = shared_base(resolved)
        if getattr(base, "fingerprint", None) is None:
            base.fingerprint = fingerprint_base(resolved)
        if base.fingerprint != manifest["base"]["sha256"]:
            raise SpecialistError(
                f"{folder}: its adapter was trained on base {manifest['base']['ref']!r} with SHA-256 "
                f"{manifest['base']['sha256'][:16]}, but that name now resolves to {resolved.path} "
                f"with SHA-256 {base.fingerprint[:16]}; install the original base or retrain"
            )
        adapter = adapter_name(folder)
        base.add_adapter(adapter, folder / ADAPTER_DIR)
        return cls(folder, manifest, base, adapter)

    def decoding(self, options: AnswerOptions | None) -> Decoding:
        """Decoding settings for one request: the client's options over the specialist's defaults."""
        options = options or AnswerOptions()
        return Decoding(
            max_new_tokens=options.max_tokens or self.max_new_tokens,
            temperature=options.temperature or 0.0,
            top_p=options.top_p if options.top_p is not None else 1.0,
            stop=list(options.stop or []),
        )

    def prompts(self, texts: list[str]) -> list[str]:
        return [build_prompt(self.base.tokenizer, t, self.instruction, self.max_input_tokens) for t in texts]

    def generate(self, texts: list[str], decoding: Decoding, with_adapter: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> list[Generation]:
        """Raw generations in batches of similar length; `with_adapter=False` prompts the bare base.

        Args:
            on_batch: called with the number of texts each finished batch answered (progress).
        """
        prompts = self.prompts(texts)
        out: list[Generation | None] = [None] * len(texts)
        for idx in by_length([len(p) for p in prompts], GENERATE_BATCH):
            batch = self.base.generate([prompts[i] for i in idx], self.adapter if with_adapter else None, decoding)
            for i, gen in zip(idx, batch):
                out[i] = gen
            if on_batch is not None:
                on_batch(len(idx))
        return out

    def answer(self, texts: list[str], options: AnswerOptions | None = None) -> list[Answer]:
        novelty = self.input_novelty(texts)
        return [self.as_answer(g, n) for g, n in zip(self.generate(texts, self.decoding(options)), novelty)]

    def input_novelty(self, texts: list[str]) -> list[float | None]:
        """How far each input lies from the training inputs, on the bare base model's embedding of it (None: no test)."""
        if not self.novelty or not texts:
            return [None] * len(texts)
        return [float(v) for v in self.novelty.score(self.base.embed(texts, self.max_input_tokens))]

    def novelty_line(self) -> str:
        if self.novelty_off:
            return describe_novelty({"threshold": None, "source": self.novelty_off})
        return super().novelty_line()

    can_stream = True

    def stream(self, text: str, options: AnswerOptions | None = None) -> Iterator[str]:
        """Yield pieces of the answer to `text` as tokens are generated."""
        return self.base.stream(self.prompts([text])[0], self.adapter, self.decoding(options))

    def as_answer(self, gen: Generation, novelty: float | None = None) -> Answer:
        mean_lp, min_lp = logprob_features(gen)
        return Answer(
            content=gen.text,
            confidence=self.confidence_map([mean_lp, min_lp]),
            novelty=novelty,
            valid=bool(gen.text),
            detail={"tokens": gen.tokens, "mean_logprob": mean_lp, "min_logprob": min_lp, "ttft_ms": gen.ttft_ms},
        )

    def escalation_request(self, text: str) -> EscalationRequest:
        system = [{"role": "system", "content": self.instruction}] if self.instruction else []
        return EscalationRequest(messages=system + [{"role": "user", "content": text}])

    def prediction(self, text: str, answer: Answer) -> dict:
        out = {"input": text, "text": answer.content, "confidence": round(answer.confidence, 6),
               "tokens": answer.detail["tokens"]}  # fmt: skip
        if answer.novelty is not None:
            out["novelty"] = round(answer.novelty, 6)
        return out

    def serving_note(self) -> str:
        return f"runtime {self.base.runtime}"


def adapter_name(folder: Path) -> str:
    """The name a specialist's adapter gets on its shared base (unique per folder)."""
    return "a" + hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]


def logprob_features(gen: Generation) -> tuple[float, float]:
    """Mean (length-normalized) and minimum token log-probability of an answer."""
    if not gen.logprobs:
        return -20.0, -20.0
    return float(np.mean(gen.logprobs)), float(np.min(gen.logprobs))
