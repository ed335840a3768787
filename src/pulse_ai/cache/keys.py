"""Cache keys: ``namespace:scope:digest``, where the digest hashes every field that changes the value.

The scope is the tenant id (a validated slug: no ``:``), or ``_shared`` for the embedding entries of a
pipeline that opted in to sharing across tenants. Keeping the scope readable in the key lets a purge
remove one tenant's entries by prefix; everything else (texts, messages, queries) is only hashed, so
a key never reveals what was asked.

Each digest is BLAKE2b-256 over length-prefixed fields, so no two field lists can encode alike.
What goes into each key, and what deliberately does not, is documented on each function.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pulse_ai.catalog import ModelSpec
from pulse_ai.context import CallContext
from pulse_ai.types import GenerationParams, Message

__all__ = [
    "SHARED_SCOPE",
    "EmbeddingKeyer",
    "Namespace",
    "digest",
    "epoch_key",
    "generation_key",
    "parse_key",
    "schema_key",
    "search_key",
    "version_key",
]

SHARED_SCOPE = "_shared"
ALL_SCOPE = "_all"  # the scope of an epoch that every tenant's entries of a level depend on
KEY_FORMAT = b"pulse-ai-cache/1"  # bumping it makes every old entry unreachable


class Namespace:
    EMBEDDINGS = "emb"
    GENERATION = "gen"
    SEARCH = "search"
    VERSION = "ver"
    SCHEMA = "schema"
    EPOCH = "epoch"


def digest(*fields: str | bytes) -> str:
    hasher = hashlib.blake2b(KEY_FORMAT, digest_size=32)
    for value in fields:
        data = value.encode("utf-8") if isinstance(value, str) else value
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def make_key(namespace: str, scope: str, hexdigest: str) -> str:
    return f"{namespace}:{scope}:{hexdigest}"


def parse_key(key: str) -> tuple[str, str]:
    """(namespace, scope) of a key."""
    namespace, scope, _ = key.split(":", 2)
    return namespace, scope


@dataclass(frozen=True)
class EmbeddingKeyer:
    """Keys of one embedding pipeline for one scope.

    Key = hash(scope, vector space id, model identity, dimensions, normalisation, input type, text).
    The candidate's ``provider/model`` ref is deliberately *not* in it: every candidate of an
    embedding pipeline produces the same vector space (the configuration refuses anything else), and
    vectors of one space are interchangeable by definition (they share a collection). Keying on the
    ref would make the cache miss exactly when it helps most (the primary is down and the fallback
    serves) and store each text once per provider. A model whose weights differ (another family, a
    ``path:`` checkpoint, another size) has another space id, so it never shares an entry.
    """

    scope: str
    vector_space: str
    model_identity: str
    dimensions: int
    normalized: bool
    input_type: str | None = None

    @classmethod
    def for_model(
        cls, model: ModelSpec, context: CallContext, *, shared: bool = False, input_type: str | None = None
    ) -> EmbeddingKeyer:
        return cls(
            SHARED_SCOPE if shared else context.tenant_id,
            model.vector_space,
            model.model_identity,
            model.dimensions or 0,
            model.normalized,
            input_type,
        )

    def prefix(self) -> bytes:
        return "\x1f".join(
            (
                self.scope,
                self.vector_space,
                self.model_identity,
                str(self.dimensions),
                "unit" if self.normalized else "raw",
                self.input_type if self.input_type is not None else "\x00none",
            )
        ).encode("utf-8")

    def keys(self, texts: Iterable[str]) -> list[str]:
        prefix = self.prefix()
        return [make_key(Namespace.EMBEDDINGS, self.scope, digest(prefix, text)) for text in texts]


def generation_key(
    context: CallContext,
    candidates: Sequence[ModelSpec],
    strategy: str,
    messages: Sequence[Message],
    params: GenerationParams,
) -> str:
    """hash(tenant, every candidate's identity in order, the strategy, the messages, the parameters).

    The answer may come from any candidate, so all of them (ref, wire name, model family) and the
    strategy that orders them are in the key: changing a pipeline's models starts a new key space.
    Messages are the normalised form (a bare prompt is one user message; content is kept exactly,
    whitespace included, since models read it). Parameters are every field of ``GenerationParams``
    (``None`` and ``GenerationParams()`` are the same call), so a field added later is keyed
    automatically. Not in the key: request id, API key id, pipeline name (two pipelines with the same
    candidates give the same answers).
    """
    models = [(spec.ref, spec.wire_name, spec.model_identity) for spec in candidates]
    body = json.dumps(
        {
            "models": models,
            "strategy": strategy,
            "messages": [(m.role, m.content) for m in messages],
            "params": params.model_dump(mode="json"),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return make_key(Namespace.GENERATION, context.tenant_id, digest(body))


def query_digest(query: str | npt.ArrayLike) -> str:
    """A query text by its text; a query vector by its float32 bytes."""
    if isinstance(query, str):
        return digest("text", query)
    array = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
    return digest("vector", str(array.shape[0]), array.tobytes())


def canonical_filter(where: Mapping[str, object] | None) -> str:
    """The filter as canonical JSON (keys sorted; booleans stay apart from integers); ``{}`` is None."""
    if not where:
        return "null"
    return json.dumps(dict(where), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def search_key(
    tenant: str,
    table: str,
    version: str,
    space: str,
    query: str | npt.ArrayLike,
    where: Mapping[str, object] | None,
    limit: int,
    score_threshold: float | None,
    hnsw_ef: int | None,
    exact: bool,
) -> str:
    """hash(tenant, table, the table's version, space, query, canonical filter, limit, threshold,
    hnsw_ef, exact). The version changes on every write to the table, so a write makes every earlier
    entry unreachable (they then age out by TTL or LRU)."""
    threshold = "none" if score_threshold is None else repr(float(score_threshold))
    if score_threshold is not None and not math.isfinite(float(score_threshold)):
        threshold = "invalid"
    return make_key(
        Namespace.SEARCH,
        tenant,
        digest(
            tenant,
            table,
            version,
            space,
            query_digest(query),
            canonical_filter(where),
            str(limit),
            threshold,
            "none" if hnsw_ef is None else str(hnsw_ef),
            "exact" if exact else "approx",
        ),
    )


def version_key(tenant: str, table: str) -> str:
    return make_key(Namespace.VERSION, tenant, digest("version", tenant, table))


def schema_key(tenant: str, table: str, space: str) -> str:
    return make_key(Namespace.SCHEMA, tenant, digest("schema", tenant, table, space))


def epoch_key(level: str, scope: str) -> str:
    """The key of the token that a clear of ``scope`` (a tenant, or ``ALL_SCOPE``) in cache level
    ``level`` replaces, so that other processes drop their in-memory copies (``level.CacheLevel``)."""
    return make_key(Namespace.EPOCH, scope, digest("epoch", level))
