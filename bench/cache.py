"""The embedding cache: cold against warm, per backend (memory, sqlite, redis). Prints one JSON object.

Per backend:
- ``local``: the bundled model (all-MiniLM-L6-v2 on the CPU), ``--local-texts`` mixed texts (40% titles,
  40% descriptions, 20% past the model's window): one call with an empty cache (cold), the same call
  again (warm).
- ``remote``: the fake OpenAI-compatible server in its own process with ``--latency-ms`` per request,
  through the real openai SDK, ``--texts`` texts, cold and warm.
- ``mixed``: batches of the local model's size where 90% of the texts are cached and 10% new, against
  the cold rate of the same model and text mix.
- ``reindex_unchanged_speedup``: SciFact records through the indexer into an embedded store; the first
  index (cold cache, empty store) against indexing the same records again (the indexer skips unchanged
  records by content hash: the cache is not even asked). ``rebuild_from_cache_speedup``: the same records
  into an empty store with the cache warm (a new collection, a layout change, a re-index after a purge),
  which is where the cache does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from embedding_throughput import mixed_texts  # noqa: E402

from pulse_ai import PulseAI  # noqa: E402
from pulse_ai.cache import Caches, CachingRouter  # noqa: E402
from pulse_ai.config import CacheConfig  # noqa: E402
from pulse_ai.context import CallContext  # noqa: E402
from pulse_ai.types import EmbeddingResult  # noqa: E402
from pulse_ai.vectors import Indexer, Record, VectorSpace  # noqa: E402
from pulse_ai.vectors.embedded import EmbeddedVectorStore  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
CONTEXT = CallContext("bench")


def cache_config(backend: str, directory: Path, redis_url: str, prefix: str) -> CacheConfig:
    level = {"backend": backend}
    return CacheConfig(
        sqlite_path=str(directory / f"cache-{uuid.uuid4().hex[:8]}.db"),
        redis_url=redis_url,
        key_prefix=prefix,
        embeddings=level,  # type: ignore[arg-type]
    )


async def timed(cached: CachingRouter, texts: Sequence[str]) -> tuple[float, EmbeddingResult]:
    started = time.perf_counter()
    result = await cached.embed(texts, CONTEXT)
    return len(texts) / (time.perf_counter() - started), result


async def bench_local(config: CacheConfig, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    texts = mixed_texts(count, seed=3)
    async with PulseAI.default() as ai, Caches.from_config(config) as caches:
        await ai.embed(["warm up the model"])
        cached = CachingRouter(ai.router("embedding"), caches)
        cold, _ = await timed(cached, texts)
        warm, result = await timed(cached, texts)
        assert result.cached == count
        # 90% of a batch cached, 10% new: the cold texts with new ones in between
        rng = random.Random(5)
        fresh = [f"new {text}" for text in mixed_texts(count // 10, seed=9)]
        batch = rng.sample(texts, count - len(fresh)) + fresh
        rng.shuffle(batch)
        mixed, result = await timed(cached, batch)
        assert result.cached == count - len(fresh)
    local = {"texts": count, "cold_per_s": round(cold, 1), "warm_per_s": round(warm, 1)}
    local["warm_vs_cold"] = round(warm / cold, 1)
    hit_ratio = round(1 - len(fresh) / count, 3)
    mix = {"hit_ratio": hit_ratio, "texts": count, "per_s": round(mixed, 1), "cold_per_s": round(cold, 1)}
    mix["vs_cold"] = round(mixed / cold, 1)
    return local, mix


async def bench_remote(config: CacheConfig, base_url: str, count: int, latency_ms: int) -> dict[str, Any]:
    yaml = f"""
providers:
  openai: {{type: openai, api_key: sk-bench, base_url: "{base_url}", max_concurrency: 8,
           models: [{{name: text-embedding-3-small}}]}}
pipelines:
  embedding: {{kind: embedding, candidates: [openai/text-embedding-3-small]}}
