"""A second process using the same cache: embeds texts through a CachingRouter and says what it saw.

python -m tests.cache._worker BACKEND LOCATION TENANT COUNT PREFIX  (BACKEND: sqlite or redis)
"""

from __future__ import annotations

import asyncio
import json
import sys

from pulse_ai import PulseAI
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.config import CacheConfig
from pulse_ai.context import CallContext
from pulse_ai.testing import FakeProvider
from tests.cache.conftest import embed_pipeline, fakes_yaml


async def main(backend: str, location: str, tenant: str, count: int, prefix: str) -> dict[str, int]:
    if backend == "sqlite":
        config = CacheConfig(enabled=True, sqlite_path=location, embeddings={"backend": "sqlite"})  # type: ignore[arg-type]
    else:
        url, key_prefix = location.split(" ", 1)
        config = CacheConfig(enabled=True, redis_url=url, key_prefix=key_prefix, embeddings={"backend": "redis"})  # type: ignore[arg-type]
    yaml = fakes_yaml("a", pipelines=embed_pipeline("a"))
    async with PulseAI.from_yaml(yaml) as ai, Caches.from_config(config) as caches:
        cached = CachingRouter(ai.router("embedding"), caches)
        texts = [f"{prefix} {i}" for i in range(count)]
        served = 0
        for start in range(0, count, 50):  # many small writes, to interleave with another process
            result = await cached.embed(texts[start : start + 50], CallContext(tenant))
            served += result.cached
        provider = ai.provider("a")
        assert isinstance(provider, FakeProvider)
        return {"requests": len(provider.requests("embed")), "cached": served}


if __name__ == "__main__":
    backend, location, tenant, count, prefix = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(backend, location, tenant, int(count), prefix))))
