"""Lone surrogates ("\\ud800") anywhere in a request body: a clear 400 naming the field, never a 500
(H4). The bodies are sent as raw JSON with ``\\ud800`` escapes, as a buggy client would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.service.conftest import ADMIN, http, make_tenant
from tests.service.harness import ServiceServer

LONE = "\ud800"


def raw(body: dict[str, Any]) -> bytes:
    """JSON as a client would send it: the surrogate escaped (``ensure_ascii``)."""
    return json.dumps(body).encode("ascii")


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CHAT, "stop": [LONE]}, "stop"),
        ({**CHAT, "stop": LONE}, "stop"),
        ({**CHAT, "user": LONE}, "user"),
        ({**CHAT, "model": LONE}, "model"),
        ({**CHAT, "messages": [{"role": "user", "content": "hi", "name": LONE}]}, "messages[0].name"),
        ({**CHAT, "messages": [{"role": "user", "content": LONE}]}, "messages[0].content"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]}, "content"),
        ({**CHAT, LONE: 1}, "body"),
    ],
)
async def test_chat_fields_with_lone_surrogates_are_400(
    server: ServiceServer, body: dict[str, Any], field: str
) -> None:
    tenant = await make_tenant(server)
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        response = await client.post("/v1/chat/completions", content=raw(body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "surrogate" in error["message"] and field in error["message"]
    assert server.fake("a").requests() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "embedding", "input": ["ok"], "user": LONE}, "user"),
        ({"model": LONE, "input": ["ok"]}, "model"),
        ({"model": "embedding", "input": ["ok", LONE]}, "input[1]"),
    ],
)
async def test_embedding_fields_with_lone_surrogates_are_400(
    server: ServiceServer, body: dict[str, Any], field: str
) -> None:
    tenant = await make_tenant(server)
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        response = await client.post("/v1/embeddings", content=raw(body))
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["error"]["message"] and field in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tables/{LONE}/records", {"records": [{"id": "1", "text": "t"}]}, "table"),
        ("/v1/tables/docs/records", {"records": [{"id": LONE, "text": "t"}]}, "records[0].id"),
        ("/v1/tables/docs/records", {"records": [{"id": "1", "text": "t", "metadata": {LONE: 1}}]}, "metadata"),
        ("/v1/tables/docs/search", {"query": "q", "where": {LONE: 1}}, "where"),
        ("/v1/tables/docs/delete", {"ids": [LONE]}, "ids[0]"),
    ],
)
async def test_tenant_table_fields_with_lone_surrogates_are_400(
    server: ServiceServer, path: str, body: dict[str, Any], field: str
) -> None:
    tenant = await make_tenant(server)
    path = path.replace("{LONE}", "%ED%A0%80")
    async with http(server, tenant.headers | {"content-type": "application/json"}) as client:
        response = await client.post(path, content=raw(body))
    assert response.status_code in (400, 404), response.text
    assert response.status_code != 500


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/tenants", {"id": LONE}),
        ("/admin/tenants", {"id": "ok-tenant", "name": LONE}),
    ],
)
async def test_admin_fields_with_lone_surrogates_are_400(
    server: ServiceServer, path: str, body: dict[str, Any]
) -> None:
    async with http(server, ADMIN | {"content-type": "application/json"}) as client:
        response = await client.post(path, content=raw(body))
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["error"]["message"]
