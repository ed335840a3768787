from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator

import pytest

from pulse_ai import PulseAI
from tests.fakes.openai_server import FakeOpenAIServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Caches are off in the suite unless a test turns them on: a text cached by one test would be
# served to the next one instead of reaching the provider that test is about.
os.environ.setdefault("PULSE_AI_CACHE", "off")
# Every PulseAI of the suite records its usage in a database of this run, not in ./data.
os.environ.setdefault(
    "PULSE_AI_DATABASE_URL", f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='pulse-ai-tests-')}/pulse-ai.db"
)


@pytest.fixture(scope="session")
def _fake_servers() -> Iterator[list[FakeOpenAIServer]]:
    servers = [FakeOpenAIServer(dimensions=1536).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def _clean(server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    server.reset()
    server.set_latency(0.0)
    yield server
    server.reset()


@pytest.fixture
def fake(_fake_servers: list[FakeOpenAIServer]) -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server, clean for each test."""
    yield from _clean(_fake_servers[0])


@pytest.fixture
def fake2(_fake_servers: list[FakeOpenAIServer]) -> Iterator[FakeOpenAIServer]:
    """A second, independent fake server (another provider)."""
    yield from _clean(_fake_servers[1])


def openai_yaml(
    server: FakeOpenAIServer,
    name: str = "oa",
    *,
    key: str = "sk-test-secret-0001",
    extra: str = "",
    models: str = "[{name: text-embedding-3-small}, {name: gpt-4o-mini}]",
) -> str:
    """A provider block for an OpenAI provider pointed at a fake server."""
    return (
        f"  {name}:\n"
        f"    type: openai\n"
        f"    api_key: {key}\n"
        f"    base_url: {server.base_url}\n"
        f"    max_retries: 2\n"
        f"    timeout: 5\n"
        f"{extra}"
        f"    models: {models}\n"
    )


# The tenants the suite's indexing and search tests use: tenants must exist before they make calls.
SUITE_TENANTS = ("acme", "globex", "initech", "lab", "other-lab", "acme-shop", "globex-bank")


async def create_tenants(ai: PulseAI, *tenant_ids: str) -> None:
    tenants = (await ai.platform()).tenants
    for tenant_id in tenant_ids or SUITE_TENANTS:
        await tenants.create(tenant_id)


@pytest.fixture(scope="session", autouse=True)
def _suite_tenants() -> None:
    """Create the suite's tenants once, in the database of this run."""

    async def create() -> None:
        async with PulseAI.from_yaml("providers:\n  f: {type: fake, models: [{name: gpt-4o-mini}]}\n") as ai:
            await create_tenants(ai)

    asyncio.run(create())
