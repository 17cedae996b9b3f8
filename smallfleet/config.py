"""Typed configuration: the fleet spec (tasks, tiers, router, serving).

A `fleet.yaml` is read in exactly one place, `FleetSpec.from_file`. Everything
downstream works with these dataclasses. Key names are the same as the CLI flags
(`batch_size` <-> `--batch-size`) and the Python keyword arguments. A task's settings
are its kind's own dataclass (see `tasks.kind.TaskKind.settings_class`), under the
kind's key (`training:` for classify and extract, `generation:` for generate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from smallfleet.errors import ConfigError
from smallfleet.settings import build, datasets_dir, reject_unknown, resolve_path
from smallfleet.tasks import KINDS, FieldMap, TaskSpec, get_kind
from smallfleet.tiers.base import TierSpec
from smallfleet.training.settings import TrainSettings

__all__ = ["FleetSpec", "RetrainWhen", "RouterSpec", "ServingSpec", "TierSpec", "datasets_dir"]


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
    base: str = ""
    """Base encoder of the router; empty = the first classify or extract task's base, else the classify default."""
    training: TrainSettings = field(default_factory=lambda: TrainSettings(epochs=3, valid_fraction=0.15))
    """Fine-tuning settings of the router."""

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1 or self.max_per_task < 10:
            raise ConfigError("router: target must be in (0, 1] and max_per_task >= 10")


LOG_INPUTS = ("full", "redacted", "none")


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
    audit_rate: float = 0.0
    """Share of accepted answers also sent to the first upstream tier, after the response, to check live quality."""
    max_pending_reviews: int = 10_000
    """Most items the review queue holds pending; past it a review tier is skipped (the next tier, or a 503)."""
    journal_fsync: bool = False
    """Sync each request-log row to the disk before its response (survives power loss, not only a crashed process)."""
    log_inputs: str = "full"
    """What the request log keeps of each input: `full`, `redacted` (personal data replaced by typed placeholders,
    see smallfleet/pii.py) or `none`."""
    triage: str = ""
    """Triage model folder (`smallfleet triage train`), absolute or relative to the fleet folder; empty = no triage.
    With one, requests no task owns and requests for model `auto` go to the tier whose predicted gain is worth its price."""
    willingness_to_pay: float = 0.5
    """Triage's one knob: it sends a request to the tier with the best predicted quality minus
    (1 - willingness_to_pay) x its price as a share of the dearest tier's, so a dearer tier answers when its
    predicted gain in P(good answer) is at least (1 - willingness_to_pay) x that extra price share (1 = the tier
    predicted best whatever its price)."""
    drift_every: float = 300.0
    """Seconds between the gateway's drift checks (exported on /metrics, computed in the background); 0 = none."""
    console_cache_seconds: float = 3.0
    """Seconds a console page is kept for the session that loaded it (cleared by any answer, promotion or rollback
    given in the console); 0 = every load builds the page again."""

    threads: int = 0
    """Torch threads of the gateway's models (and llama.cpp's, which takes torch's count); 0 = torch's default, one
    per core. Measured on 2 cores: one MiniLM request took 19 ms on 1 thread and 53 ms on 2, while batches of 64
    were faster on 2 (bench/RESULTS.md, soak): on a small machine, 1 leaves a core to a second model or request."""

    workers: int = 1
    """Gateway processes on the one port (`serve --workers`), forked after the fleet is loaded so they share its
    weights; each runs its models on one thread, so N workers use N cores. They share the request log, reviews,
    keys, budgets and console sessions through the database (not an SQLite database in memory)."""

    max_wait_seconds: float = 0.0
    """Load shedding: a request whose task has more work queued than this many seconds (its queue times the recent
    seconds per answer) goes straight to the escalation tiers, with escalation_reason `busy`, instead of waiting;
    0 = never (every request waits its turn). Bounds the latency of slow kinds (a generation takes about a
    core-second) under bursts, at the upstream's price."""

    def __post_init__(self) -> None:
        if self.max_wait_seconds < 0:
            raise ConfigError(f"serving: max_wait_seconds must not be negative, got {self.max_wait_seconds}")
        if self.threads < 0:
            raise ConfigError(f"serving: threads must not be negative, got {self.threads}")
        if self.workers < 1:
            raise ConfigError(f"serving: workers must be at least 1, got {self.workers}")
        if self.workers > 1 and self.threads > 1:
            raise ConfigError(f"serving: with workers {self.workers}, each worker's models run on one thread (a "
                              f"thread pool started before the fork hangs the workers); threads {self.threads} "
                              "cannot be kept: set threads to 0 or 1, or use one worker")  # fmt: skip
        if min(self.cpu_hour_usd, self.gpu_hour_usd) < 0 or self.max_request_bytes < 1024 or self.max_tokens < 1:
            raise ConfigError("serving: prices must not be negative, max_request_bytes >= 1024, max_tokens >= 1")
        if not 0 <= self.audit_rate <= 1:
            raise ConfigError(f"serving: audit_rate must be in [0, 1], got {self.audit_rate}")
        if self.drift_every < 0:
            raise ConfigError(f"serving: drift_every must not be negative, got {self.drift_every}")
        if self.console_cache_seconds < 0:
            raise ConfigError(f"serving: console_cache_seconds must not be negative, got {self.console_cache_seconds}")
        if self.max_pending_reviews < 1:
            raise ConfigError(f"serving: max_pending_reviews must be at least 1, got {self.max_pending_reviews}")
        if self.log_inputs not in LOG_INPUTS:
            raise ConfigError(f"serving: log_inputs must be one of {', '.join(LOG_INPUTS)}, got {self.log_inputs!r}")
        if not 0 <= self.willingness_to_pay <= 1:
            raise ConfigError(f"serving: willingness_to_pay must be in [0, 1], got {self.willingness_to_pay}")


