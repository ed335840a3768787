"""``pulse-ai cache stats`` and ``pulse-ai cache clear``: what the caches hold and saved, and emptying them.

Both read the ``cache:`` section of the configuration (the offline default without ``--config``).
Counters (hits, misses, errors, corrupt entries, bytes written, avoided cost) are those every process
wrote to the persistent tiers (SQLite, Redis); memory tiers belong to their process and show nothing
here.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from pulse_ai.cache.caches import LEVELS, TIERS, Caches
from pulse_ai.config import LoadedConfig, load_config, load_config_text
from pulse_ai.errors import PulseAIError

app = typer.Typer(no_args_is_help=True, help="The caches: embeddings, generation answers, search, schema.")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A YAML configuration (default: the offline one).")
]


def _loaded(config: Path | None) -> LoadedConfig:
    if config is not None:
        return load_config(config)
    text = resources.files("pulse_ai").joinpath("examples", "default.yaml").read_text(encoding="utf-8")
    return load_config_text(text, source="pulse_ai/examples/default.yaml")


def _caches(config: Path | None) -> Caches:
    loaded = _loaded(config)
    return Caches.from_config(loaded.config.cache, database_url=loaded.config.database.url)


async def _stats(caches: Caches) -> dict[str, Any]:
    try:
        usage = await caches.usage()
        counters = await caches.counters()
    finally:
        await caches.aclose()
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for held in usage:
        row = rows.setdefault((held.level, held.tier, held.tenant), {})
        row["entries"], row["bytes"] = held.entries, held.bytes
    for key, counts in counters.items():
        row = rows.setdefault((key.cache, key.tier, key.tenant), {})
        row.update(counts.as_dict())
        row["avoided_usd"] = str(counts.avoided_usd)
        del row["avoided_nanos"]
    degraded = [tier.name for tier in caches.tiers if tier.degraded]
    return {
        "levels": {name: [t.name for t in level.tiers] for name, level in caches.levels.items()},
        "unavailable": degraded,
        "rows": [
            {"level": level, "tier": tier, "tenant": tenant, **row}
            for (level, tier, tenant), row in sorted(rows.items())
        ],
    }


@app.command("stats")
def stats(
    config: ConfigOption = None,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Entries, bytes, hits, misses, errors and avoided cost per level, tier and tenant."""
    try:
        report = asyncio.run(_stats(_caches(config)))
    except PulseAIError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    if output == "json":
        typer.echo(json.dumps(report))
        return
    for tier in report["unavailable"]:
        typer.echo(f"warning: the {tier} tier did not answer; its figures are missing", err=True)
    columns = ("level", "tier", "tenant", "entries", "bytes", "hits", "misses", "errors", "corrupt", "avoided_usd")
    typer.echo("  ".join(f"{c:<12}" for c in columns))
    for row in report["rows"]:
        typer.echo("  ".join(f"{row.get(c, 0)!s:<12}" for c in columns))
    if not report["rows"]:
        typer.echo("(nothing cached or counted yet)")


@app.command("clear")
def clear(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's entries.")] = None,
    level: Annotated[
        str | None, typer.Option(help=f"Only this level ({', '.join(LEVELS)}) or tier ({', '.join(TIERS)}).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Remove cached entries (and their counters): everything, one tenant's, one level's or one tier's."""

    async def run(caches: Caches) -> int:
        try:
            return await caches.clear(tenant=tenant, level=level)
        finally:
            await caches.aclose()

    try:
        caches = _caches(config)
        removed = asyncio.run(run(caches))
    except PulseAIError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    for tier in caches.tiers:
        if tier.degraded:
            typer.echo(f"warning: the {tier.name} tier did not answer; nothing was removed there", err=True)
    typer.echo(f"removed {removed} entries")
