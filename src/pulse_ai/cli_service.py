"""The service's commands: ``pulse-ai serve``, ``pulse-ai index FILE`` and ``pulse-ai search``.

``index`` and ``search`` work on the configured store directly, or through a running service
(``--service URL`` with a tenant key): an embedded store has one owner process, so while the service
runs, the CLI goes through it (opening the store directly then fails with the owner's pid).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pulse_ai.client import PulseAI
from pulse_ai.config import LoadedConfig
from pulse_ai.errors import InputError, PulseAIError, VectorStoreError

__all__ = ["index", "search", "serve"]

API_KEY_ENV = "PULSE_AI_API_KEY"
DEMO_KEY_NAME = "make run demo"
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A YAML configuration (default: the offline one).")
]
ServiceOption = Annotated[
    str | None, typer.Option("--service", help="Go through a running service at this URL (http://127.0.0.1:8000).")
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar=API_KEY_ENV, help="The tenant's key, for --service.")
]
err = Console(stderr=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _loaded(config: Path | None) -> LoadedConfig:
    return PulseAI.from_config(config).loaded if config else PulseAI.default().loaded


# ---- serve ---------------------------------------------------------------------------------------
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes (>1 needs a Qdrant server).")] = 1,
    max_body_mb: Annotated[float | None, typer.Option(help="Largest request body, MiB (default 8).")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute per key and replica (0: off).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute per key and replica (0: off).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Deadline of every call, seconds (default 120).")] = None,
    demo_key: Annotated[
        str | None, typer.Option(help="Create a key for this tenant (made if missing) and print examples with it.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the OpenAI-compatible API, the tenant API and the admin API over HTTP (Ctrl-C stops it
    cleanly: the usage ledger is flushed and the vector store closed)."""
    import uvicorn

    from pulse_ai.service import ServiceSettings, check_workers, create_app

    try:
        settings = ServiceSettings.from_env(
            config=config,
            workers=workers,
            max_body_bytes=int(max_body_mb * 2**20) if max_body_mb is not None else None,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            request_timeout_s=timeout,
        )
        loaded = _loaded(config)
        check_workers(loaded, workers)
        key = asyncio.run(_demo_key(loaded, demo_key)) if demo_key else None
    except PulseAIError as error:
        _fail(str(error))
        return
    base = f"http://{host}:{port}"
    _banner(loaded, settings, base)
    if key is not None and demo_key is not None:
        _examples(base, key, demo_key)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
    else:
        os.environ.update(settings.to_env())
        factory = "pulse_ai.service.app:app_from_env"
        uvicorn.run(factory, factory=True, host=host, port=port, workers=workers, log_level=log_level)
    typer.echo("pulse-ai service stopped: usage ledger flushed, vector store closed.", err=True)


async def _demo_key(loaded: LoadedConfig, tenant: str) -> str:
    """A fresh key for ``tenant`` (earlier keys of ``make run`` revoked, so they do not pile up)."""
    ai = PulseAI(loaded)
    try:
        platform = await ai.platform()
        await platform.tenants.create(tenant)
        for old in await platform.api_keys.list(tenant, include_revoked=False):
            if old.name == DEMO_KEY_NAME:
                await platform.api_keys.revoke(old.id)
        created = await platform.api_keys.create(tenant, name=DEMO_KEY_NAME)
        return created.key.get_secret_value()
    finally:
        await ai.aclose()


def _banner(loaded: LoadedConfig, settings: Any, base: str) -> None:
    config = loaded.config
    store = config.vector_store
    where = store.path if store.backend == "embedded" else store.url or store.path or store.location
    pipelines = ", ".join(f"{name} ({p.kind.value})" for name, p in config.pipelines.items()) or "none"
    limits = f"{settings.requests_per_minute} requests and {settings.tokens_per_minute} tokens per minute"
    lines = [
        f"pulse-ai service on {base} (config {loaded.source}, {settings.workers} worker(s))",
        f"  pipelines: {pipelines}",
        f"  vector store: {store.backend} at {where}"
        + (f", owned by this process (pid {os.getpid()})" if store.backend == "embedded" else ""),
        f"  rate limits: {limits} per API key, per replica (0 = off)",
        "  admin API and /metrics: "
        + ("on (PULSE_AI_ADMIN_KEY)" if settings.admin_key else "off (set PULSE_AI_ADMIN_KEY to turn them on)"),
    ]
    typer.echo("\n".join(lines), err=True)


