"""What each cluster is worth: its kind (by the shape of the frontier's answers), how consistent
the frontier is with itself on near-duplicate inputs, and the projected saving and break-even
of answering it locally, with every assumption stated."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from smallfleet.audit.clusters import Cluster
from smallfleet.audit.traffic import Exchange
from smallfleet.tasks import KINDS

NEAR_DUPLICATE = 0.95
"""Cosine similarity of two inputs' embeddings above which they count as the same question."""
MIN_CONSISTENCY = 0.8
"""Below this share of agreeing near-duplicate pairs, a cluster is flagged as a poor candidate."""
MAX_PAIRS_SAMPLE = 2000
DAYS_PER_MONTH = 30.0
EXAMPLES = 3


@dataclass
class Assumptions:
    """The figures the audit's money estimates rest on; each is a flag of `smallfleet audit`."""

    input_price: float = 2.5
    """USD per million input tokens of the frontier model, for requests logged without a cost."""
    output_price: float = 10.0
    """USD per million output tokens of the frontier model, for requests logged without a cost."""
    cpu_hour_usd: float = 0.04
    """USD per CPU core-hour of the machine that runs the specialists."""
    local_share: float = 0.8
    """Share of a distilled task's requests expected to be answered locally (the rest still go upstream)."""
    host_usd_month: float = 30.0
    """USD per month of keeping one small always-on CPU machine to self-host the fleet."""
    days: float | None = None
    """Days the audited traffic spans; default: measured from the requests' times (at least one day)."""

    def __post_init__(self):
        if min(self.input_price, self.output_price, self.cpu_hour_usd, self.host_usd_month) < 0:
            raise ValueError("prices and costs must be >= 0")
        if not 0 < self.local_share <= 1:
            raise ValueError("local_share must be in (0, 1]")
        if self.days is not None and self.days <= 0:
            raise ValueError("days must be > 0")


def cost_of(ex: Exchange, a: Assumptions) -> float:
    """What the frontier charged for an exchange: as logged, else its tokens at the assumed prices."""
    if ex.cost_usd > 0:
        return ex.cost_usd
    return (ex.prompt_tokens * a.input_price + ex.completion_tokens * a.output_price) / 1e6


def kind_scores(inputs: list[str], answers: list[str]) -> dict[str, float]:
    """Each registered kind's `looks_like` score for the answers."""
    return {name: round(KINDS.get(name).looks_like(inputs, answers), 4) for name in KINDS.names()}


def normalized_answer(answer: str) -> str:
    """An answer in a form in which equal answers compare equal: JSON objects canonical, text folded."""
    text = answer.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return " ".join(re.sub(r"[^\w\s]", " ", answer.casefold()).split())


def consistency(embeddings: np.ndarray, answers: list[str], seed: int = 0) -> tuple[float | None, int]:
    """The share of near-duplicate input pairs that got the same answer, and how many pairs there were
    (None when there were none). At most MAX_PAIRS_SAMPLE inputs (a seeded sample) are compared."""
    n = len(answers)
    idx = np.arange(n)
    if n > MAX_PAIRS_SAMPLE:
        idx = np.sort(np.random.default_rng(seed).choice(n, MAX_PAIRS_SAMPLE, replace=False))
    vectors = embeddings[idx]
    sims = vectors @ vectors.T
    i, j = np.nonzero(np.triu(sims >= NEAR_DUPLICATE, k=1))
    if not len(i):
        return None, 0
    norm = [normalized_answer(answers[k]) for k in idx]
    same = sum(norm[a] == norm[b] for a, b in zip(i, j, strict=True))
    return same / len(i), int(len(i))


def describe(number: int, cluster: Cluster, exchanges: list[Exchange], inputs: np.ndarray, total: int,
             total_spend: float, days: float, a: Assumptions) -> dict:  # fmt: skip
    """The audit's entry for one cluster (see `smallfleet audit --help` for the keys).

    Args:
        inputs: Unit-length embeddings of the cluster's inputs (template stripped), in member order.
    """
    members = [exchanges[i] for i in cluster.members]
    answers = [ex.answer for ex in members]
    scores = kind_scores(cluster.inputs, answers)
    kind = max(scores, key=lambda k: scores[k])
    agree, pairs = consistency(inputs, answers)
    spend = sum(cost_of(ex, a) for ex in members)
    flags = []
    if agree is not None and agree < MIN_CONSISTENCY:
        flags.append(f"poor candidate: the frontier disagrees with itself on {1 - agree:.0%} of {pairs} "
                     "near-duplicate input pairs")  # fmt: skip
    if cluster.template is None:
        flags.append("no template: requests are matched by meaning (the router), not by their prompt")
    monthly_requests = len(members) * DAYS_PER_MONTH / days
    monthly_spend = spend * DAYS_PER_MONTH / days
    compute = monthly_requests * a.local_share * KINDS.get(kind).cpu_seconds_per_answer * a.cpu_hour_usd / 3600
    counts: dict[str, int] = {}
    for ans in answers:
        counts[ans.strip()] = counts.get(ans.strip(), 0) + 1
    return {
        "id": number,
        "requests": len(members),
        "share": round(len(members) / total, 4),
        "spend_usd": round(spend, 6),
        "spend_share": round(spend / total_spend, 4) if total_spend else 0.0,
        "kind": kind,
        "kind_scores": scores,
        "consistency": None if agree is None else round(agree, 4),
        "disagreement": None if agree is None else round(1 - agree, 4),
        "near_duplicate_pairs": pairs,
        "candidate": not any(f.startswith("poor candidate") for f in flags),
        "flags": flags,
        "template": None if cluster.template is None else cluster.template.as_dict(),
        "examples": [ex.user for ex in members[:EXAMPLES]],
        "example_answers": [ex.answer for ex in members[:EXAMPLES]],
        "distinct_answers": len(counts),
        "top_answers": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:10]),
        "monthly_requests": round(monthly_requests, 1),
        "monthly_spend_usd": round(monthly_spend, 4),
        "monthly_compute_usd": round(compute, 4),
        "monthly_saving_usd": round(monthly_spend * a.local_share - compute, 4),
    }


def break_even(clusters: list[dict], a: Assumptions) -> dict:
    """Self-hosting the candidate clusters' specialists on one machine against paying the API for them."""
    chosen = [c for c in clusters if c["candidate"]]
    requests = sum(c["monthly_requests"] for c in chosen)
    spend = sum(c["monthly_spend_usd"] for c in chosen)
    per_request = spend * a.local_share / requests if requests else 0.0
    saving = spend * a.local_share - a.host_usd_month
    needed = math.ceil(a.host_usd_month / per_request) if per_request > 0 else None
    return {
        "clusters": [c["id"] for c in chosen],
        "monthly_requests": round(requests, 1),
        "monthly_api_usd": round(spend, 4),
        "api_usd_per_local_request": round(per_request, 8),
        "monthly_host_usd": a.host_usd_month,
        "monthly_saving_usd": round(saving, 4),
        "break_even_monthly_requests": needed,
        "pays_off": needed is not None and requests >= needed,
        "assumptions": asdict(a),
    }


def observed_days(exchanges: list[Exchange], a: Assumptions) -> float:
    """The days the traffic spans: `a.days`, else first to last request (at least one day)."""
    if a.days:
        return a.days
    times = [ex.created_at for ex in exchanges if ex.created_at is not None]
    if len(times) < 2:
        return 1.0
    return max((max(times) - min(times)).total_seconds() / 86400, 1.0)
