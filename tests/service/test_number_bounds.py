"""Numbers out of range in tenant requests (huge ints, NaN, infinities): a 400 naming the field,
never a 500 (the class of H5 beyond the admin API)."""

from __future__ import annotations

import pytest

from tests.service.conftest import http, make_tenant
from tests.service.harness import ServiceServer


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/chat/completions",
            f'{{"model": "chat", "messages": [{{"role": "user", "content": "hi"}}], "seed": {10**30}}}',
            "seed",
        ),
        (
            "/v1/chat/completions",
            f'{{"model": "chat", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": {10**30}}}',
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            "temperature",
        ),
        (
            "/v1/chat/completions",
            '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}',
            "top_p",
        ),
        ("/v1/embeddings", f'{{"model": "embedding", "input": ["x"], "dimensions": {10**30}}}', "dimensions"),
        ("/v1/tables/docs/search", f'{{"query": "x", "hnsw_ef": {10**30}}}', "hnsw_ef"),
        ("/v1/tables/docs/search", '{"query": "x", "score_threshold": NaN}', "score_threshold"),
        ("/v1/tables/docs/search", '{"vector": [NaN, 1.0]}', "vector"),
        ("/v1/tables/docs/search", f'{{"query": "x", "limit": {10**30}}}', "limit"),
    ],
)
async def test_out_of_range_numbers_are_400(server: ServiceServer, path: str, body: str, field: str) -> None:
    tenant = await make_tenant(server)
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        if path.startswith("/v1/tables/docs/search"):
            await client.post("/v1/tables/docs/records", json={"records": [{"id": "1", "text": "t"}]})
        response = await client.post(path, content=body)
    assert response.status_code in (400, 404), response.text
    if response.status_code == 400:
        assert field in response.json()["error"]["message"], response.text


CHAT = '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], '


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", CHAT + '"temperature": true}', "temperature"),
        ("/v1/chat/completions", CHAT + '"max_tokens": true}', "max_tokens"),
        ("/v1/chat/completions", CHAT + '"max_tokens": 5.0}', "max_tokens"),
        ("/v1/chat/completions", CHAT + '"stream": "yes"}', "stream"),
        ("/v1/chat/completions", CHAT + '"stream": true, "stream_options": {"include_usage": "yes"}}', "include_usage"),
        ("/v1/embeddings", '{"model": "embedding", "input": ["x"], "dimensions": true}', "dimensions"),
        ("/v1/tables/docs/search", '{"query": "x", "exact": 1}', "exact"),
        ("/v1/tables/docs/records", '{"records": [{"id": true, "text": "t"}]}', "id"),
    ],
)
async def test_a_value_of_the_wrong_type_is_400_not_coerced(
    server: ServiceServer, path: str, body: str, field: str
) -> None:
    """``true`` is not a temperature and ``"yes"`` not a boolean: refused, naming the field."""
    tenant = await make_tenant(server)
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        response = await client.post(path, content=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"], response.text


async def test_nan_temperature_says_it_is_not_finite(server: ServiceServer) -> None:
    tenant = await make_tenant(server)
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        response = await client.post("/v1/chat/completions", content=CHAT + '"temperature": NaN}')
    assert response.status_code == 400 and "finite" in response.json()["error"]["message"], response.text
