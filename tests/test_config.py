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
    assert spec.price_table_version == "config:gw/mystery-embedder"


def test_dimensions_override_only_where_the_model_allows_it() -> None:
    ok = load_config_text(
        "providers:\n  oa: {type: openai, api_key: sk-12345, models: [{name: text-embedding-3-small, dimensions: 256}]}"
    )
    assert ok.models["oa/text-embedding-3-small"].dimensions == 256
    with pytest.raises(ConfigError, match="fixed size"):
        load_config_text(
            "providers:\n  oa: {type: openai, api_key: sk-12345,"
            " models: [{name: text-embedding-ada-002, dimensions: 256}]}"
        )
    with pytest.raises(ConfigError, match="at most 1536"):
        load_config_text(
            "providers:\n  oa: {type: openai, api_key: sk-12345,"
            " models: [{name: text-embedding-3-small, dimensions: 4096}]}"
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


# --- numbers: no inf/nan, booleans are not numbers ----------------------------------------------------------


def _openai(extra: str = "", model: str = "") -> str:
    return f"providers:\n  oa: {{type: openai, api_key: sk-12345, {extra}models: [{{name: gpt-4o-mini{model}}}]}}\n"


PIPELINE = "pipelines:\n  p: {{kind: generation, candidates: [oa/gpt-4o-mini], {extra}}}\n"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (_openai(extra="timeout: .inf, "), "providers.oa.timeout"),
        (_openai(extra="timeout: .nan, "), "providers.oa.timeout"),
        (_openai(extra="timeout: 1e999, "), "providers.oa.timeout"),
        (_openai(extra="") + PIPELINE.format(extra="breaker: {cooldown_seconds: .inf}"), "cooldown_seconds"),
        (_openai(model=", input_price_per_million: .inf"), "providers.oa.models[0].input_price_per_million"),
    ],
)
def test_infinite_and_nan_numbers_are_refused(text: str, path: str) -> None:
    with pytest.raises(ConfigError, match="finite") as info:
        load_config_text(text)
    assert path in str(info.value)


def test_an_infinite_number_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"providers\.oa\.timeout: .*finite"):
        load_config_text(_openai(extra="timeout: '${T}', "), environ={"T": "inf"})
    loaded = load_config_text(
        _openai(extra="timeout: '${T}', max_concurrency: '${C}', "), environ={"T": "2.5", "C": "4"}
    )
    provider = loaded.config.providers["oa"]
    assert (provider.timeout, provider.max_concurrency) == (2.5, 4)  # numbers from variables still work


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("version: true\n" + _openai(extra=""), "version"),
        (_openai(extra="max_concurrency: true, "), "providers.oa.max_concurrency"),
        (_openai(extra="max_retries: false, "), "providers.oa.max_retries"),
        (_openai(extra="timeout: true, "), "providers.oa.timeout"),
        (_openai(model=", max_output_tokens: true"), "providers.oa.models[0].max_output_tokens"),
        (_openai(extra="") + PIPELINE.format(extra="breaker: {window: true}"), "pipelines.p.breaker.window"),
        (_openai(extra="") + PIPELINE.format(extra="explore_rate: true"), "pipelines.p.explore_rate"),
        (
            "providers: {l: {type: sentence_transformers, batch_size: true, models: [{name: all-MiniLM-L6-v2}]}}",
            "providers.l.batch_size",
        ),
    ],
)
def test_booleans_are_not_numbers(text: str, path: str) -> None:
    with pytest.raises(ConfigError, match="not a boolean") as info:
        load_config_text(text)
    assert path in str(info.value)


# --- secrets: not empty, sendable in an HTTP header ------------------------------------------------------------

GATEWAY = """
providers:
  gw:
    type: custom_gateway
    base_url: http://127.0.0.1:8000/v1
    {key}
    models: [{{name: llama, capabilities: [generation], max_input_tokens: 8, max_output_tokens: 8,
              input_price_per_million: 0, output_price_per_million: 0}}]
"""


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (_openai(extra="").replace("api_key: sk-12345", "api_key: '${OPENAI_API_KEY:-}'"), "providers.oa.api_key"),
        (_openai(extra="").replace("api_key: sk-12345", "api_key: ''"), "providers.oa.api_key"),
        (
            "providers:\n  az: {type: azure_openai, endpoint: 'https://x.openai.azure.com', api_key: '${AZ:-}',"
            " api_version: v, models: [{name: gpt-4o-mini}]}\n",
            "providers.az.api_key",
        ),
        (GATEWAY.format(key="api_key: ${GATEWAY_TOKEN:-}"), "providers.gw.api_key"),
        (GATEWAY.format(key="headers: {X-Team: '${TEAM:-}'}"), "providers.gw.headers.X-Team"),
    ],
)
def test_empty_secrets_are_refused(text: str, path: str) -> None:
    with pytest.raises(ConfigError, match="empty") as info:
        load_config_text(text, environ={})
    assert path in str(info.value)


