"""The administration commands: database, tenants, API keys, budgets, usage reports, credentials.

Each opens the database named by ``--db URL``, else by ``--config FILE`` (its ``database.url``),
else the default SQLite file; errors print one line ``error: ...`` and exit 1.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pulse_ai.config import load_config
from pulse_ai.db import ApiKeys, Credentials, Database, KnownPipelines, SecretKeyring, Tenants
from pulse_ai.db.types import utcnow
from pulse_ai.errors import InputError, PulseAIError
from pulse_ai.usage import Budgets, UsageReports

__all__ = ["budgets_app", "credentials_app", "db_app", "keys_app", "tenants_app", "usage_app"]

T = TypeVar("T")

db_app = typer.Typer(no_args_is_help=True, help="The platform database (SQLite by default, PostgreSQL by URL).")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (only their hashes are stored).")
budgets_app = typer.Typer(no_args_is_help=True, help="Budgets per tenant and pipeline.")
usage_app = typer.Typer(no_args_is_help=True, help="Usage reports from the ledger.")
credentials_app = typer.Typer(no_args_is_help=True, help="Per-tenant provider credentials, encrypted at rest.")

DbOption = Annotated[
    str | None, typer.Option("--db", "--url", help="Database URL (sqlite:///FILE or postgresql://...).")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A YAML configuration whose database.url to use.")
]


def _run(db_url: str | None, config: Path | None, work: Callable[[Database], Awaitable[T]], upgrade: bool = False) -> T:
    """Open the database, run ``work``, close; a pulse-ai error is one line on stderr and exit 1."""

    async def main() -> T:
        url = db_url
        if url is None and config is not None:
            url = load_config(config).config.database.url
        db = await Database.open(url, upgrade=True if upgrade else None)
        try:
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except PulseAIError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None


def _known_pipelines(config: Path | None) -> KnownPipelines | None:
    """With ``--config``, the pipelines it defines (names given to settings and budgets are checked
    against them); without one, any well-formed name is accepted."""
    if config is None:
        return None
    loaded = load_config(config)
    return KnownPipelines.of(loaded.config.pipelines, loaded.models)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _decimal(text: str | None, what: str) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InputError(f"{what} must be a number of USD, like 25 or 0.50") from None


def _date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{what} must be a date, YYYY-MM-DD") from None


# -- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, config: ConfigOption = None) -> None:
    """Run the migrations up to the newest schema (idempotent)."""

    async def work(database: Database) -> str:
        return f"{database.display_url}: schema at {await database.current_revision()}"

    typer.echo(_run(db, config, work, upgrade=True))


# -- tenants ----------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    tenant: str,
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create TENANT (a lowercase slug); an existing tenant is left as it is."""
    created = _run(db, config, lambda database: Tenants(database).create(tenant, name))
    typer.echo(f"tenant {created.id} ({created.display_name}): {created.status.value}")


@tenants_app.command("list")
def tenants_list(db: DbOption = None, config: ConfigOption = None) -> None:
    """List the tenants."""
    tenants = _run(db, config, lambda database: Tenants(database).list())
    rows = [(t.id, t.display_name, t.status.value, _when(t.created_at)) for t in tenants]
    typer.echo(_table(("tenant", "name", "status", "created"), rows))


@tenants_app.command("suspend")
def tenants_suspend(tenant: str, db: DbOption = None, config: ConfigOption = None) -> None:
    """Suspend TENANT: its calls and API keys are refused."""
    changed = _run(db, config, lambda database: Tenants(database).suspend(tenant))
    typer.echo(f"tenant {changed.id}: {changed.status.value}")


@tenants_app.command("activate")
def tenants_activate(tenant: str, db: DbOption = None, config: ConfigOption = None) -> None:
    """Make a suspended TENANT active again."""
    changed = _run(db, config, lambda database: Tenants(database).activate(tenant))
    typer.echo(f"tenant {changed.id}: {changed.status.value}")


