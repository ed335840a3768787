"""Configuration of the backends, and the layering: config does not import vectors; the indexer
needs only an Embedder."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import pulse_ai.config
from pulse_ai.config import load_config_text
from pulse_ai.errors import ConfigError
from pulse_ai.types import EmbeddingResult, Usage
from pulse_ai.vectors import Indexer, Record, VectorSpace, open_vector_store
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.server import QdrantServerStore
from tests.vectors.conftest import SPACE, vectors

PROVIDERS = "providers: {local: {type: sentence_transformers, models: [{name: all-MiniLM-L6-v2}]}}\n"


def store_config(block: str) -> str:
    return f"{PROVIDERS}vector_store: {block}\n"


async def test_the_qdrant_backend_keeps_vectors_in_a_local_directory(tmp_path: Path) -> None:
    loaded = load_config_text(store_config(f"{{backend: qdrant, path: '{tmp_path}', layout: shared}}"))
    store = open_vector_store(loaded.config.vector_store)
    assert isinstance(store, QdrantServerStore)
    from tests.vectors.test_store import points

    await store.upsert("acme", "issues", SPACE, points(["a", "b"], vectors(2)))
    await store.close()
    again = open_vector_store(loaded.config.vector_store)
    assert await again.count("acme", "issues", SPACE) == 2
    await again.close()


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ("{backend: qdrant, location: /data/qdrant}", "location"),
        ("{backend: qdrant, url: 'qdrant:6333'}", "http:// or https:// URL with a host"),
        ("{backend: qdrant, url: 'http://'}", "with a host"),
        ("{backend: qdrant, url: 'ftp://qdrant'}", "http:// or https:// URL"),
        ("{backend: qdrant}", "exactly one of"),
        ("{backend: qdrant, url: 'http://qdrant:6333', path: /data}", "got url, path"),
        ("{backend: embedded, url: 'http://qdrant:6333'}", "embedded one takes `path`"),
    ],
)
def test_url_location_and_path_mean_one_thing_each(block: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config_text(store_config(block))


def test_a_server_url_is_accepted() -> None:
    loaded = load_config_text(store_config("{backend: qdrant, url: 'https://qdrant.internal:6333'}"))
    assert loaded.config.vector_store.url == "https://qdrant.internal:6333"
    assert load_config_text(store_config("{}")).config.vector_store.path == "./data/vectors"


def test_config_does_not_import_the_vector_store() -> None:
    # `import pulse_ai.config` runs the package's __init__ (the facade), so read the module itself.
    tree = ast.parse(Path(pulse_ai.config.__file__).read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert [m for m in imported if m and m.startswith("pulse_ai.vectors")] == []


class WordCounter:
    """The smallest Embedder: no PulseAI, no provider."""

    vector_space = SPACE

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        rows = np.array([[len(t), t.count(" "), 1, 0, 0, 0, 0, 1] for t in texts], dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return EmbeddingResult(rows, "counter", SPACE.id, Usage())


async def test_an_indexer_needs_only_an_embedder(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    indexer = Indexer(WordCounter(), store)
    report = await indexer.index("acme", "issues", [Record("a", "one two three"), Record("b", "x")])
    assert report.new == 2 and await indexer.count("acme", "issues") == 2
    assert (await indexer.search("acme", "issues", "one two three", limit=1))[0].record_id == "a"
    assert (await indexer.purge_tenant("acme")).dropped_collections
    await store.close()


def test_an_embedder_of_another_space_is_refused_at_search() -> None:
    assert VectorSpace("x", 8) != SPACE
