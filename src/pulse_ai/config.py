"""YAML configuration -> typed pydantic models, with ``${VAR}`` interpolation and cross-checks.

Every model is ``extra="forbid"``: an unknown key is an error that names its path. Secrets are
``SecretStr`` and never appear in a repr, a log line or an error message (validation errors are
reported by key path and reason only, never with the offending value).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pulse_ai.catalog import Capability, Catalog, ModelSpec, Tier, default_catalog
from pulse_ai.errors import ConfigError
from pulse_ai.vectors.scope import Layout

__all__ = [
    "AzureOpenAIConfig",
    "BreakerConfig",
    "CustomGatewayConfig",
    "DatabaseConfig",
    "ErrorKind",
    "FallbackConfig",
    "ModelConfig",
    "OpenAIConfig",
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
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """One model of a provider; every fact here overrides the catalog's."""

    name: str = Field(min_length=1)
    deployment: str | None = None
    path: str | None = None
    dimensions: PositiveInt | None = None
    capabilities: list[Capability] | None = None
    normalized: bool | None = None
    max_input_tokens: PositiveInt | None = None
    max_inputs_per_request: PositiveInt | None = None
    max_tokens_per_request: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    input_price_per_million: NonNegativeFloat | None = None
    output_price_per_million: NonNegativeFloat | None = None
    tier: Tier | None = None
    space: str | None = Field(default=None, min_length=1)


class _ProviderBase(_Strict):
    models: list[ModelConfig] = Field(min_length=1)
    timeout: PositiveFloat = 30.0
    max_retries: int = Field(default=3, ge=0, le=10)
    max_concurrency: PositiveInt = 8

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
    batch_size: PositiveInt | None = None
    max_concurrency: PositiveInt = 1


class OpenAIConfig(_ProviderBase):
    type: Literal["openai"]
    api_key: SecretStr
    base_url: str | None = None
    organization: str | None = None


class AzureOpenAIConfig(_ProviderBase):
    type: Literal["azure_openai"]
    endpoint: str = Field(min_length=1)
    api_key: SecretStr
    api_version: str = Field(min_length=1)


class CustomGatewayConfig(_ProviderBase):
    type: Literal["custom_gateway"]
    base_url: str = Field(min_length=1)
    api_key: SecretStr | None = None
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    headers: dict[str, SecretStr] = Field(default_factory=dict)


ProviderConfig = Annotated[
    SentenceTransformersConfig | OpenAIConfig | AzureOpenAIConfig | CustomGatewayConfig,
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
    window: PositiveInt = 20
    min_calls: PositiveInt = 5
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    cooldown_seconds: NonNegativeFloat = 30.0


class PipelineConfig(_Strict):
    kind: Capability
    candidates: list[str] = Field(min_length=1)
    strategy: Strategy = Strategy.ORDERED
    explore_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class VectorStoreConfig(_Strict):
    """Where vectors live. ``embedded`` needs nothing running; ``qdrant`` is a server or cluster."""

    backend: Literal["embedded", "qdrant"] = "embedded"
    layout: Layout = Layout.PER_TENANT_TABLE
    path: str = "./data/vectors"
    optimize_after: PositiveInt = 20_000
    url: str | None = None
    location: str | None = None
    api_key: SecretStr | None = None
    prefer_grpc: bool = False
    timeout: PositiveInt = 10

    @model_validator(mode="after")
    def _server_needs_an_address(self) -> VectorStoreConfig:
        if self.backend == "qdrant" and not (self.url or self.location):
            raise ValueError('the qdrant backend needs `url` (or `location: ":memory:"` for local mode)')
        return self


class DatabaseConfig(_Strict):
    """The platform's records (tenants, keys, budgets, usage): SQLite by default, PostgreSQL by URL."""

    url: str = Field(default="sqlite+aiosqlite:///./data/pulse-ai.db", min_length=1)


class PulseConfig(_Strict):
    """The whole configuration. Build it with :func:`load_config`, which also resolves models."""

    version: Literal[1] = 1
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    vector_store: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)

    @field_validator("providers", "pipelines")
    @classmethod
    def _valid_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"name {name!r} must match {NAME_PATTERN}")
        return value


class LoadedConfig:
    """A validated configuration with every model resolved against the catalog."""

    def __init__(self, config: PulseConfig, models: dict[str, ModelSpec], source: str) -> None:
        self.config = config
        self.models = models
        self.source = source

    def __repr__(self) -> str:
        return f"LoadedConfig(source={self.source!r}, providers={sorted(self.config.providers)})"


def interpolate(node: Any, environ: Mapping[str, str], source: str, path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(node, dict):
        return {key: interpolate(value, environ, source, _join(path, str(key))) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environ, source, f"{path}[{i}]") for i, value in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                    source=source,
                    key_path=path,
                )
            return default
        return value

    return _VAR.sub(replace, node)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from exc
    return load_config_text(text, source=str(path), environ=environ)


def load_config_text(
    text: str,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
) -> LoadedConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}", source=source) from None
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping with a `providers` key", source=source)
    raw = interpolate(raw, os.environ if environ is None else environ, source)
    try:
        config = PulseConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), source=source) from None
    models = _resolve_models(config, catalog or default_catalog(), source)
    _check_pipelines(config, models, source)
    return LoadedConfig(config, models, source)


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
                spaces.setdefault(spec.vector_space, []).append(ref)
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


_PROVIDER_TAGS = {"sentence_transformers", "openai", "azure_openai", "custom_gateway"}


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "providers" and loc[2] in _PROVIDER_TAGS:
            del loc[2]  # the discriminator tag pydantic adds to the path
        location = ""
        for part in loc:
            location = f"{location}[{part}]" if isinstance(part, int) else _join(location, str(part))
        problems.append(f"{location or '<top>'}: {error['msg']}")
    return "; ".join(problems)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
