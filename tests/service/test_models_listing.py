"""GET /v1/models and /v1/models/{id} list exactly what the calling tenant may call (L4): its allowed
pipelines, and a provider/model only where its allowed list names it (the rule of direct calls)."""

from __future__ import annotations

import httpx

from tests.service.conftest import ADMIN, http, make_tenant, sdk
from tests.service.harness import CHAT, EMB, ServiceServer


async def listed(server: ServiceServer, headers: dict[str, str]) -> list[str]:
    async with http(server, headers) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["data"]]


async def test_a_tenant_without_an_allowed_list_sees_pipelines_only(server: ServiceServer) -> None:
    tenant = await make_tenant(server)
    assert await listed(server, tenant.headers) == ["chat", "embedding", "slow_chat"]
    async with http(server, tenant.headers) as client:
        one = await client.get(f"/v1/models/a/{CHAT}")
        assert one.status_code == 404, one.text
        pipeline = await client.get("/v1/models/chat")
        assert pipeline.status_code == 200 and pipeline.json()["kind"] == "pipeline"
    # and indeed the model cannot be called directly
    async with http(server, tenant.headers) as client:
        call = await client.post("/v1/embeddings", json={"model": f"a/{EMB}", "input": ["x"]})
        unknown = await client.post("/v1/embeddings", json={"model": "no-such-model", "input": ["x"]})
    # answered as an unknown name is: a tenant cannot tell configured names from unknown ones
    assert call.status_code == unknown.status_code == 404
    assert call.json()["error"]["message"].replace(f"a/{EMB}", "X") == unknown.json()["error"]["message"].replace(
        "no-such-model", "X"
    )


async def test_an_allowed_list_shows_its_pipelines_and_the_models_it_names(server: ServiceServer) -> None:
    tenant = await make_tenant(server)
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
        changed = await admin.patch(
            f"/admin/tenants/{tenant.tenant}/settings", json={"allowed_pipelines": ["chat", f"b/{EMB}"]}
        )
        assert changed.status_code == 200, changed.text
    assert await listed(server, tenant.headers) == ["chat", f"b/{EMB}"]
    client = sdk(server, tenant.key)
    assert (await client.models.retrieve(f"b/{EMB}")).id == f"b/{EMB}"
    async with http(server, tenant.headers) as raw:
        assert (await raw.get("/v1/models/embedding")).status_code == 404
        assert (await raw.get(f"/v1/models/a/{EMB}")).status_code == 404
        # everything listed can be called
        assert (await raw.post("/v1/embeddings", json={"model": f"b/{EMB}", "input": ["x"]})).status_code == 200
