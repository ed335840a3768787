"""Text that is not valid Unicode (lone surrogates), filters that are not mappings, zero vectors,
numbers beyond a float, nested keys that are not strings, a single record: each an InputError naming
what is wrong, before anything is embedded or written, on both backends and both layouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pulse_ai import InputError
from pulse_ai.types import EmbeddingResult, Usage
from pulse_ai.vectors import Indexer, Record, VectorPoint, VectorStore
from tests.vectors.conftest import BACKENDS, SPACE, make_store, vectors
from tests.vectors.test_inputs import forbid_backend_calls

LONE = "\ud800"


def point(record_id: str = "a", metadata: dict[Any, Any] | None = None) -> VectorPoint:
    return VectorPoint(record_id, vectors(1)[0], "h", metadata or {})


@pytest.mark.parametrize(
    ("record_id", "metadata", "named"),
    [
        (f"A-{LONE}", {}, r"record id"),
        ("A-\udc00", {}, r"record id"),
        ("a", {"status": LONE}, r"metadata\['status'\]"),
        ("a", {LONE: "open"}, r"metadata: the key '\\ud800'"),
        ("a", {"tags": ["ok", f"x{LONE}"]}, r"metadata\['tags'\]\[1\]"),
        ("a", {"m": {"deep": {LONE: 1}}}, r"metadata\['m'\]\['deep'\]: the key"),
    ],
)
async def test_lone_surrogates_in_points_are_input_errors_naming_the_field(
    store: VectorStore, record_id: str, metadata: dict[str, Any], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_backend_calls(store, monkeypatch)
    with pytest.raises(InputError, match=rf"{named}.*lone surrogate"):
        await store.upsert("acme", "issues", SPACE, [point("first"), point(record_id, metadata)])


async def test_lone_surrogates_in_ids_filters_and_names_are_refused_before_any_backend_call(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.upsert("acme", "issues", SPACE, [point("a", {"status": "open"})])
    forbid_backend_calls(store, monkeypatch)
    query = vectors(1)[0]
    with pytest.raises(InputError, match=r"where\['status'\].*lone surrogate"):
        await store.search("acme", "issues", SPACE, query, where={"status": LONE})
    with pytest.raises(InputError, match=r"where\['status'\]\[1\].*lone surrogate"):
        await store.search("acme", "issues", SPACE, query, where={"status": ["open", LONE]})
    with pytest.raises(InputError, match=r"record_ids\[1\]: the record id.*lone surrogate"):
        await store.delete("acme", "issues", SPACE, ["a", LONE])
    with pytest.raises(InputError, match=r"record_ids\[0\]: the record id.*lone surrogate"):
        await store.stored_states("acme", "issues", SPACE, [LONE])
    with pytest.raises(InputError, match=r"^tenant "):
        await store.count(f"acme{LONE}", "issues", SPACE)
    with pytest.raises(InputError, match=r"^table "):
        await store.count("acme", f"issues{LONE}", SPACE)
    with pytest.raises(InputError, match=r"^tenant "):
        await store.purge_tenant(LONE)


@pytest.mark.parametrize(
    "metadata",
    [{"m": {1: "a"}}, {"m": {1: "a", "b": 2}}, {"m": [{2: "x"}]}, {"m": {None: 1}}, {3: "top"}],
    ids=["int-key", "mixed-keys", "in-a-list", "none-key", "top-level"],
)
async def test_metadata_keys_must_be_strings_at_every_level(
    store: VectorStore, metadata: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_backend_calls(store, monkeypatch)
    with pytest.raises(InputError, match="keys must be strings"):
        await store.upsert("acme", "issues", SPACE, [point("a", metadata)])


@pytest.mark.parametrize("where", [0, [], "", (), False, ["status"], 1.5], ids=repr)
async def test_a_filter_is_a_mapping_or_none(
    store: VectorStore, where: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.upsert("acme", "issues", SPACE, [point("a", {"status": "open"})])
    forbid_backend_calls(store, monkeypatch)
    with pytest.raises(InputError, match="where must be a mapping"):
        await store.search("acme", "issues", SPACE, vectors(1)[0], where=where)  # type: ignore[arg-type]


async def test_an_empty_mapping_or_none_is_no_filter(store: VectorStore) -> None:
    await store.upsert("acme", "issues", SPACE, [point("a", {"status": "open"})])
    for where in (None, {}):
        assert [h.record_id for h in await store.search("acme", "issues", SPACE, vectors(1)[0], where=where)] == ["a"]


async def test_a_threshold_beyond_a_float_is_an_input_error(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.upsert("acme", "issues", SPACE, [point("a")])
    forbid_backend_calls(store, monkeypatch)
    for threshold in (10**400, -(10**400)):
        with pytest.raises(InputError, match="score_threshold must be a finite number"):
            await store.search("acme", "issues", SPACE, vectors(1)[0], score_threshold=threshold)


async def test_zero_vectors_are_refused_in_queries_and_writes(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.upsert("acme", "issues", SPACE, [point("a")])
    forbid_backend_calls(store, monkeypatch)
    with pytest.raises(InputError, match="all zeros"):
        await store.search("acme", "issues", SPACE, np.zeros(8, np.float32))
    with pytest.raises(InputError, match="vector 1 is all zeros"):
        await store.upsert("acme", "issues", SPACE, [point("b"), VectorPoint("c", [0.0] * 8, "h")])


class Recorder:
    """An Embedder that records what it was asked to embed."""

    vector_space = SPACE

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        self.calls.append(list(texts))
        return EmbeddingResult(vectors(len(texts), seed=len(self.calls)), "recorder", SPACE.id, Usage())


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{layout.value}" for b, layout in BACKENDS])
async def indexer(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    store = make_store(*request.param, tmp_path / "vectors")
    yield Indexer(Recorder(), store)
    await store.close()


def embedded(indexer: Indexer) -> list[list[str]]:
    assert isinstance(indexer.embedder, Recorder)
    return indexer.embedder.calls


@pytest.mark.parametrize(
    ("records", "named"),
    [
        ([Record("a", "fine"), Record("b", f"bad {LONE} text")], r"records\[1\]\.text \('b'\)"),
        ([Record("a", "fine"), Record(f"b{LONE}", "text")], r"records\[1\]: the record id"),
        ([{"id": "a", "text": "t", "metadata": {"s": LONE}}], r"records\[0\]\.metadata\['s'\]"),
    ],
)
async def test_the_indexer_refuses_lone_surrogates_before_embedding(
    indexer: Indexer, records: list[Any], named: str
) -> None:
    with pytest.raises(InputError, match=rf"{named}.*lone surrogate"):
        await indexer.index("acme", "issues", records)
    assert embedded(indexer) == [] and await indexer.count("acme", "issues") == 0


async def test_a_single_record_is_refused_not_iterated(indexer: Indexer) -> None:
    for single in (Record("a", "text"), {"id": "a", "text": "text"}, 7):
        with pytest.raises(InputError, match="must be a sequence of records"):
            await indexer.index("acme", "issues", single)  # type: ignore[arg-type]
    assert embedded(indexer) == [] and await indexer.count("acme", "issues") == 0
    assert (await indexer.index("acme", "issues", [Record("a", "text")])).new == 1


@pytest.mark.parametrize(
    ("query", "options"),
    [
        (f"slow {LONE}", {}),
        ("slow", {"where": {"status": LONE}}),
        ("slow", {"where": 0}),
        ("slow", {"where": []}),
        ("slow", {"score_threshold": 10**400}),
        ("slow", {"limit": 0}),
        ("slow", {"hnsw_ef": 0}),
    ],
    ids=["query", "where-text", "where-0", "where-list", "threshold", "limit", "hnsw_ef"],
)
async def test_a_search_is_checked_before_its_query_is_embedded(
    indexer: Indexer, query: str, options: dict[str, Any]
) -> None:
    await indexer.index("acme", "issues", [Record("a", "slow checkout")])
    before = len(embedded(indexer))
    with pytest.raises(InputError):
        await indexer.search("acme", "issues", query, **options)
    assert len(embedded(indexer)) == before  # nothing was embedded (or paid for)
