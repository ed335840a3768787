"""Request bodies that cannot be read (L3): malformed JSON, another content type, too large, wrong
types. Each is a 4xx in OpenAI's error shape whose message says what is wrong and where (the field
path), never a 500, and never echoes what was sent (it may hold a secret)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.conftest import ADMIN, http, make_tenant
from tests.service.harness import ServiceServer

SECRET = "sk-LEAKED-SECRET-0123"


def check(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]
    assert SECRET not in response.text


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (f'{{"model": "chat", "messages": [{{"role": "user", "content": "{SECRET}"}}', {}, 400, ("JSON",)),
        (f'{{"model": "chat", "user": "{SECRET}",}}', {}, 400, ("JSON",)),
        (b"\xff\xfe not utf-8", {}, 400, ("JSON",)),
        ("", {}, 400, ("body",)),
        (f"model=chat&user={SECRET}", {"content-type": "application/x-www-form-urlencoded"}, 400, ("JSON",)),
        (f'"{SECRET}"', {}, 400, ("object",)),
        (f'[{{"model": "{SECRET}"}}]', {}, 400, ("object",)),
    ],
)
async def test_unreadable_bodies_are_400_saying_why(
    server: ServiceServer, content: str | bytes, headers: dict[str, str], status: int, words: tuple[str, ...]
) -> None:
    tenant = await make_tenant(server)
    async with http(server, tenant.headers | {"content-type": "application/json"} | headers) as client:
        response = await client.post("/v1/chat/completions", content=content)
    check(response, status, *words)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": "chat", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "chat", "messages": [{"role": "boss", "content": SECRET}]}, "messages[0].role"),
        ({"model": "chat", "messages": [], "temperature": "hot"}, "temperature"),
        ({"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": SECRET}, "max_tokens"),
        ({"model": ["chat"], "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "chat", "messages": [{"role": "user", "content": "x"}], "api_key": SECRET}, "api_key"),
    ],
)
async def test_wrong_types_name_the_field_path(server: ServiceServer, body: dict[str, Any], path: str) -> None:
    tenant = await make_tenant(server)
    async with http(server, tenant.headers) as client:
        response = await client.post("/v1/chat/completions", json=body)
    check(response, 400, path)


async def test_a_body_too_large_is_413(server: ServiceServer) -> None:
    tenant = await make_tenant(server)
    big = '{"model": "chat", "messages": [{"role": "user", "content": "' + "x" * 400_000 + SECRET + '"}]}'
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        response = await client.post("/v1/chat/completions", content=big)
    assert response.status_code == 413, response.text
    assert "large" in response.json()["error"]["message"]
    assert SECRET not in response.text


async def test_admin_bodies_too(server: ServiceServer) -> None:
    async with http(server, ADMIN | {"content-type": "application/json"}) as client:
        broken = await client.post("/admin/tenants", content=f'{{"id": "{SECRET}"')
        typed = await client.put("/admin/tenants/acme/budgets", content=f'{{"limit_tokens": "{SECRET}"}}')
    check(broken, 400, "JSON")
    check(typed, 400, "limit_tokens")
