"""Grouping exchanges by task: first by exact system prompt and prompt template, then the
requests no template explains by their MiniLM embeddings (agglomerative, cosine)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smallfleet.audit.templates import Template, find_templates
from smallfleet.audit.traffic import Exchange

EMBED_DISTANCE = 0.6
"""Average-linkage cosine distance under which requests without a template join one cluster."""


@dataclass
class Cluster:
    """Requests that look like one task: by a template (`template`), or by meaning alone (template None)."""

    members: list[int]
    """Indices into the audited exchanges."""
    template: Template | None
    inputs: list[str] = field(default_factory=list)
    """Each member's input: the user turn with the template stripped."""


def cluster_exchanges(exchanges: list[Exchange], embeddings: np.ndarray, min_size: int) -> tuple[list[Cluster], list[int]]:
    """The clusters of at least `min_size` requests, largest first, and the indices no cluster holds.

    Args:
        exchanges: The audited requests.
        embeddings: Unit-length embeddings of their user turns, one row each.
        min_size: Fewest requests that make a cluster.
    """
    by_system: dict[str | None, list[int]] = {}
    for i, ex in enumerate(exchanges):
        by_system.setdefault(ex.system or None, []).append(i)
    clusters, rest = [], []
    for system, idx in by_system.items():
        found = find_templates([exchanges[i].user for i in idx], min_size)
        taken = set()
        for prefix, suffix, members in found:
            template = Template(system, prefix, suffix)
            chosen = [idx[m] for m in members]
            clusters.append(Cluster(chosen, template, [template.strip(exchanges[i].user) for i in chosen]))
            taken.update(chosen)
        left = [i for i in idx if i not in taken]
        if system is not None and len(left) >= min_size:  # the system prompt alone names the task
            template = Template(system)
            clusters.append(Cluster(left, template, [exchanges[i].user.strip() for i in left]))
        else:
            rest.extend(left)
    unclustered = []
    for members in _by_meaning(rest, embeddings, min_size):
        if len(members) >= min_size:
            clusters.append(Cluster(members, None, [exchanges[i].user.strip() for i in members]))
        else:
            unclustered.extend(members)
    clusters.sort(key=lambda c: -len(c.members))
    return clusters, sorted(unclustered)


def _by_meaning(idx: list[int], embeddings: np.ndarray, min_size: int) -> list[list[int]]:
    if len(idx) < max(min_size, 2):
        return [idx] if idx else []
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=EMBED_DISTANCE, metric="cosine",
                                     linkage="average").fit_predict(embeddings[idx])  # fmt: skip
    groups: dict[int, list[int]] = {}
    for i, label in zip(idx, labels, strict=True):
        groups.setdefault(int(label), []).append(i)
    return list(groups.values())
