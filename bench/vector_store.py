"""Vector store throughput and tenant-filtered search latency, embedded engine vs qdrant-client local mode.

Random unit vectors spread over N tenants, written through the tenant-scoped store API (validation,
point ids, payloads included), then single-tenant searches. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulse_ai.vectors import Layout, VectorPoint, VectorSpace, VectorStore  # noqa: E402
from pulse_ai.vectors.embedded import EmbeddedVectorStore  # noqa: E402
from pulse_ai.vectors.server import QdrantServerStore  # noqa: E402

BATCH = 2000


def unit_vectors(count: int, dims: int, seed: int) -> np.ndarray:
    array = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


async def measure(store: VectorStore, points: int, tenants: int, dims: int, queries: int) -> dict[str, float]:
    space = VectorSpace(f"bench/random@{dims}/unit", dims)
    vectors = unit_vectors(points, dims, seed=1)
    per_tenant = np.array_split(np.arange(points), tenants)
    batches = [  # the caller's input, built before the clock starts
        (
            f"tenant-{tenant_index:04d}",
            [
                VectorPoint(f"rec-{i}", vectors[i], "hash", {"n": int(i), "kind": "issue" if i % 2 else "pr"})
                for i in chunk
            ],
        )
        for tenant_index, indices in enumerate(per_tenant)
        for chunk in np.array_split(indices, max(1, -(-len(indices) // BATCH)))
    ]
    started = time.perf_counter()
    for tenant, batch in batches:
        await store.upsert(tenant, "records", space, batch)
    upsert_seconds = time.perf_counter() - started

    started = time.perf_counter()
    await store.optimize()
    optimize_seconds = time.perf_counter() - started

    rng = np.random.default_rng(2)
    query_vectors = unit_vectors(queries, dims, seed=3)
    latencies = []
    for vector in query_vectors:
        tenant = f"tenant-{int(rng.integers(tenants)):04d}"
        started = time.perf_counter()
        hits = await store.search(tenant, "records", space, vector, limit=10)
        latencies.append((time.perf_counter() - started) * 1000)
        assert hits, "a tenant-filtered search found nothing"
    return {
        "points": points,
        "upsert_per_s": round(points / upsert_seconds, 1),
        "optimize_s": round(optimize_seconds, 2),
        "queries": queries,
        "search_p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "search_p99_ms": round(float(np.percentile(latencies, 99)), 3),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    layout = Layout(args.layout)
    report: dict[str, object] = {
        "points": args.points,
        "tenants": args.tenants,
        "dims": args.dims,
        "layout": layout.value,
        "optimize_after": args.optimize_after,
    }
    with tempfile.TemporaryDirectory() as directory:
        embedded = EmbeddedVectorStore(Path(directory), layout=layout, optimize_after=args.optimize_after)
        try:
            report["embedded"] = await measure(embedded, args.points, args.tenants, args.dims, args.queries)
        finally:
            await embedded.close()
    local_mode = QdrantServerStore(location=":memory:", layout=layout)
    try:
        report["qdrant_local_mode"] = await measure(
            local_mode, args.local_mode_points, args.tenants, args.dims, args.local_mode_queries
        )
    finally:
        await local_mode.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--layout", choices=[layout.value for layout in Layout], default=Layout.SHARED.value)
    parser.add_argument(
        "--local-mode-points", type=int, default=100_000, help="qdrant-client's local mode is pure Python"
    )
    parser.add_argument("--local-mode-queries", type=int, default=200)
    parser.add_argument(
        "--optimize-after", type=int, default=20_000, help="embedded: written points that make an index build due"
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