def _examples(base: str, key: str, tenant: str) -> None:
    header = f'-H "Authorization: Bearer {key}" -H "Content-Type: application/json"'
    typer.echo(
        f"""
== A key for tenant {tenant} (shown once): {key}

Try it (in another terminal):

curl -s {base}/v1/embeddings {header} \\
  -d '{{"model": "embedding", "input": ["checkout is slow"]}}' | head -c 300; echo

curl -s {base}/v1/tables/issues/search {header} \\
  -d '{{"query": "checkout is slow for big carts", "limit": 3}}'; echo

{sys.executable} - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{key}")
result = client.embeddings.create(model="embedding", input=["checkout is slow", "dark mode"])
print(result.model, len(result.data), "vectors of", len(result.data[0].embedding), "dimensions", result.usage)
PY

Ctrl-C stops the service.
"""
    )


# ---- index ---------------------------------------------------------------------------------------
@dataclass
class _Totals:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, report: dict[str, Any]) -> None:
        self.new += int(report["new"])
        self.updated += int(report["updated"])
        self.unchanged += int(report["unchanged"])
        self.failures.extend((str(f["id"]), str(f["reason"])) for f in report["failures"])


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (objects with id, text, metadata) or a CSV file (columns id and text;
    a ``metadata`` column holds a JSON object; any other column is added to the metadata)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                yield _csv_record(row, f"{path}:{line}")
        return
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{line}: a record must be a JSON object")
            unknown = set(row) - {"id", "text", "metadata"}
            if unknown:
                raise InputError(f"{path}:{line}: unknown keys {', '.join(sorted(unknown))} (id, text, metadata)")
            record = {"id": row.get("id"), "text": row.get("text"), "metadata": row.get("metadata") or {}}
            yield _checked(record, f"{path}:{line}")


def _csv_record(row: dict[str, Any], where: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    raw = row.get("metadata")
    if raw:
        try:
            metadata = json.loads(raw)
        except json.JSONDecodeError:
            raise InputError(f"{where}: the metadata column is not a JSON object") from None
        if not isinstance(metadata, dict):
            raise InputError(f"{where}: the metadata column is not a JSON object")
    for name, value in row.items():
        if name not in ("id", "text", "metadata") and name is not None and value not in (None, ""):
            metadata[name] = value
    return _checked({"id": row.get("id"), "text": row.get("text"), "metadata": metadata}, where)


def _checked(record: dict[str, Any], where: str) -> dict[str, Any]:
    if record["id"] in (None, ""):
        raise InputError(f"{where}: the record has no id")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise InputError(f"{where}: the record has no text")
    return record


def _batches(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for record in read_records(path):
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        lines = sum(1 for text in handle if text.strip())
    return max(0, lines - 1) if path.suffix.lower() == ".csv" else lines


class _Remote:
    """The tenant API of a running service."""

    def __init__(self, url: str, key: str | None) -> None:
        if not key:
            _fail(f"--service needs the tenant's key: --api-key or {API_KEY_ENV}")
        self.client = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers={"authorization": f"Bearer {key}"}, timeout=300
        )

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            where = self.client.base_url
            raise PulseAIError(f"the service at {where} cannot be reached ({type(exc).__name__})") from None
        try:
            data = response.json() if response.content else {}
        except ValueError:  # not JSON (a proxy's error page, say)
            data = {}
        if response.status_code >= 400:
            message = data.get("error", {}).get("message") if isinstance(data, dict) else None
            raise PulseAIError(f"the service answered {response.status_code}: {message or response.text[:300]}")
        return data


def index(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .jsonl or .csv file of records.")],
    table: Annotated[str, typer.Option(help="The table to index into.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant (not with --service: the key names it).")] = None,
    config: ConfigOption = None,
    service: ServiceOption = None,
    api_key: KeyOption = None,
    batch_size: Annotated[int, typer.Option(min=1, max=2048, help="Records per batch.")] = 256,
) -> None:
    """Index FILE into a tenant's table, with a progress bar. Resumable: run it again after an
    interruption and records already indexed are found unchanged (by content hash), not re-embedded."""
    if (tenant is None) == (service is None):
        _fail("give --tenant (the configured store) or --service (a running service, with the tenant's key)")
    started = time.perf_counter()
    totals = _Totals()
    try:
        asyncio.run(_index(file, table, tenant, config, service, api_key, batch_size, totals))
    except PulseAIError as error:
        _report(totals, time.perf_counter() - started, interrupted=True)
        _fail(_hint(error))
        return
    _report(totals, time.perf_counter() - started)
    if totals.failures:
        raise typer.Exit(code=1)


async def _index(
    file: Path,
    table: str,
    tenant: str | None,
    config: Path | None,
    service: str | None,
    api_key: str | None,
    batch_size: int,
    totals: _Totals,
) -> None:
    total = await asyncio.to_thread(_count, file)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"indexing {file.name} into {table}", total=total)
        if service is not None:
            remote = _Remote(service, api_key)
            async with remote.client:
                for batch in _batches(file, batch_size):
                    totals.add(await remote.post(f"/v1/tables/{table}/records", {"records": batch}))
                    progress.advance(task, len(batch))
            return
        async with PulseAI.from_config(config) if config else PulseAI.default() as ai:
            indexer = ai.tenant(tenant or "").indexer()
            for batch in _batches(file, batch_size):
                report = await indexer.index(table, batch)
                failures = [{"id": f.record_id, "reason": f.reason} for f in report.failures]
                counts = {"new": report.new, "updated": report.updated, "unchanged": report.unchanged}
                totals.add({**counts, "failures": failures})
                progress.advance(task, len(batch))


