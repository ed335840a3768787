"""The facade: one object that serves embeddings, generation and vectors from a configuration.

``ai.tenant("acme")`` is the tenant-bound view every tenant's work goes through; calls made on the
facade itself run as the reserved system tenant (platform-internal work), on the same path:
budget -> (cache) -> router -> providers, and one usage row per attempt in the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from pulse_ai.accounting import Attempt, Usage
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.config import (
    BreakerConfig,
    FallbackConfig,
    LoadedConfig,
    PipelineConfig,
    load_config,
    load_config_text,
)
from pulse_ai.context import SYSTEM_TENANT, CallContext
from pulse_ai.db import IndexRuns, KnownPipelines, TenantSettings
from pulse_ai.errors import CacheClearIncompleteError, InputError, PurgeIncompleteError
from pulse_ai.metering import DEFAULT_LONGEST_S, Meter, Route
from pulse_ai.platform import Platform, PlatformHolder
from pulse_ai.providers.base import HealthStatus, Provider
from pulse_ai.providers.registry import create_provider
from pulse_ai.routing import HealthRegistry, ModelHealth, Router, probe
from pulse_ai.streams import GenerationStream
from pulse_ai.tenancy import TenantAI
from pulse_ai.types import EmbeddingResult, GenerationParams, GenerationResult, Message, check_unicode_fields
from pulse_ai.vectors import Indexer, VectorSpace, VectorStore, open_vector_store
from pulse_ai.vectors.base import PurgeReport
from pulse_ai.vectors.indexer import IndexReport, Record
from pulse_ai.vectors.scope import validate_name

__all__ = ["DEFAULT_CONFIG", "PulseAI"]

DEFAULT_CONFIG = "default.yaml"
# Back-off the openai SDK may wait between two retries (it caps Retry-After it honours).
RETRY_ALLOWANCE_S = 60.0
Messages = str | Sequence[Message | dict[str, str]]


class PulseAI:
    """Embeddings and generation across providers, by ``provider/model`` or by pipeline name.

    Providers, the vector store and the database are opened on first use. Use
    ``async with PulseAI.from_config(...) as ai:`` or call ``aclose()`` to release them.
    """

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self._providers: dict[str, Provider] = {}
        self._routers: dict[str, Router] = {}
        self._direct_routers: dict[tuple[str, Capability], Router] = {}
        self.health = HealthRegistry()
        self._vector_store: VectorStore | None = None
        self._platform = PlatformHolder(
            loaded.config.database,
            loaded.config.byok_providers(),
            KnownPipelines.of(loaded.config.pipelines, loaded.models),
        )
        # bring-your-own-key: providers and routers built with a tenant's own credentials
        self._tenant_providers: dict[tuple[str, str, str], Provider] = {}
        self._tenant_routers: dict[tuple[str, str, str], Router] = {}
        self._tenant_health: dict[str, HealthRegistry] = {}
        # embeddings, generation answers, search results and tenants' schema (``cache:`` in the YAML)
        self.caches = Caches.from_config(loaded.config.cache, database_url=loaded.config.database.url)
        self._caching: dict[int, CachingRouter] = {}
        self.meter = Meter(self._platform.get)
        self.system = TenantAI(self, CallContext(SYSTEM_TENANT))

    @classmethod
    def from_config(cls, path: str | Path) -> PulseAI:
        return cls(load_config(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> PulseAI:
        return cls(load_config_text(text, source=source))

    @classmethod
    def default(cls) -> PulseAI:
        """The offline default: the bundled local model, no API key, no network."""
        text = resources.files("pulse_ai").joinpath("examples", DEFAULT_CONFIG).read_text(encoding="utf-8")
        return cls.from_yaml(text, source=f"pulse_ai/examples/{DEFAULT_CONFIG}")

    def __repr__(self) -> str:
        return f"PulseAI({self.loaded!r})"

    # ---- wiring --------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            try:
                config = self.loaded.config.providers[name]
            except KeyError:
                raise InputError(f"no provider named {name!r}") from None
            specs = [spec for spec in self.loaded.models.values() if spec.provider == name]
            self._providers[name] = create_provider(name, config, specs)
        return self._providers[name]

    def model(self, ref: str) -> tuple[Provider, ModelSpec]:
        spec = self.loaded.models.get(ref)
        if spec is None:
            known = ", ".join(sorted(self.loaded.models))
            raise InputError(f"no model {ref!r}; configured models: {known}")
        return self.provider(spec.provider), spec

    def router(self, pipeline: str) -> Router:
        if pipeline not in self._routers:
            try:
                config = self.loaded.config.pipelines[pipeline]
            except KeyError:
                known = ", ".join(sorted(self.loaded.config.pipelines)) or "none"
                raise InputError(f"no pipeline named {pipeline!r}; configured pipelines: {known}") from None
            candidates = [self.model(ref) for ref in config.candidates]
            self._routers[pipeline] = Router(pipeline, config, candidates, health=self.health)
        return self._routers[pipeline]

    def model_router(self, ref: str, capability: Capability) -> Router:
        """A router of one candidate for direct ``model=`` calls: no fallback, but the same health
        state (breaker, latency) as the model has in every pipeline, and the same attempts."""
        key = (ref, capability)
        if key not in self._direct_routers:
            provider, spec = self.model(ref)
            if not spec.supports(capability):
                raise InputError(f"{ref} is not a {capability.value} model")
            breaker = next(
                (p.breaker for p in self.loaded.config.pipelines.values() if ref in p.candidates),
                PipelineConfig(kind=capability, candidates=[ref]).breaker,
            )
            config = PipelineConfig(
                kind=capability, candidates=[ref], fallback=FallbackConfig(enabled=False), breaker=breaker
            )
            self._direct_routers[key] = Router(f"model:{ref}", config, [(provider, spec)], health=self.health)
        return self._direct_routers[key]

    def vector_store(self) -> VectorStore:
        """The configured vector store, opened on first use and closed by ``aclose``."""
        if self._vector_store is None:
            self._vector_store = open_vector_store(self.loaded.config.vector_store)
            self._vector_store.cache = self.caches.vector_cache()  # search results and tenants' schema
        return self._vector_store

    def indexer(self, pipeline: str = "embedding", *, caller: TenantAI | None = None) -> Indexer:
        """Indexing and search of tenants' records with an embedding pipeline and the vector store.
        What a tenant's records and queries cost to embed is that tenant's (through ``caller`` for
        its tenant, so that its API key is on the ledger); each ``index`` run is recorded in
        ``index_runs``; a tenant that does not exist is a ``NotFoundError``."""
        return PlatformIndexer(self, pipeline, caller=caller)

    # ---- tenants and the platform's records ------------------------------------------------
    def tenant(self, tenant_id: str, *, api_key_id: str | None = None) -> TenantAI:
        """This facade bound to one tenant (a lowercase slug; it must exist and be active:
        ``pulse-ai tenants create`` or ``(await ai.platform()).tenants.create(...)``)."""
        return TenantAI(self, CallContext(tenant_id, api_key_id=api_key_id))

    async def platform(self) -> Platform:
        """The database and its modules (tenants, API keys, budgets, usage, index runs), opened
        on first use; the SQLite default is created and migrated then."""
        return await self._platform.get()

    async def tenant_settings(self, tenant_id: str) -> TenantSettings | None:
        """A tenant's AI settings (cached for a few seconds); None for the system tenant."""
        if tenant_id == SYSTEM_TENANT:
            return None
        return await (await self._platform.get()).settings(tenant_id)

    async def tenant_route(
        self, tenant_id: str, model: str | None, pipeline: str | None, capability: Capability
    ) -> Route:
        """The route of a tenant's call: the shared one, or, when the tenant brought its own key
        for a provider of the route, one whose candidates of that provider use the tenant's key (with
        their own circuit breakers: one tenant's bad key never opens a breaker for the others)."""
        route = self.route(model, pipeline, capability)
        if tenant_id == SYSTEM_TENANT:
            return route
        credentials = await (await self._platform.get()).provider_credentials(tenant_id)
        assert isinstance(route.routed, CachingRouter)
        router = route.routed.router
        own = {
            c.provider.name: credentials[c.provider.name] for c in router.candidates if c.provider.name in credentials
        }
        own = {name: secret for name, secret in own.items() if hasattr(self.loaded.config.providers[name], "api_key")}
        if not own:
            return route
        fingerprint = hashlib.sha256(
            "\x1f".join(f"{name}={secret.get_secret_value()}" for name, secret in sorted(own.items())).encode()
        ).hexdigest()
        key = (tenant_id, router.name, fingerprint)
        if key not in self._tenant_routers:
            health = self._tenant_health.setdefault(tenant_id, HealthRegistry())
            candidates = [
                (self._tenant_provider(tenant_id, c.provider.name, own[c.provider.name]), c.model)
                if c.provider.name in own
                else (c.provider, c.model)
                for c in router.candidates
            ]
            tenant_router = Router(
                router.name, router.config, candidates, health=_SplitHealth(self.health, health, own)
            )
            self._tenant_routers[key] = tenant_router
        return Route(self._cached(self._tenant_routers[key]), route.pipeline, route.models, route.longest_s)

    def _tenant_provider(self, tenant_id: str, name: str, secret: SecretStr) -> Provider:
        fingerprint = hashlib.sha256(secret.get_secret_value().encode()).hexdigest()
        key = (tenant_id, name, fingerprint)
        if key not in self._tenant_providers:
            config = self.loaded.config.providers[name].model_copy(update={"api_key": secret})
            specs = [spec for spec in self.loaded.models.values() if spec.provider == name]
            self._tenant_providers[key] = create_provider(name, config, specs)
        return self._tenant_providers[key]

    def _cached(self, router: Router) -> CachingRouter:
        """The router behind its caches (one per router: single flight needs one owner)."""
        layer = self._caching.get(id(router))
        if layer is None or layer.router is not router:
            layer = CachingRouter.for_pipeline(router, self.caches)
            self._caching[id(router)] = layer
        return layer

    def route(self, model: str | None, pipeline: str | None, capability: Capability) -> Route:
        """How a call goes: the router (one model for ``model=``) and the models it may use."""
        check_unicode_fields({"model": model, "pipeline": pipeline}, "")
        router = self._route(model, pipeline, capability)
        models = tuple(c.model for c in router.candidates)
        return Route(self._cached(router), None if model is not None else router.name, models, _longest_s(router))

    # ---- capabilities --------------------------------------------------------------------
    async def embed(
        self, texts: Sequence[str], *, model: str | None = None, pipeline: str | None = None
    ) -> EmbeddingResult:
        """Embed ``texts`` with one model (``provider/model``) or through a pipeline (default:
        the pipeline named ``embedding``), as the system tenant."""
        return await self.system.embed(texts, model=model, pipeline=pipeline)

    async def generate(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        pipeline: str | None = None,
        params: GenerationParams | None = None,
    ) -> GenerationResult:
        return await self.system.generate(messages, model=model, pipeline=pipeline, params=params)

    def stream(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        pipeline: str | None = None,
        params: GenerationParams | None = None,
    ) -> GenerationStream:
        """A streamed answer; use it as ``async with ai.stream(...) as stream: async for delta in
        stream`` so that leaving early closes the provider's stream and frees its slot at once."""
        return self.system.stream(messages, model=model, pipeline=pipeline, params=params)

    async def check_providers(self) -> dict[str, list[HealthStatus]]:
        """A real, cheap call to every candidate of every pipeline, by pipeline name; models in no
        pipeline are reported under the empty name."""
        report: dict[str, list[HealthStatus]] = {}
        covered: set[str] = set()
        probed: list[tuple[ModelSpec, HealthStatus]] = []
        for name in self.loaded.config.pipelines:
            router = self.router(name)
            report[name] = await router.health_check()
            probed.extend((c.model, status) for c, status in zip(router.candidates, report[name], strict=True))
            covered.update(candidate.ref for candidate in router.candidates)
        loose = [ref for ref in self.loaded.models if ref not in covered]
        for ref in loose:
            provider, spec = self.model(ref)
            status, _ = await probe(provider, spec)
            report.setdefault("", []).append(status)
            probed.append((spec, status))
        await self.meter.record_health([_health_attempt(spec, status) for spec, status in probed], self.system.context)
        return report

    def _route(self, model: str | None, pipeline: str | None, capability: Capability) -> Router:
        if model is None:
            return self._pipeline(pipeline or capability.value, capability)
        if pipeline is not None:
            raise InputError("give either model= or pipeline=, not both")
        return self.model_router(model, capability)

    def _pipeline(self, name: str, capability: Capability) -> Router:
        router = self.router(name)
        if router.config.kind is not capability:
            raise InputError(f"pipeline {name!r} is a {router.config.kind.value} pipeline")
        return router

    # ---- lifecycle -----------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the vector store and every provider: all of them, even when one fails to close
        (the first failure is raised after the rest were closed)."""
        store, self._vector_store = self._vector_store, None
        providers = [*self._providers.values(), *self._tenant_providers.values()]
        self._providers.clear()
        self._tenant_providers.clear()
        self._tenant_routers.clear()
        self._caching.clear()
        self._routers.clear()
        self._direct_routers.clear()
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._platform.close)  # last: the ledger flushes first
            stack.push_async_callback(self.caches.aclose)
            for provider in providers:
                stack.push_async_callback(provider.aclose)
            if store is not None:
                stack.push_async_callback(store.close)

    async def __aenter__(self) -> PulseAI:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _SplitHealth(HealthRegistry):
    """Health for a tenant's own-key router: the tenant's registry for the candidates of providers
    it brought a key for, the shared one for the others."""

    def __init__(self, shared: HealthRegistry, own: HealthRegistry, own_providers: Mapping[str, object]) -> None:
        super().__init__(shared.clock)
        self._shared = shared
        self._own = own
        self._own_providers = set(own_providers)

    def get(self, ref: str, config: BreakerConfig) -> ModelHealth:
        registry = self._own if ref.split("/", 1)[0] in self._own_providers else self._shared
        return registry.get(ref, config)


class _TenantEmbedder:
    """One tenant's view of an embedding pipeline, as the indexer's ``Embedder``."""

    def __init__(self, tenant: TenantAI, pipeline: str, space: VectorSpace) -> None:
        self.vector_space = space
        self._tenant = tenant
        self._pipeline = pipeline

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        return await self._tenant.embed(texts, pipeline=self._pipeline)


class PlatformIndexer(Indexer):
    """The indexer of a PulseAI: each tenant's embeddings are billed to that tenant, and every
    ``index`` run is recorded (tenant, table, times, counts, status) for the ETL side."""

    def __init__(self, ai: PulseAI, pipeline: str, *, caller: TenantAI | None = None) -> None:
        router = ai._pipeline(pipeline, Capability.EMBEDDING)
        dimensions = router.candidates[0].model.dimensions
        assert router.vector_space is not None and dimensions is not None
        space = VectorSpace(router.vector_space, dimensions)

        async def runs() -> IndexRuns:
            return (await ai.platform()).index_runs

        super().__init__(
            _TenantEmbedder(ai.system, pipeline, space),
            ai.vector_store(),
            embedder_for=lambda tenant: _TenantEmbedder(
                caller if caller is not None and caller.tenant_id == tenant else ai.tenant(tenant), pipeline, space
            ),
            runs=runs,
        )
        self._ai = ai

    async def index(self, tenant: str, table: str, records: Iterable[Record | Mapping[str, Any]]) -> IndexReport:
        """As ``Indexer.index``, for a tenant that exists (``NotFoundError`` otherwise, before any run
        is recorded or anything embedded)."""
        await self._ai.tenant_settings(validate_name(tenant, "tenant"))
        return await super().index(tenant, table, records)

    async def purge_tenant(self, tenant: str) -> PurgeReport:
        """Every point of the tenant, in every table and space, and its cached embeddings, answers,
        searches and schema."""
        failures: list[str] = []
        try:
            report = await super().purge_tenant(tenant)
            removed = [*report.dropped_collections, *report.deleted_points, *report.leftovers]
        except PurgeIncompleteError as incomplete:  # the caches are purged all the same
            failures, removed = list(incomplete.failures), list(incomplete.removed)
        try:
            await self._ai.caches.purge_tenant(tenant)
        except CacheClearIncompleteError as error:
            failures.extend(f"cache: {failure}" for failure in error.failures)
        if failures:
            raise PurgeIncompleteError(tenant, failures, removed=removed) from None
        return report


def _longest_s(router: Router) -> float:
    """How long a call through ``router`` can take at most: every candidate's attempts (the SDK's
    retries included, with room for their back-off), one after the other."""
    total = 0.0
    for candidate in router.candidates:
        config = candidate.provider.config
        timeout = float(getattr(config, "timeout", 30.0))
        retries = int(getattr(config, "max_retries", 0))
        total += (timeout + RETRY_ALLOWANCE_S) * (retries + 1)
    return max(DEFAULT_LONGEST_S, total)


def _health_attempt(spec: ModelSpec, status: HealthStatus) -> Attempt:
    """A health probe as a ledger attempt: an embedding probe sends one word (priced, flagged as an
    estimate); a generation probe lists models (free)."""
    tokens = 1 if spec.supports(Capability.EMBEDDING) else 0
    usage = Usage(tokens, 0, 1, spec.cost_usd(tokens), estimated=bool(tokens))
    outcome = "ok" if status.healthy else "unavailable"
    return Attempt(spec.ref, usage, status.latency_ms, outcome, None, spec.price_table_version)
