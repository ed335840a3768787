"""YAML configuration -> typed pydantic models, with ``${VAR}`` interpolation and cross-checks.

Every model is ``extra="forbid"``: an unknown key is an error that names its path. Secrets are
``SecretStr`` and never appear in a repr, a log line or an error message (validation errors are
reported by key path and reason only, never with the offending value). Reading the YAML (bounds,
duplicate keys, interpolation) is :mod:`pulse_ai.yaml_loader`; the checked field types (finite
numbers that are not booleans, sendable secrets, http(s) URLs) are :mod:`pulse_ai.config_types`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pulse_ai.catalog import (
    SUPPORTED_PRECISIONS,
    Capability,
    Catalog,
    ModelSpec,
    Tier,
    default_catalog,
    resolve_backend,
)
from pulse_ai.config_cache import CacheConfig, CacheLevelConfig, PipelineCacheConfig
from pulse_ai.config_types import (
    ApiKey,
    Count,
    Fraction,
    HeaderName,
    HeaderText,
    HttpUrl,
    NonNegativeSeconds,
    NotBool,
    OptionalApiKey,
    Price,
    Retries,
    Secret,
    Timeout,
    url_passwords,
    url_without_password,
)
from pulse_ai.errors import ConfigError
from pulse_ai.redaction import register_secrets
from pulse_ai.yaml_loader import interpolate, join_key, load_yaml, read_config_file

__all__ = [
    "AzureOpenAIConfig",
    "BreakerConfig",
    "CacheConfig",
    "CacheLevelConfig",
    "CustomGatewayConfig",
    "DatabaseConfig",
    "ErrorKind",
    "FakeConfig",
    "FallbackConfig",
    "ModelConfig",
    "OpenAIConfig",
    "PipelineCacheConfig",
    "PipelineConfig",
    "ProviderConfig",
    "PulseConfig",
    "SentenceTransformersConfig",
    "Strategy",
    "VectorStoreConfig",
    "interpolate",
    "load_config",
    "load_config_text",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """One model of a provider; every fact here overrides the catalog's."""

    name: str = Field(min_length=1)
    deployment: str | None = None
    path: str | None = None
    dimensions: Count | None = None
    capabilities: list[Capability] | None = None
    normalized: bool | None = None
    max_input_tokens: Count | None = None
    max_inputs_per_request: Count | None = None
    max_tokens_per_request: Count | None = None
    max_output_tokens: Count | None = None
    input_price_per_million: Price | None = None
    output_price_per_million: Price | None = None
    tier: Tier | None = None
    # A model identity only (dimensions and normalisation are always added to the space id)
    space: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    # Local models only: how the model runs (None: the measured default, DEFAULT_LOCAL_BACKEND, on a
    # CPU; torch fp32 on a GPU or where the default cannot run)
    backend: Literal["torch", "onnx", "openvino"] | None = None
    precision: Literal["fp32", "bf16", "int8"] | None = None
    # The BPE encoding that counts this model's tokens, for a model the catalog does not know (a
    # gateway serving an OpenAI model under its own name); without one, tokens are estimated.
    encoding: Literal["cl100k_base", "o200k_base"] | None = None


class _ProviderBase(_Strict):
    models: list[ModelConfig] = Field(min_length=1)
    timeout: Timeout = 30.0
    max_retries: Retries = 3
    max_concurrency: Count = 8

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        return models


