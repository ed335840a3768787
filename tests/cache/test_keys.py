"""Keys change with every field that changes the value, and with nothing else."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pulse_ai import GenerationParams, Message, load_config_text
from pulse_ai.cache.keys import SHARED_SCOPE, EmbeddingKeyer, generation_key, search_key
from pulse_ai.context import CallContext
from tests.cache.conftest import EMB, GEN, embed_pipeline, fakes_yaml

LOADED = load_config_text(fakes_yaml("a", "b", pipelines=embed_pipeline("a", "b")))
SPEC_A = LOADED.models[f"a/{EMB}"]
SPEC_B = LOADED.models[f"b/{EMB}"]
GEN_A = LOADED.models[f"a/{GEN}"]
GEN_B = LOADED.models[f"b/{GEN}"]


def one(keyer: EmbeddingKeyer, text: str = "hello") -> str:
    (key,) = keyer.keys([text])
    return key


def test_embedding_keys_change_with_every_field() -> None:
    base = EmbeddingKeyer.for_model(SPEC_A, CallContext("acme"))
    key = one(base)
    variants = [
        replace(base, scope="globex"),
        replace(base, scope=SHARED_SCOPE),
        replace(base, vector_space="other/model@1536/unit"),
        replace(base, model_identity="openai/text-embedding-3-large"),
        replace(base, dimensions=512),
        replace(base, normalized=False),
        replace(base, input_type="query"),
    ]
    keys = {one(v) for v in variants} | {one(base, "hello "), one(base, "Hello")}
    assert key not in keys and len(keys) == len(variants) + 2


def test_embedding_keys_ignore_request_key_pipeline_and_the_serving_provider() -> None:
    a = EmbeddingKeyer.for_model(SPEC_A, CallContext("acme"))
    same = [
        EmbeddingKeyer.for_model(SPEC_B, CallContext("acme")),  # the fallback: same vector space
        EmbeddingKeyer.for_model(SPEC_A, CallContext("acme", api_key_id="k1", pipeline="other")),
    ]
    assert {one(k) for k in same} == {one(a)}
    assert one(EmbeddingKeyer.for_model(SPEC_A, CallContext("acme"), shared=True)).split(":")[1] == SHARED_SCOPE


def test_embedding_keys_reveal_no_text() -> None:
    key = one(EmbeddingKeyer.for_model(SPEC_A, CallContext("acme")), "secret plans")
    assert "secret" not in key and key.startswith("emb:acme:")


def gkey(
    context: CallContext | None = None,
    candidates: tuple[object, ...] = (GEN_A, GEN_B),
    strategy: str = "ordered",
    messages: list[Message] | None = None,
    params: GenerationParams | None = None,
) -> str:
    return generation_key(
        context or CallContext("acme"),
        candidates,  # type: ignore[arg-type]
        strategy,
        messages or [Message(role="user", content="hi")],
        params or GenerationParams(temperature=0),
    )


def test_generation_keys_change_with_every_field_and_nothing_else() -> None:
    key = gkey()
    variants = [
        gkey(context=CallContext("globex")),
        gkey(candidates=(GEN_A,)),
        gkey(candidates=(GEN_B, GEN_A)),
        gkey(candidates=(replace(GEN_A, wire_name="gpt-4o-mini-2024"), GEN_B)),
        gkey(strategy="cheapest"),
        gkey(messages=[Message(role="system", content="hi")]),
        gkey(messages=[Message(role="user", content="hi ")]),
        gkey(params=GenerationParams(temperature=0, max_tokens=5)),
        gkey(params=GenerationParams(temperature=0, top_p=0.9)),
        gkey(params=GenerationParams(temperature=0, stop=["x"])),
        gkey(params=GenerationParams(temperature=0, seed=1)),
        gkey(params=GenerationParams(temperature=0.5)),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    assert gkey(context=CallContext("acme", api_key_id="k", pipeline="p")) == key
    assert gkey(params=GenerationParams()) == gkey(params=GenerationParams(temperature=None))


def skey(**changes: object) -> str:
    fields: dict[str, object] = {
        "tenant": "acme",
        "table": "issues",
        "version": "v1",
        "space": "s@8/unit",
        "query": "slow checkout",
        "where": {"status": "open", "priority": [1, 2]},
        "limit": 10,
        "score_threshold": 0.3,
        "hnsw_ef": None,
        "exact": False,
    }
    fields.update(changes)
    return search_key(**fields)  # type: ignore[arg-type]


def test_search_keys_change_with_every_field_and_nothing_else() -> None:
    key = skey()
    variants = [
        skey(tenant="globex"),
        skey(table="tickets"),
        skey(version="v2"),
        skey(space="t@8/unit"),
        skey(query="slow checkouts"),
        skey(query=np.ones(8)),
        skey(where={"status": "closed", "priority": [1, 2]}),
        skey(where={"status": "open", "priority": [1, 2], "x": True}),
        skey(where={"status": "open", "priority": 1}),
        skey(where=None),
        skey(limit=5),
        skey(score_threshold=None),
        skey(score_threshold=0.31),
        skey(hnsw_ef=128),
        skey(exact=True),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    assert skey(where={"priority": [1, 2], "status": "open"}) == key  # key order of the filter
    assert skey(where={}) == skey(where=None)
    assert skey(query=np.ones(8)) == skey(query=[1.0] * 8)  # a vector by its float32 values
    assert skey(where={"flag": True}) != skey(where={"flag": 1})
