"""A long-lived second process with a memory tier in front of a shared one, driven line by line.

python -m tests.cache._replica BACKEND LOCATION  (BACKEND: sqlite or redis; for redis LOCATION is
"URL PREFIX"). Each stdin line is a JSON command, answered by one JSON line on stdout:
{"op": "embed", "tenant": T, "texts": [...]} -> {"cached": n, "tiers": [...], "requests": n}
{"op": "generate", "tenant": T, "prompt": P} -> {"cached": bool, "tiers": [...], "requests": n}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from pulse_ai import PulseAI
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.config import CacheConfig
from pulse_ai.context import CallContext
from pulse_ai.types import GenerationParams
from tests.cache.conftest import embed_pipeline, fake, fakes_yaml, gen_pipeline


def replica_config(backend: str, location: str) -> CacheConfig:
    """Memory in front of ``backend`` for embeddings and generation (the same in both processes)."""
    levels: dict[str, Any] = {name: {"backend": f"memory+{backend}"} for name in ("embeddings", "generation")}
    if backend == "sqlite":
        return CacheConfig(enabled=True, sqlite_path=location, **levels)
    url, key_prefix = location.split(" ", 1)
    return CacheConfig(enabled=True, redis_url=url, key_prefix=key_prefix, **levels)  # type: ignore[arg-type]


async def main(backend: str, location: str) -> None:
    yaml = fakes_yaml("a", pipelines=embed_pipeline("a") + gen_pipeline("a"))
    async with PulseAI.from_yaml(yaml) as ai, Caches.from_config(replica_config(backend, location)) as caches:
        embedder = CachingRouter(ai.router("embedding"), caches)
        generator = CachingRouter(ai.router("generation"), caches)
        provider = fake(ai, "a")
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            context = CallContext(command["tenant"])
            if command["op"] == "embed":
                result = await embedder.embed(command["texts"], context)
                answer: dict[str, Any] = {"cached": result.cached}
            else:
                made = await generator.generate(command["prompt"], GenerationParams(temperature=0), context)
                result = made
                answer = {"cached": made.cached}
            answer["tiers"] = sorted({a.cache_level for a in result.attempts if a.cache_level})
            answer["requests"] = len(provider.requests("embed")) + len(provider.requests("generate"))
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
