"""The facade: one object that serves embeddings, generation and vectors from a configuration."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from importlib import resources
from pathlib import Path
from types import TracebackType

from pulse_ai.catalog import Capability, ModelSpec
from pulse_ai.config import FallbackConfig, LoadedConfig, PipelineConfig, load_config, load_config_text
from pulse_ai.errors import InputError
from pulse_ai.providers.base import HealthStatus, Provider
from pulse_ai.providers.registry import create_provider
from pulse_ai.routing import HealthRegistry, Router, probe
from pulse_ai.streams import GenerationStream
from pulse_ai.types import EmbeddingResult, GenerationParams, GenerationResult, Message
from pulse_ai.vectors import Indexer, VectorSpace, VectorStore, open_vector_store

__all__ = ["DEFAULT_CONFIG", "PulseAI"]

DEFAULT_CONFIG = "default.yaml"
Messages = str | Sequence[Message | dict[str, str]]


class PulseAI:
    """Embeddings and generation across providers, by ``provider/model`` or by pipeline name.

    Providers are created on first use. Use ``async with PulseAI.from_config(...) as ai:`` or call
    ``aclose()`` to release their clients.
    """

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self._providers: dict[str, Provider] = {}
        self._routers: dict[str, Router] = {}
        self._direct_routers: dict[tuple[str, Capability], Router] = {}
        self.health = HealthRegistry()
        self._vector_store: VectorStore | None = None

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
        return self._vector_store

    def indexer(self, pipeline: str = "embedding") -> Indexer:
        """Indexing and search of tenants' records with an embedding pipeline and the vector store."""
        return Indexer(_PipelineEmbedder(self, pipeline), self.vector_store())

    # ---- capabilities --------------------------------------------------------------------
    async def embed(
        self, texts: Sequence[str], *, model: str | None = None, pipeline: str | None = None
    ) -> EmbeddingResult:
        """Embed ``texts`` with one model (``provider/model``) or through a pipeline (default:
        the pipeline named ``embedding``)."""
        return await self._route(model, pipeline, Capability.EMBEDDING).embed(texts)

    async def generate(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        pipeline: str | None = None,
        params: GenerationParams | None = None,
    ) -> GenerationResult:
        return await self._route(model, pipeline, Capability.GENERATION).generate(messages, params)

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
        return self._route(model, pipeline, Capability.GENERATION).stream(messages, params)

    async def check_providers(self) -> dict[str, list[HealthStatus]]:
        """A real, cheap call to every candidate of every pipeline, by pipeline name; models in no
        pipeline are reported under the empty name."""
        report: dict[str, list[HealthStatus]] = {}
        covered: set[str] = set()
        for name in self.loaded.config.pipelines:
            router = self.router(name)
            report[name] = await router.health_check()
            covered.update(candidate.ref for candidate in router.candidates)
        loose = [ref for ref in self.loaded.models if ref not in covered]
        for ref in loose:
            status, _ = await probe(*self.model(ref))
            report.setdefault("", []).append(status)
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
        providers = list(self._providers.values())
        self._providers.clear()
        self._routers.clear()
        self._direct_routers.clear()
        async with AsyncExitStack() as stack:
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


class _PipelineEmbedder:
    """An embedding pipeline of a PulseAI, as the indexer's ``Embedder``."""

    def __init__(self, ai: PulseAI, pipeline: str) -> None:
        router = ai._pipeline(pipeline, Capability.EMBEDDING)
        dimensions = router.candidates[0].model.dimensions
        assert router.vector_space is not None and dimensions is not None
        self.vector_space = VectorSpace(router.vector_space, dimensions)
        self._ai = ai
        self._pipeline = pipeline

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        return await self._ai.embed(texts, pipeline=self._pipeline)
