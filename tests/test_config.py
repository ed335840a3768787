from __future__ import annotations

from pathlib import Path

import pytest

from pulse_ai import ConfigError, UnknownModelError, load_config, load_config_text
from pulse_ai.catalog import Capability

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
providers:
  local:
    type: sentence_transformers
    models: [{name: all-MiniLM-L6-v2}]
"""


def test_minimal_config_resolves_catalog_facts() -> None:
    loaded = load_config_text(MINIMAL)
    spec = loaded.models["local/all-MiniLM-L6-v2"]
    assert spec.dimensions == 384
    assert spec.capabilities == frozenset({Capability.EMBEDDING})
    assert spec.cost_usd(1_000_000) == 0.0
    assert spec.vector_space == "sentence-transformers/all-MiniLM-L6-v2@384/unit"


def test_example_configs_validate_without_any_api_key() -> None:
    env: dict[str, str] = {}
    full = load_config(REPO / "examples" / "pulse-ai.yaml", environ=env)
    assert "openai/text-embedding-3-small" in full.models
    assert full.models["azure/text-embedding-3-small"].wire_name == "emb-small"
    assert full.models["openai/text-embedding-3-large"].dimensions == 1024
    assert full.models["openai/text-embedding-3-large"].send_dimensions
    default = load_config(REPO / "src" / "pulse_ai" / "examples" / "default.yaml", environ=env)
    assert list(default.config.pipelines) == ["embedding"]


def test_interpolation_with_value_default_and_missing_variable() -> None:
    text = """
