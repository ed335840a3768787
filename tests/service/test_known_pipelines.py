"""Pipeline names in tenants' settings and budgets must be configured ones (M5): the admin API, the
library and the CLI refuse an unknown name with a 400/InputError naming it and the known ones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pulse_ai import InputError, PulseAI
from pulse_ai.cli import app
from pulse_ai.db import Database, Tenants
from tests.service.conftest import ADMIN, http, make_tenant
from tests.service.harness import CHAT, ServiceServer, service_yaml


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"allowed_pipelines": ["chat", "chta"]}, "allowed_pipelines[1]: unknown pipeline 'chta'"),
        ({"allowed_pipelines": ["a/no-such-model"]}, "unknown pipeline 'a/no-such-model'"),
        ({"default_embedding_pipeline": "embeding"}, "default_embedding_pipeline: unknown pipeline 'embeding'"),
        ({"default_generation_pipeline": "nope"}, "default_generation_pipeline: unknown pipeline 'nope'"),
        ({"default_generation_pipeline": "embedding"}, "is a embedding pipeline, not generation"),
    ],
)
async def test_settings_naming_unknown_pipelines_are_400(
    server: ServiceServer, body: dict[str, Any], named: str
) -> None:
    tenant = await make_tenant(server)
    async with http(server, ADMIN) as client:
        response = await client.patch(f"/admin/tenants/{tenant.tenant}/settings", json=body)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert named in message
        if "unknown" in named:
            assert "known pipelines" in message and ("chat" in message or "embedding" in message)
        unchanged = await client.get(f"/admin/tenants/{tenant.tenant}")
    assert unchanged.json()["settings"]["allowed_pipelines"] is None


async def test_known_pipelines_and_model_refs_are_accepted(server: ServiceServer) -> None:
    tenant = await make_tenant(server)
    body = {"allowed_pipelines": ["chat", f"a/{CHAT}"], "default_generation_pipeline": "chat"}
    async with http(server, ADMIN) as client:
        response = await client.patch(f"/admin/tenants/{tenant.tenant}/settings", json=body)
    assert response.status_code == 200, response.text


async def test_a_budget_for_an_unknown_pipeline_is_400(server: ServiceServer) -> None:
    tenant = await make_tenant(server)
    async with http(server, ADMIN) as client:
        response = await client.put(
            f"/admin/tenants/{tenant.tenant}/budgets", json={"pipeline": "chatt", "limit_usd": "5"}
        )
        assert response.status_code == 400, response.text
        assert "unknown pipeline 'chatt'" in response.json()["error"]["message"]
        assert "chat" in response.json()["error"]["message"]
        fine = await client.put(f"/admin/tenants/{tenant.tenant}/budgets", json={"pipeline": "chat", "limit_usd": "5"})
    assert fine.status_code == 200, fine.text


async def test_the_library_refuses_unknown_pipelines(tmp_path: Path) -> None:
    async with PulseAI.from_yaml(service_yaml(tmp_path)) as ai:
        platform = await ai.platform()
        await platform.tenants.create("acme")
        with pytest.raises(InputError, match=r"unknown pipeline 'nope'; known pipelines.*chat"):
            await platform.tenants.update_settings("acme", allowed_pipelines=["nope"])
        with pytest.raises(InputError, match=r"unknown pipeline 'nope'"):
            await platform.usage.budgets.set("acme", pipeline="nope", limit_tokens=10)


def test_the_cli_refuses_a_budget_for_an_unknown_pipeline(tmp_path: Path) -> None:
    config = tmp_path / "pulse-ai.yaml"
    config.write_text(service_yaml(tmp_path))

    async def create() -> None:
        db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'pulse-ai.db'}")
        try:
            await Tenants(db).create("acme")
        finally:
            await db.close()

    asyncio.run(create())
    args = ["budgets", "set", "acme", "--limit-usd", "5", "--config", str(config)]
    refused = CliRunner().invoke(app, [*args, "--pipeline", "nope"])
    assert refused.exit_code == 1 and "unknown pipeline 'nope'" in refused.output and "chat" in refused.output
    accepted = CliRunner().invoke(app, [*args, "--pipeline", "chat"])
    assert accepted.exit_code == 0, accepted.output