class SentenceTransformersConfig(_ProviderBase):
    type: Literal["sentence_transformers"]
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # None: batches cut by tokens (about 1,024 on a CPU, 16,384 on a GPU); a number: a fixed batch size
    batch_size: Count | None = None
    max_concurrency: Count = 1
    # Where exported (ONNX/OpenVINO, quantized) models are kept; None: $PULSE_AI_MODEL_CACHE or
    # ~/.cache/pulse-ai/models
    cache_dir: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _backends_fit(self) -> SentenceTransformersConfig:
        for index, model in enumerate(self.models):
            backend, precision = resolve_backend(model.backend, model.precision)
            if precision not in SUPPORTED_PRECISIONS[backend]:
                raise ValueError(
                    f"models[{index}].precision: `backend: {backend}` does not run `precision: {precision}` "
                    f"(it runs {', '.join(sorted(SUPPORTED_PRECISIONS[backend]))})"
                )
            configured = model.backend is not None or model.precision is not None
            # unconfigured, a model runs torch fp32 on a GPU (the default backend's vector space)
            if configured and backend != "torch" and self.device in ("cuda", "mps"):
                raise ValueError(
                    f"models[{index}].backend: `backend: {backend}` runs on the CPU; use `device: cpu` "
                    "(or `auto`), or `backend: torch` on a GPU"
                )
        return self


class OpenAIConfig(_ProviderBase):
    type: Literal["openai"]
    api_key: ApiKey
    base_url: HttpUrl | None = None
    organization: str | None = None


class AzureOpenAIConfig(_ProviderBase):
    type: Literal["azure_openai"]
    endpoint: HttpUrl
    api_key: ApiKey
    api_version: str = Field(min_length=1)


class CustomGatewayConfig(_ProviderBase):
    type: Literal["custom_gateway"]
    base_url: HttpUrl
    api_key: ApiKey | None = None
    auth_header: HeaderName = "Authorization"
    auth_prefix: HeaderText = "Bearer "
    headers: dict[HeaderName, Secret] = Field(default_factory=dict)


class FakeConfig(_ProviderBase):
    """In-process fakes for tests (``pulse_ai.testing``): deterministic vectors and echo answers,
    with scriptable faults; catalog models keep their facts, so a fake can stand in for OpenAI."""

    type: Literal["fake"]
    latency: NonNegativeSeconds = 0.0


ProviderConfig = Annotated[
    SentenceTransformersConfig | OpenAIConfig | AzureOpenAIConfig | CustomGatewayConfig | FakeConfig,
    Field(discriminator="type"),
]


class Strategy(StrEnum):
    ORDERED = "ordered"
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    QUALITY = "quality"


class ErrorKind(StrEnum):
    """Error types a pipeline can fall back on; each maps to one class of ``errors.py``."""

    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"  # 5xx and connection failures
    MALFORMED = "malformed"
    BAD_REQUEST = "bad_request"
    AUTHENTICATION = "authentication"


class FallbackConfig(_Strict):
    enabled: bool = True
    on_errors: list[ErrorKind] = Field(
        default_factory=lambda: [
            ErrorKind.RATE_LIMITED,
            ErrorKind.TIMEOUT,
            ErrorKind.UNAVAILABLE,
            ErrorKind.MALFORMED,
        ]
    )


class BreakerConfig(_Strict):
    window: Count = 20
    min_calls: Count = 5
    failure_rate: Fraction = Field(default=0.5, gt=0.0, le=1.0)
    cooldown_seconds: NonNegativeSeconds = 30.0

    @model_validator(mode="after")
    def _can_open(self) -> BreakerConfig:
        if self.min_calls > self.window:
            raise ValueError(
                f"min_calls ({self.min_calls}) is greater than window ({self.window}), so the breaker "
                "could never open; make min_calls at most window"
            )
        return self


class PipelineConfig(_Strict):
    kind: Capability
    candidates: list[str] = Field(min_length=1)
    strategy: Strategy = Strategy.ORDERED
    explore_rate: Fraction = Field(default=0.05, ge=0.0, le=1.0)
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    cache: PipelineCacheConfig = Field(default_factory=PipelineCacheConfig)

    @model_validator(mode="after")
    def _cache_options_fit_kind(self) -> PipelineConfig:
        if self.cache.share_across_tenants and self.kind is not Capability.EMBEDDING:
            raise ValueError("cache.share_across_tenants applies to embedding pipelines only")
        if self.cache.cache_generation and self.kind is not Capability.GENERATION:
            raise ValueError("cache.cache_generation applies to generation pipelines only")
        return self


