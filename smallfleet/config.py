"""Typed configuration: training settings, task specs and the fleet spec.

A `fleet.yaml` is read in exactly one place, `FleetSpec.from_file`. Everything
downstream works with these dataclasses. Key names are the same as the CLI flags
(`batch_size` <-> `--batch-size`) and the Python keyword arguments.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from smallfleet.errors import ConfigError

RUNTIMES = ("auto", "transformers", "llama.cpp")
"""Decoding runtimes for generate specialists (see `models.causal_lm.choose_runtime`)."""
RUNTIME_ENV = "SMALLFLEET_RUNTIME"
TASK_KINDS = ("classify", "extract", "generate")
TIER_KINDS = ("openai", "review")
# base model used when a task names none
DEFAULT_BASE = {"classify": "minilm", "extract": "minilm", "generate": "smollm2-135m"}


@dataclass
class TrainSettings:
    """How a specialist is fine-tuned."""

    epochs: int = 8
    """Maximum passes over the training data."""
    batch_size: int = 32
    """Examples per optimizer step."""
    learning_rate: float = 1e-4
    """Peak learning rate of the encoder (linear warmup, then linear decay)."""
    head_learning_rate: float = 2e-3
    """Peak learning rate of the freshly initialized output head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.06
    """Fraction of the steps spent warming up the learning rate."""
    label_smoothing: float = 0.1
    """Share of the target mass spread over the other labels (regularizes; temperature scaling re-calibrates)."""
    max_length: int = 128
    """Longest input in tokens; longer texts are truncated (extract: cut into windows overlapping by a quarter)."""
    patience: int = 2
    """Stop after this many epochs without a better validation score."""
    seed: int = 13
    """Seed for initialization, shuffling and the validation split."""
    valid_fraction: float = 0.1
    """Share of training rows held out for validation when no validation file is given."""

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "head_learning_rate": self.head_learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "max_length": self.max_length >= 8,
            "patience": self.patience >= 1,
            "valid_fraction": 0 < self.valid_fraction < 0.5,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"training setting {name}={getattr(self, name)!r} is out of range")

    def replace(self, **changes: Any) -> TrainSettings:
        """Return a copy with the given settings changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class FieldMap:
    """Which fields of a data row hold the input text and the label."""

    text: str = "text"
    """Field (JSONL key or CSV column) holding the input text."""
    label: str = "label"
    """Field holding the gold label (extract: the JSON object of gold field values; rows without it may use `fields`)."""
    tokens: str | None = None
    """Extract with BIO data: field holding the list of tokens."""
    tags: str | None = None
    """Extract with BIO data: field holding one BIO tag per token."""
    output: str = "output"
    """Field holding the target text (kind `generate`; `--output-field`)."""


@dataclass
class GenerateSettings:
    """How a generative (LoRA) specialist is fine-tuned and decodes; used by kind `generate`."""

    max_steps: int = 200
    """Optimizer steps (each of batch_size x gradient_accumulation examples)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    gradient_accumulation: int = 2
    """Micro-batches summed into one optimizer step."""
    learning_rate: float = 5e-4
    """Peak LoRA learning rate (linear warmup, then linear decay)."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent warming up the learning rate."""
    max_length: int = 512
    """Longest prompt + answer in tokens; the input is cut to fit, the answer is kept."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    instruction: str = ""
    """System prompt put before every input (also what the zero-shot base and the escalation tier see)."""
    max_new_tokens: int = 96
    """Default cap on generated tokens per answer."""
    quality_bar: float = 0.3
    """ROUGE-L F1 at or above which a validation answer counts as good for calibration."""
    valid_rows: int = 64
    """Most validation rows generated for calibration (generation is slow on CPU)."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many steps (0 = never)."""
    seed: int = 13
    """Seed for LoRA init, shuffling and the validation split."""
    valid_fraction: float = 0.05
    """Share of training rows held out for validation when no validation file is given."""

    def __post_init__(self) -> None:
        checks = {
            "max_steps": self.max_steps >= 1,
            "batch_size": self.batch_size >= 1,
            "gradient_accumulation": self.gradient_accumulation >= 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "max_length": self.max_length >= 32,
            "lora_r": self.lora_r >= 1,
            "lora_alpha": self.lora_alpha >= 1,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "quality_bar": 0 < self.quality_bar <= 1,
            "valid_rows": self.valid_rows >= 2,
            "checkpoint_every": self.checkpoint_every >= 0,
            "valid_fraction": 0 < self.valid_fraction < 0.5,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"generation setting {name}={getattr(self, name)!r} is out of range")

    def replace(self, **changes: Any) -> GenerateSettings:
        """Return a copy with the given settings changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class TaskSpec:
    """One narrow task of the fleet and how to train its specialist."""

    name: str
    """Task name; also the specialist's folder name inside the fleet."""
    train: Path
    """Training data file (JSONL or CSV)."""
    kind: str = "classify"
    """Task kind; one of TASK_KINDS."""
    valid: Path | None = None
    """Validation file; when absent a seeded stratified split of `train` is used."""
    test: Path | None = None
    """Held-out test file, evaluated after training."""
    fields: FieldMap = field(default_factory=FieldMap)
    """Field mapping for all of this task's files."""
    base: str = ""
    """Base model: a local folder or file, a packaged model name, or a hub id; empty = the kind's DEFAULT_BASE."""
    training: TrainSettings = field(default_factory=TrainSettings)
    """Fine-tuning settings."""
    target: float = 0.95
    """Accuracy the accepted answers must reach on validation; picks the escalation threshold."""
    generation: GenerateSettings = field(default_factory=GenerateSettings)
    """LoRA fine-tuning and decoding settings (kind `generate` only)."""
    schema: Path | None = None
    """Extract: JSON Schema file of the output record (optional for BIO data: derived from the tags)."""

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ConfigError(f"task {self.name!r}: target={self.target!r} must be in (0, 1]")
        if self.schema is not None and self.kind != "extract":
            raise ConfigError(f"task {self.name!r}: 'schema' only applies to kind 'extract', not {self.kind!r}")
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"task name {self.name!r} must be letters, digits, '-' or '_'")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(TASK_KINDS)})")
        self.base = self.base or DEFAULT_BASE[self.kind]


