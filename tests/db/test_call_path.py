"""The whole call path on a real database (SQLite and PostgreSQL): ai.tenant(t) -> budget -> router
-> providers -> one ledger row per attempt; reports per tenant; budgets that hold under load."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from pulse_ai import AllProvidersFailed, BudgetExceededError, PulseAI
from pulse_ai.db.models import IndexRunRow, UsageRecordRow
from pulse_ai.errors import (
    DatabaseError,
    NotFoundError,
    PipelineNotAllowedError,
    TenantSuspendedError,
)
from pulse_ai.testing import FakeProvider, Fault
from tests.db.conftest import NO_POSTGRES, unique_tenant_id
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.openai_server import Fault as ServerFault

EMB = "text-embedding-3-small"


def config(db_url: str, *, extra: str = "", pipelines: str = "", vectors: str = "") -> str:
    models = f"[{{name: {EMB}, max_inputs_per_request: 2}}, {{name: gpt-4o-mini}}]"
    fakes = "".join(f"  {name}: {{type: fake, {extra}models: {models}}}\n" for name in ("a", "b"))
    return (
        f"providers:\n{fakes}"
        "  local: {type: sentence_transformers, models: [{name: all-MiniLM-L6-v2}]}\n"
        "pipelines:\n"
        f"  embedding: {{kind: embedding, candidates: [a/{EMB}, b/{EMB}]}}\n"
        "  chat: {kind: generation, candidates: [a/gpt-4o-mini, b/gpt-4o-mini]}\n"
        "  local: {kind: embedding, candidates: [local/all-MiniLM-L6-v2]}\n"
        f"{pipelines}"
        f"database: {{url: '{db_url}'}}\n"
        f"{vectors}"
    )


def fake(ai: PulseAI, name: str) -> FakeProvider:
    provider = ai.provider(name)
    assert isinstance(provider, FakeProvider)
    return provider


async def rows(ai: PulseAI, tenant: str) -> list[Any]:
    platform = await ai.platform()
    async with platform.db.read("test") as connection:
        result = await connection.execute(
            select(UsageRecordRow).where(UsageRecordRow.tenant_id == tenant).order_by(UsageRecordRow.created_at)
        )
        return list(result.all())


@pytest.fixture
async def ai(db_url: str) -> PulseAI:
    instance = PulseAI.from_yaml(config(db_url))
    yield instance
    await instance.aclose()


async def new_tenant(ai: PulseAI) -> str:
    return (await (await ai.platform()).tenants.create(unique_tenant_id())).id


async def test_one_row_per_attempt_with_exact_cost_and_the_call_context(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    key = await (await ai.platform()).api_keys.create(tenant, name="service")
    acme = ai.tenant(tenant, api_key_id=key.info.id)
    fake(ai, "a").script(Fault.rate_limited())  # first request of a 429s: fallback to b
    result = await acme.generate("hello there", pipeline="chat")
    recorded = await rows(ai, tenant)
    assert [(r.provider, r.model, r.outcome, r.attempt) for r in recorded] == [
        ("a", "gpt-4o-mini", "rate_limited", 1),
        ("b", "gpt-4o-mini", "ok", 2),
    ]
    assert len({r.request_id for r in recorded}) == 1
    assert all(r.api_key_id == key.info.id and r.pipeline == "chat" and r.operation == "generate" for r in recorded)
    served = recorded[1]
    assert (served.input_tokens, served.output_tokens) == (result.usage.input_tokens, result.usage.output_tokens)
    # exact: the catalog's gpt-4o-mini prices (0.15 / 0.60 per million), in nano-dollars
    expected = (
        Decimal(served.input_tokens) * Decimal("0.15") + Decimal(served.output_tokens) * Decimal("0.60")
    ) / 10**6
    assert served.billed_nanousd == int(expected * 10**9)
    assert served.price_table_version[0].isdigit()


async def test_a_partial_embedding_failure_records_what_each_attempt_consumed(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    fake(ai, "a").script(Fault.ok(), Fault.unavailable())  # 4 texts: requests of 2; the second fails
    result = await ai.tenant(tenant).embed(["one", "two", "three", "four"])
    first, second = await rows(ai, tenant)
    assert (first.provider, first.outcome, first.billed_nanousd > 0) == ("a", "unavailable", True)
    assert (second.provider, second.outcome) == ("b", "ok")
    assert first.input_tokens + second.input_tokens == result.usage.input_tokens


async def test_a_failed_call_records_the_money_it_spent(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    fake(ai, "a").script(Fault.ok(), Fault.unavailable())
    fake(ai, "b").always(Fault.unavailable())
    with pytest.raises(AllProvidersFailed):
        await ai.tenant(tenant).embed(["one", "two", "three", "four"])
    recorded = await rows(ai, tenant)
    assert [r.outcome for r in recorded] == ["unavailable", "unavailable"]
    assert recorded[0].billed_nanousd > 0  # the request of a that succeeded was paid for


async def test_streams_record_when_they_end_and_when_they_are_abandoned(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    acme = ai.tenant(tenant)
    async with acme.stream("one two three four five", pipeline="chat") as stream:
        text = "".join([d async for d in stream])
    assert text == "echo: one two three four five"
    async with acme.stream("six seven eight nine ten", pipeline="chat") as left:
        async for _ in left:
            break
    done, abandoned = await rows(ai, tenant)
    assert (done.operation, done.outcome, done.tokens_estimated) == ("stream", "ok", False)
    assert (abandoned.outcome, abandoned.tokens_estimated) == ("abandoned", True)
    assert abandoned.output_tokens >= 1 and abandoned.billed_nanousd > 0


async def test_local_models_cost_zero_by_their_catalog_entry(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    await ai.tenant(tenant).embed(["a local text"], pipeline="local")
    (row,) = await rows(ai, tenant)
    assert (row.provider, row.billed_nanousd, row.outcome) == ("local", 0, "ok")
    assert row.input_tokens > 0 and row.price_table_version[0].isdigit()


async def test_calls_without_a_tenant_are_recorded_under_the_system_tenant(ai: PulseAI) -> None:
    before = len(await rows(ai, "_system"))
    await ai.embed(["platform work"])
    assert len(await rows(ai, "_system")) == before + 1


async def test_unknown_suspended_or_disallowed_callers_are_refused_before_any_provider_call(ai: PulseAI) -> None:
    platform = await ai.platform()
    a = fake(ai, "a")
    with pytest.raises(NotFoundError):
        await ai.tenant(unique_tenant_id("ghost")).embed(["x"])
    tenant = await new_tenant(ai)
    await platform.tenants.suspend(tenant)
    with pytest.raises(TenantSuspendedError):
        await ai.tenant(tenant).generate("x", pipeline="chat")
    other = await new_tenant(ai)
    await platform.tenants.update_settings(other, allowed_pipelines=["local"], default_embedding_pipeline="local")
    with pytest.raises(PipelineNotAllowedError):
        await ai.tenant(other).generate("x", pipeline="chat")
    served = await ai.tenant(other).embed(["default pipeline of the tenant"])
    assert served.model == "local/all-MiniLM-L6-v2"
    assert a.calls == []


async def test_a_hard_budget_refuses_before_the_call_and_names_itself(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    platform = await ai.platform()
    await platform.usage.budgets.set(tenant, pipeline="chat", limit_usd=Decimal("0.000001"), period="day")
    with pytest.raises(BudgetExceededError) as info:
        await ai.tenant(tenant).generate("hello", pipeline="chat")
    message = str(info.value)
    assert tenant in message and "chat" in message and "day" in message and "limit" in message
    assert fake(ai, "a").calls == [] and fake(ai, "b").calls == []


async def test_200_concurrent_calls_never_spend_past_a_hard_budget(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    platform = await ai.platform()
    # each call reserves its worst case (max_tokens 20); about 50 fit
    probe = await ai.tenant(tenant).generate("budget probe text", pipeline="chat", params=_params(20))
    per_call = probe.usage.cost_usd
    limit = per_call * 60
    await platform.usage.budgets.set(tenant, limit_usd=limit, period="day")
    outcomes = await asyncio.gather(
        *(ai.tenant(tenant).generate("budget probe text", pipeline="chat", params=_params(20)) for _ in range(200)),
        return_exceptions=True,
    )
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(served) + len(refused) == 200
    assert 10 <= len(served) < 200
    billed = sum(Decimal(r.billed_nanousd) for r in await rows(ai, tenant)) / 10**9
    assert billed <= limit
    (status,) = await platform.usage.budgets.status(tenant)
    assert status.spent_usd <= limit and status.reserved_usd == 0


def _params(max_tokens: int) -> object:
    from pulse_ai import GenerationParams

    return GenerationParams(max_tokens=max_tokens)


async def test_a_tenants_report_never_includes_another_tenants_rows(ai: PulseAI) -> None:
    first, second = await new_tenant(ai), await new_tenant(ai)
    await ai.tenant(first).embed(["first tenant text"])
    await ai.tenant(second).generate("second tenant prompt", pipeline="chat")
    await ai.tenant(second).generate("again", pipeline="chat")
    since = datetime.now(UTC) - timedelta(minutes=5)
    mine = await ai.tenant(first).usage.summary(since=since, by="model")
    theirs = await ai.tenant(second).usage.summary(since=since, by="pipeline")
    assert [(r.tenant_id, r.key, r.requests) for r in mine] == [(first, f"a/{EMB}", 1)]
    assert [(r.tenant_id, r.key, r.requests) for r in theirs] == [(second, "chat", 2)]


async def test_a_cancelled_call_records_its_finished_attempts_and_frees_its_reservation(ai: PulseAI) -> None:
    tenant = await new_tenant(ai)
    platform = await ai.platform()
    await platform.usage.budgets.set(tenant, limit_usd=Decimal(1), period="day")
    fake(ai, "a").script(Fault.unavailable())
    fake(ai, "b").always(Fault.slow(5))
    task = asyncio.create_task(ai.tenant(tenant).generate("cancel me", pipeline="chat"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failed, cancelled = await rows(ai, tenant)
    assert (failed.provider, failed.outcome) == ("a", "unavailable")
    # the request b was sent is recorded as cancelled, with its input estimated (it may be billed)
    assert (cancelled.provider, cancelled.outcome, cancelled.tokens_estimated) == ("b", "cancelled", True)
    assert cancelled.input_tokens > 0 and cancelled.billed_nanousd > 0
    (status,) = await platform.usage.budgets.status(tenant)
    assert status.reserved_usd == 0


async def test_index_runs_are_recorded_for_the_etl_side(db_url: str, tmp_path: object) -> None:
    vectors = f"vector_store: {{backend: embedded, path: '{tmp_path}/vectors'}}\n"
    async with PulseAI.from_yaml(config(db_url, vectors=vectors)) as ai:
        tenant = await new_tenant(ai)
        indexer = ai.tenant(tenant).indexer()
        report = await indexer.index("issues", [{"id": "1", "text": "first"}, {"id": "2", "text": "second"}])
        again = await indexer.index("issues", [{"id": "1", "text": "first"}])
        platform = await ai.platform()
        async with platform.db.read("test") as connection:
            runs = list((await connection.execute(select(IndexRunRow).where(IndexRunRow.tenant_id == tenant))).all())
        embedded = await rows(ai, tenant)
    assert (report.new, again.unchanged) == (2, 1)
    assert sorted((r.new_count, r.unchanged_count, r.status) for r in runs) == [
        (0, 1, "succeeded"),
        (2, 0, "succeeded"),
    ]
    assert [r.operation for r in embedded] == ["embed"]  # the second run embedded nothing


async def test_an_unreachable_database_fails_calls_closed_before_any_provider_call() -> None:
    async with PulseAI.from_yaml(config("sqlite:////dev/null/not-a-directory/pulse-ai.db")) as ai:
        with pytest.raises(DatabaseError):
            await ai.embed(["x"])
        assert fake(ai, "a").calls == []


class _Proxy:
    """A TCP proxy to PostgreSQL that the test can cut (a database stopped mid-run) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


