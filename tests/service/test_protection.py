"""Protection over real HTTP: per-key rate limits (requests, tokens) with Retry-After, budgets (429
naming the budget), body and input limits (413/400), the request deadline (504), and keys compared
in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.service.conftest import ADMIN, TenantKey, http, ledger, make_tenant, sdk, settings
from tests.service.harness import ADMIN_KEY, ServiceServer, service_yaml


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    tmp: Path = tmp_path_factory.mktemp("protection")
    limits = settings(
        requests_per_minute=5,
        tokens_per_minute=2000,
        max_input_chars=10_000,
        max_body_bytes=64 * 1024,
        request_timeout_s=2.0,
    )
    with ServiceServer(service_yaml(tmp, slow_latency=6.0), limits) as running:
        yield running


async def test_requests_per_minute_per_key(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    async with http(server, acme.headers) as client:
        answers = [await client.get("/v1/tables") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_requests"
    assert "5 requests per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 12  # one request back every 12 s
    other = await make_tenant(server, "other")  # another key has its own buckets
    async with http(server, other.headers) as client:
        assert (await client.get("/v1/tables")).status_code == 200


async def test_tokens_per_minute_per_key(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    client = sdk(server, acme.key)
    # a request larger than the whole minute's allowance goes when the bucket is full, and empties it
    first = await client.embeddings.create(model="embedding", input=["word " * 1800])
    assert first.usage.prompt_tokens > 1500  # what it really used is charged, less than the estimate
    with pytest.raises(openai.RateLimitError) as raised:
        await client.embeddings.create(model="embedding", input=["word " * 500])
    assert raised.value.body is not None
    assert raised.value.response.json()["error"]["code"] == "rate_limit_tokens"
    assert int(raised.value.response.headers["retry-after"]) >= 1
    async with http(server, acme.headers) as plain:  # what uses no tokens is not held by them
        assert (await plain.get("/v1/tables")).status_code == 200


async def _count_429s(server: ServiceServer) -> float:
    async with http(server, ADMIN) as admin:
        text = (await admin.get("/metrics")).text
    prefix = 'pulse_ai_http_requests_total{method="POST",route="/v1/embeddings",status="429"} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def test_budget_exceeded_is_a_429_naming_the_budget_that_the_sdk_does_not_retry(
    server: ServiceServer,
) -> None:
    acme = await make_tenant(server, "acme")
    async with http(server, ADMIN) as admin:
        budget = await admin.put(
            f"/admin/tenants/{acme.tenant}/budgets", json={"limit_usd": "0.000000001", "pipeline": "embedding"}
        )
        assert budget.status_code == 200, budget.text
    before = await _count_429s(server)
    client = sdk(server, acme.key, max_retries=2)  # the SDK's default retries: the header stops them
    with pytest.raises(openai.RateLimitError) as raised:
        await client.embeddings.create(model="embedding", input=["a text that costs something"])
    error = raised.value.response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert f"budget exceeded for tenant '{acme.tenant}', scope embedding" in error["message"]
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert await _count_429s(server) == before + 1
    assert server.fake("a").calls == [] and await ledger(server, acme.tenant) == []


async def test_a_stream_over_budget_is_refused_before_its_first_chunk(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    async with http(server, ADMIN) as admin:
        await admin.put(f"/admin/tenants/{acme.tenant}/budgets", json={"limit_tokens": 1, "period": "day"})
    with pytest.raises(openai.RateLimitError, match="budget exceeded"):
        await sdk(server, acme.key).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert server.fake("a").calls == []


async def test_a_body_over_the_limit_is_413_whether_its_length_is_declared_or_not(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    big = {"model": "embedding", "input": ["x" * 9000] * 8}  # about 72 KiB of JSON

    async def chunks() -> Any:
        payload = (b'{"model": "embedding", "input": ["' + b"y" * 70_000) + b'"]}'
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    async with http(server, acme.headers) as client:
        declared = await client.post("/v1/embeddings", json=big)
        streamed = await client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert "larger than the service's limit of 65536 bytes" in answer.json()["error"]["message"]
        assert "x-request-id" in answer.headers
    assert server.fake("a").calls == []


async def test_the_request_deadline_is_a_504(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    client = sdk(server, acme.key)
    with pytest.raises(openai.APIStatusError) as plain:
        await client.chat.completions.create(model="slow_chat", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as streamed:
        await client.chat.completions.create(
            model="slow_chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    for raised in (plain, streamed):
        assert raised.value.status_code == 504
        assert "longer than the service's deadline of 2 s" in raised.value.message


class _Spy:
    def __init__(self) -> None:
        self.real = hmac.compare_digest
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)


async def test_keys_are_compared_in_constant_time(server: ServiceServer, monkeypatch: pytest.MonkeyPatch) -> None:
    acme = await make_tenant(server, "acme")
    spy = _Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    near = acme.key[:-1] + ("A" if acme.key[-1] != "A" else "B")  # same prefix, last character differs
    async with http(server) as client:
        assert (await client.get("/v1/models", headers={"authorization": f"Bearer {near}"})).status_code == 401
        assert spy.calls, "a key with a known prefix was refused without a constant-time comparison"
        spy.calls.clear()
        assert (await client.get("/v1/models", headers=acme.headers)).status_code == 200
        assert (await client.get("/v1/models", headers=acme.headers)).status_code == 200  # from the key cache
        assert len(spy.calls) >= 2
        spy.calls.clear()
        wrong_admin = "x" * len(ADMIN_KEY)
        refused = await client.get("/admin/tenants", headers={"authorization": f"Bearer {wrong_admin}"})
        assert refused.status_code == 401
        assert len(spy.calls) == 1 and all(len(side) == 32 for side in spy.calls[0])  # digests, not the keys


async def test_a_key_of_another_tenant_is_not_the_admin_key(server: ServiceServer) -> None:
    acme: TenantKey = await make_tenant(server, "acme")
    async with http(server, acme.headers) as client:
        assert (await client.get("/admin/tenants")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
