"""A read pending in another task, stopped because the consumer left (``cancel(msg=ABANDONED)``),
ends the stream ``abandoned`` down to the provider's attempt; any other cancellation ``cancelled``."""

from __future__ import annotations

import asyncio

import pytest

from pulse_ai import PulseAI
from pulse_ai.streams import ABANDONED
from pulse_ai.testing import FakeProvider

YAML = (
    "providers:\n"
    "  slow: {type: fake, latency: 2.0, models: [{name: gpt-4o-mini}]}\n"
    "pipelines:\n"
    "  chat: {kind: generation, candidates: [slow/gpt-4o-mini]}\n"
)


@pytest.mark.parametrize(("message", "outcome"), [(ABANDONED, "abandoned"), (None, "cancelled")])
async def test_a_pending_read_stopped_from_outside(message: str | None, outcome: str) -> None:
    async with PulseAI.from_yaml(YAML) as ai:
        provider = ai.provider("slow")
        assert isinstance(provider, FakeProvider)
        stream = ai.router("chat").stream("one two three four five six seven")
        first = await anext(stream)
        assert first == "echo:"
        reader = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        reader.cancel(msg=message)
        await asyncio.wait({reader})
        assert reader.cancelled()
        assert provider.open_streams == 0
        assert stream.outcome == outcome
        assert [a.outcome for a in stream.attempts] == [outcome]
        assert stream.attempts[0].usage.estimated and stream.attempts[0].usage.output_tokens > 0
