"""``pulse-ai index`` / ``search`` (on the configured store, and through a running service) and
``pulse-ai serve`` (its examples work as printed; Ctrl-C stops it cleanly)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pulse_ai.cli import app
from pulse_ai.db import Database, Tenants
from tests.service.conftest import make_tenant
from tests.service.harness import ServiceServer, service_yaml

runner = CliRunner()
RECORDS = [
    {"id": "A-1", "text": "checkout times out for big carts", "metadata": {"status": "open"}},
    {"id": "A-2", "text": "dark mode for the dashboard", "metadata": {"status": "closed"}},
    {"id": "A-3", "text": "payment fails on large orders"},
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "pulse-ai.yaml"
    path.write_text(service_yaml(tmp_path))

    async def create() -> None:
        db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'pulse-ai.db'}")
        try:
            await Tenants(db).create("acme")
        finally:
            await db.close()

    asyncio.run(create())
    return path


def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_index_a_jsonl_file_then_again_then_search(tmp_path: Path, config: Path) -> None:
    records = jsonl(tmp_path / "records.jsonl", RECORDS)
    args = ["index", str(records), "--tenant", "acme", "--table", "issues", "--config", str(config)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "indexed 3 records" in first.output and "new 3, updated 0, unchanged 0, failed 0" in first.output
    second = runner.invoke(app, args)
    assert "new 0, updated 0, unchanged 3, failed 0" in second.output  # nothing embedded twice
    search = ["search", "checkout times out for big carts", "--tenant", "acme", "--table", "issues"]
    found = runner.invoke(app, [*search, "--config", str(config), "--json", "--where", '{"status": "open"}'])
    assert found.exit_code == 0, found.output
    assert [hit["id"] for hit in json.loads(found.stdout)] == ["A-1"]


def test_an_interrupted_index_resumes(tmp_path: Path, config: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1]) + "\n{not json\n")
    args = ["index", str(path), "--tenant", "acme", "--table", "issues", "--config", str(config), "--batch-size", "1"]
    broken = runner.invoke(app, args)
    assert broken.exit_code == 1
    assert f"{path}:3: not JSON" in broken.output and "run the same command again to resume" in broken.output
    path.write_text("".join(json.dumps(row) + "\n" for row in RECORDS))
    resumed = runner.invoke(app, args)
    assert "new 1, updated 0, unchanged 2, failed 0" in resumed.output


def test_index_a_csv_file(tmp_path: Path, config: Path) -> None:
    path = tmp_path / "records.csv"
    path.write_text('id,text,metadata,team\nC-1,"slow search, again","{""status"": ""open""}",core\nC-2,dark mode,,\n')
    indexed = runner.invoke(app, ["index", str(path), "--tenant", "acme", "--table", "t", "--config", str(config)])
    assert "new 2" in indexed.output, indexed.output
    found = runner.invoke(
        app, ["search", "slow search, again", "--tenant", "acme", "--table", "t", "--config", str(config), "--json"]
    )
    assert json.loads(found.stdout)[0] == {
        "id": "C-1",
        "score": pytest.approx(1.0, abs=1e-4),
        "metadata": {"status": "open", "team": "core"},
    }


async def test_index_and_search_through_a_running_service(tmp_path: Path, server: ServiceServer) -> None:
    acme = await make_tenant(server, "acme")
    records = jsonl(tmp_path / "records.jsonl", RECORDS)
    args = ["index", str(records), "--table", "issues", "--service", server.url, "--api-key", acme.key]
    indexed = await asyncio.to_thread(runner.invoke, app, args)
    assert "new 3, updated 0, unchanged 0, failed 0" in indexed.output, indexed.output
    search = ["search", "dark mode for the dashboard", "--table", "issues", "--service", server.url, "--json"]
    found = await asyncio.to_thread(runner.invoke, app, search, env={"PULSE_AI_API_KEY": acme.key})
    assert json.loads(found.stdout)[0]["id"] == "A-2"
    refused = await asyncio.to_thread(runner.invoke, app, [*search[:-1], "--api-key", "pk_live_nope"])
    assert refused.exit_code == 1 and "the service answered 401" in refused.output


def test_serve_refuses_several_workers_on_an_embedded_store(config: Path) -> None:
    refused = runner.invoke(app, ["serve", "--config", str(config), "--workers", "2"])
    assert refused.exit_code == 1 and "2 workers cannot share the embedded store" in refused.output


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_prints_examples_that_work_and_stops_cleanly_on_ctrl_c(tmp_path: Path, config: Path) -> None:
    port = _free_port()
    command = [str(Path(sys.executable).parent / "pulse-ai"), "serve", "--config", str(config)]
    command += ["--port", str(port), "--demo-key", "acme", "--log-level", "warning"]
    out, err = (tmp_path / "out.txt").open("w+"), (tmp_path / "err.txt").open("w+")
    process = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, "PULSE_AI_ADMIN_KEY": ""})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()
            time.sleep(0.1)
        printed = (tmp_path / "out.txt").read_text()
        key = re.search(r"pk_live_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", printed)
        assert key is not None, printed
        headers = {"authorization": f"Bearer {key.group(0)}"}
        body = {"records": [{"id": "1", "text": "checkout is slow for big carts"}]}
        indexed = httpx.post(f"http://127.0.0.1:{port}/v1/tables/issues/records", json=body, headers=headers)
        assert indexed.status_code == 200
        examples = printed.split("(in another terminal):")[1].split("Ctrl-C stops the service.")[0]
        ran = subprocess.run(["bash", "-e", "-c", examples], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert '"object":"list"' in ran.stdout and '"id":"1"' in ran.stdout  # both curls
        assert "2 vectors of 64 dimensions" in ran.stdout  # the openai SDK example
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0, (tmp_path / "err.txt").read_text()
    assert "usage ledger flushed, vector store closed" in (tmp_path / "err.txt").read_text()
    from pulse_ai.vectors.embedded import EmbeddedVectorStore

    asyncio.run(EmbeddedVectorStore(tmp_path / "vectors").close())  # released at the stop
