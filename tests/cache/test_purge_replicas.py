"""A purge or clear in one process reaches another process's memory tier (H1).

The other process (``tests/cache/_replica.py``) keeps a memory tier in front of the shared SQLite
file or Redis; after this process purges a tenant, the replica must not serve that tenant's entries
from its memory, while other tenants' entries stay warm there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.context import CallContext
from pulse_ai.types import GenerationParams
from tests.cache._replica import replica_config
from tests.cache.conftest import embed_pipeline, fakes_yaml, gen_pipeline

ROOT = Path(__file__).resolve().parents[2]


class Replica:
    def __init__(self, backend: str, location: str) -> None:
        command = [sys.executable, "-m", "tests.cache._replica", backend, location]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.ask_raw() == {"ready": True}

    def ask_raw(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(self.process.stderr.read())
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.ask_raw()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(params=["sqlite", "redis"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "shared-cache.db")
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    yield "redis", f"{url} {prefix}"
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def replica(location: tuple[str, str]) -> Iterator[Replica]:
    made = Replica(*location)
    yield made
    made.close()


def warm(replica: Replica) -> None:
    for tenant in ("acme", "globex"):
        replica.ask(op="embed", tenant=tenant, texts=["alpha", "beta"])
        replica.ask(op="generate", tenant=tenant, prompt="hello")
    # served from the replica's own memory now
    assert replica.ask(op="embed", tenant="acme", texts=["alpha", "beta"])["tiers"] == ["memory"]
    assert replica.ask(op="generate", tenant="acme", prompt="hello")["tiers"] == ["memory"]


async def test_a_purge_in_one_process_empties_another_process_memory_tier(
    location: tuple[str, str], replica: Replica
) -> None:
    warm(replica)
    async with Caches.from_config(replica_config(*location)) as caches:
        assert await caches.purge_tenant("acme") > 0
    embedded = replica.ask(op="embed", tenant="acme", texts=["alpha", "beta"])
    assert embedded["cached"] == 0 and embedded["tiers"] == []
    generated = replica.ask(op="generate", tenant="acme", prompt="hello")
    assert generated["cached"] is False
    # the other tenant's entries stay warm in the replica's memory
    assert replica.ask(op="embed", tenant="globex", texts=["alpha", "beta"]) | {"requests": 0} == {
        "cached": 2,
        "tiers": ["memory"],
        "requests": 0,
    }
    assert replica.ask(op="generate", tenant="globex", prompt="hello")["tiers"] == ["memory"]


async def test_clearing_a_level_everywhere_reaches_another_process(location: tuple[str, str], replica: Replica) -> None:
    warm(replica)
    async with Caches.from_config(replica_config(*location)) as caches:
        await caches.clear(level="generation")
    assert replica.ask(op="generate", tenant="globex", prompt="hello")["cached"] is False
    # embeddings were not cleared: still in the replica's memory
    assert replica.ask(op="embed", tenant="globex", texts=["alpha"])["tiers"] == ["memory"]
    async with Caches.from_config(replica_config(*location)) as caches:
        await caches.clear()
    assert replica.ask(op="embed", tenant="globex", texts=["alpha"])["cached"] == 0


async def test_the_purging_process_itself_serves_nothing_stale(location: tuple[str, str]) -> None:
    from pulse_ai import PulseAI

    yaml = fakes_yaml("a", pipelines=embed_pipeline("a") + gen_pipeline("a"))
    async with PulseAI.from_yaml(yaml) as ai, Caches.from_config(replica_config(*location)) as caches:
        embedder = CachingRouter(ai.router("embedding"), caches)
        generator = CachingRouter(ai.router("generation"), caches)
        await embedder.embed(["alpha"], CallContext("acme"))
        await generator.generate("hi", GenerationParams(temperature=0), CallContext("acme"))
        await caches.purge_tenant("acme")
        assert (await embedder.embed(["alpha"], CallContext("acme"))).cached == 0
        assert not (await generator.generate("hi", GenerationParams(temperature=0), CallContext("acme"))).cached
