"""Azure OpenAI: an endpoint, an api-version and a deployment per model.

A model's ``deployment`` (default: its name) is sent as the SDK's ``model``, which the SDK turns
into ``/openai/deployments/{deployment}/...``; the catalog facts stay those of the model itself.
"""

from __future__ import annotations

from typing import Any

import openai

from pulse_ai.config import AzureOpenAIConfig
from pulse_ai.providers.openai_compat import OpenAICompatibleProvider

__all__ = ["AzureOpenAIProvider"]


class AzureOpenAIProvider(OpenAICompatibleProvider):
    type_name = "azure_openai"
    config: AzureOpenAIConfig

    def make_client(self, http: Any) -> openai.AsyncOpenAI:
        return openai.AsyncAzureOpenAI(
            http_client=http,
            azure_endpoint=self.config.endpoint,
            api_key=self.config.api_key.get_secret_value(),
            api_version=self.config.api_version,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
        )
