"""A tenant-bound view of the facade: ``ai.tenant("acme")``.

::

    acme = ai.tenant("acme")                         # a CallContext for tenant acme
    await acme.embed(["text"])                       # budget -> (cache) -> router -> ledger
    await acme.generate("Summarise ...", pipeline="summarize")
    async with acme.stream("...") as stream: ...
    indexer = acme.indexer()                         # index / search / delete / count in acme's scope
    await acme.usage.summary(since=date(2026, 11, 1), by="model")

Every call carries the context down: the budget layer reserves against the tenant's budgets, the
ledger writes the tenant's rows, the vector store is scoped to the tenant. The tenant's settings
are applied here: which pipelines (or ``provider/model`` refs) it may use, and its default pipeline
per capability.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from pulse_ai.catalog import Capability
from pulse_ai.context import CallContext
from pulse_ai.errors import NotFoundError, PipelineNotAllowedError
from pulse_ai.streams import GenerationStream, relay
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    check_params,
    check_unicode_fields,
    normalise_messages,
)
from pulse_ai.usage import UsageSummaryRow
from pulse_ai.usage.reports import GroupBy
from pulse_ai.vectors.base import PurgeReport, SearchHit
from pulse_ai.vectors.indexer import Indexer, IndexReport, Record
from pulse_ai.vectors.scope import VectorSpace, validate_name

if TYPE_CHECKING:
    from pulse_ai.client import PulseAI

__all__ = ["TenantAI", "TenantIndexer", "TenantTable", "TenantUsage"]

Messages = str | Sequence[Message | dict[str, str]]


class TenantAI:
    """Embeddings, generation, indexing and usage, all in one tenant's scope."""

    def __init__(self, ai: PulseAI, context: CallContext) -> None:
        self._ai = ai
        self.context = context

    @property
    def tenant_id(self) -> str:
        return self.context.tenant_id

    def __repr__(self) -> str:
        return f"TenantAI(tenant={self.tenant_id!r})"

    async def embed(
        self, texts: Sequence[str], *, model: str | None = None, pipeline: str | None = None
    ) -> EmbeddingResult:
        route, context = await self._route(model, pipeline, Capability.EMBEDDING)
        return await self._ai.meter.embed(route, texts, context)

    async def generate(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        pipeline: str | None = None,
        params: GenerationParams | None = None,
    ) -> GenerationResult:
        checked = normalise_messages(messages)
        params = check_params(params)
        route, context = await self._route(model, pipeline, Capability.GENERATION)
        return await self._ai.meter.generate(route, checked, params, context)

    def stream(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        pipeline: str | None = None,
        params: GenerationParams | None = None,
    ) -> GenerationStream:
        """Use as ``async with acme.stream(...) as stream: async for delta in stream``; leaving the
        block early closes the provider's stream at once and records what was consumed."""
        checked = normalise_messages(messages)
        params = check_params(params)

        async def open_inner() -> GenerationStream:
            route, context = await self._route(model, pipeline, Capability.GENERATION)
            return self._ai.meter.stream(route, checked, params, context)

        return relay(open_inner)

    def indexer(self, pipeline: str | None = None) -> TenantIndexer:
        """Indexing and search of this tenant's records (embedding costs are this tenant's, billed to
        its API key when it has one); ``pipeline`` defaults to the tenant's default embedding pipeline."""
        return TenantIndexer(self, pipeline, self._ai)

    @property
    def usage(self) -> TenantUsage:
        return TenantUsage(self._ai, self.tenant_id)

    # ---- routing within the tenant's settings ----------------------------------------------
    async def _route(self, model: str | None, pipeline: str | None, capability: Capability) -> tuple[Any, CallContext]:
        check_unicode_fields({"model": model, "pipeline": pipeline}, "")
        settings = await self._ai.tenant_settings(self.tenant_id)
        if model is None and pipeline is None:
            pipeline = settings.default_pipeline(capability) if settings is not None else None
        name = model if model is not None else pipeline or capability.value
        if settings is not None and not settings.allows(name):
            raise PipelineNotAllowedError(self.tenant_id, name)
        if model is not None and settings is not None and model not in (settings.allowed_pipelines or ()):
            # A model named directly would skip its pipelines' budgets: tenants may do it only
            # where their settings list the `provider/model` ref itself.
            raise PipelineNotAllowedError(
                self.tenant_id,
                model,
                "a provider/model is called directly only when the tenant's allowed pipelines list it",
            )
        route = await self._ai.tenant_route(self.tenant_id, model, pipeline, capability)
        return route, self.context.for_call(route.pipeline)


