"""Budgets and the usage ledger around every call: one cost path for all of them.

::

    reserve the worst case  ->  call the route (cache, router, providers)  ->  record every attempt
    (refused here, before                                                       and settle the
     any provider call)                                                         reservation, in one
                                                                                transaction

A call returns only after its rows are committed (the ledger's group commit batches concurrent
calls into one transaction). Money spent on a call that failed is recorded from the error's
attempts; a cancelled call records the attempts that finished and releases the rest of its
reservation. A stream reserves on its first read and records when it ends, however it ends.

Worst cases are bounds, not estimates, so that a call never settles above what it reserved: an
embedding costs ``tokens.token_ceiling`` of its texts (no tokenizer makes more tokens than UTF-8
bytes) at the dearest candidate's price; a generation the same bound of its messages plus
``max_tokens`` within the model's output limit (else that limit) at the dearest candidate's
prices. Providers' token counts above these bounds are not believed (``providers.wire.read_usage``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol, TypeVar

from pulse_ai.accounting import Attempt, Usage, attempt_sink
from pulse_ai.catalog import ModelSpec
from pulse_ai.context import CallContext
from pulse_ai.errors import AllProvidersFailed, DatabaseError, ProviderError, ProviderTimeoutError
from pulse_ai.platform import Platform
from pulse_ai.streams import GenerationStream, relay
from pulse_ai.tokens import EMBEDDING_OVERHEAD_TOKENS, prompt_ceiling, token_ceiling
from pulse_ai.types import (
    EmbeddingResult,
    GenerationParams,
    GenerationResult,
    Message,
    normalise_messages,
    validate_texts,
)
from pulse_ai.usage import Operation, Reservation, UsageRow, UsageServices

__all__ = ["DEFAULT_MAX_OUTPUT", "Meter", "Route", "attempt_sink", "usage_rows"]

T = TypeVar("T")
logger = logging.getLogger("pulse_ai.metering")
# A generation with no max_tokens and a model with no declared output limit reserves this many.
DEFAULT_MAX_OUTPUT = 4096
# A reservation lives at least this long (a crashed caller's is released after it)...
DEFAULT_LONGEST_S = 600.0
# ...and a stream with a budget behind it ends this long before its reservation would expire.
STREAM_MARGIN_S = 30.0


class Routed(Protocol):
    """What a metered call goes through: a Router, or a cache in front of one."""

    async def embed(self, texts: Sequence[str], context: CallContext) -> EmbeddingResult: ...

    async def generate(
        self, messages: Sequence[Message], params: GenerationParams | None, context: CallContext
    ) -> GenerationResult: ...

    def stream(
        self, messages: Sequence[Message], params: GenerationParams | None, context: CallContext
    ) -> GenerationStream: ...


@dataclass(frozen=True)
class Route:
    """A call's way through: the routed layer, the pipeline (None for a direct ``model=`` call) and
    the models it may end up using (for the worst-case price)."""

    routed: Routed
    pipeline: str | None
    models: tuple[ModelSpec, ...]
    # the longest the call may take (every candidate's timeout and retries): its reservation
    # lives that long, and a stream is cut before its reservation could expire
    longest_s: float = DEFAULT_LONGEST_S


def usage_rows(attempts: Sequence[Attempt], context: CallContext, operation: Operation) -> list[UsageRow]:
    """One ledger row per attempt."""
    rows = []
    for number, attempt in enumerate(attempts, start=1):
        provider, _, model = attempt.model.partition("/")
        rows.append(
            UsageRow(
                request_id=context.request_id,
                attempt=number,
                tenant_id=context.tenant_id,
                api_key_id=context.api_key_id,
                pipeline=context.pipeline,
                provider=provider,
                model=model or provider,
                operation=operation,
                input_tokens=attempt.usage.input_tokens,
                output_tokens=attempt.usage.output_tokens,
                tokens_estimated=attempt.usage.estimated,
                billed_usd=attempt.usage.cost_usd,
                avoided_usd=attempt.avoided_usd,
                cache_level=attempt.cache_level,
                price_table_version=attempt.price_table_version or "-",
                latency_ms=max(0.0, attempt.latency_ms),
                outcome=attempt.outcome,
            )
        )
    return rows


class Meter:
    """Reserve, call, record. ``platform`` opens the database on first use (and per event loop)."""

    def __init__(self, platform: Callable[[], Awaitable[Platform]]) -> None:
        self._platform = platform

    async def _services(self) -> UsageServices:
        return (await self._platform()).usage

    # ---- calls ---------------------------------------------------------------------------
    async def embed(self, route: Route, texts: Sequence[str], context: CallContext) -> EmbeddingResult:
        checked = validate_texts(texts)  # bad input fails before anything is reserved or sent
        if not checked:
            return await route.routed.embed(checked, context)  # nothing to send, nothing to record
        # no tokenizer makes more (2: a local model's [CLS]/[SEP]); providers' counts are held to it
        tokens = token_ceiling(checked, EMBEDDING_OVERHEAD_TOKENS)
        worst = max((spec.cost_usd(tokens) for spec in route.models), default=Decimal(0))
        return await self._metered(
            route, context, Operation.EMBED, worst, tokens, lambda: route.routed.embed(checked, context)
        )

    async def generate(
        self, route: Route, messages: Sequence[Message], params: GenerationParams | None, context: CallContext
    ) -> GenerationResult:
        worst, tokens = await self._generation_worst_case(route, messages, params)
        return await self._metered(
            route, context, Operation.GENERATE, worst, tokens, lambda: route.routed.generate(messages, params, context)
        )

    def stream(
        self, route: Route, messages: Sequence[Message], params: GenerationParams | None, context: CallContext
    ) -> GenerationStream:
        held: list[Reservation] = []

        deadline: list[float] = []

        async def open_inner() -> GenerationStream:
            worst, tokens = await self._generation_worst_case(route, messages, params)
            platform = await self._platform()
            reservation = await _reserve(platform, context, route, worst, tokens)
            held.append(reservation)
            if reservation.holds:  # a budget holds this stream's money: end it before the hold does
                deadline.append(time.monotonic() + route.longest_s - STREAM_MARGIN_S)
            return route.routed.stream(messages, params, context)

        def within_reservation() -> None:
            if deadline and time.monotonic() > deadline[0]:
                raise ProviderTimeoutError(
                    f"the stream ran past {route.longest_s - STREAM_MARGIN_S:.0f} s, the longest its budget "
                    "reservation allows (raise the providers' timeout to allow longer streams)"
                )

        async def record(stream: GenerationStream) -> None:
            if not held:
                return  # refused before any call (budget, tenant): nothing was consumed
            await self._record(stream.attempts, context, Operation.STREAM, held[0])

        outer = relay(open_inner, lambda result: replace(result, request_id=context.request_id), within_reservation)
        outer.on_finish(record)
        return outer

    async def record_health(self, attempts: Sequence[Attempt], context: CallContext) -> None:
        services = await self._services()
        await _shielded(services.ledger.record(usage_rows(attempts, context, Operation.HEALTH)))

    # ---- the one path --------------------------------------------------------------------
    async def _metered(
        self,
        route: Route,
        context: CallContext,
        operation: Operation,
        worst: Decimal,
        tokens: int,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        platform = await self._platform()
        reservation = await _reserve(platform, context, route, worst, tokens)
        # An enclosing sink (the HTTP service's, around a request) hears of every attempt of the call.
        outer = attempt_sink.get()
        finished: list[Attempt] = []
        token = attempt_sink.set(finished)
        started = time.perf_counter()
        try:
            result = await call()
        except asyncio.CancelledError:
            await self._record(tuple(finished), context, operation, reservation, outer)
            raise
        except (ProviderError, AllProvidersFailed) as error:
            # every breaker open: no call was made, nothing to record (the reservation is released)
            attempts = error.attempts or (
                () if isinstance(error, AllProvidersFailed) else (_lone_attempt(error, started),)
            )
            await self._record(attempts, context, operation, reservation, outer)
            raise
        except BaseException:
            await self._record(tuple(finished), context, operation, reservation, outer)
            raise
        finally:
            attempt_sink.reset(token)
        await self._record(getattr(result, "attempts", ()), context, operation, reservation, outer)
        if isinstance(result, (EmbeddingResult, GenerationResult)):
            return replace(result, request_id=context.request_id)
        return result

    async def _record(
        self,
        attempts: Sequence[Attempt],
        context: CallContext,
        operation: Operation,
        reservation: Reservation,
        outer: list[Attempt] | None = None,
    ) -> None:
        """Commit the attempts' rows and settle the reservation to what they cost, together; an
        enclosing sink (``outer``) gets the attempts too."""
        if outer is not None:
            outer.extend(attempts)
        platform = await self._platform()
        # what providers were paid: cache hits cost nothing and consume no budget tokens
        total = Usage.total(tuple(a.usage for a in attempts if a.outcome != "cached"))
        settle = [(reservation, total.cost_usd, total.total_tokens)]
        rows = usage_rows(attempts, context, operation)
        try:
            if platform.unrecorded:
                await platform.record_unrecorded()
            await _shielded(platform.usage.ledger.record(rows, settle=settle))
        except DatabaseError:
            # The database went away during the call: until it answers again, calls fail before
            # any provider is called, and these rows (and the settlement) are kept to be written
            # as soon as it does (they are logged too, in case this process ends first).
            platform.keep_unrecorded(rows, settle)
            logger.error(
                "usage not recorded yet (database unavailable): tenant=%s request=%s attempts=%s billed_usd=%s",
                context.tenant_id,
                context.request_id,
                [(a.model, a.outcome, a.usage.input_tokens, a.usage.output_tokens) for a in attempts],
                total.cost_usd,
            )
            raise

    @staticmethod
    async def _generation_worst_case(
        route: Route, messages: Sequence[Message], params: GenerationParams | None
    ) -> tuple[Decimal, int]:
        checked = normalise_messages(messages)
        prompt = prompt_ceiling([m.content for m in checked])
        requested = params.max_tokens if params is not None else None
        worst = Decimal(0)
        most_output = 0
        for spec in route.models:
            limit = spec.max_output_tokens or DEFAULT_MAX_OUTPUT
            # a model never answers with more than its limit, whatever was asked for
            output = min(requested, limit) if requested is not None and spec.max_output_tokens else requested or limit
            most_output = max(most_output, output)
            worst = max(worst, spec.cost_usd(prompt, output))
        return worst, prompt + most_output


def _lone_attempt(error: ProviderError | AllProvidersFailed, started: float) -> Attempt:
    """A provider error raised without the router's attempts (it should not happen): still a row."""
    model = "/".join(part for part in (getattr(error, "provider", None), getattr(error, "model", None)) if part)
    from pulse_ai.errors import error_kind

    return Attempt(
        model or "unknown/unknown",
        error.usage,
        (time.perf_counter() - started) * 1000,
        error_kind(error),
        error,
    )


async def _reserve(platform: Platform, context: CallContext, route: Route, worst: Decimal, tokens: int) -> Reservation:
    """The budget step, shielded: a caller cancelled while its reservation is being made does not
    leave the reservation held (it is released as soon as it exists)."""
    task = asyncio.ensure_future(
        platform.reserve(context.tenant_id, route.pipeline, worst, tokens, ttl_s=route.longest_s)
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda done: _release_later(platform, done))
        raise


_background: set[asyncio.Task[object]] = set()


def _release_later(platform: Platform, done: asyncio.Future[Reservation]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    reservation = done.result()
    if reservation.holds:
        task: asyncio.Task[object] = asyncio.ensure_future(platform.usage.budgets.release(reservation))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _shielded(write: Awaitable[T]) -> T:
    """Finish a ledger write even when the caller is cancelled meanwhile (the rows are committed;
    the caller still sees its cancellation)."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task])
        raise