class VectorStoreConfig(_Strict):
    """Where vectors live. ``embedded`` needs nothing running; ``qdrant`` is qdrant-client.

    With ``backend: qdrant`` exactly one of: ``url`` (a Qdrant server or cluster, ``http(s)://host``),
    ``path`` (qdrant-client's local mode, kept in that directory) or ``location: ":memory:"``
    (local mode in memory, gone at exit). With ``embedded``, ``path`` is the store's directory."""

    backend: Literal["embedded", "qdrant"] = "embedded"
    layout: Literal["per_tenant_table", "shared"] = "per_tenant_table"
    path: str | None = None
    optimize_after: Count = 20_000
    url: HttpUrl | None = None
    location: Literal[":memory:"] | None = None
    api_key: OptionalApiKey | None = None
    prefer_grpc: bool = False
    timeout: Count = 10

    @model_validator(mode="before")
    @classmethod
    def _embedded_default_path(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("backend", "embedded") == "embedded" and data.get("path") is None:
            return {**data, "path": "./data/vectors"}
        return data

    @model_validator(mode="after")
    def _one_address(self) -> VectorStoreConfig:
        if self.backend == "embedded":
            if self.url or self.location:
                raise ValueError("`url` and `location` are for the qdrant backend; the embedded one takes `path`")
        else:
            given = [key for key in ("url", "path", "location") if getattr(self, key)]
            if len(given) != 1:
                raise ValueError(
                    "the qdrant backend needs exactly one of `url` (a server: http(s)://host:6333), "
                    '`path` (local mode in a directory) or `location: ":memory:"` (local mode in memory)'
                    + (f"; got {', '.join(given)}" if given else "")
                )
        return self


DATABASE_URL_ENV = "PULSE_AI_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/pulse-ai.db"


class DatabaseConfig(_Strict):
    """The platform's records (tenants, keys, budgets, usage): SQLite by default, PostgreSQL by URL.

    The URL may hold a password (usual for PostgreSQL): no repr shows it, and it is registered for
    redaction when the configuration is loaded."""

    # PULSE_AI_DATABASE_URL, when set, replaces the default (not a URL written in the file)
    url: str = Field(default_factory=lambda: os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL, min_length=1)

    @field_validator("url")
    @classmethod
    def _readable_port(cls, url: str) -> str:
        try:
            urlsplit(url).port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError(
                "the port is not a number from 0 to 65535 (postgresql://user:password@host:5432/database)"
            ) from None
        return url

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "url", url_without_password(self.url)


class PulseConfig(_Strict):
    """The whole configuration. Build it with :func:`load_config`, which also resolves models."""

    version: Annotated[Literal[1], NotBool] = 1
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    vector_store: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @field_validator("providers", "pipelines")
    @classmethod
    def _valid_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"name {name!r} must match {NAME_PATTERN}")
        return value

    def byok_providers(self) -> list[str]:
        """The providers a tenant may bring its own key for: those that take an ``api_key``."""
        return sorted(name for name, provider in self.providers.items() if hasattr(provider, "api_key"))


class LoadedConfig:
    """A validated configuration with every model resolved against the catalog."""

    def __init__(self, config: PulseConfig, models: dict[str, ModelSpec], source: str) -> None:
        self.config = config
        self.models = models
        self.source = source

    def __repr__(self) -> str:
        return f"LoadedConfig(source={self.source!r}, providers={sorted(self.config.providers)})"


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    path = Path(path)
    return load_config_text(read_config_file(path), source=str(path), environ=environ)


