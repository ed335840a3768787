"""The administration commands, end to end: tenant, key, budget, usage, report; one-line errors."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pulse_ai.cli import app
from pulse_ai.db import ApiKeys, Database, SecretKeyring
from pulse_ai.errors import ApiKeyRefusedError
from pulse_ai.usage import UsageRow, UsageServices
from tests.db.conftest import unique_tenant_id

runner = CliRunner()


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input, env=env)
    return result.exit_code, result.stdout, result.stderr


async def _record_usage(url: str, tenant: str) -> None:
    db = await Database.open(url)
    usage = UsageServices(db, sweep_interval_s=None)
    reservation = await usage.budgets.reserve(tenant, "summarize", Decimal("0.02"), tokens=500)
    rows = [
        UsageRow(
            request_id=f"req-{n}",
            attempt=1,
            tenant_id=tenant,
            pipeline="summarize",
            provider="openai",
            model="gpt-4o-mini",
            operation="generate",
            input_tokens=100,
            output_tokens=20,
            billed_usd=Decimal("0.0025"),
            price_table_version="2026-11",
            latency_ms=float(10 + n),
            outcome="ok",
        )
        for n in range(4)
    ]
    await usage.ledger.record(rows, settle=[(reservation, Decimal("0.01"), 480)])
    await usage.close()
    await db.close()


async def _verify(url: str, key: str) -> str:
    db = await Database.open(url)
    try:
        return (await ApiKeys(db).verify(key)).tenant_id
    finally:
        await db.close()


def test_round_trip(db_url: str) -> None:
    tenant = unique_tenant_id("acme")
    assert invoke("db", "upgrade", "--db", db_url)[0] == 0
    code, out, _ = invoke("tenants", "create", tenant, "--name", "Acme Corp", "--db", db_url)
    assert code == 0 and tenant in out and "active" in out
    assert tenant in invoke("tenants", "list", "--db", db_url)[1]

    code, out, err = invoke("keys", "create", tenant, "--name", "ci", "--db", db_url)
    key = out.strip()
    assert code == 0 and key.startswith("pk_live_") and "shown once" in err
    assert asyncio.run(_verify(db_url, key)) == tenant
    listed = invoke("keys", "list", "--tenant", tenant, "--db", db_url)[1]
    assert key[:16] in listed and key not in listed

    code, out, _ = invoke("budgets", "set", tenant, "--limit-usd", "10", "--period", "month", "--db", db_url)
    assert code == 0 and "$10" in out and "month" in out
    asyncio.run(_record_usage(db_url, tenant))
    shown = invoke("budgets", "show", tenant, "--db", db_url)[1]
    assert "$10" in shown and "0.01" in shown

    code, out, _ = invoke(
        "usage", "report", "--tenant", tenant, "--since", "2020-01-01", "--format", "json", "--db", db_url
    )
    (group,) = json.loads(out)
    assert code == 0 and group["key"] == "openai/gpt-4o-mini" and group["requests"] == 4
    assert Decimal(group["billed_usd"]) == Decimal("0.01") and group["p95_latency_ms"] == 13.0
    csv_out = invoke(
        "usage",
        "report",
        "--tenant",
        tenant,
        "--since",
        "2020-01-01",
        "--by",
        "pipeline",
        "--format",
        "csv",
        "--db",
        db_url,
    )[1]
    (csv_row,) = list(csv.DictReader(io.StringIO(csv_out)))
    assert csv_row["key"] == "summarize" and csv_row["input_tokens"] == "400"
    table = invoke("usage", "report", "--tenant", tenant, "--since", "2020-01-01", "--db", db_url)[1]
    assert "openai/gpt-4o-mini" in table and "$0.01" in table

    code, out, _ = invoke("keys", "revoke", key[:16], "--db", db_url)
    assert code == 0 and "revoked" in out
    with pytest.raises(ApiKeyRefusedError):
        asyncio.run(_verify(db_url, key))
    assert "suspended" in invoke("tenants", "suspend", tenant, "--db", db_url)[1]


def test_credentials_read_the_secret_from_stdin_and_never_print_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'creds.db'}"
    tenant = unique_tenant_id()
    env = {"PULSE_AI_SECRET_KEYS": SecretKeyring.generate_key()}
    invoke("tenants", "create", tenant, "--db", url)
    code, out, err = invoke("credentials", "set", tenant, "openai", "--db", url, input="sk-cli-SECRET-42\n", env=env)
    assert code == 0 and "stored encrypted" in out and "SECRET" not in out + err
    code, out, _ = invoke("credentials", "list", "--db", url, env=env)
    assert code == 0 and "openai" in out and "SECRET" not in out
    new = SecretKeyring.generate_key()
    code, out, _ = invoke(
        "credentials", "rotate", "--db", url, env={"PULSE_AI_SECRET_KEYS": f"{new},{env['PULSE_AI_SECRET_KEYS']}"}
    )
    assert code == 0 and "re-encrypted 1" in out
    code, _, err = invoke("credentials", "list", "--db", url, env={"PULSE_AI_SECRET_KEYS": ""})
    assert code == 1 and err.startswith("error: ") and "PULSE_AI_SECRET_KEYS is not set" in err


def test_config_file_names_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'from-config.db'}"
    config = tmp_path / "pulse-ai.yaml"
    config.write_text(
        "providers:\n  local:\n    type: sentence_transformers\n    models: [{name: all-MiniLM-L6-v2}]\n"
        "database:\n  url: ${PULSE_TEST_DB_URL}\n"
    )
    code, out, _ = invoke("db", "upgrade", "--config", str(config), env={"PULSE_TEST_DB_URL": url})
    assert code == 0 and "from-config.db" in out and (tmp_path / "from-config.db").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("tenants", "suspend", "no-such-tenant"),
        ("tenants", "create", "Bad Name"),
        ("budgets", "set", "no-such-tenant", "--limit-usd", "ten"),
        ("usage", "report", "--since", "2026-01-01"),
        ("usage", "report", "--tenant", "x", "--since", "yesterday"),
    ],
)
def test_errors_are_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, _, err = invoke(*args, "--db", f"sqlite:///{tmp_path / 'e.db'}")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err


BAD_PORT_URL = "postgresql://app:Db-Password-99@db.internal:notaport/pulse"


@pytest.mark.parametrize("source", ["--db", "--config"])
def test_a_database_url_whose_port_is_not_a_number_is_one_line_without_the_password(
    tmp_path: Path, source: str
) -> None:
    config = tmp_path / "pulse-ai.yaml"
    config.write_text(
        f"providers:\n  f: {{type: fake, models: [{{name: gpt-4o-mini}}]}}\ndatabase: {{url: '{BAD_PORT_URL}'}}\n"
    )
    code, out, err = invoke("db", "upgrade", source, BAD_PORT_URL if source == "--db" else str(config))
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "port" in err and "Db-Password-99" not in out + err
