"""The OpenAI-compatible endpoints over real HTTP, driven by the official ``openai`` SDK."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from pulse_ai.testing import Fault, fake_vector
from tests.service.conftest import ADMIN, TenantKey, http, ledger, make_tenant, sdk
from tests.service.harness import ServiceServer

EMB = "text-embedding-3-small"


@pytest.fixture
async def acme(server: ServiceServer) -> TenantKey:
    return await make_tenant(server, "acme")


# ---- /v1/embeddings --------------------------------------------------------------------------------
async def test_embeddings_through_the_sdk_are_the_providers_vectors_in_order(
    server: ServiceServer, acme: TenantKey
) -> None:
    texts = ["checkout times out", "dark mode please", "checkout times out"]
    client = sdk(server, acme.key)
    raw = await client.embeddings.with_raw_response.create(model="embedding", input=texts)
    result = raw.parse()  # the SDK asked for base64 and decoded it
    assert [d.index for d in result.data] == [0, 1, 2]
    for text, item in zip(texts, result.data, strict=True):
        np.testing.assert_allclose(item.embedding, fake_vector(text, 64), rtol=1e-6)
    assert result.model == f"a/{EMB}"
    assert result.usage.prompt_tokens > 0 and result.usage.total_tokens == result.usage.prompt_tokens
    # the ledger's request id is the answer's x-request-id, and its rows carry the key and the tenant
    request_id = raw.headers["x-request-id"]
    rows = await ledger(server, acme.tenant)
    assert [(r.request_id, r.api_key_id, r.operation, r.outcome) for r in rows] == [
        (request_id, acme.key_id, "embed", "ok")
    ]
    assert rows[0].input_tokens == result.usage.prompt_tokens
    assert float(raw.headers["x-pulse-overhead-ms"]) >= 0


async def test_embeddings_as_floats_and_base64_and_a_single_string(server: ServiceServer, acme: TenantKey) -> None:
    client = sdk(server, acme.key)
    floats = await client.embeddings.create(model="embedding", input="one text", encoding_format="float")
    assert len(floats.data) == 1
    np.testing.assert_allclose(floats.data[0].embedding, fake_vector("one text", 64), rtol=1e-6)
    async with http(server, acme.headers) as plain:
        answer = await plain.post(
            "/v1/embeddings", json={"model": "embedding", "input": ["one text"], "encoding_format": "base64"}
        )
    encoded = answer.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_allclose(decoded, fake_vector("one text", 64), rtol=1e-6)


async def test_a_model_ref_is_a_direct_call_and_unknown_or_wrong_models_are_refused(
    server: ServiceServer, acme: TenantKey
) -> None:
    client = sdk(server, acme.key)
    # a provider/model is called directly only when the tenant's settings list it (pipelines'
    # budgets would not apply to it otherwise)
    with pytest.raises(openai.NotFoundError, match="may not use it"):
        await client.embeddings.create(model=f"b/{EMB}", input=["x"])
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
        allowed = ["embedding", "chat", f"b/{EMB}", "a/gpt-4o-mini"]
        changed = await admin.patch(f"/admin/tenants/{acme.tenant}/settings", json={"allowed_pipelines": allowed})
        assert changed.status_code == 200, changed.text
    direct = await client.embeddings.create(model=f"b/{EMB}", input=["x"])
    assert direct.model == f"b/{EMB}"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.embeddings.create(model="no-such-model", input=["x"])
    with pytest.raises(openai.BadRequestError, match="not embedding"):
        await client.embeddings.create(model="chat", input=["x"])
    with pytest.raises(openai.BadRequestError, match=r"not an? embedding model"):
        await client.embeddings.create(model="a/gpt-4o-mini", input=["x"])


async def test_dimensions_must_be_the_served_size(server: ServiceServer, acme: TenantKey) -> None:
    client = sdk(server, acme.key)
    same = await client.embeddings.create(model="embedding", input=["x"], dimensions=64)
    assert len(same.data[0].embedding) == 64
    with pytest.raises(openai.BadRequestError, match="64 dimensions"):
        await client.embeddings.create(model="embedding", input=["x"], dimensions=32)


async def test_bad_embedding_inputs_are_400s_naming_the_input(server: ServiceServer, acme: TenantKey) -> None:
    client = sdk(server, acme.key)
    with pytest.raises(openai.BadRequestError, match=r"input\[1\] must be a string"):
        await client.embeddings.create(model="embedding", input=["fine", [1, 2, 3]])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="input is empty"):
        await client.embeddings.create(model="embedding", input=[])
    with pytest.raises(openai.BadRequestError, match=r"texts\[0\] is empty"):
        await client.embeddings.create(model="embedding", input=["   "])
    with pytest.raises(openai.BadRequestError, match="too many inputs: 101; at most 100"):
        await client.embeddings.create(model="embedding", input=[f"t{i}" for i in range(101)])
    with pytest.raises(openai.BadRequestError, match=r"input\[0\] has 5001 characters; at most 5000"):
        await client.embeddings.create(model="embedding", input=["x" * 5001])
    assert server.fake("a").calls == []  # nothing reached a provider


async def test_a_fallback_answers_and_the_ledger_has_both_attempts(server: ServiceServer, acme: TenantKey) -> None:
    server.fake("a").script(Fault.unavailable())
    result = await sdk(server, acme.key).embeddings.create(model="embedding", input=["x"])
    assert result.model == f"b/{EMB}"
    rows = await ledger(server, acme.tenant)
    assert [(r.provider, r.outcome) for r in rows] == [("a", "unavailable"), ("b", "ok")]


@pytest.mark.parametrize(
    ("fault", "status", "code", "message", "providers"),
    [
        (Fault.timeout(), 504, "upstream_timeout", "all candidates tried failed", {"a", "b"}),
        (Fault.unavailable(), 503, "upstream_unavailable", "all candidates tried failed", {"a", "b"}),
        (Fault.malformed(), 502, "upstream_error", "all candidates tried failed", {"a", "b"}),
        (Fault.rate_limited(retry_after=7), 503, "upstream_unavailable", "all candidates tried failed", {"a", "b"}),
        # refused credentials are not a fallback error: the service's configuration is at fault
        (Fault.authentication(), 502, "upstream_error", "a/text-embedding-3-small: scripted 401", {"a"}),
    ],
)
async def test_upstream_failures_map_to_5xx_with_the_typed_message(
    server: ServiceServer, acme: TenantKey, fault: Fault, status: int, code: str, message: str, providers: set[str]
) -> None:
    for name in ("a", "b"):
        server.fake(name).always(fault)
    async with http(server, acme.headers) as plain:
        answer = await plain.post("/v1/embeddings", json={"model": "embedding", "input": ["x"]})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code and message in error["message"]
    if fault.kind == "rate_limited":
        assert answer.headers["retry-after"] == "7"
    assert "x-request-id" in answer.headers and "x-pulse-overhead-ms" in answer.headers
    rows = await ledger(server, acme.tenant)
    assert {r.provider for r in rows} == providers  # what the failed call consumed is recorded


# ---- /v1/chat/completions --------------------------------------------------------------------------
async def test_chat_completion(server: ServiceServer, acme: TenantKey) -> None:
    client = sdk(server, acme.key)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
        ],
        max_tokens=50,
        temperature=0.2,
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.choices[0].finish_reason == "stop" and answer.model == "a/gpt-4o-mini"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    rows = await ledger(server, acme.tenant)
    expected = [(raw.headers["x-request-id"], "generate", "chat")]
    assert [(r.request_id, r.operation, r.pipeline) for r in rows] == expected
    assert server.fake("a").requests("generate")[0].inputs == ("be brief", "hello there")


async def test_unsupported_chat_parameters_are_refused_by_name(server: ServiceServer, acme: TenantKey) -> None:
    client = sdk(server, acme.key)
    with pytest.raises(openai.BadRequestError, match="tools: unsupported parameter"):
        await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    with pytest.raises(openai.BadRequestError, match="n:"):
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], n=2)
    with pytest.raises(openai.BadRequestError, match="messages"):
        await client.chat.completions.create(model="chat", messages=[])
    assert server.fake("a").calls == []


async def test_chat_stream_with_a_final_usage_chunk(server: ServiceServer, acme: TenantKey) -> None:
    client = sdk(server, acme.key)
    stream = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "echo: one two three" and finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    rows = await ledger(server, acme.tenant)
    assert [(r.operation, r.outcome, r.output_tokens) for r in rows] == [("stream", "ok", usage.completion_tokens)]


async def test_a_stream_that_fails_before_its_first_chunk_is_a_plain_http_error(
    server: ServiceServer, acme: TenantKey
) -> None:
    for name in ("a", "b"):
        server.fake(name).always(Fault.unavailable())
    with pytest.raises(openai.InternalServerError) as raised:
        await sdk(server, acme.key).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert raised.value.status_code == 503


async def test_a_stream_that_breaks_midway_ends_with_an_error_event(server: ServiceServer, acme: TenantKey) -> None:
    server.fake("a").script(Fault.fail_mid_stream(after_chunks=2))
    stream = await sdk(server, acme.key).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "one two three four"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="the stream broke"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "".join(r or "" for r in received) == "echo: one"
    rows = await ledger(server, acme.tenant)
    assert [(r.operation, r.outcome) for r in rows] == [("stream", "unavailable")]


# ---- /v1/models and the tenant's settings ----------------------------------------------------------
async def test_models_lists_what_the_key_may_use(server: ServiceServer) -> None:
    tenant = await make_tenant(server, "limited")
    client = sdk(server, tenant.key)
    every = {m.id for m in (await client.models.list()).data}
    # every pipeline; no provider/model: those are called directly only where the allowed list names them
    assert {"embedding", "chat"} <= every and not {m for m in every if "/" in m}
    async with http(server, ADMIN) as admin:
        path = f"/admin/tenants/{tenant.tenant}/settings"
        changed = await admin.patch(path, json={"allowed_pipelines": ["embedding"]})
        assert changed.status_code == 200, changed.text
    assert [m.id for m in (await client.models.list()).data] == ["embedding"]  # direct model refs are off too
    assert (await client.models.retrieve("embedding")).id == "embedding"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("chat")  # configured, but not for this key: 404 like an unknown one
    # a configured name this key may not use is answered like an unknown one, before its kind is
    # checked: a tenant cannot map the configuration by probing
    for name in ("chat", "embedding-that-does-not-exist"):
        with pytest.raises(openai.NotFoundError, match=f"the model '{name}' does not exist or this key may not"):
            await client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    for name in (f"a/{EMB}", "a/gpt-4o-mini", "chat"):  # not allowed, whatever their kind
        with pytest.raises(openai.NotFoundError, match="does not exist or this key may not use it"):
            await client.embeddings.create(model=name, input=["x"])
    assert server.fake("a").calls == []
    assert len((await client.embeddings.create(model="embedding", input=["x"])).data) == 1
