"""Operations over real HTTP: liveness, readiness that goes 503 with the reasons when a dependency is
down and back to 200 when it returns, Prometheus metrics (admin key, bounded labels), the start-up
refusal of several workers on one embedded store, and a clean shutdown."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pulse_ai import ConfigError, DatabaseError, PulseAI
from pulse_ai import errors as pulse_errors
from pulse_ai.db import Database
from pulse_ai.service import check_workers
from pulse_ai.testing import Fault
from pulse_ai.vectors.embedded import EmbeddedVectorStore
from tests.service.conftest import ADMIN, eventually, http, ledger, make_tenant, sdk, settings
from tests.service.harness import ServiceServer, service_yaml


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceServer]:
    tmp = tmp_path_factory.mktemp("operations")
    # breakers that open after two failures and stay open for 3 s (long enough to look at them,
    # short enough to wait for)
    yaml = service_yaml(tmp, breaker="{window: 4, min_calls: 2, failure_rate: 0.5, cooldown_seconds: 3}")
    with ServiceServer(yaml, settings(tenant_label_limit=2)) as running:
        yield running


async def _ready(server: ServiceServer) -> httpx.Response:
    async with http(server) as client:
        return await client.get("/readyz")


async def test_liveness_and_readiness(server: ServiceServer) -> None:
    async with http(server) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await _ready(server)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_readiness_is_503_while_the_database_is_down(
    server: ServiceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(self: Database) -> None:
        raise DatabaseError("ping the database: connection refused")

    monkeypatch.setattr(Database, "ping", unreachable)
    down = await _ready(server)
    assert down.status_code == 503
    assert down.json()["reasons"] == ["database: ping the database: connection refused"]
    async with http(server) as client:
        assert (await client.get("/healthz")).status_code == 200  # alive, not ready
    monkeypatch.undo()
    assert (await _ready(server)).status_code == 200


async def test_readiness_is_503_while_every_breaker_of_a_pipeline_is_open(server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    for name in ("a", "b"):
        server.fake(name).always(Fault.unavailable())
    client = sdk(server, acme.key)
    for _ in range(2):  # each call fails on a and on b: both breakers open (window 4, min_calls 2)
        async with http(server, acme.headers) as plain:
            failed = await plain.post(
                "/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            )
        assert failed.status_code == 503
    down = await _ready(server)
    assert down.status_code == 503
    reasons = down.json()["reasons"]
    assert any(r.startswith("pipeline chat: the circuit breaker of every candidate is open") for r in reasons)
    async with http(server, acme.headers) as plain:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        refused = await plain.post("/v1/chat/completions", json=body)
    assert refused.status_code == 503
    if hasattr(pulse_errors, "CircuitOpenError"):  # every breaker open fails fast, saying when to retry
        assert int(refused.headers["retry-after"]) >= 1
    async with http(server, ADMIN) as admin:
        scraped = (await admin.get("/metrics")).text
    assert 'pulse_ai_circuit_breaker_state{model="a/gpt-4o-mini",state="open"} 1.0' in scraped
    for name in ("a", "b"):
        server.fake(name).always(None)

    async def ready_again() -> bool:
        return (await _ready(server)).status_code == 200

    await eventually(ready_again, "readiness back to 200 once the breakers' cooldown has passed")
    answer = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "echo: hi"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _FakeQdrant:
    """Just enough of Qdrant's REST API for a listing of collections (a readiness probe)."""

    def __init__(self, port: int) -> None:
        async def root(request: Request) -> JSONResponse:
            return JSONResponse({"title": "qdrant", "version": "1.12.0"})

        async def collections(request: Request) -> JSONResponse:
            return JSONResponse({"result": {"collections": []}, "status": "ok", "time": 0.0})

        app = Starlette(routes=[Route("/", root), Route("/collections", collections)])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _FakeQdrant:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
