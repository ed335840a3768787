"""Crashes, kills, full disks and damaged files on the embedded store; index builds in the background."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as edge
from typer.testing import CliRunner

from pulse_ai.cli import app
from pulse_ai.errors import VectorStoreError
from pulse_ai.vectors import Layout, VectorPoint, VectorSpace
from pulse_ai.vectors import disk as disk_module
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from tests.vectors._worker import SPACE, tenant_points, unit

ROOT = Path(__file__).resolve().parents[2]
# Big enough for the engine to build an HNSW index (over its 10 MB indexing threshold).
BIG, DIMS = 8000, 384


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.vectors._worker", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def only_collection(path: Path) -> Path:
    (directory,) = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return directory


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((only_collection(path) / "pulse-ai.json").read_text())  # type: ignore[no-any-return]


def indexed_vectors(path: Path) -> int:
    shard = edge.EdgeShard.load(str(only_collection(path)))
    try:
        return int(shard.info().indexed_vectors_count)
    finally:
        shard.close()


def kill_when(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdout is not None and process.stdout.readline().strip() == line
    process.send_signal(signal.SIGKILL)
    process.wait()


def temp_segments(path: Path) -> list[Path]:
    return list(path.glob("*/temp_segments/*"))


def wait_for_temp_segments(path: Path, process: subprocess.Popen[str]) -> Path | None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = temp_segments(path)
        if found:
            return found[0]
        time.sleep(0.01)
    return None


def truncate_an_id_tracker_of(path: Path, prefix: str) -> Path:
    damaged = next(d for d in path.iterdir() if d.name.startswith(prefix))
    victim = next(p for p in sorted(damaged.rglob("*")) if p.is_file() and "id_tracker" in p.name)
    os.truncate(victim, victim.stat().st_size // 2)
    return damaged


async def test_a_build_left_due_by_a_killed_process_resumes_on_open(tmp_path: Path) -> None:
    kill_when(worker("fill", str(tmp_path), "shared", str(BIG), str(DIMS)), "ready")
    assert manifest(tmp_path)["optimize_due"] is True  # persisted before the writes, not only in memory
    store = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED, optimize_idle=0)
    space = VectorSpace(f"test/model@{DIMS}/unit", DIMS)
    assert await store.count("acme", "issues", space) == BIG  # every acknowledged write survived
    await store.idle()  # the build resumed by itself, in the background
    await store.close()
    assert manifest(tmp_path)["optimize_due"] is False
    assert indexed_vectors(tmp_path) == BIG


async def test_a_kill_inside_a_build_leaves_no_orphan_and_the_build_resumes(tmp_path: Path) -> None:
    builder = worker("build", str(tmp_path), "shared", str(BIG), str(DIMS))
    assert builder.stdout is not None and builder.stdout.readline().strip() == "building"
    temp = wait_for_temp_segments(tmp_path, builder)
    os.kill(builder.pid, signal.SIGKILL)
    builder.wait()
    if temp is None:
        pytest.skip("the build finished before it could be caught half-way")
    assert manifest(tmp_path)["optimize_due"] is True
    store = EmbeddedVectorStore(tmp_path, layout=Layout.SHARED, optimize_idle=3600)
    await store.optimize()  # an explicit build after the crash does the work
    assert temp_segments(tmp_path) == []  # the orphan was removed at open
    await store.close()
    assert manifest(tmp_path)["optimize_due"] is False
    assert indexed_vectors(tmp_path) == BIG


async def test_bulk_ingestion_builds_the_index_once_after_the_writes(tmp_path: Path) -> None:
    # A pause long enough that no loaded machine takes it between two write batches ...
    store = EmbeddedVectorStore(tmp_path, optimize_after=100, optimize_idle=600)
    array = unit(5 * store.upsert_batch_size, seed=3)
    batch = [VectorPoint(f"r{i}", vector, "h") for i, vector in enumerate(array)]
    await store.upsert("acme", "issues", SPACE, batch)  # five write batches, each past optimize_after
    (collection,) = store._collections.values()
    assert collection.builds == 0 and collection.scheduled is not None  # scheduled, not run per batch
    # ... then the pause is over at once: the timer fires now instead of in ten minutes.
    assert collection.timer is not None
    collection.timer.cancel()
    store._builds.optimize_idle = 0
    store._builds._when_idle(collection)
    await store.idle()
    assert collection.builds == 1
    assert await store.count("acme", "issues", SPACE) == len(batch)
    await store.close()


async def test_writes_are_refused_before_the_engine_when_the_disk_is_nearly_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedVectorStore(tmp_path)
    await store.upsert("acme", "issues", SPACE, tenant_points("acme", 5))
    monkeypatch.setattr(disk_module, "free_bytes", lambda _path: 5 * 2**20)
    with pytest.raises(VectorStoreError, match=r"not enough free disk space.*MiB needed") as refused:
        await store.upsert("acme", "issues", SPACE, tenant_points("acme", 50))
    assert str(tmp_path) in str(refused.value)
    with pytest.raises(VectorStoreError, match="not enough free disk space"):
        await store.upsert("globex", "issues", SPACE, tenant_points("globex", 5))  # a new collection too
    monkeypatch.undo()
    assert await store.count("acme", "issues", SPACE) == 5
    await store.close()


class Panic(BaseException):
    """What a Rust panic is in Python: a BaseException that `except Exception` does not catch."""


async def test_an_engine_panic_becomes_a_vector_store_error_naming_collection_and_path(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    await store.upsert("acme", "issues", SPACE, tenant_points("acme", 5))
    (collection,) = store._collections.values()

    class Exploding:
        def __getattr__(self, name: str) -> Any:
            def explode(*_args: object) -> None:
                raise Panic("index out of bounds")

            return explode

    real, collection.shard = collection.shard, Exploding()
    with pytest.raises(VectorStoreError, match="index out of bounds") as failed:
        await store.search("acme", "issues", SPACE, tenant_points("acme", 1)[0].vector)
    assert collection.name in str(failed.value) and str(collection.directory) in str(failed.value)
    collection.shard = real
    await store.close()


async def test_a_truncated_manifest_is_a_vector_store_error_naming_its_path(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    await store.upsert("acme", "issues", SPACE, tenant_points("acme", 5))
    await store.close()
    path = only_collection(tmp_path) / "pulse-ai.json"
    path.write_text(path.read_text()[:20])
    reopened = EmbeddedVectorStore(tmp_path)
    with pytest.raises(VectorStoreError, match=r"manifest .* is damaged") as damaged:
        await reopened.count("acme", "issues", SPACE)
    assert str(path) in str(damaged.value)
    await reopened.close()


async def test_a_damaged_collection_is_found_at_open_and_by_vectors_check(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    await store.upsert("acme", "issues", SPACE, tenant_points("acme", 50))
    await store.upsert("globex", "issues", SPACE, tenant_points("globex", 5))
    await store.close()
    assert CliRunner().invoke(app, ["vectors", "check", "--path", str(tmp_path)]).exit_code == 0
    damaged = truncate_an_id_tracker_of(tmp_path, "client_acme")

    reopened = EmbeddedVectorStore(tmp_path)
    with pytest.raises(VectorStoreError, match=r"damaged: files truncated or resized.*re-index"):
        await reopened.count("acme", "issues", SPACE)
    assert await reopened.count("globex", "issues", SPACE) == 5  # the others are served
    await reopened.close()

    result = CliRunner().invoke(app, ["vectors", "check", "--path", str(tmp_path)])
    assert result.exit_code == 1
    assert f"DAMAGED  {damaged.name}" in result.output and "ok       client_globex" in result.output
    assert "re-index tenant 'acme', table 'issues'" in result.output


async def test_vectors_check_refuses_a_store_in_use(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    result = CliRunner().invoke(app, ["vectors", "check", "--path", str(tmp_path)])
    assert result.exit_code == 1 and "in use by" in result.output
    await store.close()
