"""The admin API over real HTTP (``Authorization: Bearer $PULSE_AI_ADMIN_KEY``): tenants and their
settings, keys, budgets, and the usage of every tenant."""

from __future__ import annotations

import secrets
from decimal import Decimal

from tests.service.conftest import ADMIN, http, make_tenant, sdk
from tests.service.harness import ServiceServer


async def test_tenants(server: ServiceServer) -> None:
    tenant = f"corp-{secrets.token_hex(3)}"
    async with http(server, ADMIN) as admin:
        created = await admin.post("/admin/tenants", json={"id": tenant, "name": "Corp Inc"})
        again = await admin.post("/admin/tenants", json={"id": tenant, "name": "Other name"})
        assert created.status_code == again.status_code == 201
        assert again.json()["name"] == "Corp Inc"  # "already exists" is success, nothing overwritten
        listed = (await admin.get("/admin/tenants")).json()["data"]
        assert tenant in [t["id"] for t in listed] and "_system" not in [t["id"] for t in listed]
        detail = (await admin.get(f"/admin/tenants/{tenant}")).json()
        assert detail["settings"]["allowed_pipelines"] is None
        assert (await admin.post(f"/admin/tenants/{tenant}/suspend")).json()["status"] == "suspended"
        assert (await admin.post(f"/admin/tenants/{tenant}/activate")).json()["status"] == "active"
        patched = await admin.patch(
            f"/admin/tenants/{tenant}/settings",
            json={"allowed_pipelines": ["embedding"], "default_embedding_pipeline": "embedding"},
        )
        assert patched.json()["allowed_pipelines"] == ["embedding"]
        reset = await admin.patch(f"/admin/tenants/{tenant}/settings", json={"allowed_pipelines": None})
        assert reset.json() == {**patched.json(), "allowed_pipelines": None}  # only the given field changed
        missing = await admin.get("/admin/tenants/no-such-tenant")
        bad = await admin.post("/admin/tenants", json={"id": "Not A Slug"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert bad.status_code == 400


async def test_keys(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    async with http(server, ADMIN) as admin:
        body = {"name": "etl", "scopes": ["index", "search"], "expires_days": 30}
        created = await admin.post(f"/admin/tenants/{acme.tenant}/keys", json=body)
        assert created.status_code == 201
        key = created.json()
        assert key["key"].startswith(key["prefix"]) and key["scopes"] == ["index", "search"] and key["expires_at"]
        listed = (await admin.get("/admin/keys", params={"tenant": acme.tenant})).json()["data"]
        assert {k["id"] for k in listed} == {acme.key_id, key["id"]}
        assert all("key" not in k for k in listed)  # the secret is shown once, at creation
        assert (await admin.delete(f"/admin/keys/{key['prefix']}")).json()["state"] == "revoked"
        unknown = await admin.delete("/admin/keys/pk_live_00000000")
        no_tenant = await admin.post("/admin/tenants/no-such-tenant/keys", json={})
        bad_scope = await admin.post(f"/admin/tenants/{acme.tenant}/keys", json={"scopes": ["Not A Scope"]})
    assert unknown.status_code == 404 and no_tenant.status_code == 404 and bad_scope.status_code == 400


async def test_budgets(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    path = f"/admin/tenants/{acme.tenant}/budgets"
    async with http(server, ADMIN) as admin:
        monthly = await admin.put(path, json={"limit_usd": "25", "period": "month"})
        daily = await admin.put(path, json={"limit_tokens": 1000, "period": "day", "pipeline": "chat", "mode": "soft"})
        assert monthly.status_code == daily.status_code == 200
        assert Decimal(monthly.json()["limit_usd"]) == Decimal(25)
        assert (monthly.json()["pipeline"], monthly.json()["mode"]) == (None, "hard")
        await sdk(server, acme.key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        statuses = {(b["pipeline"], b["period"]): b for b in (await admin.get(path)).json()["data"]}
        assert statuses[("chat", "day")]["spent_tokens"] > 0 and float(statuses[(None, "month")]["spent_usd"]) > 0
        deleted = await admin.delete(path, params={"pipeline": "chat", "period": "day"})
        assert deleted.json() == {"deleted": True}
        assert [(b["pipeline"], b["period"]) for b in (await admin.get(path)).json()["data"]] == [(None, "month")]
        negative = await admin.put(path, json={"limit_usd": "-1"})
    assert negative.status_code == 400


async def test_usage_of_every_tenant(server: ServiceServer) -> None:
    first, second = await make_tenant(server, "u1"), await make_tenant(server, "u2")
    for tenant in (first, second):
        await sdk(server, tenant.key).embeddings.create(model="embedding", input=["x", "y"])
    async with http(server, ADMIN) as admin:
        report = (await admin.get("/admin/usage", params={"by": "pipeline"})).json()
    rows = {(r["tenant"], r["key"]): r for r in report["data"]}
    for tenant in (first, second):
        assert rows[(tenant.tenant, "embedding")]["requests"] == 1
    async with http(server, first.headers) as client:
        own = (await client.get("/v1/usage", params={"by": "pipeline"})).json()["data"]
    assert [r["key"] for r in own] == ["embedding"] and "tenant" not in own[0]
