"""``CachingRouter``: the cache layer of ``TenantAI(context) -> Budget -> Cache -> Router -> Provider``.

It has the router's interface (embed / generate / stream), with the call context. Embeddings are
cached per text: hits come from the tiers, the misses go through the wrapped router in ONE packed
call, and the result reassembles every input in input order. Concurrent requests missing the same
text share one provider call (single flight). Every input served without a provider call shows on
the result as an ``Attempt`` with outcome ``cached``, the tier (``cache_level``: memory, sqlite or
redis; ``flight`` for an input another request was already computing), the tokens it stood for and
``avoided_usd``: what the candidate that would have served it charges for them, priced from the
catalog. ``result.usage`` is what providers were actually paid for in this call (the cached attempts
cost 0 and are not in it), so budgets settle on real consumption.

Generation answers are cached only when the call is deterministic (``temperature == 0``) or the
pipeline opted in (``cache_generation``); an unset temperature is the provider's default (1.0 at
OpenAI: sampled), so it is not cached. Streams pass straight through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from pulse_ai.accounting import Attempt, Usage
from pulse_ai.cache.caches import Caches
from pulse_ai.cache.codec import Answer, decode_answer, encode_answer
from pulse_ai.cache.embedding import EmbeddingCache
from pulse_ai.cache.flight import Flights
from pulse_ai.cache.keys import generation_key
from pulse_ai.catalog import ModelSpec
from pulse_ai.context import CallContext
from pulse_ai.routing import BreakerState, Router
from pulse_ai.streams import GenerationStream
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    normalise_messages,
    validate_texts,
)

__all__ = ["CachingRouter"]

Messages = str | Sequence[Message | dict[str, str]]


class CachingRouter:
    """Wraps a Router (same embed/generate/stream results) and adds the caches.

    ``share_embeddings_across_tenants``: embedding entries are kept in one shared scope instead of
    the caller's tenant (only for pipelines that opted in: public data). ``cache_generation``:
    answers are cached at any temperature (otherwise only at temperature 0). ``enabled=False`` makes
    it a pass-through. ``CachingRouter.for_pipeline`` reads all three from the pipeline's config.
    """

    def __init__(
        self,
        router: Router,
        caches: Caches,
        *,
        share_embeddings_across_tenants: bool = False,
        cache_generation: bool = False,
        enabled: bool = True,
    ) -> None:
        self.router = router
        self.caches = caches
        self.share_embeddings_across_tenants = share_embeddings_across_tenants
        self.cache_generation = cache_generation
        self.enabled = enabled
        self._answers: Flights[Answer] = Flights()
        level = caches.embeddings if enabled else None
        self._embeddings = (
            EmbeddingCache(router, level, caches.stats, self.would_serve, shared=share_embeddings_across_tenants)
            if level is not None and router.vector_space is not None
            else None
        )

    @classmethod
    def for_pipeline(cls, router: Router, caches: Caches) -> CachingRouter:
        options = router.config.cache
        return cls(
            router,
            caches,
            share_embeddings_across_tenants=options.share_across_tenants,
            cache_generation=options.cache_generation,
            enabled=options.enabled,
        )

    def __repr__(self) -> str:
        return f"CachingRouter({self.router.name!r}, enabled={self.enabled})"

    # ---- what the router exposes ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.router.name

    @property
    def vector_space(self) -> str | None:
        return self.router.vector_space

    def would_serve(self, input_tokens: int = 0, output_tokens: int = 0) -> ModelSpec:
        """The candidate a call would go to now: the strategy's first whose breaker is not open."""
        ranked = self.router.ranked(input_tokens, output_tokens)
        for candidate in ranked:
            if candidate.breaker.state is not BreakerState.OPEN:
                return candidate.model
        return ranked[0].model

    # ---- calls ---------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], context: CallContext) -> EmbeddingResult:
        checked = validate_texts(texts)
        if self._embeddings is None or not checked:
            return await self.router.embed(checked)
        result = await self._embeddings.embed(checked, context)
        await self.caches.maybe_flush_stats()
        return result

    async def generate(
        self, messages: Messages, params: GenerationParams | None, context: CallContext
    ) -> GenerationResult:
        checked = normalise_messages(messages)
        params = params or GenerationParams()
        level = self.caches.generation if self.enabled else None
        if level is None or not (self.cache_generation or params.temperature == 0):
            return await self.router.generate(checked, params)
        tenant = context.tenant_id
        started = time.perf_counter()
        candidates = [candidate.model for candidate in self.router.candidates]
        key = generation_key(context, candidates, self.router.config.strategy.value, checked, params)
        found = (await level.get_many([key], tenant))[0]
        if found is not None:
            answer = decode_answer(found[0])
            if answer is not None:
                return self._answered(answer, found[1], started, tenant)
            self.caches.stats.corrupt(level.name, found[1], tenant)
            await level.delete_many([key], tenant)
        _, joined = self._answers.claim([key])
        if joined:
            shared = await asyncio.shield(joined[0])
            if shared is not None:
                return self._answered(shared, "flight", started, tenant)
            return await self.router.generate(checked, params)
        try:
            result = await self.router.generate(checked, params)
            answer = Answer(
                result.text, result.model, result.finish_reason, result.usage.input_tokens, result.usage.output_tokens
            )
            self._answers.resolve(key, answer if result.finish_reason is not None else None)
            if result.finish_reason is not None:  # a finished answer only
                await level.set_many([(key, encode_answer(answer))], tenant)
        finally:
            self._answers.abandon([key])
        await self.caches.maybe_flush_stats()
        return result

    def _answered(self, answer: Answer, tier: str, started: float, tenant: str) -> GenerationResult:
        spec = next((c.model for c in self.router.candidates if c.ref == answer.model), None) or self.would_serve()
        avoided = spec.cost_usd(answer.input_tokens, answer.output_tokens)
        self.caches.stats.avoided("generation", tier, tenant, avoided)
        attempt = Attempt(
            spec.ref,
            Usage(answer.input_tokens, answer.output_tokens, 0),
            (time.perf_counter() - started) * 1000,
            "cached",
            None,
            spec.price_table_version,
            1,
            1,
            avoided_usd=avoided,
            cache_level=tier,
        )
        return GenerationResult(answer.text, spec.ref, Usage(), answer.finish_reason, (attempt,), cached=True)

    def stream(self, messages: Messages, params: GenerationParams | None, context: CallContext) -> GenerationStream:
        """Streams pass through uncached: a stream is asked for to see the answer as it is made."""
        del context
        return self.router.stream(messages, params)