providers:
  oa:
    type: openai
    api_key: ${KEY}
    base_url: ${BASE:-http://localhost:9/v1}
    models: [{name: gpt-4o-mini}]
"""
    loaded = load_config_text(text, environ={"KEY": "sk-from-env"})
    provider = loaded.config.providers["oa"]
    assert provider.api_key.get_secret_value() == "sk-from-env"  # type: ignore[union-attr]
    assert provider.base_url == "http://localhost:9/v1"  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="conf.yaml", environ={})
    message = str(info.value)
    assert "KEY" in message and "conf.yaml" in message and "providers.oa.api_key" in message


def test_unknown_key_names_file_and_path() -> None:
    text = MINIMAL + "    colour: blue\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="bad.yaml")
    assert "bad.yaml" in str(info.value)
    assert "providers.local.colour" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("providers: {}", "providers"),
        ("[1, 2]", "top level"),
        ("providers: {a: {type: nope, models: [{name: x}]}}", "providers.a"),
        ("providers:\n  oa: {type: openai, models: [{name: gpt-4o-mini}]}", "providers.oa.api_key"),
        ("providers:\n  'bad name!': {type: sentence_transformers, models: [{name: all-MiniLM-L6-v2}]}", "bad name"),
        (
            "providers:\n  l: {type: sentence_transformers, max_concurrency: 0, models: [{name: all-MiniLM-L6-v2}]}",
            "providers.l.max_concurrency",
        ),
        ("providers: {l: {type: sentence_transformers, models: []}}", "providers.l.models"),
        ("key: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_files_are_refused_with_a_located_message(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert fragment in str(info.value)


def test_unknown_model_is_refused_unless_described() -> None:
    text = """
providers:
  gw:
    type: custom_gateway
    base_url: http://localhost:1/v1
    models: [{name: mystery-embedder}]
"""
    with pytest.raises(UnknownModelError) as info:
        load_config_text(text)
    assert "mystery-embedder" in str(info.value)
    assert "capabilities" in str(info.value) and "providers.gw.models[0]" in str(info.value)

    described = text.replace(
        "[{name: mystery-embedder}]",
        "[{name: mystery-embedder, capabilities: [embedding], dimensions: 768, max_input_tokens: 512,"
        " input_price_per_million: 0.01}]",
    )
    spec = load_config_text(described).models["gw/mystery-embedder"]
    assert spec.dimensions == 768
    assert spec.max_inputs_per_request == 64  # documented conservative default, not another model's
    assert spec.price_table_version == "config"


def test_dimensions_override_only_where_the_model_allows_it() -> None:
    ok = load_config_text(
        "providers:\n  oa: {type: openai, api_key: k, models: [{name: text-embedding-3-small, dimensions: 256}]}"
    )
    assert ok.models["oa/text-embedding-3-small"].dimensions == 256
    with pytest.raises(ConfigError, match="fixed size"):
        load_config_text(
            "providers:\n  oa: {type: openai, api_key: k, models: [{name: text-embedding-ada-002, dimensions: 256}]}"
        )
    with pytest.raises(ConfigError, match="at most 1536"):
        load_config_text(
            "providers:\n  oa: {type: openai, api_key: k, models: [{name: text-embedding-3-small, dimensions: 4096}]}"
        )


def test_secrets_never_appear_in_repr_or_errors() -> None:
    secret = "sk-very-secret-value-123"
    text = f"""
providers:
  oa:
    type: openai
    api_key: {secret}
    timeout: -1
    models: [{{name: gpt-4o-mini}}]
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert secret not in str(info.value)
    assert "providers.oa.timeout" in str(info.value)

    loaded = load_config_text(text.replace("timeout: -1", "timeout: 3"))
    for shown in (repr(loaded), repr(loaded.config), str(loaded.config), repr(loaded.config.providers["oa"])):
        assert secret not in shown
    # a secret of the wrong type is reported by path only
    with pytest.raises(ConfigError) as info:
        load_config_text(text.replace(f"api_key: {secret}", "api_key: [sk-listed-secret-999]"))
    assert "sk-listed-secret-999" not in str(info.value)


def test_duplicate_model_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeated"):
        load_config_text(
            "providers: {l: {type: sentence_transformers,"
            " models: [{name: all-MiniLM-L6-v2}, {name: all-MiniLM-L6-v2}]}}"
        )


def test_local_models_cannot_be_priced() -> None:
    with pytest.raises(ConfigError, match="cost 0"):
        load_config_text(
            "providers: {l: {type: sentence_transformers,"
            " models: [{name: all-MiniLM-L6-v2, input_price_per_million: 1.0}]}}"
        )


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_vector_store_section() -> None:
    default = load_config_text(MINIMAL).config.vector_store
    assert (default.backend, default.layout, default.path) == ("embedded", "per_tenant_table", "./data/vectors")
    with pytest.raises(ConfigError, match=r"vector_store: .*needs exactly one of `url`"):
        load_config_text(MINIMAL + "vector_store: {backend: qdrant}\n")
    with pytest.raises(ConfigError, match=r"vector_store\.layout"):
        load_config_text(MINIMAL + "vector_store: {layout: sideways}\n")
    server = load_config_text(
        MINIMAL + "vector_store: {backend: qdrant, url: 'http://qdrant:6333', api_key: qd-secret-42, layout: shared}\n"
    )
    assert "qd-secret-42" not in repr(server.config.vector_store)


async def test_open_vector_store_builds_the_configured_backend(tmp_path: Path) -> None:
    from pulse_ai.vectors import open_vector_store
    from pulse_ai.vectors.embedded import EmbeddedVectorStore
    from pulse_ai.vectors.server import QdrantServerStore

    embedded = load_config_text(MINIMAL + f"vector_store: {{path: '{tmp_path}', layout: shared}}\n")
    store = open_vector_store(embedded.config.vector_store)
    assert isinstance(store, EmbeddedVectorStore) and store.layout.value == "shared"
    await store.close()
    server = load_config_text(MINIMAL + "vector_store: {backend: qdrant, location: ':memory:'}\n")
    store = open_vector_store(server.config.vector_store)
    assert isinstance(store, QdrantServerStore) and store.layout.value == "per_tenant_table"
    await store.close()