async def test_postgres_stopped_mid_run_fails_calls_closed_and_recovers(postgres_url: str | None) -> None:
    if postgres_url is None:
        pytest.skip(NO_POSTGRES)
    url = make_url(postgres_url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    async with PulseAI.from_yaml(config(proxied)) as ai:
        platform = await ai.platform()
        budgeted, unbudgeted = await new_tenant(ai), await new_tenant(ai)
        await platform.usage.budgets.set(budgeted, limit_usd=Decimal(10), period="day")
        await ai.tenant(budgeted).embed(["before the outage"])
        await ai.tenant(unbudgeted).embed(["before the outage"])
        await proxy.cut()
        a = fake(ai, "a")
        calls_before = len(a.calls)
        with pytest.raises(DatabaseError):  # a budget to check: refused before any provider call
            await ai.tenant(budgeted).embed(["during the outage"])
        assert len(a.calls) == calls_before
        with pytest.raises(DatabaseError):  # no budget: the call ran, its record failed: an error
            await ai.tenant(unbudgeted).embed(["during the outage"])
        assert len(platform.unrecorded) == 1  # kept, to be written when the database is back
        calls_before = len(a.calls)
        with pytest.raises(DatabaseError):  # from then on, refused before any provider call
            await ai.tenant(unbudgeted).embed(["still during the outage"])
        assert len(a.calls) == calls_before
        await proxy.start()  # the same port: the database is back
        for _ in range(20):
            try:
                await ai.tenant(budgeted).embed(["after the outage"])
                break
            except DatabaseError:
                await asyncio.sleep(0.25)
        await ai.tenant(unbudgeted).embed(["after the outage"])
        recorded = await rows(ai, budgeted)
        # before, after, and the call the outage caught: its row was kept and written on recovery
        assert len(await rows(ai, unbudgeted)) == 3
        assert platform.unrecorded == []
    assert len(recorded) == 2  # before and after; the refused call spent nothing


def test_kill_9_during_a_burst_of_calls_loses_no_completed_calls_row(db_url: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    async def setup() -> str:
        async with PulseAI.from_yaml(config(db_url)) as ai:
            return await new_tenant(ai)

    tenant = asyncio.run(setup())
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.db.call_burst_child", db_url, tenant],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert child.stdout is not None
    acknowledged = []
    for line in child.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) >= 300:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged.extend(line.strip() for line in child.stdout.read().splitlines())

    async def recorded() -> set[str]:
        async with PulseAI.from_yaml(config(db_url)) as ai:
            return {row.request_id for row in await rows(ai, tenant)}

    stored = asyncio.run(recorded())
    missing = [request for request in acknowledged if request and request not in stored]
    assert len(acknowledged) >= 300 and missing == []


async def test_a_tenant_with_its_own_key_calls_with_it_and_trips_only_its_own_breaker(
    db_url: str, fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("PULSE_AI_SECRET_KEYS", Fernet.generate_key().decode())
    text = (
        "providers:\n"
        f"  oa: {{type: openai, api_key: sk-platform-key-000, base_url: '{fake.base_url}', max_retries: 0,"
        " models: [{name: gpt-4o-mini}]}\n"
        "pipelines:\n"
        "  chat: {kind: generation, candidates: [oa/gpt-4o-mini], breaker: {window: 2, min_calls: 1},"
        " fallback: {enabled: false}}\n"
        f"database: {{url: '{db_url}'}}\n"
    )
    async with PulseAI.from_yaml(text) as ai:
        platform = await ai.platform()
        own, other = await new_tenant(ai), await new_tenant(ai)
        await platform.credentials.set(own, "oa", "sk-tenant-own-key-123")
        try:
            await _own_key_calls(ai, fake, own, other)
        finally:  # the database is shared by the session: leave no row only this test's key can read
            await platform.credentials.delete(own, "oa")


async def _own_key_calls(ai: PulseAI, fake: FakeOpenAIServer, own: str, other: str) -> None:
    from pulse_ai import AuthenticationError
    from pulse_ai.routing import BreakerState

    await ai.tenant(own).generate("hello", pipeline="chat")
    await ai.tenant(other).generate("hello", pipeline="chat")
    assert [r.headers["authorization"] for r in fake.requests] == [
        "Bearer sk-tenant-own-key-123",
        "Bearer sk-platform-key-000",
    ]
    fake.script(ServerFault.http(401))
    with pytest.raises(AuthenticationError) as info:
        await ai.tenant(own).generate("bad key now", pipeline="chat")
    assert "sk-tenant-own-key-123" not in str(info.value)
    # the tenant's own breaker opened; the shared one did not: the other tenant is still served
    served = await ai.tenant(other).generate("still fine", pipeline="chat")
    assert served.text == "echo: still fine"
    assert ai.health.states()["oa/gpt-4o-mini"] is BreakerState.CLOSED
    assert ai._tenant_health[own].states()["oa/gpt-4o-mini"] is BreakerState.OPEN
