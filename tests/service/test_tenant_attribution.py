"""The tenant table routes bill each call to the calling API key and use the tenant's default
embedding pipeline from its settings, as the OpenAI-compatible routes do (M3). (A tenant that does
not exist has no key, so the service cannot be asked for one: the library and CLI side of that is in
``tests/vectors/test_unknown_tenant.py``.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.service.conftest import ADMIN, http, ledger, make_tenant, settings
from tests.service.harness import EMB, ServiceServer, service_yaml

RECORDS = [{"id": "1", "text": "login fails on mobile"}, {"id": "2", "text": "dark mode please"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    tmp = tmp_path_factory.mktemp("attribution")
    extra = f"  embedding_b: {{kind: embedding, candidates: [b/{EMB}]}}\n"
    with ServiceServer(service_yaml(tmp, extra_pipelines=extra), settings()) as running:
        yield running


async def test_table_calls_are_billed_to_the_key_and_use_the_tenant_default_pipeline(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
        changed = await admin.patch(
            f"/admin/tenants/{acme.tenant}/settings", json={"default_embedding_pipeline": "embedding_b"}
        )
        assert changed.status_code == 200, changed.text
    async with http(server, acme.headers) as client:
        indexed = await client.post("/v1/tables/issues/records", json={"records": RECORDS})
        assert indexed.status_code == 200, indexed.text
        found = await client.post("/v1/tables/issues/search", json={"query": "mobile login"})
        assert found.status_code == 200, found.text
    assert server.fake("a").requests("embed") == []
    assert len(server.fake("b").requests("embed")) == 2
    rows = await ledger(server, acme.tenant)
    assert rows and {r.api_key_id for r in rows} == {acme.key_id}
    assert {r.pipeline for r in rows} == {"embedding_b"}


async def test_without_settings_the_embedding_pipeline_is_used_and_billed_to_the_key(server: ServiceServer) -> None:
    acme = await make_tenant(server, "plain")
    async with http(server, acme.headers) as client:
        indexed = await client.post("/v1/tables/issues/records", json={"records": RECORDS})
        assert indexed.status_code == 200, indexed.text
    rows = await ledger(server, acme.tenant)
    assert rows and {r.api_key_id for r in rows} == {acme.key_id}
    assert {r.pipeline for r in rows} == {"embedding"}
