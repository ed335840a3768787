"""Providers: one small file each, on the shared bases in ``base.py``."""

from pulse_ai.providers.base import BatchEmbedding, EmbeddingProvider, GenerationProvider, Provider
from pulse_ai.providers.registry import PROVIDER_TYPES, create_provider

__all__ = [
    "PROVIDER_TYPES",
    "BatchEmbedding",
    "EmbeddingProvider",
    "GenerationProvider",
    "Provider",
    "create_provider",
]
