"""A library leaves its host alone: no environment changes, no blocked event loop, nothing left
open when one close fails; and the in-process fakes it ships behave as documented."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pulse_ai.tokens
from pulse_ai import (
    AllProvidersFailed,
    AuthenticationError,
    MalformedResponseError,
    PulseAI,
    RateLimitedError,
)
from pulse_ai.testing import FakeProvider, Fault, fake_vector


def test_importing_pulse_ai_leaves_the_environment_alone() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    code = (
        "import os, json; before = dict(os.environ); import pulse_ai, pulse_ai.providers.local; "
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
    )
    changed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert changed.stdout.strip() == "[]"


def test_the_bundled_model_loads_without_offline_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    code = (
        "import asyncio; from pulse_ai import PulseAI\n"
        "async def main():\n"
        "    async with PulseAI.default() as ai:\n"
        "        print((await ai.embed(['offline'])).vectors.shape)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(1, 384)"


async def test_token_estimates_of_large_batches_run_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[tuple[int, str]] = []
    real = pulse_ai.tokens._count_all

    def spy(texts: list[str], encoding_name: str | None) -> list[int]:
        threads.append((len(texts), threading.current_thread().name))
        return real(texts, encoding_name)

    monkeypatch.setattr(pulse_ai.tokens, "_count_all", spy)
    pulse_ai.tokens.encoding("cl100k_base")  # loaded (the first load runs off the loop as well)
    yaml = "providers:\n  a: {type: fake, models: [{name: text-embedding-3-small}]}\n"
    async with PulseAI.from_yaml(yaml) as ai:
        await ai.embed(["short"], model="a/text-embedding-3-small")
        long_texts = ["lorem ipsum dolor sit amet " * 400 for _ in range(64)]  # 700 KB
        await ai.embed(long_texts, model="a/text-embedding-3-small")
    loop_thread = threading.current_thread().name
    small = {thread for count, thread in threads if count == 1}
    large = {thread for count, thread in threads if count == 64}
    assert small == {loop_thread}  # a small batch: not worth a thread
    assert large and loop_thread not in large  # every count of the large one ran off the loop


async def test_aclose_closes_everything_even_when_one_close_fails() -> None:
    yaml = "providers:\n" + "".join(
        f"  {name}: {{type: fake, models: [{{name: text-embedding-3-small}}]}}\n" for name in ("a", "b", "c")
    )
    ai = PulseAI.from_yaml(yaml)
    closed: list[str] = []
    for name in ("a", "b", "c"):
        provider = ai.provider(name)

        async def close(name: str = name) -> None:
            closed.append(name)
            if name != "c":
                raise OSError(f"{name} failed to close")

        provider.aclose = close  # type: ignore[method-assign]
    with pytest.raises(OSError, match="failed to close"):
        await ai.aclose()
    assert sorted(closed) == ["a", "b", "c"]


# ---- the shipped fakes ------------------------------------------------------------------------
FAKES = """
providers:
  f: {type: fake, models: [{name: text-embedding-3-small, dimensions: 64}, {name: gpt-4o-mini}, {name: gpt-4o}]}
"""


async def test_fakes_are_deterministic_record_calls_and_raise_scripted_faults() -> None:
    async with PulseAI.from_yaml(FAKES) as ai:
        provider = ai.provider("f")
        assert isinstance(provider, FakeProvider)
        first = await ai.embed(["same text"], model="f/text-embedding-3-small")
        np.testing.assert_allclose(first.vectors[0], fake_vector("same text", 64), atol=1e-7)
        provider.script(Fault.rate_limited(retry_after=3), Fault.authentication(), Fault.wrong_count())
        with pytest.raises(RateLimitedError) as limited:
            await ai.embed(["x"], model="f/text-embedding-3-small")
        assert limited.value.retry_after == 3
        with pytest.raises(AuthenticationError):
            await ai.generate("y", model="f/gpt-4o-mini")
        with pytest.raises(MalformedResponseError):  # the base class's checks apply to fakes too
            await ai.embed(["z", "w"], model="f/text-embedding-3-small")
        with pytest.raises(AllProvidersFailed):  # the authentication failure opened its breaker: no call
            await ai.generate("hello", model="f/gpt-4o-mini")
        answer = await ai.generate("hello", model="f/gpt-4o")
    assert answer.text == "echo: hello" and answer.usage.cost_usd > 0
    assert [c.operation for c in provider.calls] == ["embed", "embed", "generate", "embed", "generate"]
    assert provider.calls[0].inputs == ("same text",)
