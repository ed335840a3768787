"""The OpenAI-compatible surface: /v1/embeddings, /v1/chat/completions (plain and SSE), /v1/models.

``model`` is a pipeline name or a ``provider/model`` ref; the tenant's settings decide which it may
use (403 otherwise), and an unknown one is 404. The calls go through the tenant's facade
(``TenantAI``): budget, routing, fallback and the ledger are the library's, not this file's.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pulse_ai.catalog import Capability
from pulse_ai.client import PulseAI
from pulse_ai.errors import InputError, NotFoundError
from pulse_ai.service.auth import Caller
from pulse_ai.service.ratelimit import estimate_tokens
from pulse_ai.service.schemas import ChatRequest, EmbeddingsRequest
from pulse_ai.service.settings import ServiceSettings
from pulse_ai.service.sse import FINISH_REASONS, ChatStreamResponse
from pulse_ai.service.state import EmbedCaller, GenerateCaller, KeyCaller, request_info, service
from pulse_ai.streams import GenerationStream
from pulse_ai.types import GenerationParams, check_params

__all__ = ["router"]

router = APIRouter()
# Reserved for an answer's length when the caller sets no max_tokens (rate-limit admission only).
ASSUMED_OUTPUT_TOKENS = 256


async def target(ai: PulseAI, who: Caller, name: str, capability: Capability) -> dict[str, str]:
    """``{"pipeline": name}`` or ``{"model": name}`` for the facade. A name this key's tenant may not
    use is answered as one that does not exist (one 404 for both, before any check of its kind), so
    that a tenant cannot map the configuration's pipelines and models by probing."""
    settings = await ai.tenant_settings(who.tenant_id)
    pipelines = ai.loaded.config.pipelines
    if name in pipelines and (settings is None or settings.allows(name)):
        if pipelines[name].kind is not capability:
            raise InputError(f"{name!r} is a {pipelines[name].kind.value} pipeline, not {capability.value}")
        return {"pipeline": name}
    spec = ai.loaded.models.get(name)
    if spec is not None and (settings is None or name in (settings.allowed_pipelines or ())):
        if not spec.supports(capability):
            raise InputError(f"{name!r} is not a {capability.value} model")
        return {"model": name}
    raise NotFoundError(
        f"the model {name!r} does not exist or this key may not use it (GET /v1/models lists those it may use)"
    )


def checked_texts(value: str | list[Any], settings: ServiceSettings) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise InputError("input is empty: give a string or a list of strings")
    if len(texts) > settings.max_inputs:
        raise InputError(f"too many inputs: {len(texts)}; at most {settings.max_inputs} per request")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"input[{index}] must be a string (token arrays are not supported)", index=index)
        if len(text) > settings.max_input_chars:
            raise InputError(
                f"input[{index}] has {len(text)} characters; at most {settings.max_input_chars}", index=index
            )
    return texts


def _vector(row: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return row.tolist()  # type: ignore[no-any-return]


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, who: EmbedCaller) -> Response:
    state = service(request)
    texts = checked_texts(body.input, state.settings)
    chosen = await target(state.ai, who, body.model, Capability.EMBEDDING)
    if body.dimensions is not None:
        served = state.ai.route(chosen.get("model"), chosen.get("pipeline"), Capability.EMBEDDING).models[0]
        if body.dimensions != served.dimensions:
            raise InputError(
                f"{body.model!r} gives {served.dimensions} dimensions here; another size is another vector space: "
                "configure a model with `dimensions:` (and a pipeline) for it"
            )
    tokens = estimate_tokens(sum(len(text) for text in texts))
    result = await state.call(request, who, lambda: who.tenant.embed(texts, **chosen), tokens=tokens)
    if result.request_id:
        request_info(request).request_id = result.request_id
    data = [
        {"object": "embedding", "index": index, "embedding": _vector(row, body.encoding_format)}
        for index, row in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.usage.input_tokens, "total_tokens": result.usage.input_tokens}
    return JSONResponse({"object": "list", "data": data, "model": result.model, "usage": usage})