@dataclass(frozen=True)
class TenantTable:
    """One of a tenant's tables: the records it holds now, its index runs and when the last began."""

    name: str
    count: int
    runs: int
    last_indexed_at: datetime


class TenantIndexer:
    """An indexer bound to one tenant: every read and write is in that tenant's scope, each
    ``index`` run is recorded (``index_runs``) for the platform's ETL side, and what embedding costs
    is billed like any call of the tenant (its API key, when the call came with one).

    The embedding pipeline is the one named, else the tenant's default (its settings'
    ``default_embedding_pipeline``), else ``embedding``. A tenant that does not exist is a
    ``NotFoundError`` before anything else happens (nothing is created for it)."""

    def __init__(self, tenant: TenantAI, pipeline: str | None, ai: PulseAI) -> None:
        self.tenant_id = tenant.tenant_id
        self._tenant = tenant
        self._pipeline = pipeline
        self._ai = ai
        self._indexer: Indexer | None = None
        self._indexer_pipeline: str | None = None

    async def _resolve(self) -> Indexer:
        """The indexer of this tenant's embedding pipeline (the tenant checked to exist first)."""
        settings = await self._ai.tenant_settings(self.tenant_id)  # NotFoundError for an unknown tenant
        name = self._pipeline
        if name is None:
            name = (settings.default_pipeline(Capability.EMBEDDING) if settings is not None else None) or "embedding"
        if self._indexer is None or self._indexer_pipeline != name:
            self._indexer = self._ai.indexer(name, caller=self._tenant)
            self._indexer_pipeline = name
        return self._indexer

    async def vector_space(self) -> VectorSpace:
        """The vector space this tenant's records are embedded in."""
        return (await self._resolve()).space

    async def index(self, table: str, records: Iterable[Record | Mapping[str, Any]]) -> IndexReport:
        return await (await self._resolve()).index(self.tenant_id, table, records)

    async def search(
        self,
        table: str,
        query: str | npt.ArrayLike,
        *,
        limit: int = 10,
        score_threshold: float | None = None,
        where: Mapping[str, object] | None = None,
        hnsw_ef: int | None = None,
        exact: bool = False,
    ) -> list[SearchHit]:
        return await (await self._resolve()).search(
            self.tenant_id,
            table,
            query,
            limit=limit,
            score_threshold=score_threshold,
            where=where,
            hnsw_ef=hnsw_ef,
            exact=exact,
        )

    async def delete(self, table: str, record_ids: Sequence[str]) -> int:
        return await (await self._resolve()).delete(self.tenant_id, table, record_ids)

    async def count(self, table: str) -> int:
        return await (await self._resolve()).count(self.tenant_id, table)

    async def purge(self) -> PurgeReport:
        """Remove every point of this tenant, in every table and vector space."""
        return await (await self._resolve()).purge_tenant(self.tenant_id)

    async def tables(self) -> list[TenantTable]:
        """The tables this tenant has indexed into (from its index runs), with their record counts."""
        platform = await self._ai.platform()
        indexed = await platform.index_runs.tables(self.tenant_id)
        return [TenantTable(t.table, await self.count(t.table), t.runs, t.last_indexed_at) for t in indexed]

    async def table(self, name: str) -> TenantTable:
        """One of this tenant's tables; ``NotFoundError`` when it has never indexed into ``name``
        (whatever other tenants hold: the answer depends on this tenant's records only)."""
        name = validate_name(name, "table")
        platform = await self._ai.platform()
        indexed = await platform.index_runs.tables(self.tenant_id, table=name)
        if not indexed:
            raise NotFoundError(f"no table {name!r}")
        return TenantTable(name, await self.count(name), indexed[0].runs, indexed[0].last_indexed_at)


@dataclass(frozen=True)
class TenantUsage:
    """This tenant's usage report: only its own rows are ever read."""

    _ai: PulseAI
    tenant_id: str

    async def summary(
        self, since: datetime | date, until: datetime | date | None = None, by: GroupBy = "model"
    ) -> list[UsageSummaryRow]:
        platform = await self._ai.platform()
        return await platform.usage.reports.summary(self.tenant_id, since, until, by)
