from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pulse_ai.vectors import Layout, VectorSpace, VectorStore
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from pulse_ai.vectors.server import QdrantServerStore

SPACE = VectorSpace("test/model@8/unit", 8)
BACKENDS = [
    ("embedded", Layout.PER_TENANT_TABLE),
    ("embedded", Layout.SHARED),
    ("qdrant", Layout.PER_TENANT_TABLE),
    ("qdrant", Layout.SHARED),
]


def make_store(backend: str, layout: Layout, path: Path) -> VectorStore:
    if backend == "embedded":
        return EmbeddedVectorStore(path, layout=layout, optimize_after=50)
    return QdrantServerStore(location=":memory:", layout=layout)


@pytest.fixture(params=BACKENDS, ids=[f"{b}-{layout.value}" for b, layout in BACKENDS])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    backend, layout = request.param
    opened = make_store(backend, layout, tmp_path / "vectors")
    yield opened
    await opened.close()


def vectors(count: int, seed: int = 0, dims: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.standard_normal((count, dims)).astype(np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)
