"""Prometheus metrics of one gateway: requests, escalations and latency by task and tier.

With `serve --workers N` the workers share one metrics folder (prometheus_client's multiprocess
mode): each writes its own values there and `/metrics`, whichever worker answers it, adds up the
counters and histograms of all of them. A gauge shows the most recent value any worker set
(`mostrecent`), or for the circuit breakers the highest among the live workers (`livemax`: 1 when
any worker's breaker for that tier is open).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from smallfleet.tiers.breaker import OPEN

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


def gather_across_processes(folder: Path) -> None:
    """From now on, metrics of this process and of the processes it forks live in `folder` and are rendered
    summed across them. Call before any GatewayMetrics is made."""
    os.environ[MULTIPROCESS] = str(folder)
    values.ValueClass = values.get_value_class()  # chosen at import; prometheus_client may be imported already


def process_ended(pid: int) -> None:
    """A worker is gone: its `live*` gauges stop counting (its counters stay in the sums)."""
    if os.environ.get(MULTIPROCESS):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class GatewayMetrics:
    """Counters and a latency histogram on a registry of their own (one per app, so tests can run several)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("task", "tier", "status")
        self.requests = Counter("smallfleet_requests", "Chat-completion requests.", labels, registry=self.registry)
        self.escalations = Counter("smallfleet_escalations", "Requests escalated past the specialist.",
                                   ("task", "tier"), registry=self.registry)  # fmt: skip
        self.latency = Histogram("smallfleet_request_latency_seconds", "Time to answer a request.", ("task", "tier"),
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.shed_requests = Counter("smallfleet_shed", "Requests sent straight to the escalation tiers because their "
                                     "task's queue held more than serving.max_wait_seconds of work.", ("task",),
                                     registry=self.registry)  # fmt: skip
        self.audits = Counter("smallfleet_audits", "Live audits of accepted answers by an upstream tier.",
                              ("task", "outcome"), registry=self.registry)  # fmt: skip
        latest = {"registry": self.registry, "multiprocess_mode": "mostrecent"}  # one value, whoever set it last
        self.quality = Gauge("smallfleet_live_quality", "Share of judged accepted answers that were right.",
                             ("task",), **latest)  # fmt: skip
        self.judged = Gauge("smallfleet_live_quality_judged", "Accepted answers with a judgement (audit, review, "
                            "feedback).", ("task",), **latest)  # fmt: skip
        self.alert = Gauge("smallfleet_live_quality_alert", "1 when live accepted quality is below the task's "
                           "guaranteed bound with significance.", ("task",), **latest)  # fmt: skip
        self.circuit = Gauge("smallfleet_tier_circuit_open", "1 while the tier's circuit breaker is open (requests "
                             "skip the tier), else 0.", ("tier",), registry=self.registry,
                             multiprocess_mode="livemax")  # fmt: skip
        self._breakers: dict = {}

        signal = ("task", "signal")
        self.drift = Gauge("smallfleet_drift", "1 when the signal's test finds recent traffic unlike the training "
                           "baseline (p < alpha), 0 when not; absent until computed.", signal, **latest)  # fmt: skip
        self.drift_statistic = Gauge("smallfleet_drift_statistic", "The drift test's statistic (MMD, KS distance, "
                                     "observed rate, chi-square).", signal, **latest)  # fmt: skip
        self.drift_p_value = Gauge("smallfleet_drift_p_value", "The drift test's p-value.", signal, **latest)
        self.drift_requests = Gauge("smallfleet_drift_requests", "Recent requests the drift test used.", signal,
                                    **latest)  # fmt: skip

    def watch_circuit(self, tier: str, breaker) -> None:
        """Show `breaker`'s state (see `tiers/breaker.py`) as `smallfleet_tier_circuit_open{tier}`, read at scrape."""
        self._breakers[tier] = breaker
        self.circuit.labels(tier).set(float(breaker.state == OPEN))

    def observe(self, task: str | None, tier: str, status: str, escalated: bool, seconds: float) -> None:
        task = task or "none"
        self.requests.labels(task, tier, status).inc()
        if escalated:
            self.escalations.labels(task, tier).inc()
        self.latency.labels(task, tier).observe(seconds)

    def shed(self, task: str) -> None:
        """One request of `task` escalated for load (`busy`), without asking its specialist."""
        self.shed_requests.labels(task).inc()

    def audited(self, task: str, outcome: str) -> None:
        """One audit: `agree`, `disagree` or `failed`."""
        self.audits.labels(task, outcome).inc()

    def live_quality(self, task: str, live) -> None:
        """The task's current LiveQuality (see `live_quality.py`)."""
        self.judged.labels(task).set(live.judged)
        self.alert.labels(task).set(1 if live.alert else 0)
        if live.rate is not None:
            self.quality.labels(task).set(live.rate)

    def drift_signal(self, task: str, name: str, signal: dict) -> None:
        """One drift signal of the latest check (see `flywheel/drift.py`); one not computed sets only its request count."""
        self.drift_requests.labels(task, name).set(signal["n"])
        if signal["drift"] is None:
            for gauge in (self.drift, self.drift_statistic, self.drift_p_value):
                try:
                    with warnings.catch_warnings():  # workers (multiprocess mode) cannot remove a series: its last value stays
                        warnings.simplefilter("ignore", UserWarning)
                        gauge.remove(task, name)
                except KeyError:  # never computed: nothing to take down
                    pass
            return
        self.drift.labels(task, name).set(1 if signal["drift"] else 0)
        self.drift_statistic.labels(task, name).set(signal["statistic"])
        self.drift_p_value.labels(task, name).set(signal["p_value"])

    def render(self) -> bytes:
        for tier, breaker in self._breakers.items():
            self.circuit.labels(tier).set(float(breaker.state == OPEN))
        if not os.environ.get(MULTIPROCESS):
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)
        return generate_latest(every_worker)