def test_an_empty_vector_store_key_is_left_to_the_vector_store() -> None:
    loaded = load_config_text(MINIMAL + "vector_store: {api_key: '${QDRANT_API_KEY:-}'}\n", environ={})
    assert loaded.config.vector_store.backend == "embedded"


@pytest.mark.parametrize(
    ("key", "path", "value"),
    [
        ("api_key: sk-ünïcode-secret-55", "providers.gw.api_key", "sk-ünïcode-secret-55"),
        ("api_key: '${TOKEN}'", "providers.gw.api_key", "sk-from-env-with-newline"),
        ("headers: {X-Team: 'équipe-secrète-66'}", "providers.gw.headers.X-Team", "équipe-secrète-66"),
        ("headers: {'X Team': v}", "providers.gw.headers", "X Team"),
        ("headers: {'X-Équipe': v}", "providers.gw.headers", "X-Équipe"),
        ("auth_header: 'X:Key'", "providers.gw.auth_header", "X:Key"),
        ("auth_prefix: 'Bearér '", "providers.gw.auth_prefix", "Bearér"),
    ],
)
def test_header_parts_an_http_request_cannot_carry_are_refused_without_the_value(
    key: str, path: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(GATEWAY.format(key=key), environ={"TOKEN": "sk-from-env-with-newline\n"})
    message = str(info.value)
    assert path in message and "ASCII" in message
    if "headers: {'" not in key:  # a header's name is not a secret (and is part of the key path)
        assert value not in message and value.strip()[:6] not in message


def test_openai_and_azure_keys_must_be_sendable_too() -> None:
    with pytest.raises(ConfigError, match=r"providers\.oa\.api_key: .*ASCII") as info:
        load_config_text(_openai(extra="").replace("api_key: sk-12345", "api_key: 'sk-tab\tsecret-77'"))
    assert "secret-77" not in str(info.value)


# --- addresses ------------------------------------------------------------------------------------------------


def _with_url(key: str, url: str) -> str:
    if key == "base_url":
        return _openai(f"base_url: '{url}', ")
    if key == "endpoint":
        return (
            f"providers:\n  az: {{type: azure_openai, endpoint: '{url}', api_key: sk-12345, api_version: v,"
            " models: [{name: gpt-4o-mini}]}\n"
        )
    return GATEWAY.replace("http://127.0.0.1:8000/v1", f"'{url}'").format(key="")


@pytest.mark.parametrize(
    "url",
    [
        "localhost:8000/v1",
        "api.openai.com/v1",
        "ftp://example.com",
        "http://",
        "https:///v1",
        "http//gateway",
        "http://host:99999/v1",
        "http://exa mple.com",
        " ",
    ],
)
@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("base_url", "providers.oa.base_url"),
        ("endpoint", "providers.az.endpoint"),
        ("gateway", "providers.gw.base_url"),
    ],
)
def test_urls_must_be_http_with_a_host(url: str, key: str, path: str) -> None:
    with pytest.raises(ConfigError, match="http") as info:
        load_config_text(_with_url(key, url))
    assert path in str(info.value)


def test_good_urls_are_kept_as_written() -> None:
    text = _openai(extra="base_url: 'https://user@gw.example.com:8443/v1/', ")
    assert load_config_text(text).config.providers["oa"].base_url == "https://user@gw.example.com:8443/v1/"  # type: ignore[union-attr]


# --- breaker --------------------------------------------------------------------------------------------------


def test_a_breaker_that_could_never_open_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"pipelines\.p\.breaker: .*min_calls \(30\).*window \(20\)"):
        load_config_text(_openai(extra="") + PIPELINE.format(extra="breaker: {window: 20, min_calls: 30}"))
    ok = load_config_text(_openai(extra="") + PIPELINE.format(extra="breaker: {window: 5, min_calls: 5}"))
    assert ok.config.pipelines["p"].breaker.min_calls == 5
