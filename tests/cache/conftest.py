"""Helpers for the cache tests: fake-provider pipelines behind a CachingRouter."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from pulse_ai import PulseAI
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.context import CallContext
from pulse_ai.testing import FakeProvider, fake_vector

EMB = "text-embedding-3-small"
GEN = "gpt-4o-mini"


def fakes_yaml(*names: str, pipelines: str = "", extra: str = "", model_extra: str = "") -> str:
    providers = "".join(
        f"  {n}: {{type: fake, {extra}models: [{{name: {EMB}{model_extra}}}, {{name: {GEN}}}]}}\n" for n in names
    )
    return f"providers:\n{providers}pipelines:\n{pipelines}"


def embed_pipeline(*names: str, name: str = "embedding", cache: str = "") -> str:
    refs = ", ".join(f"{n}/{EMB}" for n in names)
    options = f", cache: {{{cache}}}" if cache else ""
    return f"  {name}: {{kind: embedding, candidates: [{refs}]{options}}}\n"


def gen_pipeline(*names: str, name: str = "generation", cache: str = "") -> str:
    refs = ", ".join(f"{n}/{GEN}" for n in names)
    options = f", cache: {{{cache}}}" if cache else ""
    return f"  {name}: {{kind: generation, candidates: [{refs}]{options}}}\n"


def fake(ai: PulseAI, name: str) -> FakeProvider:
    provider = ai.provider(name)
    assert isinstance(provider, FakeProvider)
    return provider


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([fake_vector(t, 1536) for t in texts])


def sent(provider: FakeProvider) -> list[str]:
    """Every text the provider was asked to embed, over all its requests."""
    return [text for call in provider.requests("embed") for text in call.inputs]


def ctx(tenant: str = "acme", pipeline: str | None = None) -> CallContext:
    return CallContext(tenant, pipeline=pipeline)


@pytest.fixture
async def ai() -> AsyncIterator[PulseAI]:
    yaml = fakes_yaml(
        "a",
        "b",
        pipelines=embed_pipeline("a", "b")
        + embed_pipeline("a", name="public", cache="share_across_tenants: true")
        + embed_pipeline("a", name="nocache", cache="enabled: false")
        + gen_pipeline("a", "b")
        + gen_pipeline("a", name="creative", cache="cache_generation: true"),
    )
    async with PulseAI.from_yaml(yaml) as client:
        yield client


@pytest.fixture
async def caches() -> AsyncIterator[Caches]:
    async with Caches.in_memory() as made:
        yield made


def layer(ai: PulseAI, caches: Caches, pipeline: str = "embedding") -> CachingRouter:
    return CachingRouter.for_pipeline(ai.router(pipeline), caches)


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("PULSE_AI_TEST_REDIS_URL")
    if not url:
        pytest.skip("PULSE_AI_TEST_REDIS_URL is not set (.ci/run sets it to the local Redis)")
    return url


@pytest.fixture
def key_prefix() -> str:
    """A prefix of our own in a Redis that other runs and projects share."""
    return f"pulse-ai-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(autouse=True)
def _caches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite turns caches off by default (PULSE_AI_CACHE=off); these tests are about them."""
    monkeypatch.delenv("PULSE_AI_CACHE", raising=False)
