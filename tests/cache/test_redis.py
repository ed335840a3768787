"""The Redis backend: shared by replicas, cleared by tenant, and degrading to misses when Redis stops.

The shared Redis (``PULSE_AI_TEST_REDIS_URL``) is used under a key prefix of this test run's own;
the stop test starts (and kills) a Redis of its own on a free port.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from pulse_ai import PulseAI
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.config import CacheConfig
from tests.cache.conftest import ctx, expected, fake

ROOT = Path(__file__).resolve().parents[2]


def redis_config(url: str, prefix: str, backend: str = "redis", **extra: object) -> CacheConfig:
    levels = {name: {"backend": backend} for name in ("embeddings", "generation", "search")}
    return CacheConfig(enabled=True, redis_url=url, key_prefix=prefix, schema={"backend": backend}, **levels, **extra)  # type: ignore[arg-type]


@pytest.fixture
def shared_redis(redis_url: str, key_prefix: str) -> Iterator[tuple[str, str]]:
    yield redis_url, key_prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{key_prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_replicas_share_entries_and_a_purge_removes_the_tenants(
    shared_redis: tuple[str, str], ai: PulseAI
) -> None:
    url, prefix = shared_redis
    config = redis_config(url, prefix)
    async with Caches.from_config(config) as one, Caches.from_config(config) as two:
        await CachingRouter(ai.router("embedding"), one).embed(["a", "b"], ctx("acme"))
        await CachingRouter(ai.router("embedding"), one).embed(["a"], ctx("globex"))
        other = CachingRouter(ai.router("embedding"), two)
        result = await other.embed(["b", "a"], ctx("acme"))
        assert result.cached == 2 and {a.cache_level for a in result.attempts} == {"redis"}
        np.testing.assert_allclose(result.vectors, expected(["b", "a"]), atol=1e-6)
        assert await two.purge_tenant("acme") == 2
        assert (await other.embed(["a"], ctx("acme"))).cached == 0
        assert (await other.embed(["a"], ctx("globex"))).cached == 1
        usage = {(u.level, u.tenant): u.entries for u in await two.usage()}
        assert usage == {("embeddings", "acme"): 1, ("embeddings", "globex"): 1}


def test_another_process_reads_what_this_one_wrote(shared_redis: tuple[str, str]) -> None:
    url, prefix = shared_redis

    def worker() -> dict[str, int]:
        command = [sys.executable, "-m", "tests.cache._worker", "redis", f"{url} {prefix}", "acme", "120", "t"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
        result: dict[str, int] = json.loads(done.stdout)
        return result

    assert worker() == {"requests": 3, "cached": 0}
    assert worker() == {"requests": 0, "cached": 120}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(pidfile: Path) -> None:
    """Kill the Redis this test started (by its pid, as a crash would) and wait until it is gone."""
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", str(tmp_path / "redis.pid"), "--dir", str(tmp_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0", tmp_path / "redis.pid"
    stop(tmp_path / "redis.pid")


async def test_redis_stopped_mid_run_degrades_to_misses_with_one_warning(
    own_redis: tuple[str, Path], ai: PulseAI, caplog: pytest.LogCaptureFixture
) -> None:
    url, pidfile = own_redis
    async with Caches.from_config(redis_config(url, "t:", retry_after=0)) as caches:
        cached = CachingRouter(ai.router("embedding"), caches)
        await cached.embed(["warm"], ctx())
        assert (await cached.embed(["warm"], ctx())).attempts[0].cache_level == "redis"
        stop(pidfile)  # Redis stops
        caplog.set_level(logging.WARNING, logger="pulse_ai.cache")
        for i in range(3):
            result = await cached.embed(["warm", f"cold {i}"], ctx())
            np.testing.assert_allclose(result.vectors, expected(["warm", f"cold {i}"]), atol=1e-6)
            assert result.cached == 0
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "redis" in warnings[0].getMessage()
        assert caches.stats.total(tier="redis").errors >= 3
        assert len(fake(ai, "a").requests("embed")) == 4


async def test_calls_go_on_when_redis_stops_without_serving_what_may_have_been_purged(
    own_redis: tuple[str, Path], ai: PulseAI
) -> None:
    url, pidfile = own_redis
    async with Caches.from_config(redis_config(url, "t:", backend="memory+redis")) as caches:
        cached = CachingRouter(ai.router("embedding"), caches)
        await cached.embed(["warm"], ctx())
        assert (await cached.embed(["warm"], ctx())).cached == 1
        stop(pidfile)
        # With Redis gone, this process cannot see a purge made by another one: its memory tier is
        # not served either, and the call is answered by the provider, complete.
        result = await cached.embed(["warm", "cold"], ctx())
        assert result.cached == 0 and result.vectors.shape[0] == 2
        assert np.allclose(result.vectors, expected(["warm", "cold"]))