def _report(totals: _Totals, seconds: float, *, interrupted: bool = False) -> None:
    done = totals.new + totals.updated + totals.unchanged + len(totals.failures)
    state = "stopped after" if interrupted else "indexed"
    typer.echo(
        f"{state} {done} records in {seconds:.1f} s: new {totals.new}, updated {totals.updated}, "
        f"unchanged {totals.unchanged}, failed {len(totals.failures)}"
    )
    for record_id, reason in totals.failures[:20]:
        typer.echo(f"  failed {record_id}: {reason}")
    if len(totals.failures) > 20:
        typer.echo(f"  ... and {len(totals.failures) - 20} more")
    if interrupted and done:
        typer.echo("run the same command again to resume: records already indexed are skipped")


def _hint(error: PulseAIError) -> str:
    if isinstance(error, VectorStoreError) and " is in use by " in str(error):
        return f"{error}\n  (a running service owns the store: index through it with --service URL --api-key KEY)"
    return str(error)


# ---- search --------------------------------------------------------------------------------------
def search(
    query: Annotated[str, typer.Argument(help="The text to search for.")],
    table: Annotated[str, typer.Option(help="The table to search.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant (not with --service: the key names it).")] = None,
    config: ConfigOption = None,
    service: ServiceOption = None,
    api_key: KeyOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    where: Annotated[str | None, typer.Option(help='A metadata filter as JSON: \'{"status": "open"}\'.')] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Semantic search in a tenant's table."""
    if (tenant is None) == (service is None):
        _fail("give --tenant (the configured store) or --service (a running service, with the tenant's key)")
    try:
        condition = json.loads(where) if where else None
    except json.JSONDecodeError:
        _fail("--where must be a JSON object")
        return
    try:
        hits = asyncio.run(_search(query, table, tenant, config, service, api_key, limit, condition))
    except PulseAIError as error:
        _fail(_hint(error))
        return
    if as_json:
        typer.echo(json.dumps(hits))
        return
    rows = Table("score", "id", "metadata")
    for hit in hits:
        rows.add_row(f"{hit['score']:.3f}", str(hit["id"]), json.dumps(hit["metadata"]))
    Console().print(rows)


async def _search(
    query: str,
    table: str,
    tenant: str | None,
    config: Path | None,
    service: str | None,
    api_key: str | None,
    limit: int,
    where: Any,
) -> list[dict[str, Any]]:
    if service is not None:
        remote = _Remote(service, api_key)
        async with remote.client:
            answer = await remote.post(f"/v1/tables/{table}/search", {"query": query, "limit": limit, "where": where})
        return list(answer["data"])
    async with PulseAI.from_config(config) if config else PulseAI.default() as ai:
        found = await ai.tenant(tenant or "").indexer().search(table, query, limit=limit, where=where)
    return [{"id": h.record_id, "score": h.score, "metadata": h.metadata} for h in found]
