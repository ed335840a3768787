"""Model facts (dimensions, limits, prices, tier) from ``catalog.yaml``, merged with config overrides.

A model the catalog does not know is refused unless the configuration declares every fact pulse-ai
needs for it; facts are never borrowed from another model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, ValidationError

from pulse_ai.errors import ConfigError, UnknownModelError

if TYPE_CHECKING:
    from pulse_ai.config import ModelConfig

__all__ = [
    "DEFAULT_LOCAL_BACKEND",
    "FALLBACK_LOCAL_BACKEND",
    "SHARES_FP32_SPACE",
    "SUPPORTED_PRECISIONS",
    "Capability",
    "Catalog",
    "CatalogEntry",
    "ModelSpec",
    "Tier",
    "default_catalog",
    "resolve_backend",
]

LOCAL_PROVIDER_TYPES = frozenset({"sentence_transformers"})
# How a local model runs on a CPU when its configuration does not say: chosen by measurement (README,
# "Inference backends"; bench/embedding_throughput.py prints the numbers). On a GPU, or where OpenVINO
# cannot run, the default is torch fp32, which shares its vector space (SHARES_FP32_SPACE).
DEFAULT_LOCAL_BACKEND = ("openvino", "bf16")
FALLBACK_LOCAL_BACKEND = ("torch", "fp32")
SUPPORTED_PRECISIONS: dict[str, frozenset[str]] = {
    "torch": frozenset({"fp32", "bf16"}),
    "onnx": frozenset({"fp32", "int8"}),
    "openvino": frozenset({"fp32", "bf16", "int8"}),
}
# (backend, precision) pairs whose vectors were measured to stay in torch fp32's vector space:
# queries embedded with one against documents indexed with the other keep SciFact nDCG@10 within
# 0.005 (OpenVINO fp32: 0.8521 mixed = 0.8521 torch alone, 400-document subset; OpenVINO bf16 on a
# CPU with bf16 instructions, full SciFact: 0.6456 alone, mixed both ways within 0.0005 of torch's
# 0.6451). On a CPU without bf16 instructions OpenVINO runs a bf16 hint as fp32: the same space
# either way. Any other pair is a space of its own (its id names the backend and precision): torch
# bf16 and int8 were not measured mixed, and int8 fails its self-test anyway.
SHARES_FP32_SPACE = frozenset({("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")})
# Used only when a configuration declares a model the catalog does not know and leaves the request
# limits out: a conservative request shape, not another model's facts.
DEFAULT_MAX_INPUTS_PER_REQUEST = 64


class Capability(StrEnum):
    EMBEDDING = "embedding"
    GENERATION = "generation"


class Tier(StrEnum):
    FAST = "fast"
    BALANCED = "balanced"
    QUALITY = "quality"

    @property
    def rank(self) -> int:
        return {"fast": 0, "balanced": 1, "quality": 2}[self.value]


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    capabilities: list[Capability] = Field(min_length=1)
    dimensions: PositiveInt | None = None
    supports_dimensions: bool = False
    normalized: bool = True
    max_input_tokens: PositiveInt
    max_inputs_per_request: PositiveInt | None = None
    max_tokens_per_request: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    input_price_per_million: NonNegativeFloat
    output_price_per_million: NonNegativeFloat = 0.0
    tier: Tier = Tier.BALANCED
    #: The BPE encoding of an OpenAI model (``tokens.ENCODINGS``); None: counted by its own
    #: tokenizer (a local model) or estimated (a model whose tokenizer pulse-ai does not have).
    encoding: Literal["cl100k_base", "o200k_base"] | None = None


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_table_version: str
    models: dict[str, CatalogEntry]


@dataclass(frozen=True)
class ModelSpec:
    """Everything pulse-ai knows about one configured model of one provider."""

    provider: str
    provider_type: str
    name: str
    wire_name: str
    family: str
    capabilities: frozenset[Capability]
    dimensions: int | None
    send_dimensions: bool
    normalized: bool
    max_input_tokens: int
    max_inputs_per_request: int
    max_tokens_per_request: int | None
    max_output_tokens: int | None
    input_price_per_million: Decimal
    output_price_per_million: Decimal
    price_table_version: str
    tier: Tier
    space: str | None = None
    path: str | None = None
    backend: str | None = None  # local models: how the model runs (None for remote ones)
    precision: str | None = None
    # Local models whose configuration names neither backend nor precision: they run the measured
    # default, or torch fp32 (the same vector space) on a GPU or where the default cannot run
    default_backend: bool = False
    encoding: str | None = None

    @property
    def ref(self) -> str:
        """The ``provider/model`` id used in pipelines and results."""
        return f"{self.provider}/{self.name}"

    @property
    def model_identity(self) -> str:
        """Which weights make the vectors: the catalog family (so OpenAI and Azure serving one model
        share it), an explicit ``space:`` (two differently named deployments declared the same), or,
        for a ``path:`` override (a fine-tuned checkpoint), the family plus a digest of the path, so
        that another checkpoint never shares a collection with the catalog model."""
        if self.space:
            return self.space + self.runtime_suffix
        identity = self.family
        if self.path:
            digest = hashlib.sha256(self.path.encode("utf-8")).hexdigest()[:12]
            identity = f"{self.family}+path-{digest}"
        return identity + self.runtime_suffix

    @property
    def runtime_suffix(self) -> str:
        """Empty when the backend and precision keep torch fp32's vectors (``SHARES_FP32_SPACE``);
        otherwise ``+backend-precision``, so that their vectors never share a collection with fp32's."""
        if self.backend is None or self.precision is None:
            return ""
        if (self.backend, self.precision) in SHARES_FP32_SPACE:
            return ""
        return f"+{self.backend}-{self.precision}"

    @property
    def vector_space(self) -> str:
        """(model identity, dimensions, normalisation) as one id: it changes whenever the vectors
        would. A declared ``space:`` names the identity only; dimensions and normalisation are always
        part of the id, so two models of different sizes can never share a space."""
        norm = "unit" if self.normalized else "raw"
        return f"{self.model_identity}@{self.dimensions}/{norm}"

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def cost_usd(self, input_tokens: int, output_tokens: int = 0) -> Decimal:
        """The one place a price becomes a cost: exact, in USD."""
        return (input_tokens * self.input_price_per_million + output_tokens * self.output_price_per_million) / _MILLION


