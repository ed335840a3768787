"""Request bodies. Unknown fields are refused (400 naming them) rather than silently ignored: a
client that sends ``tools`` or ``n: 3`` learns that they are not supported. No body has a tenant
field: the tenant comes from the API key only."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from pulse_ai.types import MAX_OUTPUT_TOKENS, lone_surrogate

__all__ = [
    "BudgetIn",
    "ChatMessage",
    "ChatRequest",
    "DeleteRequest",
    "EmbeddingsRequest",
    "IndexRequest",
    "KeyCreate",
    "RecordIn",
    "SearchRequest",
    "TenantCreate",
    "TenantSettingsIn",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """A lone surrogate anywhere in the body (a field, a list item, a metadata key) is refused
        up front, naming its path: it could be neither stored, hashed nor sent to a provider."""
        found = lone_surrogate(data, "")
        if found:
            raise ValueError(found)
        return data


# ---- OpenAI-compatible ---------------------------------------------------------------------------
class EmbeddingsRequest(_Body):
    model: str = Field(min_length=1, max_length=200)
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, gt=0, strict=True)
    user: str | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer SDKs add options that change nothing here

    include_usage: bool = Field(default=False, strict=True)


class ChatRequest(_Body):
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, strict=True, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, gt=0, le=MAX_OUTPUT_TOKENS, strict=True)
    max_completion_tokens: int | None = Field(default=None, gt=0, le=MAX_OUTPUT_TOKENS, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63, strict=True)
    n: Literal[1] | None = None
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    user: str | None = None


# ---- the tenant API ------------------------------------------------------------------------------
class RecordIn(_Body):
    id: str | StrictInt
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class IndexRequest(_Body):
    records: list[RecordIn]


class SearchRequest(_Body):
    query: str | None = None
    vector: list[float] | None = None
    limit: int = Field(default=10, ge=1, le=1000, strict=True)
    score_threshold: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    where: dict[str, Any] | None = None
    hnsw_ef: int | None = Field(default=None, strict=True)
    exact: bool = Field(default=False, strict=True)


class DeleteRequest(_Body):
    ids: list[str | StrictInt]


# ---- the admin API -------------------------------------------------------------------------------
class TenantCreate(_Body):
    id: str = Field(max_length=200)
    name: str | None = Field(default=None, max_length=200)


class TenantSettingsIn(_Body):
    """Only the fields given change; ``allowed_pipelines: null`` allows every pipeline again."""

    allowed_pipelines: list[str] | None = None
    default_embedding_pipeline: str | None = None
    default_generation_pipeline: str | None = None


MAX_KEY_DAYS = 36_500  # a hundred years: further would overflow a date, and means "never"


class KeyCreate(_Body):
    name: str | None = Field(default=None, max_length=200)
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=32
    )
    expires_days: int | None = Field(default=None, gt=0, le=MAX_KEY_DAYS, strict=True)


class BudgetIn(_Body):
    pipeline: str | None = None
    period: Literal["day", "month"] = "month"
    limit_usd: Decimal | None = Field(default=None, ge=0)
    limit_tokens: int | None = Field(default=None, ge=0, strict=True)
    mode: Literal["hard", "soft"] = "hard"
