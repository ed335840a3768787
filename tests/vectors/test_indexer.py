"""The indexer: incremental by content hash, idempotent, failures reported, search by text or vector."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pulse_ai import InputError, PulseAI
from pulse_ai.errors import VectorSpaceError
from pulse_ai.vectors import Indexer, Record
from tests.fakes.openai_server import FakeOpenAIServer, Fault, fake_vector

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact" / "corpus.jsonl"


def remote_config(server: FakeOpenAIServer, path: Path, layout: str = "shared") -> str:
    return f"""
providers:
  oa:
    type: openai
    api_key: sk-indexer
    base_url: {server.base_url}
    max_retries: 0
    models: [{{name: text-embedding-3-small, dimensions: 8}}]
pipelines:
  embedding: {{kind: embedding, candidates: [oa/text-embedding-3-small]}}
vector_store: {{backend: embedded, path: "{path}", layout: {layout}}}
"""


@pytest.fixture
async def remote(fake: FakeOpenAIServer, tmp_path: Path) -> AsyncIterator[tuple[PulseAI, Indexer]]:
    ai = PulseAI.from_yaml(remote_config(fake, tmp_path / "vectors"))
    indexer = ai.indexer()
    indexer.embed_batch_size = 4
    yield ai, indexer
    await ai.aclose()


def records(count: int, prefix: str = "text") -> list[Record]:
    return [Record(f"id-{i}", f"{prefix} number {i}", {"n": i}) for i in range(count)]


def embedded_texts(server: FakeOpenAIServer) -> list[str]:
    return [text for request in server.requests for text in request.body["input"]]


async def test_index_is_incremental(remote: tuple[PulseAI, Indexer], fake: FakeOpenAIServer) -> None:
    _, indexer = remote
    first = await indexer.index("acme", "issues", records(10))
    assert (first.new, first.updated, first.unchanged, first.failed) == (10, 0, 0, 0)
    assert len(embedded_texts(fake)) == 10

    fake.reset()
    again = await indexer.index("acme", "issues", records(10))
    assert (again.new, again.updated, again.unchanged) == (0, 0, 10)
    assert embedded_texts(fake) == []  # nothing unchanged is embedded again

    changed = records(12)
    changed[3] = Record("id-3", "a rewritten text", {"n": 3})
    changed[5] = Record("id-5", "text number 5", {"n": 5, "status": "closed"})  # metadata only
    report = await indexer.index("acme", "issues", changed)
    assert (report.new, report.updated, report.unchanged) == (2, 2, 8)
    assert sorted(embedded_texts(fake)) == sorted(["a rewritten text", "text number 10", "text number 11"])
    assert await indexer.count("acme", "issues") == 12
    hit = (await indexer.search("acme", "issues", fake_vector("text number 5", 8), limit=1))[0]
    assert hit.record_id == "id-5" and hit.metadata == {"n": 5, "status": "closed"}
    hit = (await indexer.search("acme", "issues", "a rewritten text", limit=1))[0]
    assert hit.record_id == "id-3" and hit.score == pytest.approx(1.0, abs=1e-5)


async def test_a_failed_batch_is_reported_and_a_rerun_converges(
    remote: tuple[PulseAI, Indexer], fake: FakeOpenAIServer, fake2: FakeOpenAIServer, tmp_path: Path
) -> None:
    _, indexer = remote
    fake.script(Fault.ok(), Fault.http(503), Fault.ok())
    report = await indexer.index("acme", "issues", records(12))
    assert (report.new, report.failed) == (8, 4)
    assert [f.record_id for f in report.failures] == ["id-4", "id-5", "id-6", "id-7"]
    assert all("ProviderUnavailableError" in f.reason for f in report.failures)
    assert await indexer.count("acme", "issues") == 8  # nothing of the failed batch, no zero vectors

    rerun = await indexer.index("acme", "issues", records(12))  # the interrupted run, run again
    assert (rerun.new, rerun.unchanged, rerun.failed) == (4, 8, 0)
    assert await indexer.count("acme", "issues") == 12

    clean_ai = PulseAI.from_yaml(remote_config(fake2, tmp_path / "clean"))
    clean = clean_ai.indexer()
    await clean.index("acme", "issues", records(12))
    for i in range(12):
        query = fake_vector(f"text number {i}", 8)
        ours = await indexer.search("acme", "issues", query, limit=12)
        theirs = await clean.search("acme", "issues", query, limit=12)
        assert [(h.record_id, round(h.score, 5), h.metadata) for h in ours] == [
            (h.record_id, round(h.score, 5), h.metadata) for h in theirs
        ]
    await clean_ai.aclose()


async def test_a_text_the_provider_cannot_take_fails_alone(remote: tuple[PulseAI, Indexer]) -> None:
    _, indexer = remote
    batch = records(4)
    batch[2] = Record("huge", "word " * 9000)
    report = await indexer.index("acme", "issues", batch)
    assert report.new == 3 and [f.record_id for f in report.failures] == ["huge"]
    assert "8191" in report.failures[0].reason


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ([{"text": "no id"}], "has no id"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "repeats the id"),
        ([{"id": "a", "text": "   "}], "no text"),
        ([{"id": "a", "text": 5}], "no text"),
        ([{"id": "a", "text": "x", "colour": "red"}], "unknown keys"),
        ([{"id": "a", "text": "x", "metadata": "nope"}], "must be a mapping"),
        ([{"id": "a", "text": "x", "metadata": {"v": float("nan")}}], "JSON"),
        ([{"id": "", "text": "x"}], "empty"),
        ([{"id": 3.5, "text": "x"}], "must be a string"),
        (["just a string"], "not a Record"),
        ("a string", "sequence"),
    ],
)
async def test_bad_records_are_refused_before_anything_is_written(
    remote: tuple[PulseAI, Indexer], fake: FakeOpenAIServer, bad: object, fragment: str
) -> None:
    _, indexer = remote
    good = [{"id": "ok", "text": "fine"}]
    with pytest.raises(InputError, match=fragment):
        await indexer.index("acme", "issues", [*good, *bad] if isinstance(bad, list) else bad)  # type: ignore[arg-type]
    assert fake.requests == []
    assert await indexer.count("acme", "issues") == 0


async def test_records_as_mappings_and_empty_input(remote: tuple[PulseAI, Indexer]) -> None:
    _, indexer = remote
    report = await indexer.index("acme", "issues", [{"record_id": 7, "text": "integer id", "metadata": {"a": 1}}])
    assert report.new == 1
    assert (await indexer.search("acme", "issues", "integer id", limit=1))[0].record_id == "7"
    empty = await indexer.index("acme", "issues", [])
    assert empty.total == 0


async def test_search_with_a_vector_of_another_size_is_refused(remote: tuple[PulseAI, Indexer]) -> None:
    _, indexer = remote
    await indexer.index("acme", "issues", records(2))
    with pytest.raises(VectorSpaceError):
        await indexer.search("acme", "issues", np.ones(384, dtype=np.float32))


async def test_changing_the_embedding_model_uses_a_new_collection(fake: FakeOpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "vectors"
    async with PulseAI.from_yaml(remote_config(fake, path)) as ai:
        await ai.indexer().index("acme", "issues", records(3))
    bigger = remote_config(fake, path).replace("dimensions: 8", "dimensions: 16")
    async with PulseAI.from_yaml(bigger) as ai:
        indexer = ai.indexer()
        assert await indexer.count("acme", "issues") == 0  # the 8-dimension vectors are not mixed in
        with pytest.raises(VectorSpaceError, match="@8/unit"):
            await indexer.search("acme", "issues", "text number 1")
        await indexer.index("acme", "issues", records(3))
        assert await indexer.count("acme", "issues") == 3
        assert len(await ai.vector_store()._list_collections()) == 2


@pytest.mark.skipif(not SCIFACT.exists(), reason="../shared/data/scifact is not beside this checkout")
async def test_end_to_end_with_the_real_model_finds_the_obvious_match(tmp_path: Path) -> None:
    documents = [json.loads(line) for line, _ in zip(SCIFACT.open(encoding="utf-8"), range(300), strict=False)]
    config = (
        "providers: {local: {type: sentence_transformers, models: [{name: all-MiniLM-L6-v2}]}}\n"
        "pipelines: {embedding: {kind: embedding, candidates: [local/all-MiniLM-L6-v2]}}\n"
        f"vector_store: {{backend: embedded, path: '{tmp_path}', layout: per_tenant_table}}\n"
    )
    async with PulseAI.from_yaml(config) as ai:
        indexer = ai.indexer()
        report = await indexer.index(
            "lab", "papers", [Record(d["_id"], f"{d['title']}\n{d['text']}", {"title": d["title"]}) for d in documents]
        )
        assert (report.new, report.failed) == (300, 0)
        for document in documents[::30]:
            hits = await indexer.search("lab", "papers", document["title"], limit=3)
            assert hits[0].record_id == document["_id"], document["title"]
        assert await indexer.search("other-lab", "papers", documents[0]["title"]) == []
