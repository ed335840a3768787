from __future__ import annotations

import pytest

from pulse_ai.db import SYSTEM_TENANT, Database, IndexRuns, IndexRunStatus, Tenants, TenantStatus, validate_tenant_id
from pulse_ai.errors import InputError, NotFoundError, TenantSuspendedError
from tests.db.conftest import unique_tenant_id


@pytest.mark.parametrize(
    "bad", ["", "Acme", "acme corp", "-acme", "acme-", "ac__me", "_acme", "a" * 65, "acme/x", 7, "é"]
)
def test_tenant_ids_are_lowercase_store_names(bad: object) -> None:
    with pytest.raises(InputError):
        validate_tenant_id(bad, allow_system=False)


def test_the_system_tenant_is_reserved() -> None:
    assert validate_tenant_id(SYSTEM_TENANT) == SYSTEM_TENANT
    with pytest.raises(InputError, match="reserved"):
        validate_tenant_id(SYSTEM_TENANT, allow_system=False)
    assert validate_tenant_id("acme-2_b") == "acme-2_b"


async def test_create_is_idempotent_and_keeps_what_exists(db: Database) -> None:
    tenants = Tenants(db)
    tenant_id = unique_tenant_id()
    first = await tenants.create(tenant_id, "Acme")
    again = await tenants.create(tenant_id, "Another name")
    assert again == first and again.display_name == "Acme" and again.status is TenantStatus.ACTIVE
    assert tenant_id in [t.id for t in await tenants.list()]
    assert SYSTEM_TENANT not in [t.id for t in await tenants.list()]
    assert SYSTEM_TENANT in [t.id for t in await tenants.list(include_system=True)]


async def test_suspend_and_require_active(db: Database, tenant: str) -> None:
    tenants = Tenants(db)
    assert (await tenants.require_active(tenant)).id == tenant
    assert (await tenants.suspend(tenant)).status is TenantStatus.SUSPENDED
    with pytest.raises(TenantSuspendedError, match=tenant):
        await tenants.require_active(tenant)
    await tenants.activate(tenant)
    await tenants.require_active(tenant)
    with pytest.raises(NotFoundError):
        await tenants.suspend(unique_tenant_id("missing"))
    with pytest.raises(NotFoundError):
        await tenants.require_active(unique_tenant_id("missing"))


async def test_settings_default_to_everything_allowed_and_can_be_changed(db: Database, tenant: str) -> None:
    tenants = Tenants(db)
    settings = await tenants.settings(tenant)
    assert settings.allowed_pipelines is None and settings.allows("anything")
    changed = await tenants.update_settings(
        tenant,
        allowed_pipelines=["embedding", "summarize"],
        default_generation_pipeline="summarize",
        provider_overrides={"openai": {"base_url": "http://gw.internal/v1"}},
    )
    assert changed.allows("summarize") and not changed.allows("other")
    assert changed.default_pipeline("generation") == "summarize" and changed.default_pipeline("embedding") is None
    assert dict(changed.provider_overrides["openai"]) == {"base_url": "http://gw.internal/v1"}
    # only what is given changes
    again = await tenants.update_settings(tenant, default_embedding_pipeline="embedding")
    assert again.allowed_pipelines == ("embedding", "summarize") and again.default_pipeline("embedding") == "embedding"
    cleared = await tenants.update_settings(tenant, allowed_pipelines=None)
    assert cleared.allowed_pipelines is None
    with pytest.raises(InputError):
        await tenants.update_settings(tenant, allowed_pipelines=["no spaces allowed"])
    with pytest.raises(NotFoundError):
        await tenants.settings(unique_tenant_id("missing"))


async def test_index_runs_record_counts_per_tenant(db: Database, tenant: str) -> None:
    other = (await Tenants(db).create(unique_tenant_id())).id
    runs = IndexRuns(db)
    run_id = await runs.start(tenant, "issues")
    finished = await runs.finish(run_id, new=3, updated=1, unchanged=5, failed=0)
    assert (finished.status, finished.new, finished.updated, finished.unchanged) == (IndexRunStatus.SUCCEEDED, 3, 1, 5)
    assert finished.finished_at is not None and finished.finished_at >= finished.started_at
    failed_id = await runs.start(tenant, "tickets")
    failed = await runs.finish(failed_id, failed=2, error="provider unavailable")
    assert failed.status is IndexRunStatus.FAILED and failed.error == "provider unavailable"
    await runs.start(other, "issues")
    mine = await runs.list(tenant)
    assert {r.id for r in mine} == {run_id, failed_id} and all(r.tenant_id == tenant for r in mine)
    assert [r.id for r in await runs.list(tenant, table="issues")] == [run_id]
    with pytest.raises(NotFoundError):
        await runs.finish("nope")