@dataclass
class RetrainWhen:
    """When `smallfleet watch` retrains a task of the fleet by itself (each candidate still has to pass the gate)."""

    min_new_rows: int | None = None
    """Retrain once the request log holds at least this many labelled rows of the task no version has seen."""
    on_drift: bool = False
    """Retrain when a drift check of the task finds drift (and some new labelled rows exist)."""
    check_every: float = 3600.0
    """Seconds between two checks of `smallfleet watch`."""

    def __post_init__(self) -> None:
        if self.min_new_rows is not None and self.min_new_rows < 1:
            raise ConfigError(f"retrain_when: min_new_rows must be at least 1, got {self.min_new_rows}")
        if self.check_every <= 0:
            raise ConfigError(f"retrain_when: check_every must be positive, got {self.check_every}")

    @property
    def active(self) -> bool:
        """Whether any condition is set."""
        return self.min_new_rows is not None or self.on_drift


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
    retrain_when: RetrainWhen = field(default_factory=RetrainWhen)
    """When `smallfleet watch` retrains a task by itself (nothing set: it never does)."""

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
        reject_unknown(raw, {"name", "defaults", "tasks", "tiers", "router", "serving", "retrain_when"}, f"{path}")
        defaults = raw.get("defaults") or {}
        _expect(defaults, dict, f"{path}: 'defaults'")
        settings_keys = {get_kind(name).settings_key for name in KINDS.names()}
        reject_unknown(defaults, {"base", "fields", "target", "delta"} | settings_keys, f"{path}: defaults")
        tasks_raw = raw.get("tasks")
        _expect(tasks_raw, list, f"{path}: 'tasks'")
        tasks = [_task_from_dict(item, defaults, path, i) for i, item in enumerate(tasks_raw)]
        tiers_raw = raw.get("tiers") or []
        _expect(tiers_raw, list, f"{path}: 'tiers'")
        tiers = [build(TierSpec, item, f"{path}: tiers[{i}]") for i, item in enumerate(tiers_raw)]
        router_raw = dict(raw.get("router") or {})
        _expect(router_raw, dict, f"{path}: 'router'")
        router_training = build(
            TrainSettings,
            {**asdict(RouterSpec().training), **(router_raw.pop("training", None) or {})},
            f"{path}: router: training",
        )
        if "out_of_scope" in router_raw:
            router_raw["out_of_scope"] = _data_path(router_raw["out_of_scope"], path.parent)
        router = build(RouterSpec, router_raw, f"{path}: router")
        router.training = router_training
        serving = build(ServingSpec, raw.get("serving") or {}, f"{path}: serving")
        retrain_when = build(RetrainWhen, raw.get("retrain_when") or {}, f"{path}: retrain_when")
        name = str(raw.get("name") or path.stem)
        try:
            return cls(name=name, tasks=tasks, source=path, tiers=tiers, router=router, serving=serving,
                       retrain_when=retrain_when)
        except ConfigError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {exc}") from None


def _task_from_dict(item: Any, defaults: dict, path: Path, index: int) -> TaskSpec:
    where = f"{path}: tasks[{index}]"
    _expect(item, dict, where)
    if "name" in item:
        where = f"{path}: task {item['name']!r}"
    for key in ("name", "train"):
        if key not in item:
            raise ConfigError(f"{where}: missing required key '{key}'")
    base_dir = path.parent
    try:
        kind = get_kind(str(item.get("kind", "classify")))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    key = kind.settings_key
    setting_names = {f.name for f in fields(kind.settings_class)}
    # a setting may also sit at the task's top level (e.g. an extract task's `schema: file.json`)
    top_level = {k: item[k] for k in setting_names & set(item) if k not in TASK_KEYS}
    reject_unknown(item, TASK_KEYS | {key} | set(top_level), where)
    settings_raw = {**(defaults.get(key) or {}), **(item.get(key) or {}), **top_level}
    try:
        return TaskSpec(
            name=str(item["name"]),
            kind=kind.name,
            train=_data_path(item["train"], base_dir),
            valid=_data_path(item.get("valid"), base_dir),
            test=_data_path(item.get("test"), base_dir),
            fields=build(FieldMap, {**(defaults.get("fields") or {}), **(item.get("fields") or {})}, f"{where}: fields"),
            base=str(item.get("base", defaults.get("base", ""))),
            settings=build(kind.settings_class, settings_raw, f"{where}: {key}", base_dir),
            target=float(item.get("target", defaults.get("target", 0.95))),
            delta=float(item.get("delta", defaults.get("delta", 0.05))),
        )
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        if str(exc).startswith("task "):  # TaskSpec already named the task
            raise ConfigError(f"{path}: {exc}") from None
        raise ConfigError(f"{where}: {exc}") from None


TASK_KEYS = {"name", "train", "kind", "valid", "test", "fields", "base", "target", "delta"}
"""Keys of a task in fleet.yaml besides its kind's settings key."""


def _data_path(value: Any, base_dir: Path) -> Path | None:
    return None if value is None else resolve_path(value, base_dir)


def _expect(value: Any, typ: type, where: str) -> None:
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: expected a {typ.__name__}, got {type(value).__name__}")
