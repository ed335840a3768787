"""OpenAI's own API."""

from __future__ import annotations

from typing import Any

import openai

from pulse_ai.config import OpenAIConfig
from pulse_ai.providers.openai_compat import OpenAICompatibleProvider

__all__ = ["OpenAIProvider"]


class OpenAIProvider(OpenAICompatibleProvider):
    type_name = "openai"
    config: OpenAIConfig

    def make_client(self, http: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            http_client=http,
            api_key=self.config.api_key.get_secret_value(),
            base_url=self.config.base_url,
            organization=self.config.organization,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
        )