@dataclass
class TierSpec:
    """One escalation tier: an OpenAI-compatible endpoint or the human review queue."""

    name: str
    """Tier name, shown in responses and the request log."""
    kind: str = "openai"
    """`openai` (any OpenAI-compatible endpoint) or `review` (human review queue)."""
    base_url: str = ""
    """Endpoint root for `openai` tiers, e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1."""
    model: str = ""
    """Model name sent upstream."""
    api_key_env: str = ""
    """Environment variable holding the upstream API key (keys are never read from files)."""
    input_price: float = 0.0
    """USD per million input tokens."""
    output_price: float = 0.0
    """USD per million output tokens."""
    hour_usd: float = 0.0
    """For self-hosted endpoints: USD per hour of the machine, costed from measured request time."""
    timeout: float = 30.0
    """Seconds before an upstream attempt is abandoned."""
    retries: int = 2
    """Retries after a timeout, connection error or 5xx, with exponential backoff."""

    def __post_init__(self) -> None:
        where = f"tier {self.name!r}"
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: name must be letters, digits, '-' or '_'")
        if self.kind not in TIER_KINDS:
            raise ConfigError(f"{where}: unknown kind {self.kind!r} (known: {', '.join(TIER_KINDS)})")
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ConfigError(f"{where}: an openai tier needs base_url and model")
        if min(self.input_price, self.output_price, self.hour_usd) < 0 or self.timeout <= 0 or self.retries < 0:
            raise ConfigError(f"{where}: prices, timeout and retries must not be negative")

    def token_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a request of this size at this tier's token prices."""
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1e6