async def test_readiness_follows_a_qdrant_server_going_and_coming_back(tmp_path: Path) -> None:
    port = _free_port()
    yaml = service_yaml(tmp_path).replace(
        f"vector_store: {{backend: embedded, path: '{tmp_path / 'vectors'}'}}",
        f"vector_store: {{backend: qdrant, url: 'http://127.0.0.1:{port}', timeout: 2}}",
    )
    with ServiceServer(yaml, settings()) as running:
        down = await _ready(running)
        assert down.status_code == 503
        assert [r.split(":")[0] for r in down.json()["reasons"]] == ["vector store"]
        with _FakeQdrant(port):
            assert (await _ready(running)).status_code == 200


async def test_metrics_need_the_admin_key_and_keep_their_labels_bounded(server: ServiceServer) -> None:
    tenants = [await make_tenant(server, f"m{i}") for i in range(3)]
    for tenant in tenants:
        await sdk(server, tenant.key).embeddings.create(model="embedding", input=["count me"])
        async with http(server, tenant.headers) as client:
            await client.post("/v1/tables/some-table/search", json={"query": "q"})
    async with http(server) as client:
        assert (await client.get("/metrics")).status_code == 401
    async with http(server, ADMIN) as admin:
        scraped = await admin.get("/metrics")
    text = scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'route="/v1/tables/{table}/search",status="404"' in text  # the template, never the raw path
    assert "some-table" not in text
    token_lines = [line for line in text.splitlines() if line.startswith("pulse_ai_tokens_total{")]
    labels = {line.split('tenant="')[1].split('"')[0] for line in token_lines}
    assert "_other" in labels and len(labels) <= 3  # two tenants by name (the limit), then _other
    assert 'pulse_ai_provider_attempts_total{model="a/text-embedding-3-small",outcome="ok"}' in text
    assert "pulse_ai_overhead_seconds_bucket" in text and "pulse_ai_cost_usd_total" in text


def test_several_workers_need_a_qdrant_server(tmp_path: Path) -> None:
    embedded = PulseAI.from_yaml(service_yaml(tmp_path)).loaded
    with pytest.raises(ConfigError, match="2 workers cannot share the embedded store"):
        check_workers(embedded, 2)
    check_workers(embedded, 1)
    remote = service_yaml(tmp_path).replace(
        f"vector_store: {{backend: embedded, path: '{tmp_path / 'vectors'}'}}",
        "vector_store: {backend: qdrant, url: 'http://qdrant:6333'}",
    )
    check_workers(PulseAI.from_yaml(remote).loaded, 4)


async def test_the_service_owns_its_store_and_a_clean_stop_flushes_and_releases_it(tmp_path: Path) -> None:
    yaml = service_yaml(tmp_path)
    (tmp_path / "pulse-ai.yaml").write_text(yaml)
    (tmp_path / "records.jsonl").write_text('{"id": "1", "text": "a record"}\n')
    running = ServiceServer(yaml, settings()).start()
    try:
        acme = await make_tenant(running, "acme")
        await sdk(running, acme.key).embeddings.create(model="embedding", input=["kept"])
        # another process (the CLI) opening the store directly gets the owner, and the way round it
        command = [str(Path(sys.executable).parent / "pulse-ai"), "index", str(tmp_path / "records.jsonl")]
        command += ["--tenant", acme.tenant, "--table", "t", "--config", str(tmp_path / "pulse-ai.yaml")]
        run = functools.partial(subprocess.run, command, capture_output=True, text=True, timeout=120)
        completed = await asyncio.to_thread(run)
        assert completed.returncode == 1
        assert f"is in use by pid {os.getpid()}" in completed.stderr and "--service" in completed.stderr
    finally:
        running.stop()
    assert [r.outcome for r in await ledger(running, acme.tenant)] == ["ok"]
    store = EmbeddedVectorStore(tmp_path / "vectors")  # the lock was released at shutdown
    await store.close()


async def test_the_admin_api_is_off_without_an_admin_key(tmp_path: Path) -> None:
    with ServiceServer(service_yaml(tmp_path), settings(admin_key=None)) as running:
        async with http(running, ADMIN) as client:
            refused = await client.get("/admin/tenants")
        assert refused.status_code == 403 and "PULSE_AI_ADMIN_KEY" in refused.json()["error"]["message"]

        async def alive() -> bool:
            async with http(running) as client:
                return (await client.get("/healthz")).status_code == 200

        await eventually(alive, "the service answers")
