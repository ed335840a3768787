"""Budgets that cannot be overspent: worst cases that are bounds, providers held to them, direct
model calls that cannot skip a pipeline's budget, streams that end before their reservation,
cancellations that leave nothing held and rows for what cancelled calls sent."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pulse_ai import GenerationParams, InputError, PipelineNotAllowedError, ProviderTimeoutError, PulseAI
from pulse_ai.db.models import UsageRecordRow
from pulse_ai.testing import FakeProvider
from pulse_ai.testing import Fault as FakeFault
from tests.conftest import openai_yaml
from tests.db.conftest import unique_tenant_id
from tests.fakes.openai_server import FakeOpenAIServer, Fault

EMB = "text-embedding-3-small"


def fakes(db_url: str, latency: float = 0.0) -> str:
    return (
        "providers:\n"
        f"  a: {{type: fake, latency: {latency}, timeout: 1, max_retries: 0,"
        f" models: [{{name: {EMB}}}, {{name: gpt-4o-mini}}]}}\n"
        "pipelines:\n"
        f"  embedding: {{kind: embedding, candidates: [a/{EMB}]}}\n"
        "  chat: {kind: generation, candidates: [a/gpt-4o-mini]}\n"
        f"database: {{url: '{db_url}'}}\n"
    )


@pytest.fixture
async def ai(db_url: str) -> AsyncIterator[PulseAI]:
    instance = PulseAI.from_yaml(fakes(db_url))
    yield instance
    await instance.aclose()


async def new_tenant(ai: PulseAI) -> str:
    return (await (await ai.platform()).tenants.create(unique_tenant_id())).id


async def rows(ai: PulseAI, tenant: str) -> list[Any]:
    platform = await ai.platform()
    async with platform.db.read("test") as connection:
        query = select(UsageRecordRow).where(UsageRecordRow.tenant_id == tenant).order_by(UsageRecordRow.created_at)
        return list((await connection.execute(query)).all())


async def test_a_provider_that_overcounts_never_settles_past_a_hard_budget(db_url: str, fake: FakeOpenAIServer) -> None:
    # the upstream claims 100,000 prompt tokens for a two-word prompt: not believed past the bound
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100_000, "completion_tokens": 1, "total_tokens": 100_001},
    }
    fake.always(Fault.answer(answer))
    text = (
        "providers:\n"
        + openai_yaml(fake)
        + "pipelines:\n  chat: {kind: generation, candidates: [oa/gpt-4o-mini]}\n"
        + f"database: {{url: '{db_url}'}}\n"
    )
    async with PulseAI.from_yaml(text) as ai:
        tenant = await new_tenant(ai)
        platform = await ai.platform()
        limit = Decimal("0.0001")
        await platform.usage.budgets.set(tenant, limit_usd=limit, period="day")
        outcomes = await asyncio.gather(
            *(
                ai.tenant(tenant).generate("two words", pipeline="chat", params=GenerationParams(max_tokens=16))
                for _ in range(20)
            ),
            return_exceptions=True,
        )
        served = [o for o in outcomes if not isinstance(o, BaseException)]
        (status,) = await platform.usage.budgets.status(tenant)
        recorded = await rows(ai, tenant)
    assert served and all(o.usage.estimated for o in served)
    assert status.spent_usd <= limit and status.reserved_usd == 0
    assert sum(Decimal(r.billed_nanousd) for r in recorded) / 10**9 <= limit


async def test_absurd_amounts_are_refused_before_anything_is_reserved(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    with pytest.raises(InputError):
        await ai.tenant(tenant).generate("x", pipeline="chat", params={"max_tokens": 10**20})  # type: ignore[arg-type]
    platform = await ai.platform()
    with pytest.raises(InputError, match="beyond"):
        await platform.usage.budgets.reserve(tenant, None, Decimal("1e30"))
    assert (await rows(ai, tenant)) == []


async def test_one_bad_job_in_a_group_commit_fails_only_its_own_caller(ai: PulseAI) -> None:
    from pulse_ai.usage.budget_batch import ReserveRequest
    from pulse_ai.usage.writer import Job

    tenant = await new_tenant(ai)
    platform = await ai.platform()
    await platform.usage.budgets.set(tenant, limit_usd=Decimal(100), period="day")
    # past the guards (as a bug would be): an amount the database integer cannot hold
    poison = Job(reserve=ReserveRequest(tenant, None, 10**30, 0, 60.0))
    good = [ai.tenant(tenant).embed([f"innocent {i}"]) for i in range(20)]
    outcomes = await asyncio.gather(platform.usage.writer.submit(poison), *good, return_exceptions=True)
    assert isinstance(outcomes[0], BaseException)
    assert all(not isinstance(o, BaseException) for o in outcomes[1:])
    assert len(await rows(ai, tenant)) == 20


async def test_a_pipelines_budget_cannot_be_skipped_by_naming_its_model(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    platform = await ai.platform()
    await platform.usage.budgets.set(tenant, pipeline="chat", limit_usd=Decimal("0.000001"), period="day")
    with pytest.raises(PipelineNotAllowedError, match="directly"):
        await ai.tenant(tenant).generate("x", model="a/gpt-4o-mini")
    await platform.tenants.update_settings(tenant, allowed_pipelines=["chat", "a/gpt-4o-mini"])
    answer = await ai.tenant(tenant).generate("now allowed", model="a/gpt-4o-mini")
    assert answer.text == "echo: now allowed"  # listed explicitly: allowed, under tenant-wide budgets


async def test_a_stream_with_a_budget_ends_before_its_reservation_could_expire(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pulse_ai.client
    import pulse_ai.metering

    # a reservation that lives 31 s, and a margin of 29 s: the stream may run 2 s (it needs 3)
    monkeypatch.setattr(pulse_ai.client, "DEFAULT_LONGEST_S", 31.0)
    monkeypatch.setattr(pulse_ai.client, "RETRY_ALLOWANCE_S", 0.0)
    monkeypatch.setattr(pulse_ai.metering, "STREAM_MARGIN_S", 29.0)
    async with PulseAI.from_yaml(fakes(db_url, latency=1.5)) as ai:
        tenant = await new_tenant(ai)
        platform = await ai.platform()
        await platform.usage.budgets.set(tenant, limit_usd=Decimal(1), period="day")
        received = []
        with pytest.raises(ProviderTimeoutError, match="reservation"):
            async with ai.tenant(tenant).stream("one two three four five six seven eight", pipeline="chat") as s:
                async for delta in s:
                    received.append(delta)
        (status,) = await platform.usage.budgets.status(tenant)
        (row,) = await rows(ai, tenant)
    assert 0 < len(received) < 9
    assert status.reserved_usd == 0 and status.spent_usd == Decimal(row.billed_nanousd) / 10**9


async def test_a_stream_cancelled_before_its_first_chunk_records_what_it_sent(db_url: str) -> None:
    async with PulseAI.from_yaml(fakes(db_url)) as ai:
        tenant = await new_tenant(ai)
        provider = ai.provider("a")
        assert isinstance(provider, FakeProvider)
        provider.always(FakeFault.slow(5))

        async def consume() -> None:
            async with ai.tenant(tenant).stream("waiting for a first chunk", pipeline="chat") as stream:
                async for _ in stream:
                    pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (row,) = await rows(ai, tenant)
    assert (row.operation, row.outcome, row.tokens_estimated) == ("stream", "cancelled", True)
    assert row.input_tokens > 0 and row.billed_nanousd > 0


async def test_cache_hits_consume_no_token_budget(db_url: str, tmp_path: object) -> None:
    text = fakes(db_url) + f"cache: {{enabled: true, timeout: 30, sqlite_path: '{tmp_path}/cache.db'}}\n"
    async with PulseAI.from_yaml(text) as ai:
        tenant = await new_tenant(ai)
        platform = await ai.platform()
        await platform.usage.budgets.set(tenant, limit_tokens=10**9, period="day")
        first = await ai.tenant(tenant).embed(["count me once"])
        again = await ai.tenant(tenant).embed(["count me once"])
        (status,) = await platform.usage.budgets.status(tenant)
    assert again.cached == 1
    assert status.spent_tokens == first.usage.input_tokens


async def test_cancellations_at_any_moment_leave_nothing_reserved(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    platform = await ai.platform()
    await platform.usage.budgets.set(tenant, limit_usd=Decimal(100), period="day")
    rng = random.Random(7)

    async def cancelled_call(number: int) -> None:
        task = asyncio.create_task(ai.tenant(tenant).embed([f"cancel {number}"]))
        await asyncio.sleep(rng.random() * 0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await asyncio.gather(*(cancelled_call(i) for i in range(200)))
    for _ in range(50):  # releases of reservations made as their callers were cancelled
        (status,) = await platform.usage.budgets.status(tenant)
        if status.reserved_usd == 0:
            break
        await asyncio.sleep(0.1)
    assert status.reserved_usd == 0
