"""The embedding cache of one pipeline: per-text lookups, one packed call for the misses, single flight.

Order is kept by construction: every input has a slot in one ``(n, dims)`` array, filled from a hit,
from the provider's answer for its text, or from another request's in-flight answer; the same text
twice in a batch is sent once and fills both slots. Entries are checked when read (``codec``): a
damaged one is counted, deleted from every tier and recomputed, never returned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from pulse_ai.accounting import Attempt, PartialVectors, Usage
from pulse_ai.cache.codec import decode_vector, encode_vector, space_tag
from pulse_ai.cache.flight import Flights
from pulse_ai.cache.keys import EmbeddingKeyer
from pulse_ai.cache.level import CacheLevel
from pulse_ai.cache.stats import CacheStats
from pulse_ai.catalog import ModelSpec
from pulse_ai.context import CallContext
from pulse_ai.errors import AllProvidersFailed, ProviderError
from pulse_ai.routing import Router
from pulse_ai.tokens import OFF_LOOP_CHARACTERS
from pulse_ai.types import EmbeddingResult

__all__ = ["EmbeddingCache"]

T = TypeVar("T")
Vector = npt.NDArray[np.float32]
Served = tuple[Vector, int]  # a vector and the tokens its text cost
CACHE = "embeddings"


class EmbeddingCache:
    def __init__(
        self,
        router: Router,
        level: CacheLevel,
        stats: CacheStats,
        would_serve: Callable[[int, int], ModelSpec],
        *,
        shared: bool,
    ) -> None:
        self.router = router
        self.level = level
        self.stats = stats
        self.would_serve = would_serve
        self.shared = shared
        self.model = router.candidates[0].model  # the space's facts: every candidate shares them
        self.dimensions = self.model.dimensions or 0
        self.tag = space_tag(self.model.vector_space)
        self.flights: Flights[Served] = Flights()

    async def embed(self, texts: list[str], context: CallContext) -> EmbeddingResult:
        started = time.perf_counter()
        tenant = context.tenant_id
        keyer = EmbeddingKeyer.for_model(self.model, context, shared=self.shared)
        large = sum(len(text) for text in texts) > OFF_LOOP_CHARACTERS
        keys = await _maybe_off_loop(large, keyer.keys, texts)
        found = await self.level.get_many(keys, tenant)
        decoded = await _maybe_off_loop(large, self._decode, found)
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        hits: dict[str, list[int]] = {}  # tier -> [inputs, tokens]
        missing: list[int] = []
        corrupt: list[str] = []
        for index, (entry, served) in enumerate(zip(found, decoded, strict=True)):
            if served is None:
                missing.append(index)
                if entry is not None:
                    corrupt.append(keys[index])
                    self.stats.corrupt(CACHE, entry[1], tenant)
                continue
            assert entry is not None
            vectors[index] = served[0]
            slot = hits.setdefault(entry[1], [0, 0])
            slot[0] += 1
            slot[1] += served[1]
        if corrupt:
            await self.level.delete_many(corrupt, tenant)
        lookup_ms = (time.perf_counter() - started) * 1000
        attempts = [self._cached(tier, inputs, tokens, lookup_ms, tenant) for tier, (inputs, tokens) in hits.items()]
        if not missing:
            return self._result(vectors, attempts, [])

        filled = np.ones(len(texts), dtype=bool)
        filled[missing] = False
        miss_keys = [keys[i] for i in missing]
        positions: dict[str, list[int]] = {}
        for index, key in zip(missing, miss_keys, strict=True):
            positions.setdefault(key, []).append(index)
        owned, joined = self.flights.claim(miss_keys)
        owned_keys = [miss_keys[j] for j in owned]
        results: list[EmbeddingResult] = []
        try:
            if owned_keys:
                texts_of = [texts[positions[key][0]] for key in owned_keys]
                results.append(await self._call(texts_of, owned_keys, positions, vectors, filled, attempts, tenant))
        finally:
            self.flights.abandon(owned_keys)

        retry: list[str] = []
        flown = [0, 0]
        flight_started = time.perf_counter()
        for j, flight in joined.items():
            key = miss_keys[j]
            served = await asyncio.shield(flight)
            if served is None:  # its owner failed: compute it here
                retry.append(key)
                continue
            vectors[positions[key]] = served[0]
            filled[positions[key]] = True
            flown[0] += len(positions[key])
            flown[1] += served[1] * len(positions[key])
        if flown[0]:
            flight_ms = (time.perf_counter() - flight_started) * 1000
            attempts.append(self._cached("flight", flown[0], flown[1], flight_ms, tenant))
        if retry:
            texts_of = [texts[positions[key][0]] for key in retry]
            results.append(await self._call(texts_of, retry, positions, vectors, filled, attempts, tenant))
        return self._result(vectors, attempts, results)

    # ---- the provider call for the misses --------------------------------------------------
    async def _call(
        self,
        texts: list[str],
        keys: list[str],
        positions: dict[str, list[int]],
        vectors: Vector,
        filled: npt.NDArray[np.bool_],
        cached: list[Attempt],
        tenant: str,
    ) -> EmbeddingResult:
        """One packed call through the router for these (distinct) texts. On failure, what did come
        back is kept (and cached: it was paid for), and the error is put in the caller's numbering."""
        try:
            result = await self.router.embed(texts)
        except (ProviderError, AllProvidersFailed) as error:
            if error.partial is not None and len(error.partial):
                indices = [int(i) for i in error.partial.indices]
                tokens = _apportion(error.usage.input_tokens, [texts[i] for i in indices])
                done = [keys[i] for i in indices]
                await self._keep(done, list(error.partial.vectors), tokens, positions, vectors, filled, tenant)
            _remap(error, vectors, filled, cached)
            raise
        paid = sum(a.usage.input_tokens for a in result.attempts if a.ok)
        await self._keep(keys, list(result.vectors), _apportion(paid, texts), positions, vectors, filled, tenant)
        return result

    async def _keep(
        self,
        keys: list[str],
        rows: list[Vector],
        tokens: list[int],
        positions: dict[str, list[int]],
        vectors: Vector,
        filled: npt.NDArray[np.bool_],
        tenant: str,
    ) -> None:
        """Fill the slots, hand the values to joined requests, and write them to the cache."""
        for key, row, count in zip(keys, rows, tokens, strict=True):
            vectors[positions[key]] = row
            filled[positions[key]] = True
            self.flights.resolve(key, (row, count))
        large = len(keys) * self.dimensions > 200_000
        entries = await _maybe_off_loop(large, self._encode, keys, rows, tokens)
        await self.level.set_many(entries, tenant)

    def _encode(self, keys: list[str], rows: list[Vector], tokens: list[int]) -> list[tuple[str, bytes]]:
        return [(key, encode_vector(row, self.tag, count)) for key, row, count in zip(keys, rows, tokens, strict=True)]

    def _decode(self, found: list[tuple[bytes, str] | None]) -> list[tuple[Vector, int] | None]:
        return [None if entry is None else decode_vector(entry[0], self.dimensions, self.tag) for entry in found]

    # ---- results and errors ----------------------------------------------------------------
    def _cached(self, tier: str, inputs: int, tokens: int, latency_ms: float, tenant: str) -> Attempt:
        spec = self.would_serve(tokens, 0)
        avoided = spec.cost_usd(tokens)
        self.stats.avoided(CACHE, tier, tenant, avoided)
        return Attempt(
            spec.ref,
            Usage(tokens, 0, 0),
            latency_ms,
            "cached",
            None,
            spec.price_table_version,
            inputs,
            inputs,
            avoided_usd=avoided,
            cache_level=tier,
        )

    def _result(self, vectors: Vector, cached: list[Attempt], results: list[EmbeddingResult]) -> EmbeddingResult:
        paid = [attempt for result in results for attempt in result.attempts]
        model = results[-1].model if results else cached[0].model
        return EmbeddingResult(
            vectors=vectors,
            model=model,
            vector_space=self.model.vector_space,
            usage=Usage.total([a.usage for a in paid]),
            truncated=sum(result.truncated for result in results),
            attempts=(*cached, *paid),
            cached=sum(a.inputs for a in cached),
        )


