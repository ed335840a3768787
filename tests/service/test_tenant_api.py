"""The tenant API over real HTTP: tables, records, search, delete, usage; and every tenant endpoint
tried with another tenant's names (404, no existence oracle, nothing of the other tenant touched)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pulse_ai.testing import fake_vector
from tests.service.conftest import ADMIN, TenantKey, http, ledger, make_tenant
from tests.service.harness import ServiceServer

ISSUES = [
    {"id": "ACME-1", "text": "checkout times out for big carts", "metadata": {"status": "open", "priority": 1}},
    {"id": "ACME-2", "text": "dark mode for the dashboard", "metadata": {"status": "closed", "priority": 3}},
    {"id": 3, "text": "payment fails on large orders", "metadata": {"status": "open", "priority": 2}},
]


async def index(server: ServiceServer, tenant: TenantKey, table: str, records: list[dict[str, Any]]) -> Any:
    async with http(server, tenant.headers) as client:
        answer = await client.post(f"/v1/tables/{table}/records", json={"records": records})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_index_search_count_list_delete(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    report = await index(server, acme, "issues", ISSUES)
    assert (report["new"], report["updated"], report["unchanged"], report["failed"]) == (3, 0, 0, 0)
    again = await index(server, acme, "issues", [*ISSUES[:2], {**ISSUES[2], "text": "payment fails, edited"}])
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 1, 2)  # resumable, idempotent
    async with http(server, acme.headers) as client:
        query = {"query": "checkout times out for big carts"}
        hits = (await client.post("/v1/tables/issues/search", json=query)).json()
        assert hits["data"][0]["id"] == "ACME-1" and hits["data"][0]["metadata"] == ISSUES[0]["metadata"]
        open_only = await client.post(
            "/v1/tables/issues/search", json={"query": "anything", "where": {"status": "open"}, "limit": 5}
        )
        assert {h["id"] for h in open_only.json()["data"]} == {"ACME-1", "3"}
        vector = fake_vector("dark mode for the dashboard", 64).tolist()
        by_vector = await client.post("/v1/tables/issues/search", json={"vector": vector, "limit": 1, "exact": True})
        assert by_vector.json()["data"][0]["id"] == "ACME-2"
        assert np.isclose(by_vector.json()["data"][0]["score"], 1.0, atol=1e-4)
        strict = await client.post("/v1/tables/issues/search", json={"vector": vector, "score_threshold": 0.99})
        assert [h["id"] for h in strict.json()["data"]] == ["ACME-2"]
        table = (await client.get("/v1/tables/issues")).json()
        assert (table["name"], table["count"], table["runs"]) == ("issues", 3, 2)
        assert [t["name"] for t in (await client.get("/v1/tables")).json()["data"]] == ["issues"]
        deleted = await client.post("/v1/tables/issues/delete", json={"ids": ["ACME-2", "nope"]})
        assert deleted.json()["deleted"] == 1
        assert (await client.get("/v1/tables/issues")).json()["count"] == 2
        usage = (await client.get("/v1/usage", params={"by": "pipeline"})).json()
    assert [row["key"] for row in usage["data"]] == ["embedding"]
    rows = await ledger(server, acme.tenant)
    assert usage["data"][0]["requests"] == len({r.request_id for r in rows}) > 0


async def test_search_and_index_inputs_are_checked(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    await index(server, acme, "issues", ISSUES[:1])
    async with http(server, acme.headers) as client:
        both = await client.post("/v1/tables/issues/search", json={"query": "x", "vector": [0.1] * 64})
        neither = await client.post("/v1/tables/issues/search", json={"limit": 3})
        wrong_size = await client.post("/v1/tables/issues/search", json={"vector": [0.1] * 3})
        bad_table = await client.post("/v1/tables/no%20spaces/records", json={"records": ISSUES[:1]})
        repeated = await client.post("/v1/tables/issues/records", json={"records": [ISSUES[0], ISSUES[0]]})
        no_text = await client.post("/v1/tables/issues/records", json={"records": [{"id": "x", "text": " "}]})
    for answer in (both, neither, wrong_size, bad_table, repeated, no_text):
        assert answer.status_code == 400, answer.text
    assert "exactly one of query" in both.json()["error"]["message"]
    assert "repeats the id" in repeated.json()["error"]["message"]


async def test_the_tenant_comes_from_the_key_only(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    globex = await make_tenant(server, "globex")
    await index(server, globex, "secret", [{"id": "G-1", "text": "globex's plan"}])
    await index(server, acme, "issues", ISSUES)
    await index(server, globex, "issues", [{"id": "G-2", "text": "checkout times out for big carts"}])
    async with http(server, acme.headers) as client:
        refused = await client.post(
            "/v1/tables/issues/records", json={"tenant": globex.tenant, "records": [{"id": "x", "text": "y"}]}
        )
        assert refused.status_code == 400 and "tenant: unsupported parameter" in refused.json()["error"]["message"]
        # a query parameter naming another tenant changes nothing: still acme's view
        listed = await client.get("/v1/tables", params={"tenant": globex.tenant})
        assert [t["name"] for t in listed.json()["data"]] == ["issues"]
        same_name = await client.post(
            "/v1/tables/issues/search", json={"query": "checkout times out for big carts", "limit": 10}
        )
        assert {h["id"] for h in same_name.json()["data"]} == {"ACME-1", "ACME-2", "3"}


async def test_every_tenant_endpoint_answers_404_for_another_tenants_table(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    globex = await make_tenant(server, "globex")
    await index(server, globex, "secret", [{"id": "G-1", "text": "globex's plan"}])
    attempts = [
        ("GET", "/v1/tables/secret", None),
        ("POST", "/v1/tables/secret/search", {"query": "plan"}),
        ("POST", "/v1/tables/secret/search", {"vector": fake_vector("globex's plan", 64).tolist()}),
        ("POST", "/v1/tables/secret/delete", {"ids": ["G-1"]}),
    ]
    async with http(server, acme.headers) as client:
        answers = [await client.request(method, path, json=body) for method, path, body in attempts]
        never = [await client.request(m, p.replace("secret", "never-made"), json=b) for m, p, b in attempts]
        tables = (await client.get("/v1/tables")).json()["data"]
    for answer, unknown in zip(answers, never, strict=True):
        assert answer.status_code == 404, answer.text
        # the same answer as for a table nobody has: no existence oracle
        assert answer.json()["error"]["message"].replace("secret", "X") == unknown.json()["error"]["message"].replace(
            "never-made", "X"
        )
    assert tables == []
    async with http(server, globex.headers) as client:
        kept = (await client.get("/v1/tables/secret")).json()
        usage = (await client.get("/v1/usage")).json()["data"]
    assert kept["count"] == 1  # acme's delete touched nothing of globex
    async with http(server, acme.headers) as client:
        acme_usage = (await client.get("/v1/usage")).json()["data"]
    assert sum(r["requests"] for r in acme_usage) < sum(r["requests"] for r in usage) or acme_usage == []
    assert {r.tenant_id for r in await ledger(server, acme.tenant)} <= {acme.tenant}


async def test_scopes_limit_what_a_key_may_do(server: ServiceServer) -> None:
    reader = await make_tenant(server, "reader", scopes=["search"])
    async with http(server, reader.headers) as client:
        write = await client.post("/v1/tables/issues/records", json={"records": ISSUES[:1]})
        embed = await client.post("/v1/embeddings", json={"model": "embedding", "input": ["x"]})
        usage = await client.get("/v1/usage")
        listed = await client.get("/v1/tables")
        models = await client.get("/v1/models")
    for answer, scope in ((write, "index"), (embed, "embed"), (usage, "usage")):
        assert answer.status_code == 403 and f"'{scope}' scope" in answer.json()["error"]["message"]
    assert listed.status_code == 200 and models.status_code == 200


async def test_keys_are_refused_when_missing_wrong_revoked_or_suspended(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    wrong = acme.key[:-1] + ("A" if acme.key[-1] != "A" else "B")
    async with http(server) as client:
        missing = await client.get("/v1/models")
        bad = await client.get("/v1/models", headers={"authorization": f"Bearer {wrong}"})
        malformed = await client.get("/v1/models", headers={"authorization": "Bearer sk-something"})
        good = await client.get("/v1/models", headers=acme.headers)
    assert good.status_code == 200
    for answer in (missing, bad, malformed):
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
    assert acme.key not in bad.text and wrong not in bad.text
    async with http(server, ADMIN) as admin:
        assert (await admin.post(f"/admin/tenants/{acme.tenant}/suspend")).status_code == 200
    async with http(server, acme.headers) as client:
        suspended = await client.get("/v1/models")
    assert suspended.status_code == 403 and suspended.json()["error"]["code"] == "tenant_suspended"
    async with http(server, ADMIN) as admin:
        await admin.post(f"/admin/tenants/{acme.tenant}/activate")
        assert (await admin.delete(f"/admin/keys/{acme.key_id}")).json()["state"] == "revoked"
    async with http(server, acme.headers) as client:
        revoked = await client.get("/v1/models")  # at once on this replica, despite the key cache
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/tables", "/v1/usage", "/v1/models", "/v1/tables/x/search"])
async def test_every_response_carries_a_request_id_and_the_overhead(server: ServiceServer, path: str) -> None:
    acme = await make_tenant(server, "acme")
    async with http(server, acme.headers) as client:
        answer = await (client.post(path, json={"query": "q"}) if path.endswith("search") else client.get(path))
    assert len(answer.headers["x-request-id"]) == 32
    assert float(answer.headers["x-pulse-overhead-ms"]) >= 0
