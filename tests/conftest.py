from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAIServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
