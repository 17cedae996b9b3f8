"""`smallfleet audit`: find the narrow, repeatable tasks in frontier traffic and what answering
them locally would save.

The audit is saved beside the fleet (`_audit/audit.json`, and each cluster's requests in
`_audit/cluster-<id>.jsonl` as `{ref, input, answer}` rows), so `smallfleet distill` builds a
task from a cluster without reading the log again, and the gateway knows each cluster's template.
"""

from __future__ import annotations

import json
from pathlib import Path

from smallfleet.audit.analysis import Assumptions, break_even, cost_of, describe, observed_days
from smallfleet.audit.clusters import cluster_exchanges
from smallfleet.audit.traffic import Exchange
from smallfleet.errors import DataError
from smallfleet.training.artifacts import staged_folder

AUDIT_FOLDER = "_audit"
AUDIT_FILE = "audit.json"
MIN_REQUESTS = 30
"""Fewest requests an audit needs."""
MIN_CLUSTER = 10
"""Fewest requests that make a cluster."""

__all__ = ["AUDIT_FILE", "AUDIT_FOLDER", "Assumptions", "MIN_CLUSTER", "MIN_REQUESTS", "audit", "cluster_rows",
           "read_audit", "save_audit"]  # fmt: skip


def audit(exchanges: list[Exchange], assumptions: Assumptions, min_cluster: int = MIN_CLUSTER,
          embedder=None) -> tuple[dict, dict[int, list[dict]]]:  # fmt: skip
    """Cluster `exchanges` by task and describe each cluster; returns the audit and each cluster's rows.

    Args:
        exchanges: Requests a frontier model answered.
        assumptions: Prices and costs behind the money figures.
        min_cluster: Fewest requests that make a cluster.
        embedder: A `SentenceEmbedder` (default: MiniLM).

    Raises:
        DataError: fewer than MIN_REQUESTS requests, saying how many are needed.
    """
    if len(exchanges) < MIN_REQUESTS:
        raise DataError(f"the audit needs at least {MIN_REQUESTS} pass-through requests and found {len(exchanges)}: "
                        "serve with --escalate-to and send traffic through the gateway, or give --from FILE.jsonl")  # fmt: skip
    if embedder is None:
        from smallfleet.models.embed import SentenceEmbedder

        embedder = SentenceEmbedder()
    embeddings = embedder.embed([ex.user for ex in exchanges])
    clusters, unclustered = cluster_exchanges(exchanges, embeddings, min_cluster)
    days = observed_days(exchanges, assumptions)
    total_spend = sum(cost_of(ex, assumptions) for ex in exchanges)
    described, rows = [], {}
    for number, cluster in enumerate(clusters, 1):
        # near-duplicates are judged on the inputs without their template, which would make every pair look alike
        inputs = embedder.embed(cluster.inputs) if cluster.template is not None else embeddings[cluster.members]
        described.append(describe(number, cluster, exchanges, inputs, len(exchanges), total_spend, days, assumptions))
        rows[number] = [{"ref": exchanges[i].ref, "input": text, "answer": exchanges[i].answer}
                        for i, text in zip(cluster.members, cluster.inputs, strict=True)]  # fmt: skip
    result = {
        "requests": len(exchanges),
        "days": round(days, 3),
        "spend_usd": round(total_spend, 6),
        "unclustered": len(unclustered),
        "unclustered_share": round(len(unclustered) / len(exchanges), 4),
        "min_cluster": min_cluster,
        "clusters": described,
        "break_even": break_even(described, assumptions),
    }
    return result, rows


def save_audit(fleet: Path, result: dict, rows: dict[int, list[dict]]) -> Path:
    """Write the audit into `fleet/_audit/`, replacing the previous one only when complete; returns the folder."""
    folder = Path(fleet) / AUDIT_FOLDER
    with staged_folder(folder, force=True, marker=AUDIT_FILE) as tmp:
        (tmp / AUDIT_FILE).write_text(json.dumps(result, indent=2, ensure_ascii=False))
        for number, items in rows.items():
            with (tmp / f"cluster-{number}.jsonl").open("w", encoding="utf-8") as f:
                for row in items:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


def read_audit(fleet: Path) -> dict | None:
    """The fleet's saved audit, or None when it has none."""
    path = Path(fleet) / AUDIT_FOLDER / AUDIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def cluster_rows(fleet: Path, number: int) -> list[dict]:
    """A saved cluster's `{ref, input, answer}` rows."""
    path = Path(fleet) / AUDIT_FOLDER / f"cluster-{number}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]  # not splitlines: U+2028