def _remap(
    error: ProviderError | AllProvidersFailed, vectors: Vector, filled: npt.NDArray[np.bool_], cached: list[Attempt]
) -> None:
    """The error in the caller's numbering: ``partial`` is every vector ready (hits, joined answers,
    what the call did return), ``failed_inputs`` every other input; the cached attempts come first."""
    done = np.flatnonzero(filled).astype(np.int64)
    error.partial = PartialVectors(done, vectors[done].copy()) if done.size else None
    error.failed_inputs = tuple(int(i) for i in np.flatnonzero(~filled))
    error.attempts = (*cached, *error.attempts)


def _apportion(total: int, texts: Sequence[str]) -> list[int]:
    """Split a request's tokens over its texts by length (largest remainder: the parts add up)."""
    if not texts:
        return []
    lengths = [len(text) for text in texts]
    if total <= 0:
        return [max(1, length // 4) for length in lengths]
    whole = sum(lengths) or 1
    shares = [Decimal(total) * length / whole for length in lengths]
    parts = [int(share) for share in shares]
    order = sorted(range(len(texts)), key=lambda i: shares[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


async def _maybe_off_loop(large: bool, work: Callable[..., T], *args: object) -> T:
    """CPU work on thousands of entries runs in a worker thread, so the loop keeps serving."""
    if large:
        return await asyncio.to_thread(work, *args)
    return work(*args)