def _generation_input(body: ChatRequest, settings: ServiceSettings) -> tuple[list[dict[str, str]], GenerationParams]:
    if len(body.messages) > settings.max_inputs:
        raise InputError(f"too many messages: {len(body.messages)}; at most {settings.max_inputs} per request")
    messages = []
    for index, message in enumerate(body.messages):
        text = message.text()
        if len(text) > settings.max_input_chars:
            raise InputError(
                f"messages[{index}] has {len(text)} characters; at most {settings.max_input_chars}", index=index
            )
        messages.append({"role": "system" if message.role == "developer" else message.role, "content": text})
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    # the library's own bounds (check_params: an InputError naming the field), never a bare ValidationError
    params = check_params(
        {
            "temperature": body.temperature,
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "top_p": body.top_p,
            "stop": stop,
            "seed": body.seed,
        }
    )
    return messages, params


def _admission_tokens(messages: Sequence[dict[str, str]], params: GenerationParams) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return estimate_tokens(chars) + (params.max_tokens or ASSUMED_OUTPUT_TOKENS)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, who: GenerateCaller) -> Response:
    state = service(request)
    messages, params = _generation_input(body, state.settings)
    chosen = await target(state.ai, who, body.model, Capability.GENERATION)
    tokens = _admission_tokens(messages, params)
    created = int(time.time())
    if body.stream:
        return await _stream(request, who, body, messages, params, chosen, tokens, created)
    result = await state.call(
        request, who, lambda: who.tenant.generate(messages, params=params, **chosen), tokens=tokens
    )
    info = request_info(request)
    if result.request_id:
        info.request_id = result.request_id
    finish = result.finish_reason if result.finish_reason in FINISH_REASONS else "stop"
    usage = result.usage
    return JSONResponse(
        {
            "id": f"chatcmpl-{info.request_id}",
            "object": "chat.completion",
            "created": created,
            "model": result.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": finish}
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
    )


async def _stream(
    request: Request,
    who: Caller,
    body: ChatRequest,
    messages: list[dict[str, str]],
    params: GenerationParams,
    chosen: dict[str, str],
    tokens: int,
    created: int,
) -> ChatStreamResponse:
    """Wait for the first delta (an error before it is a plain HTTP error), then stream the rest."""
    state = service(request)
    admission = state.admit(who, tokens)
    stream: GenerationStream = who.tenant.stream(messages, params=params, **chosen)
    accounted = False

    def on_end(ended: GenerationStream) -> None:
        nonlocal accounted
        if not accounted:
            accounted = True
            state.account(request, who, ended.attempts, admission)

    try:
        async with state.deadline("waiting for the stream's first chunk"):
            first = await anext(stream, None)
    except BaseException:
        await stream.aclose()
        on_end(stream)
        raise
    attempts = stream.attempts  # so far: the failed candidates', and the serving one's time to its first chunk
    info = request_info(request)
    info.provider_ms += sum(max(0.0, a.latency_ms) for a in attempts)
    model = attempts[-1].model if attempts else body.model
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ChatStreamResponse(
        stream,
        first,
        completion_id=f"chatcmpl-{info.request_id}",
        created=created,
        model=model,
        include_usage=include_usage,
        on_end=on_end,
    )


@router.get("/v1/models")
async def list_models(request: Request, who: KeyCaller) -> Response:
    return JSONResponse({"object": "list", "data": await _usable_models(request, who)})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, who: KeyCaller) -> Response:
    for model in await _usable_models(request, who):
        if model["id"] == model_id:
            return JSONResponse(model)
    raise NotFoundError(f"the model {model_id!r} does not exist or this key may not use it")


async def _usable_models(request: Request, who: Caller) -> list[dict[str, Any]]:
    """What this key's tenant may call, by the rule the calls themselves follow (``TenantAI._route``):
    the pipelines its settings allow (all when they list none), and a ``provider/model`` only when
    the allowed list names that ref itself (a direct call would skip its pipelines' budgets)."""
    ai = service(request).ai
    settings = await ai.tenant_settings(who.tenant_id)
    allowed = settings.allows if settings is not None else (lambda _: True)
    direct = set(settings.allowed_pipelines or ()) if settings is not None else set()
    models: list[dict[str, Any]] = []
    for name, pipeline in sorted(ai.loaded.config.pipelines.items()):
        if allowed(name):
            models.append(_model(name, "pipeline", [pipeline.kind.value]))
    for ref, spec in sorted(ai.loaded.models.items()):
        if ref in direct:
            models.append(_model(ref, "model", sorted(c.value for c in spec.capabilities)))
    return models


def _model(name: str, kind: str, capabilities: list[str]) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "pulse-ai",
        "kind": kind,
        "capabilities": capabilities,
    }
