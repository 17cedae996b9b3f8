"""Prometheus metrics of one gateway: requests, escalations and latency by task and tier."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from smallfleet.tiers.breaker import OPEN

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
        self.audits = Counter("smallfleet_audits", "Live audits of accepted answers by an upstream tier.",
                              ("task", "outcome"), registry=self.registry)  # fmt: skip
        self.quality = Gauge("smallfleet_live_quality", "Share of judged accepted answers that were right.",
                             ("task",), registry=self.registry)  # fmt: skip
        self.judged = Gauge("smallfleet_live_quality_judged", "Accepted answers with a judgement (audit, review, "
                            "feedback).", ("task",), registry=self.registry)  # fmt: skip
        self.alert = Gauge("smallfleet_live_quality_alert", "1 when live accepted quality is below the task's "
                           "guaranteed bound with significance.", ("task",), registry=self.registry)  # fmt: skip
        self.circuit = Gauge("smallfleet_tier_circuit_open", "1 while the tier's circuit breaker is open (requests "
                             "skip the tier), else 0.", ("tier",), registry=self.registry)  # fmt: skip

    def watch_circuit(self, tier: str, breaker) -> None:
        """Show `breaker`'s state (see `tiers/breaker.py`) as `smallfleet_tier_circuit_open{tier}`, read at scrape."""
        self.circuit.labels(tier).set_function(lambda: float(breaker.state == OPEN))

    def observe(self, task: str | None, tier: str, status: str, escalated: bool, seconds: float) -> None:
        task = task or "none"
        self.requests.labels(task, tier, status).inc()
        if escalated:
            self.escalations.labels(task, tier).inc()
        self.latency.labels(task, tier).observe(seconds)

    def audited(self, task: str, outcome: str) -> None:
        """One audit: `agree`, `disagree` or `failed`."""
        self.audits.labels(task, outcome).inc()

    def live_quality(self, task: str, live) -> None:
        """The task's current LiveQuality (see `live_quality.py`)."""
        self.judged.labels(task).set(live.judged)
        self.alert.labels(task).set(1 if live.alert else 0)
        if live.rate is not None:
            self.quality.labels(task).set(live.rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)