@dataclass
class RouterSpec:
    """How the fleet's router (request -> task or `none`) is trained and trusted."""

    out_of_scope: Path | None = None
    """Optional file of texts no specialist should take (JSONL/CSV, field `text`); they teach the `none` route."""
    text_field: str = "text"
    """Text field of the out-of-scope file."""
    target: float = 0.95
    """Routing accuracy required on validation; less confident routes go to `none` (escalate)."""
    max_per_task: int = 2000
    """Most training texts taken from each task (keeps the router balanced and quick)."""
    training: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=3, valid_fraction=0.15))
    """Fine-tuning settings of the router."""

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1 or self.max_per_task < 10:
            raise ConfigError("router: target must be in (0, 1] and max_per_task >= 10")


@dataclass
class ServingSpec:
    """Gateway settings stored with the fleet; `smallfleet serve` flags override them."""

    cpu_hour_usd: float = 0.04
    """Price of one CPU core-hour; self-hosted answers cost measured core-seconds at this rate."""
    gpu_hour_usd: float = 1.20
    """Price of one GPU-hour when specialists run on a GPU."""
    max_request_bytes: int = 1_000_000
    """Largest request body accepted (413 above)."""
    max_tokens: int = 4096
    """Largest `max_tokens` a client may ask for (400 above)."""

    def __post_init__(self) -> None:
        if min(self.cpu_hour_usd, self.gpu_hour_usd) < 0 or self.max_request_bytes < 1024 or self.max_tokens < 1:
            raise ConfigError("serving: prices must not be negative, max_request_bytes >= 1024, max_tokens >= 1")


@dataclass
class FleetSpec:
    """A fleet: named set of tasks, each trained into its own specialist."""

    name: str
    """Fleet name; used for the default output folder."""
    tasks: list[TaskSpec]
    """The tasks, in order."""
    source: Path | None = None
    """The YAML file this spec was read from."""
    tiers: list[TierSpec] = field(default_factory=list)
    """Escalation tiers, tried in order when a specialist is unsure."""
    router: RouterSpec = field(default_factory=RouterSpec)
    """Router settings (a fleet of two or more tasks trains one)."""
    serving: ServingSpec = field(default_factory=ServingSpec)
    """Gateway settings: compute prices and request limits."""

    def __post_init__(self) -> None:
        tier_names = [t.name for t in self.tiers]
        if len(set(tier_names)) != len(tier_names):
            raise ConfigError(f"{self.source or 'fleet'}: tier names must be unique")
        if not self.tasks:
            raise ConfigError(f"{self.source or 'fleet'}: 'tasks' is empty; declare at least one task")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.source or 'fleet'}: task names must be unique, repeated: {', '.join(dupes)}")

    def task(self, name: str) -> TaskSpec:
        """Return the task called `name`."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise ConfigError(f"no task {name!r} in fleet {self.name!r} (tasks: {', '.join(t.name for t in self.tasks)})")

    @classmethod
    def from_file(cls, path: str | Path) -> FleetSpec:
        """Read and validate a fleet YAML file.

        Relative data paths resolve against the YAML file's folder; `$VARS` in
        paths are expanded (`$SMALLFLEET_DATASETS` defaults to the shared datasets).
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"fleet file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with 'name' and 'tasks' at the top level")
        _reject_unknown(raw, {"name", "defaults", "tasks", "tiers", "router", "serving"}, f"{path}")
        defaults = raw.get("defaults") or {}
        _expect(defaults, dict, f"{path}: 'defaults'")
        _reject_unknown(defaults, {"base", "training", "fields", "generation", "target"}, f"{path}: defaults")
        tasks_raw = raw.get("tasks")
        _expect(tasks_raw, list, f"{path}: 'tasks'")
        tasks = [_task_from_dict(item, defaults, path, i) for i, item in enumerate(tasks_raw)]
        tiers_raw = raw.get("tiers") or []
        _expect(tiers_raw, list, f"{path}: 'tiers'")
        tiers = [_build(TierSpec, item, f"{path}: tiers[{i}]") for i, item in enumerate(tiers_raw)]
        router_raw = dict(raw.get("router") or {})
        _expect(router_raw, dict, f"{path}: 'router'")
        router_training = _build(
            TrainSettings,
            {**asdict(RouterSpec().training), **(router_raw.pop("training", None) or {})},
            f"{path}: router: training",
        )
        if "out_of_scope" in router_raw:
            router_raw["out_of_scope"] = _data_path(router_raw["out_of_scope"], path.parent)
        router = _build(RouterSpec, router_raw, f"{path}: router")
        router.training = router_training
        serving = _build(ServingSpec, raw.get("serving") or {}, f"{path}: serving")
        name = str(raw.get("name") or path.stem)
        try:
            return cls(name=name, tasks=tasks, source=path, tiers=tiers, router=router, serving=serving)
        except ConfigError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {exc}") from None


