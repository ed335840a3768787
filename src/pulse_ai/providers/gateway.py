"""Any OpenAI-compatible endpoint: vLLM, Ollama's /v1, LM Studio, an in-house gateway.

Authentication is whatever header the gateway wants (``auth_header`` + ``auth_prefix`` + key), or
none; ``headers`` are sent with every request.
"""

from __future__ import annotations

from typing import Any

import openai

from pulse_ai.config import CustomGatewayConfig
from pulse_ai.providers.openai_compat import OpenAICompatibleProvider

__all__ = ["CustomGatewayProvider"]

# The SDK insists on an api_key; the gateway's own header carries the real one, and the SDK's
# `Authorization: Bearer <placeholder>` is suppressed on every request (see request_headers).
_NO_KEY = "unused"


class CustomGatewayProvider(OpenAICompatibleProvider):
    type_name = "custom_gateway"
    config: CustomGatewayConfig

    def make_client(self, http: Any) -> openai.AsyncOpenAI:
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        if self.config.api_key is not None:
            key = self.config.api_key.get_secret_value()
            headers[self.config.auth_header] = f"{self.config.auth_prefix}{key}"
        return openai.AsyncOpenAI(
            api_key=_NO_KEY,
            base_url=self.config.base_url,
            default_headers=headers,
            http_client=http,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
        )

    def request_headers(self) -> dict[str, Any] | None:
        # The SDK would add `Authorization: Bearer <placeholder>`; drop it unless it is our header.
        uses_authorization = self.config.api_key is not None and self.config.auth_header.lower() == "authorization"
        return None if uses_authorization else {"Authorization": openai.Omit()}

    def secrets(self) -> list[str]:
        return [*super().secrets(), *(value.get_secret_value() for value in self.config.headers.values())]
