"""Providers are created from their ``type:``; construction is lazy (no client until first use)."""

from __future__ import annotations

from collections.abc import Sequence

from pulse_ai.catalog import ModelSpec
from pulse_ai.config import ProviderConfig
from pulse_ai.errors import ConfigError
from pulse_ai.providers.azure import AzureOpenAIProvider
from pulse_ai.providers.base import Provider
from pulse_ai.providers.gateway import CustomGatewayProvider
from pulse_ai.providers.local import SentenceTransformersProvider
from pulse_ai.providers.openai import OpenAIProvider
from pulse_ai.testing import FakeProvider

__all__ = ["PROVIDER_TYPES", "create_provider"]

PROVIDER_TYPES: dict[str, type[Provider]] = {
    cls.type_name: cls
    for cls in (SentenceTransformersProvider, OpenAIProvider, AzureOpenAIProvider, CustomGatewayProvider, FakeProvider)
}


def create_provider(name: str, config: ProviderConfig, models: Sequence[ModelSpec]) -> Provider:
    try:
        cls = PROVIDER_TYPES[config.type]
    except KeyError:
        raise ConfigError(f"unknown provider type {config.type!r}", key_path=f"providers.{name}.type") from None
    return cls(name, config, models)
