"""The ``cache:`` configuration section, the pipelines' opt-ins, and ``pulse-ai cache stats|clear``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pulse_ai import ConfigError, PulseAI, load_config_text
from pulse_ai.cache import Caches, CachingRouter
from pulse_ai.cli import app
from tests.cache.conftest import ctx, embed_pipeline, fakes_yaml, gen_pipeline


def test_defaults_memory_in_front_of_sqlite_beside_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULSE_AI_CACHE", raising=False)  # the suite turns caches off by default
    loaded = load_config_text(fakes_yaml("a", pipelines=embed_pipeline("a")))
    cache = loaded.config.cache
    assert cache.enabled and cache.embeddings.backend == "memory+sqlite" and cache.generation.ttl == 3600
    caches = Caches.from_config(cache, database_url=loaded.config.database.url)
    assert caches.embeddings is not None and [t.name for t in caches.embeddings.tiers] == ["memory", "sqlite"]
    database_file = Path(loaded.config.database.url.split(":///", 1)[1])
    cache_file = Path(caches.embeddings.back.backend.path)  # type: ignore[attr-defined]
    assert cache_file == database_file.parent / "pulse-ai-cache.db"  # beside the database


def test_every_level_can_be_turned_off() -> None:
    yaml = fakes_yaml("a", pipelines=embed_pipeline("a")) + (
        "cache: {embeddings: {backend: off}, generation: {backend: memory, ttl: 60}, search: {backend: off}, "
        "schema: {backend: off}}\n"
    )
    caches = Caches.from_config(load_config_text(yaml).config.cache)
    assert list(caches.levels) == ["generation"] and caches.vector_cache() is None
    off = load_config_text(fakes_yaml("a", pipelines=embed_pipeline("a")) + "cache: {enabled: false}\n")
    assert Caches.from_config(off.config.cache).levels == {}


def test_redis_url_is_interpolated_secret_and_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_REDIS", "redis://:hunter2@127.0.0.1:6379/0")
    base = fakes_yaml("a", pipelines=embed_pipeline("a"))
    loaded = load_config_text(base + 'cache: {redis_url: "${CACHE_REDIS}", embeddings: {backend: memory+redis}}\n')
    assert "hunter2" not in repr(loaded.config.cache)
    with pytest.raises(ConfigError, match="redis_url"):
        load_config_text(base + "cache: {embeddings: {backend: redis}}\n")
    with pytest.raises(ConfigError, match=r"cache\.embeddings\.backend"):
        load_config_text(base + "cache: {embeddings: {backend: memcached}}\n")


def test_pipeline_opt_ins_fit_their_kind() -> None:
    with pytest.raises(ConfigError, match="embedding pipelines only"):
        load_config_text(fakes_yaml("a", pipelines=gen_pipeline("a", cache="share_across_tenants: true")))
    with pytest.raises(ConfigError, match="generation pipelines only"):
        load_config_text(fakes_yaml("a", pipelines=embed_pipeline("a", cache="cache_generation: true")))


def test_stats_and_clear_on_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "pulse-ai.yaml"
    config.write_text(
        fakes_yaml("a", pipelines=embed_pipeline("a")) + f"cache: {{sqlite_path: {tmp_path / 'cache.db'}}}\n"
    )

    async def fill() -> None:
        async with PulseAI.from_config(config) as ai:
            loaded = ai.loaded.config
            async with Caches.from_config(loaded.cache, database_url=loaded.database.url) as caches:
                cached = CachingRouter(ai.router("embedding"), caches)
                for tenant in ("acme", "globex"):
                    await cached.embed(["one", "two"], ctx(tenant))
                await cached.embed(["one"], ctx("acme"))

    asyncio.run(fill())
    runner = CliRunner()
    shown = runner.invoke(app, ["cache", "stats", "--config", str(config), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    rows = {(r["level"], r["tier"], r["tenant"]): r for r in json.loads(shown.output)["rows"]}
    acme = rows[("embeddings", "sqlite", "acme")]
    assert acme["entries"] == 2 and acme["bytes"] > 2 * 1536 * 4 and acme["misses"] == 2
    assert rows[("embeddings", "memory", "acme")]["hits"] == 1
    assert float(rows[("embeddings", "memory", "acme")]["avoided_usd"]) > 0
    table = runner.invoke(app, ["cache", "stats", "--config", str(config)])
    assert table.exit_code == 0 and "globex" in table.output and "one" not in table.output

    cleared = runner.invoke(app, ["cache", "clear", "--tenant", "acme", "--config", str(config)])
    assert cleared.exit_code == 0 and "removed 2 entries" in cleared.output
    after = json.loads(runner.invoke(app, ["cache", "stats", "--config", str(config), "--format", "json"]).output)
    assert {r["tenant"] for r in after["rows"]} == {"globex"}
    everything = runner.invoke(app, ["cache", "clear", "--level", "embeddings", "--config", str(config)])
    assert "removed 2 entries" in everything.output
    bad = runner.invoke(app, ["cache", "clear", "--level", "nope", "--config", str(config)])
    assert bad.exit_code == 1 and "unknown cache level" in bad.output
