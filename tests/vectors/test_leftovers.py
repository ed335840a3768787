"""What lies in an embedded store's directory besides complete collections — interrupted creates,
collections moved aside, stray directories, edited manifests — as seen by purge_tenant and by
`pulse-ai vectors check`: removed and reported, or reported one line each; never a traceback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import qdrant_edge as edge
from typer.testing import CliRunner, Result

from pulse_ai.cli import app
from pulse_ai.errors import PurgeIncompleteError, VectorStoreError
from pulse_ai.vectors import Layout
from pulse_ai.vectors.collection import build_config, count_unlisted
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.scope import collection_name
from tests.vectors._worker import SPACE, tenant_points

LAYOUTS = [Layout.PER_TENANT_TABLE, Layout.SHARED]


async def written(path: Path, layout: Layout, *tenants: str, table: str = "issues") -> None:
    store = EmbeddedVectorStore(path, layout=layout)
    for tenant in tenants:
        await store.upsert(tenant, table, SPACE, tenant_points(tenant, 10))
    await store.close()


def directory_of(path: Path, layout: Layout, tenant: str, table: str = "issues") -> Path:
    return path / collection_name(layout, SPACE, tenant, table)


def names(path: Path) -> set[str]:
    return {entry.name for entry in path.iterdir() if not entry.name.startswith(".")}


# ---- purge_tenant ------------------------------------------------------------------------------
async def test_purge_removes_and_reports_a_tenants_directories_without_manifest(tmp_path: Path) -> None:
    layout = Layout.PER_TENANT_TABLE
    await written(tmp_path, layout, "acme", "globex")
    await written(tmp_path, layout, "acme", table="tickets")
    issues, tickets = directory_of(tmp_path, layout, "acme"), directory_of(tmp_path, layout, "acme", "tickets")
    (issues / "pulse-ai.json").unlink()  # a create interrupted before its manifest
    aside = tickets.with_name(f"{tickets.name}.incomplete-20250101T000000")
    tickets.rename(aside)  # a collection moved aside as unreadable (it had no manifest either)
    (aside / "pulse-ai.json").unlink()
    store = EmbeddedVectorStore(tmp_path, layout=layout)
    report = await store.purge_tenant("acme")
    assert sorted(report.leftovers) == sorted([issues.name, aside.name])
    assert names(tmp_path) == {directory_of(tmp_path, layout, "globex").name}
    assert await store.count("globex", "issues", SPACE) == 10
    assert await store.upsert("acme", "issues", SPACE, tenant_points("acme", 3)) == 3  # created afresh
    assert await store.count("acme", "issues", SPACE) == 3
    await store.close()


async def test_purge_deletes_a_tenants_points_from_a_shared_collection_without_manifest(tmp_path: Path) -> None:
    layout = Layout.SHARED
    await written(tmp_path, layout, "acme", "globex")
    shared = directory_of(tmp_path, layout, "acme")
    (shared / "pulse-ai.json").unlink()
    store = EmbeddedVectorStore(tmp_path, layout=layout)
    report = await store.purge_tenant("acme")
    assert report.deleted_points == {shared.name: 10} and report.leftovers == ()
    await store.close()
    assert shared.exists()  # other tenants' points are not the purge's to remove
    assert count_unlisted(shared, "acme") == 0 and count_unlisted(shared, "globex") == 10


async def test_a_leftover_the_engine_cannot_open_makes_the_purge_incomplete(tmp_path: Path) -> None:
    layout = Layout.SHARED
    await written(tmp_path, layout, "globex")
    unreadable = tmp_path / f"{directory_of(tmp_path, layout, 'acme').name}.incomplete-20250101T000000"
    unreadable.mkdir()
    (unreadable / "segments").write_text("not a shard")
    store = EmbeddedVectorStore(tmp_path, layout=layout)
    with pytest.raises(PurgeIncompleteError, match=unreadable.name):
        await store.purge_tenant("acme")
    assert await store.count("globex", "issues", SPACE) == 10
    await store.close()


# ---- vectors check -----------------------------------------------------------------------------
def check(path: Path) -> Result:
    result = CliRunner().invoke(app, ["vectors", "check", "--path", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def line_of(result: Result, name: str) -> str:
    (line,) = [line for line in result.output.splitlines() if f" {name}  " in line]
    return line


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.value for layout in LAYOUTS])
async def test_an_empty_interrupted_create_is_pending_not_damaged(layout: Layout, tmp_path: Path) -> None:
    await written(tmp_path, layout, "globex")
    never_written = directory_of(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    shard = edge.EdgeShard.create(str(never_written), build_config(SPACE.dimensions, shared=False))
    shard.close()  # killed before its manifest, with no point written
    bare = directory_of(tmp_path, Layout.PER_TENANT_TABLE, "initech")
    (bare / "segments").mkdir(parents=True)  # killed before the engine wrote a file
    result = check(tmp_path)
    assert result.exit_code == 0
    for directory in (never_written, bare):
        line = line_of(result, directory.name)
        assert line.startswith("pending ") and "will be finished on next open" in line
    store = EmbeddedVectorStore(tmp_path, layout=Layout.PER_TENANT_TABLE)  # and it is finished
    for tenant in ("acme", "initech"):
        assert await store.upsert(tenant, "issues", SPACE, tenant_points(tenant, 2)) == 2
        assert await store.count(tenant, "issues", SPACE) == 2
    await store.close()


async def test_stray_directories_are_one_line_each_and_lost_found_is_ignored(tmp_path: Path) -> None:
    await written(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    (tmp_path / "lost+found").mkdir()
    assert check(tmp_path).exit_code == 0
    for stray in ("client_stray", "client_a__b", "backup", "shared__"):
        (tmp_path / stray).mkdir()
    result = check(tmp_path)
    assert result.exit_code == 1 and "lost+found" not in result.output
    for stray in ("client_stray", "client_a__b", "backup", "shared__"):
        assert line_of(result, stray).startswith("STRAY    ")
    assert line_of(result, directory_of(tmp_path, Layout.PER_TENANT_TABLE, "acme").name).startswith("ok ")


async def test_a_collection_moved_aside_is_reported_with_what_to_reindex(tmp_path: Path) -> None:
    await written(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    directory = directory_of(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    aside = directory.with_name(f"{directory.name}.incomplete-20250101T000000")
    shutil.copytree(directory, aside)
    (aside / "pulse-ai.json").unlink()
    result = check(tmp_path)
    assert result.exit_code == 1
    assert line_of(result, aside.name).startswith("ASIDE    ")
    assert "re-index tenant 'acme', table 'issues'" in result.output


async def test_points_in_a_directory_without_manifest_are_damage(tmp_path: Path) -> None:
    await written(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    directory = directory_of(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    (directory / "pulse-ai.json").unlink()
    result = check(tmp_path)
    assert result.exit_code == 1
    assert line_of(result, directory.name).startswith("DAMAGED  ") and "10 points" in result.output


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ('"dimensions": 1e309', "dimensions"),
        ('"dimensions": -5', "dimensions"),
        ('"dimensions": 0', "dimensions"),
        ('"dimensions": 8.5', "dimensions"),
        ('"dimensions": true', "dimensions"),
        ('"layout": "sideways"', "layout"),
        ('"points": "many", "clean": true', "points"),
        ('"files": ["a"], "clean": true', "files"),
        ('"clean": "yes"', "clean"),
        (None, "JSON object"),
    ],
)
async def test_a_malformed_manifest_is_one_damaged_line_and_a_clear_error_at_open(
    tmp_path: Path, patch: str | None, named: str
) -> None:
    await written(tmp_path, Layout.PER_TENANT_TABLE, "acme", "globex")
    directory = directory_of(tmp_path, Layout.PER_TENANT_TABLE, "acme")
    manifest = directory / "pulse-ai.json"
    # JSON keeps the last of repeated keys: the patch overrides the field as written.
    manifest.write_text("[]" if patch is None else f"{manifest.read_text().rstrip()[:-1]}, {patch}}}")
    result = check(tmp_path)
    assert result.exit_code == 1
    line = line_of(result, directory.name)
    assert line.startswith("DAMAGED  ") and "manifest" in line and named in line
    assert line_of(result, directory_of(tmp_path, Layout.PER_TENANT_TABLE, "globex").name).startswith("ok ")
    store = EmbeddedVectorStore(tmp_path)
    with pytest.raises(VectorStoreError, match=rf"manifest {re.escape(str(manifest))} is damaged.*{named}"):
        await store.count("acme", "issues", SPACE)
    assert await store.count("globex", "issues", SPACE) == 10
    await store.close()