"""
    texts = mixed_texts(count, seed=4)
    async with PulseAI.from_yaml(yaml) as ai, Caches.from_config(config) as caches:
        await ai.embed(["connect"])
        cached = CachingRouter(ai.router("embedding"), caches)
        cold, _ = await timed(cached, texts)
        warm, result = await timed(cached, texts)
        assert result.cached == count
    return {
        "texts": count,
        "latency_ms": latency_ms,
        "cold_per_s": round(cold, 1),
        "warm_per_s": round(warm, 1),
        "warm_vs_cold": round(warm / cold, 1),
    }


class CachedEmbedder:
    """The indexer's Embedder over a CachingRouter."""

    def __init__(self, cached: CachingRouter, dimensions: int) -> None:
        assert cached.vector_space is not None
        self.vector_space = VectorSpace(cached.vector_space, dimensions)
        self._cached = cached

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        return await self._cached.embed(texts, CONTEXT)


def scifact(count: int) -> list[Record]:
    records = []
    with SCIFACT.open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            records.append(Record(doc["_id"], f"{doc['title']}\n{doc['text']}".strip()))
            if len(records) == count:
                break
    return records


async def bench_reindex(config: CacheConfig, directory: Path, count: int) -> dict[str, Any]:
    records = scifact(count)
    async with PulseAI.default() as ai, Caches.from_config(config) as caches:
        await ai.embed(["warm up the model"])
        router = ai.router("embedding")
        embedder = CachedEmbedder(CachingRouter(router, caches), router.candidates[0].model.dimensions or 0)
        seconds: dict[str, float] = {}
        first = EmbeddedVectorStore(directory / f"vectors-{uuid.uuid4().hex[:6]}", optimize_after=10**9)
        second = EmbeddedVectorStore(directory / f"vectors-{uuid.uuid4().hex[:6]}", optimize_after=10**9)
        try:
            # first: cold cache, empty store; unchanged: the same store again; rebuild: warm cache, empty store
            for phase, store, new in (("first", first, count), ("unchanged", first, 0), ("rebuild", second, count)):
                started = time.perf_counter()
                report = await Indexer(embedder, store).index("bench", "scifact", records)
                seconds[phase] = time.perf_counter() - started
                assert report.new == min(new, len(records)) and report.failed == 0, report
        finally:
            await first.close()
            await second.close()
    return {
        "records": len(records),
        "first_index_s": round(seconds["first"], 2),
        "unchanged_s": round(seconds["unchanged"], 3),
        "rebuild_s": round(seconds["rebuild"], 2),
        "reindex_unchanged_speedup": round(seconds["first"] / seconds["unchanged"], 1),
        "rebuild_from_cache_speedup": round(seconds["first"] / seconds["rebuild"], 1),
    }


def start_server(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency_ms / 1000)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


async def redis_reachable(url: str) -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def clean_redis(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=10_000, help="remote texts")
    parser.add_argument("--local-texts", type=int, default=2_000, help="local (and mixed) texts")
    parser.add_argument("--scifact-records", type=int, default=5_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--redis-url", default=os.environ.get("PULSE_AI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    report: dict[str, Any] = {}
    server, base_url = start_server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for backend in args.backends.split(","):
                prefix = f"pulse-ai-bench:{uuid.uuid4().hex[:8]}:"
                if backend == "redis" and not asyncio.run(redis_reachable(args.redis_url)):
                    report[backend] = {"skipped": f"no Redis answers at {args.redis_url.split('@')[-1]}"}
                    continue
                try:
                    config = cache_config(backend, Path(tmp), args.redis_url, prefix)
                    local, mixed = asyncio.run(bench_local(config, args.local_texts))
                    config = cache_config(backend, Path(tmp), args.redis_url, prefix)
                    remote = asyncio.run(bench_remote(config, base_url, args.texts, args.latency_ms))
                    config = cache_config(backend, Path(tmp), args.redis_url, prefix)
                    reindex = asyncio.run(bench_reindex(config, Path(tmp), args.scifact_records))
                finally:
                    if backend == "redis":
                        asyncio.run(clean_redis(args.redis_url, prefix))
                report[backend] = {
                    "local": local,
                    "remote": remote,
                    "mixed": mixed,
                    "reindex_unchanged_speedup": reindex.pop("reindex_unchanged_speedup"),
                    "reindex": reindex,
                }
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
