"""Prometheus metrics of one service process, in their own registry (``GET /metrics``, admin key).

Label sets are bounded: ``route`` is the route's template (``/v1/tables/{table}/search``, never a
raw path), ``model`` a configured ``provider/model`` ref, ``outcome`` the ledger's closed list of
outcomes; ``tenant`` is the tenant id for the first ``tenant_label_limit`` tenants seen by this
process and ``_other`` after that, so a platform with many tenants cannot blow up the series count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pulse_ai.accounting import Attempt
from pulse_ai.routing import BreakerState, HealthRegistry

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "_other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class BoundedLabel:
    """Values kept as themselves up to ``limit`` distinct ones; ``_other`` after that."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


class _Breakers(Collector):
    """Each model's circuit breaker state, read when scraped."""

    def __init__(self, health: HealthRegistry) -> None:
        self.health = health

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pulse_ai_circuit_breaker_state", "1 for the state each model's breaker is in", labels=["model", "state"]
        )
        for model, current in sorted(self.health.states().items()):
            for state in BreakerState:
                family.add_metric([model, state.value], 1.0 if state is current else 0.0)
        yield family


class ServiceMetrics:
    def __init__(self, health: HealthRegistry, tenant_label_limit: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_label = BoundedLabel(tenant_label_limit)
        r = self.registry
        self.requests = Counter(
            "pulse_ai_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "pulse_ai_http_request_duration_seconds",
            "Time from request to the response's first byte, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "pulse_ai_overhead_seconds",
            "Time spent in pulse-ai (not in providers) per request, by route",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "pulse_ai_tokens", "Tokens by tenant, model and direction", ["tenant", "model", "direction"], registry=r
        )
        self.cost = Counter("pulse_ai_cost_usd", "Billed USD by tenant and model", ["tenant", "model"], registry=r)
        self.attempts = Counter(
            "pulse_ai_provider_attempts",
            "Model calls by model and outcome (ok, cached, and each error kind)",
            ["model", "outcome"],
            registry=r,
        )
        self.cache_hits = Counter("pulse_ai_cache_hits", "Calls served from a cache, by model", ["model"], registry=r)
        self.avoided = Counter(
            "pulse_ai_cache_avoided_usd", "USD a cache hit saved, by tenant and model", ["tenant", "model"], registry=r
        )
        self.rate_limited = Counter(
            "pulse_ai_rate_limited", "Requests refused by this service's rate limits", ["limit"], registry=r
        )
        self.refused_keys = Counter("pulse_ai_refused_keys", "Requests with a refused API key", registry=r)
        r.register(_Breakers(health))

    def observe_attempts(self, tenant_id: str, attempts: Sequence[Attempt]) -> None:
        if not attempts:
            return
        tenant = self.tenant_label(tenant_id)
        for attempt in attempts:
            model = attempt.model
            self.attempts.labels(model, attempt.outcome).inc()
            usage = attempt.usage
            if usage.input_tokens:
                self.tokens.labels(tenant, model, "input").inc(usage.input_tokens)
            if usage.output_tokens:
                self.tokens.labels(tenant, model, "output").inc(usage.output_tokens)
            if usage.cost_usd:
                self.cost.labels(tenant, model).inc(float(usage.cost_usd))
            if attempt.outcome == "cached":
                self.cache_hits.labels(model).inc()
                if attempt.avoided_usd:
                    self.avoided.labels(tenant, model).inc(float(attempt.avoided_usd))

    def observe_request(self, route: str, method: str, status: int, seconds: float, overhead_s: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        self.overhead.labels(route).observe(max(0.0, overhead_s))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
