"""A separate process using the embedded store, for the tests that need real processes.

python -m tests.vectors._worker write PATH LAYOUT TENANT COUNT   write COUNT records, close
python -m tests.vectors._worker hold PATH LAYOUT                 open, say "ready", wait to be killed
python -m tests.vectors._worker fill PATH LAYOUT COUNT DIMS      write, say "ready", wait to be killed
python -m tests.vectors._worker build PATH LAYOUT COUNT DIMS     write, say "building", optimize (to be killed)
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np

from pulse_ai.vectors import Layout, VectorPoint, VectorSpace
from pulse_ai.vectors.embedded import EmbeddedVectorStore

SPACE = VectorSpace("test/model@8/unit", 8)


def unit(count: int, seed: int, dims: int = 8) -> np.ndarray:
    array = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def tenant_points(tenant: str, count: int) -> list[VectorPoint]:
    array = unit(count, seed=sum(map(ord, tenant)))
    return [VectorPoint(f"{tenant}-{i}", array[i], "h", {"owner": tenant}) for i in range(count)]


async def main(command: str, path: str, layout: str, *rest: str) -> None:
    # lock_timeout: processes queue for the store instead of failing (one owner at a time)
    wait = 120.0 if command == "write" else 0.0
    store = EmbeddedVectorStore(path, layout=Layout(layout), optimize_after=10**9, lock_timeout=wait)
    if command == "write":
        tenant, count = rest[0], int(rest[1])
        await store.upsert(tenant, "issues", SPACE, tenant_points(tenant, count))
        await store.close()
        return
    if command in ("fill", "build"):
        count, dims = int(rest[0]), int(rest[1])
        space = VectorSpace(f"test/model@{dims}/unit", dims)
        array = unit(count, seed=1, dims=dims)
        points = [VectorPoint(f"r{i}", array[i], "h", {"n": i}) for i in range(count)]
        await store.upsert("acme", "issues", space, points)
        print("building" if command == "build" else "ready", flush=True)
        if command == "build":
            await store.optimize()
            print("built", flush=True)
    else:
        print("ready", flush=True)
    await asyncio.sleep(600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