class Catalog:
    """The model table, keyed by catalog model name."""

    def __init__(self, entries: dict[str, CatalogEntry], price_table_version: str) -> None:
        self.entries = entries
        self.price_table_version = price_table_version

    @classmethod
    def from_yaml(cls, text: str, source: str = "catalog.yaml") -> Catalog:
        try:
            parsed = _CatalogFile.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"invalid model catalog: {exc}", source=source) from exc
        return cls(parsed.models, parsed.price_table_version)

    def get(self, name: str) -> CatalogEntry | None:
        return self.entries.get(name)

    def resolve(self, provider: str, provider_type: str, model: ModelConfig, key_path: str, source: str) -> ModelSpec:
        """Merge the catalog's facts for ``model.name`` with the configuration's overrides."""
        entry = self.get(model.name)
        local = provider_type in LOCAL_PROVIDER_TYPES
        if entry is None:
            entry = self._entry_from_config(provider, model, local, key_path, source)
        capabilities = frozenset(model.capabilities or entry.capabilities)
        dimensions = entry.dimensions
        send_dimensions = False
        if model.dimensions is not None and model.dimensions != entry.dimensions:
            if not entry.supports_dimensions:
                raise ConfigError(
                    f"model {model.name!r} has a fixed size of {entry.dimensions} dimensions and does not "
                    f"accept `dimensions: {model.dimensions}`; remove the key",
                    source=source,
                    key_path=f"{key_path}.dimensions",
                )
            if entry.dimensions is not None and model.dimensions > entry.dimensions:
                raise ConfigError(
                    f"model {model.name!r} gives at most {entry.dimensions} dimensions",
                    source=source,
                    key_path=f"{key_path}.dimensions",
                )
            dimensions = model.dimensions
            send_dimensions = True
        if Capability.EMBEDDING in capabilities and dimensions is None:
            raise UnknownModelError(
                f"embedding model {model.name!r} needs `dimensions`", source=source, key_path=key_path
            )
        if local and (model.input_price_per_million or model.output_price_per_million):
            raise ConfigError("local models cost 0; remove the price keys", source=source, key_path=key_path)
        for key in ("backend", "precision"):
            if not local and getattr(model, key) is not None:
                raise ConfigError(
                    f"`{key}` applies to local (sentence_transformers) models only; remove it",
                    source=source,
                    key_path=f"{key_path}.{key}",
                )
        backend, precision = resolve_backend(model.backend, model.precision) if local else (None, None)
        return ModelSpec(
            provider=provider,
            provider_type=provider_type,
            name=model.name,
            wire_name=model.deployment or model.name,
            family=entry.family,
            capabilities=capabilities,
            dimensions=dimensions,
            send_dimensions=send_dimensions,
            normalized=entry.normalized if model.normalized is None else model.normalized,
            max_input_tokens=model.max_input_tokens or entry.max_input_tokens,
            max_inputs_per_request=model.max_inputs_per_request
            or entry.max_inputs_per_request
            or DEFAULT_MAX_INPUTS_PER_REQUEST,
            max_tokens_per_request=model.max_tokens_per_request or entry.max_tokens_per_request,
            max_output_tokens=model.max_output_tokens or entry.max_output_tokens,
            input_price_per_million=_price(_first(model.input_price_per_million, entry.input_price_per_million)),
            output_price_per_million=_price(_first(model.output_price_per_million, entry.output_price_per_million)),
            price_table_version=self._price_source(provider, model),
            tier=model.tier or entry.tier,
            space=model.space,
            path=model.path,
            backend=backend,
            precision=precision,
            default_backend=local and model.backend is None and model.precision is None,
            encoding=model.encoding or entry.encoding,
        )

    def _price_source(self, provider: str, model: ModelConfig) -> str:
        """Where this model's prices come from: the catalog's table version, or the configuration
        (a model the catalog does not know, or a price override)."""
        overridden = model.input_price_per_million is not None or model.output_price_per_million is not None
        if model.name in self.entries and not overridden:
            return self.price_table_version
        return f"config:{provider}/{model.name}"

    @staticmethod
    def _entry_from_config(provider: str, model: ModelConfig, local: bool, key_path: str, source: str) -> CatalogEntry:
        missing = []
        if not model.capabilities:
            missing.append("capabilities")
        if model.capabilities and Capability.EMBEDDING in model.capabilities and model.dimensions is None:
            missing.append("dimensions")
        if model.max_input_tokens is None:
            missing.append("max_input_tokens")
        if not local and model.input_price_per_million is None:
            missing.append("input_price_per_million")
        generation = bool(model.capabilities) and Capability.GENERATION in (model.capabilities or [])
        if not local and generation and model.output_price_per_million is None:
            missing.append("output_price_per_million")
        if generation and model.max_output_tokens is None:
            missing.append("max_output_tokens")  # budgets reserve a generation's longest answer
        if missing:
            raise UnknownModelError(
                f"model {model.name!r} is not in the catalog; declare {', '.join(missing)} for it "
                "(pulse-ai never borrows another model's facts)",
                source=source,
                key_path=key_path,
            )
        assert model.capabilities is not None and model.max_input_tokens is not None
        return CatalogEntry(
            family=f"{provider}/{model.name}",
            capabilities=model.capabilities,
            dimensions=model.dimensions,
            supports_dimensions=False,
            normalized=model.normalized if model.normalized is not None else local,
            max_input_tokens=model.max_input_tokens,
            input_price_per_million=model.input_price_per_million or 0.0,
            output_price_per_million=model.output_price_per_million or 0.0,
            tier=model.tier or Tier.BALANCED,
        )


def resolve_backend(backend: str | None, precision: str | None) -> tuple[str, str]:
    """A local model's (backend, precision): the configured ones, else the measured default. A
    backend given alone runs at fp32 unless it is the default backend; a precision given alone runs
    on torch, as it did before the default became OpenVINO (a configuration keeps its meaning)."""
    if backend is None:
        if precision is not None:
            return "torch", precision
        return DEFAULT_LOCAL_BACKEND
    if precision is None:
        precision = DEFAULT_LOCAL_BACKEND[1] if backend == DEFAULT_LOCAL_BACKEND[0] else "fp32"
    return backend, precision


def _first(override: float | None, default: float) -> float:
    return default if override is None else override


_MILLION = Decimal(1_000_000)


def _price(value: float) -> Decimal:
    """A YAML number as the exact decimal it was written as (0.15, not 0.1499999...)."""
    return Decimal(repr(value))


@cache
def default_catalog() -> Catalog:
    text = resources.files("pulse_ai").joinpath("catalog.yaml").read_text(encoding="utf-8")
    return Catalog.from_yaml(text)