def load_config_text(
    text: str,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
) -> LoadedConfig:
    raw = load_yaml(text, source)
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping with a `providers` key", source=source)
    raw = interpolate(raw, os.environ if environ is None else environ, source)
    try:
        config = PulseConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), source=source) from None
    register_secrets(config_secrets(config))
    models = _resolve_models(config, catalog or default_catalog(), source)
    _check_pipelines(config, models, source)
    return LoadedConfig(config, models, source)


def config_secrets(config: PulseConfig) -> list[str]:
    """Every credential of a configuration: API keys, gateway header values, the database password."""
    secrets = [*url_passwords(config.database.url)]
    if config.vector_store.api_key is not None:
        secrets.append(config.vector_store.api_key.get_secret_value())
    for provider in config.providers.values():
        api_key = getattr(provider, "api_key", None)
        if api_key is not None:
            secrets.append(api_key.get_secret_value())
        if isinstance(provider, CustomGatewayConfig):
            secrets.extend(value.get_secret_value() for value in provider.headers.values())
    return secrets


def _resolve_models(config: PulseConfig, catalog: Catalog, source: str) -> dict[str, ModelSpec]:
    models: dict[str, ModelSpec] = {}
    for provider_name, provider in config.providers.items():
        for index, model in enumerate(provider.models):
            key_path = f"providers.{provider_name}.models[{index}]"
            spec = catalog.resolve(provider_name, provider.type, model, key_path, source)
            models[spec.ref] = spec
    return models


def _check_pipelines(config: PulseConfig, models: dict[str, ModelSpec], source: str) -> None:
    for name, pipeline in config.pipelines.items():
        spaces: dict[str, list[str]] = {}
        for index, ref in enumerate(pipeline.candidates):
            key_path = f"pipelines.{name}.candidates[{index}]"
            spec = models.get(ref)
            if spec is None:
                known = ", ".join(sorted(models)) or "none"
                raise ConfigError(
                    f"{ref!r} is not a configured provider/model (configured: {known})",
                    source=source,
                    key_path=key_path,
                )
            if not spec.supports(pipeline.kind):
                raise ConfigError(
                    f"{ref!r} cannot serve a {pipeline.kind.value} pipeline "
                    f"(it supports {', '.join(sorted(c.value for c in spec.capabilities))})",
                    source=source,
                    key_path=key_path,
                )
            if pipeline.kind is Capability.EMBEDDING:
                # the id holds dimensions and normalisation; keyed on them too, whatever is declared
                shape = f"{spec.vector_space} ({spec.dimensions} dimensions, normalized={spec.normalized})"
                spaces.setdefault(shape, []).append(ref)
        if pipeline.candidates and len(set(pipeline.candidates)) != len(pipeline.candidates):
            raise ConfigError("a candidate is listed twice", source=source, key_path=f"pipelines.{name}")
        if len(spaces) > 1:
            listed = "; ".join(f"{space}: {', '.join(refs)}" for space, refs in spaces.items())
            raise ConfigError(
                "the candidates of an embedding pipeline must all produce the same vector space, "
                "or a fallback would write vectors that cannot be compared with the others "
                f"({listed}). Use one model (and one `dimensions`) for every candidate, or declare "
                "`space:` on models that really are the same model served by different providers",
                source=source,
                key_path=f"pipelines.{name}.candidates",
            )


_PROVIDER_TAGS = {"sentence_transformers", "openai", "azure_openai", "custom_gateway", "fake"}


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "providers" and loc[2] in _PROVIDER_TAGS:
            del loc[2]  # the discriminator tag pydantic adds to the path
        location = ""
        for part in loc:
            if part == "[key]":  # pydantic's marker for a mapping key (here a header name) at fault
                continue
            location = f"{location}[{part}]" if isinstance(part, int) else join_key(location, part)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # pydantic's message quotes the value
            message = f"`type` must be one of {', '.join(sorted(_PROVIDER_TAGS))}"
        problems.append(f"{location or '<top>'}: {message}")
    return "; ".join(problems)
