"""A client that leaves a streamed answer midway: the provider's stream is closed at once (the
in-process fake's ``open_streams``, the fake OpenAI server's open connections drop to 0) and the
ledger records what was consumed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.openai_server import Fault as ServerFault
from tests.service.conftest import eventually, ledger, make_tenant, sdk, settings
from tests.service.harness import ServiceServer

# An answer of 8 words: the slow fake sends its first after 2 s, then one every 0.25 s.
PROMPT = "w1 w2 w3 w4 w5 w6 w7"


async def test_leaving_a_stream_midway_closes_the_providers_stream_and_is_recorded(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    slow = server.fake("slow")
    stream = await sdk(server, acme.key).chat.completions.create(
        model="slow_chat", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    received = []
    async for chunk in stream:
        received.append(chunk.choices[0].delta.content)
        if len(received) == 2:
            break
    assert slow.open_streams == 1  # still streaming while the client holds the connection
    await stream.close()  # the client goes away mid-answer

    async def closed() -> bool:
        return slow.open_streams == 0

    await eventually(closed, "the provider's stream was closed")

    async def recorded() -> bool:
        return bool(await ledger(server, acme.tenant))

    await eventually(recorded, "the ledger has the stream's row")
    (row,) = await ledger(server, acme.tenant)
    assert row.operation == "stream" and row.api_key_id == acme.key_id
    assert row.outcome == "abandoned"  # the consumer left (while the next chunk was awaited)
    assert row.tokens_estimated and row.input_tokens > 0
    assert 0 < row.output_tokens < 8  # what was consumed, not the whole answer


async def test_a_finished_stream_leaves_nothing_open(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    stream = await sdk(server, acme.key).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "echo: a b c"
    assert server.fake("a").open_streams == 0
    (row,) = await ledger(server, acme.tenant)
    assert (row.outcome, row.tokens_estimated) == ("ok", False)


@pytest.fixture
def remote_server(tmp_path: Path, fake: FakeOpenAIServer) -> Iterator[ServiceServer]:
    """The service in front of a real ``openai`` provider talking to the fake OpenAI server."""
    yaml = (
        "providers:\n"
        f"{openai_yaml(fake)}"
        "pipelines:\n"
        "  remote_chat: {kind: generation, candidates: [oa/gpt-4o-mini]}\n"
        f"vector_store: {{backend: embedded, path: '{tmp_path / 'vectors'}'}}\n"
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path / 'pulse-ai.db'}'}}\n"
    )
    with ServiceServer(yaml, settings()) as running:
        yield running


async def test_leaving_a_remote_stream_closes_the_upstream_connection(
    remote_server: ServiceServer, fake: FakeOpenAIServer
) -> None:
    acme = await make_tenant(remote_server, "acme")
    fake.always(ServerFault.slow_stream(0.3))
    stream = await sdk(remote_server, acme.key).chat.completions.create(
        model="remote_chat", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    received = []
    async for chunk in stream:
        received.append(chunk.choices[0].delta.content)
        if len(received) == 2:
            break
    assert fake.open_streams == 1
    await stream.close()

    async def closed() -> bool:
        return fake.open_streams == 0

    await eventually(closed, "the service closed its stream from the upstream server")

    async def recorded() -> bool:
        return bool(await ledger(remote_server, acme.tenant))

    await eventually(recorded, "the ledger has the stream's row")
    (row,) = await ledger(remote_server, acme.tenant)
    assert row.outcome == "abandoned" and row.output_tokens > 0