def _task_from_dict(item: Any, defaults: dict, path: Path, index: int) -> TaskSpec:
    where = f"{path}: tasks[{index}]"
    _expect(item, dict, where)
    allowed = {f.name for f in fields(TaskSpec)}
    _reject_unknown(item, allowed, where)
    if "name" in item:
        where = f"{path}: task {item['name']!r}"
    for key in ("name", "train"):
        if key not in item:
            raise ConfigError(f"{where}: missing required key '{key}'")
    base_dir = path.parent
    kind = str(item.get("kind", "classify"))
    try:
        return TaskSpec(
            name=str(item["name"]),
            kind=kind,
            train=_data_path(item["train"], base_dir),
            valid=_data_path(item.get("valid"), base_dir),
            test=_data_path(item.get("test"), base_dir),
            fields=_build(FieldMap, {**(defaults.get("fields") or {}), **(item.get("fields") or {})}, f"{where}: fields"),
            base=str(item.get("base", defaults.get("base", ""))),
            training=_build(
                TrainSettings, {**(defaults.get("training") or {}), **(item.get("training") or {})}, f"{where}: training"
            ),
            target=float(item.get("target", defaults.get("target", 0.95))),
            generation=_build(
                GenerateSettings,
                {**(defaults.get("generation") or {}), **(item.get("generation") or {})},
                f"{where}: generation",
            ),
            schema=_data_path(item.get("schema"), base_dir),
        )
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        if str(exc).startswith("task "):  # TaskSpec already named the task
            raise ConfigError(f"{path}: {exc}") from None
        raise ConfigError(f"{where}: {exc}") from None


def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, naming any unknown or mistyped key."""
    _expect(values, dict, where)
    known = {f.name: f for f in fields(cls)}
    _reject_unknown(values, set(known), where)
    kwargs = {}
    hints = get_type_hints(cls)
    for key, value in values.items():
        typ = hints[key]
        if get_args(typ):  # Optional[X] / X | None: the non-None member
            typ = next(t for t in get_args(typ) if t is not type(None))
        try:
            kwargs[key] = typ(value)
            if typ is int and float(value) != kwargs[key]:
                raise ValueError(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: key '{key}' must be a {typ.__name__}, got {value!r}") from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _data_path(value: Any, base_dir: Path) -> Path | None:
    if value is None:
        return None
    expanded = os.path.expandvars(str(value).replace("$SMALLFLEET_DATASETS", str(datasets_dir())))
    p = Path(expanded).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _reject_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def _expect(value: Any, typ: type, where: str) -> None:
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: expected a {typ.__name__}, got {type(value).__name__}")


def datasets_dir() -> Path:
    """Folder of the shared public datasets: $SMALLFLEET_DATASETS or ../shared/datasets beside the checkout."""
    env = os.environ.get("SMALLFLEET_DATASETS")
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parent.parent.parent / "shared" / "datasets").resolve()
