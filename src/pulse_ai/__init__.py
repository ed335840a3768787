"""pulse-ai: the AI layer of a multi-tenant analytics platform.

async with PulseAI.default() as ai:
    result = await ai.embed(["a text", "another"])
"""

from pulse_ai.accounting import Attempt, PartialVectors, Usage
from pulse_ai.catalog import Capability, ModelSpec, Tier
from pulse_ai.client import PulseAI
from pulse_ai.config import LoadedConfig, PulseConfig, load_config, load_config_text
from pulse_ai.context import SYSTEM_TENANT, CallContext
from pulse_ai.errors import (
    AllProvidersFailed,
    ApiKeyRefusedError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CircuitOpenError,
    ConfigError,
    DatabaseError,
    InputError,
    MalformedResponseError,
    NotFoundError,
    PipelineNotAllowedError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    PulseAIError,
    RateLimitedError,
    TenantSuspendedError,
    UnknownModelError,
)
from pulse_ai.providers.base import HealthStatus
from pulse_ai.streams import GenerationStream
from pulse_ai.tenancy import TenantAI, TenantIndexer
from pulse_ai.types import EmbeddingResult, GenerationParams, GenerationResult, Message

__all__ = [
    "SYSTEM_TENANT",
    "AllProvidersFailed",
    "ApiKeyRefusedError",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CallContext",
    "Capability",
    "CircuitOpenError",
    "ConfigError",
    "DatabaseError",
    "EmbeddingResult",
    "GenerationParams",
    "GenerationResult",
    "GenerationStream",
    "HealthStatus",
    "InputError",
    "LoadedConfig",
    "MalformedResponseError",
    "Message",
    "ModelSpec",
    "NotFoundError",
    "PartialVectors",
    "PipelineNotAllowedError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "PulseAI",
    "PulseAIError",
    "PulseConfig",
    "RateLimitedError",
    "TenantAI",
    "TenantIndexer",
    "TenantSuspendedError",
    "Tier",
    "UnknownModelError",
    "Usage",
    "load_config",
    "load_config_text",
]
