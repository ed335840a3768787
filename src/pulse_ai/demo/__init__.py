"""The main job (``pulse-ai demo``, ``make run``): embed, index two tenants' records, search them."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources

import numpy as np

from pulse_ai.client import PulseAI
from pulse_ai.vectors import Record

__all__ = ["SIMILARITY_TEXTS", "demo_records", "run_demo"]

SIMILARITY_TEXTS = [
    "The checkout page times out when the cart has more than 50 items",
    "Payment fails with a timeout for large shopping carts",
    "Add dark mode to the analytics dashboard",
    "Dashboard charts should support a dark colour theme",
    "Upgrade the PostgreSQL driver to fix a connection leak",
    "Database connections are not returned to the pool after errors",
]

SEARCHES = [
    ("issues", "users get logged out too soon", None),
    ("issues", "a report or page is very slow", None),
    ("issues", "numbers shown in the wrong currency or time zone", {"status": "open"}),
    ("pull_requests", "fix for slow large carts or slow queries", None),
]


def demo_records() -> dict[tuple[str, str], list[Record]]:
    """The bundled records, by (tenant, table)."""
    grouped: dict[tuple[str, str], list[Record]] = defaultdict(list)
    text = resources.files("pulse_ai.demo").joinpath("records.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            grouped[(row["tenant"], row["table"])].append(Record(row["id"], row["text"], row["metadata"]))
    return dict(grouped)


async def run_demo(ai: PulseAI, echo: Callable[[str], None]) -> None:
    result = await ai.embed(SIMILARITY_TEXTS)
    echo(f"== Embeddings: {result.model}, {result.dimensions} dimensions, space {result.vector_space}")
    echo(f"   {len(result)} texts, {result.usage.input_tokens} tokens, cost ${result.usage.cost_usd:.6f}")
    similarity = result.vectors @ result.vectors.T
    masked = similarity - 2 * np.eye(len(SIMILARITY_TEXTS))
    for i, text in enumerate(SIMILARITY_TEXTS):
        j = int(np.argmax(masked[i]))
        row = " ".join(f"{value:5.2f}" for value in similarity[i])
        echo(f"   [{i}] {row}   closest [{j}] {similarity[i, j]:.2f}  {text}")

    store = ai.vector_store()
    grouped = demo_records()
    platform = await ai.platform()
    echo(f"\n== Tenants in {platform.db.display_url}")
    for tenant in sorted({tenant for tenant, _ in grouped}):
        created = await platform.tenants.create(tenant, tenant.replace("-", " ").title())
        echo(f"   {created.id:<12} {created.display_name} ({created.status.value})")
    echo(f"\n== Indexing into {store!r}")
    started = datetime.now(UTC)
    for (tenant, table), records in grouped.items():
        indexer = ai.tenant(tenant).indexer()
        report = await indexer.index(table, records)
        echo(
            f"   {tenant}/{table}: {len(records)} records -> new {report.new}, updated {report.updated}, "
            f"unchanged {report.unchanged}, failed {report.failed}; stored {await indexer.count(table)}"
        )

    tenants = sorted({tenant for tenant, _ in grouped})
    own_ids = {
        (tenant, table): {record.record_id for record in records} for (tenant, table), records in grouped.items()
    }
    echo("\n== Semantic search (each tenant searches only its own records)")
    leaks = 0
    for table, query, where in SEARCHES:
        condition = f"  where {where}" if where else ""
        echo(f'\n   "{query}" in {table}{condition}')
        for tenant in tenants:
            hits = await ai.tenant(tenant).indexer().search(table, query, limit=3, where=where)
            leaks += sum(1 for hit in hits if hit.record_id not in own_ids[(tenant, table)])
            for hit in hits:
                text = _text_of(grouped, tenant, table, hit.record_id)
                echo(f"     {tenant:<12} {hit.score:5.3f}  {hit.record_id:<11} {text}")
    verdict = "no hit crossed tenants" if leaks == 0 else f"{leaks} HITS CROSSED TENANTS"
    echo(f"\n== Isolation: {verdict}.")
    echo("\n== Usage of this run, per tenant (the ledger: one row per model call)")
    for tenant in tenants:
        for summary in await ai.tenant(tenant).usage.summary(since=started, by="model"):
            echo(
                f"   {tenant:<12} {summary.key:<28} {summary.requests:>3} calls {summary.input_tokens:>6} tokens "
                f"${summary.billed_usd:f} billed, p50 {summary.p50_latency_ms:.0f} ms"
            )
    echo("   Run it again: every record is unchanged and nothing is embedded twice.")


def _text_of(grouped: dict[tuple[str, str], list[Record]], tenant: str, table: str, record_id: str) -> str:
    for record in grouped.get((tenant, table), []):
        if record.record_id == record_id:
            return record.text if len(record.text) <= 70 else record.text[:67] + "..."
    return "?"