# -- keys -------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    tenant: str,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="A scope it grants (repeatable; default '*').")] = None,
    expires_days: Annotated[
        int | None, typer.Option(min=1, max=36_500, help="Expire after this many days (at most 36500).")
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create an API key for TENANT and print it, once: it is not stored and cannot be shown again."""
    expires_at = utcnow() + timedelta(days=expires_days) if expires_days else None
    created = _run(
        db,
        config,
        lambda database: ApiKeys(database).create(tenant, name=name, scopes=scope or ["*"], expires_at=expires_at),
    )
    typer.echo(created.key.get_secret_value())
    typer.echo(
        f"key {created.info.prefix} (id {created.info.id}) for {tenant}: store it now, it is shown once", err=True
    )


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List API keys (prefixes only)."""
    keys = _run(db, config, lambda database: ApiKeys(database).list(tenant))
    rows = [
        (
            k.id,
            k.prefix,
            k.tenant_id,
            k.name or "",
            ",".join(k.scopes),
            k.state(),
            _when(k.expires_at),
            _when(k.last_used_at),
        )
        for k in keys
    ]
    typer.echo(_table(("id", "prefix", "tenant", "name", "scopes", "state", "expires", "last used"), rows))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or prefix.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke an API key (by id or visible prefix)."""
    revoked = _run(db, config, lambda database: ApiKeys(database).revoke(key))
    typer.echo(f"key {revoked.prefix}: revoked at {_when(revoked.revoked_at)}")


# -- budgets ----------------------------------------------------------------------------------


@budgets_app.command("set")
def budgets_set(
    tenant: str,
    limit_usd: Annotated[str | None, typer.Option(help="Limit in USD per period, e.g. 25 or 0.50.")] = None,
    limit_tokens: Annotated[int | None, typer.Option(min=0, help="Limit in tokens per period.")] = None,
    period: Annotated[str, typer.Option(help="day or month (UTC).")] = "month",
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline (default: all of them).")] = None,
    mode: Annotated[str, typer.Option(help="hard (refuse calls) or soft (warn).")] = "hard",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create or change TENANT's budget for a period (and optionally one pipeline)."""

    async def work(database: Database) -> str:
        budgets = Budgets(database, known=_known_pipelines(config))
        budget = await budgets.set(
            tenant,
            pipeline=pipeline,
            period=period,
            limit_usd=_decimal(limit_usd, "--limit-usd"),
            limit_tokens=limit_tokens,
            mode=mode,
        )
        await budgets.close()
        limits = []
        if budget.limit_usd is not None:
            limits.append(f"${budget.limit_usd}")
        if budget.limit_tokens is not None:
            limits.append(f"{budget.limit_tokens} tokens")
        what = " and ".join(limits)
        return f"budget {tenant} / {budget.scope}: {what} per {budget.period.value} ({budget.mode.value})"

    typer.echo(_run(db, config, work))


@budgets_app.command("show")
def budgets_show(tenant: str, db: DbOption = None, config: ConfigOption = None) -> None:
    """TENANT's budgets in their current period: limit, spent, reserved."""

    async def work(database: Database) -> list[Any]:
        budgets = Budgets(database)
        try:
            return await budgets.status(tenant)
        finally:
            await budgets.close()

    statuses = _run(db, config, work)
    rows = [
        (
            s.budget.pipeline or "all",
            s.budget.period.value,
            s.period_start.isoformat(),
            s.budget.mode.value,
            "-" if s.budget.limit_usd is None else f"${s.budget.limit_usd}",
            f"${s.spent_usd}",
            f"${s.reserved_usd}",
            "-" if s.budget.limit_tokens is None else s.budget.limit_tokens,
            s.spent_tokens,
        )
        for s in statuses
    ]
    headers = ("scope", "period", "from", "mode", "limit", "spent", "reserved", "limit tokens", "spent tokens")
    typer.echo(_table(headers, rows) if rows else f"{tenant} has no budget")


# -- usage ------------------------------------------------------------------------------------

REPORT_FIELDS = (
    "tenant_id", "key", "requests", "attempts", "input_tokens", "output_tokens",
    "billed_usd", "avoided_usd", "errors", "p50_latency_ms", "p95_latency_ms",
)  # fmt: skip


@usage_app.command("report")
def usage_report(
    since: Annotated[str, typer.Option(help="From this UTC date (YYYY-MM-DD), inclusive.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant (required unless --all-tenants).")] = None,
    until: Annotated[str | None, typer.Option(help="To this UTC date, exclusive (default: now).")] = None,
    by: Annotated[str, typer.Option(help="model, pipeline, day or provider.")] = "model",
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Admin: every tenant.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Usage and cost per model, pipeline, day or provider, for one tenant (or all, with --all-tenants)."""
    if output not in ("table", "csv", "json"):
        _fail("--format must be table, csv or json")
    if (tenant is None) == (not all_tenants):
        _fail("give --tenant T, or --all-tenants")

    async def work(database: Database) -> list[Any]:
        reports = UsageReports(database)
        start, end = _date(since, "--since"), _date(until, "--until") if until else None
        if tenant is None:
            return await reports.summary_all_tenants(start, end, by=by)  # type: ignore[arg-type]
        return await reports.summary(tenant, start, end, by=by)  # type: ignore[arg-type]

    report = _run(db, config, work)
    records = [{name: getattr(row, name) for name in REPORT_FIELDS} for row in report]
    if output == "json":
        typer.echo(json.dumps(records, default=str, indent=2))
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        typer.echo(buffer.getvalue(), nl=False)
    else:
        rows = [
            (r.tenant_id, r.key, r.requests, r.attempts, r.input_tokens, r.output_tokens, f"${r.billed_usd}",
             f"${r.avoided_usd}", r.errors, f"{r.p50_latency_ms:.1f}", f"{r.p95_latency_ms:.1f}")
            for r in report
        ]  # fmt: skip
        headers = ("tenant", by, "requests", "attempts", "in tokens", "out tokens", "billed", "avoided", "errors",
                   "p50 ms", "p95 ms")  # fmt: skip
        typer.echo(_table(headers, rows) if rows else "no usage in that window")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


# -- credentials ------------------------------------------------------------------------------


def _read_secret() -> str:
    if sys.stdin.isatty():
        secret: str = typer.prompt("secret", hide_input=True)
        return secret
    return sys.stdin.readline().rstrip("\r\n")


@credentials_app.command("set")
def credentials_set(tenant: str, provider: str, db: DbOption = None, config: ConfigOption = None) -> None:
    """Store TENANT's own key for PROVIDER, read from stdin (or a hidden prompt), never an argument."""
    secret = _read_secret()

    async def work(database: Database) -> str:
        # with a configuration, only its providers that take a key; without one, any well-formed name
        providers = None if config is None else load_config(config).config.byok_providers()
        credentials = await Credentials.open(database, providers=providers)
        info = await credentials.set(tenant, provider, secret)
        return f"credential {info.tenant_id} / {info.provider}: stored encrypted"

    typer.echo(_run(db, config, work))


@credentials_app.command("list")
def credentials_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """List stored credentials (never their values)."""

    async def work(database: Database) -> list[Any]:
        return await (await Credentials.open(database)).list(tenant)

    rows = [(c.tenant_id, c.provider, _when(c.updated_at)) for c in _run(db, config, work)]
    typer.echo(_table(("tenant", "provider", "updated"), rows))


@credentials_app.command("rotate")
def credentials_rotate(db: DbOption = None, config: ConfigOption = None) -> None:
    """Re-encrypt every credential with the first key of PULSE_AI_SECRET_KEYS."""

    async def work(database: Database) -> int:
        return await (await Credentials.open(database)).rotate()

    typer.echo(f"re-encrypted {_run(db, config, work)} credential(s) with the current key")


@credentials_app.command("generate-key")
def credentials_generate_key() -> None:
    """Print a new Fernet key for PULSE_AI_SECRET_KEYS (put it first to make it current)."""
    typer.echo(SecretKeyring.generate_key())
