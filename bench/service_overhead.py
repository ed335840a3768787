"""Service overhead: the same embedding calls straight to an OpenAI-compatible server, and through
the pulse-ai service in front of it (API key auth and the usage ledger on), one call at a time and
32 at a time.

Three processes: this one (the client: the official ``openai`` SDK), the fake OpenAI server
(``tests/fakes/openai_server.py``), and ``pulse-ai serve`` over a configuration whose only provider
is that server (SQLite ledger and embedded store in a temporary directory, rate limits off). Each
call embeds one short text. Prints one JSON object::

    {"direct": {"p50_ms", "p99_ms", "per_s"}, "service": {...}, "added_p50_ms", "added_p99_ms",
     "c32": {the same keys, 32 calls in flight}}

The service's own ``x-pulse-overhead-ms`` (its time less the provider's) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
MODEL = "text-embedding-3-small"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def _run(
    client: openai.AsyncOpenAI, model: str, calls: int, concurrency: int
) -> tuple[dict[str, float], list[float]]:
    """``calls`` embedding calls, ``concurrency`` in flight: latency percentiles and calls per second;
    and the service's overhead headers, when there are any."""
    latencies: list[float] = []
    overheads: list[float] = []
    queue = iter(range(calls))

    async def worker() -> None:
        for index in queue:
            started = time.perf_counter()
            raw = await client.embeddings.with_raw_response.create(model=model, input=[f"short text number {index}"])
            latencies.append((time.perf_counter() - started) * 1000)
            header = raw.headers.get("x-pulse-overhead-ms")
            if header is not None:
                overheads.append(float(header))
            assert len(raw.parse().data) == 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    summary = {
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "per_s": round(calls / elapsed, 1),
    }
    return summary, overheads


async def _compare(
    direct_url: str, service_url: str, key: str, calls: int, warmup: int, concurrency: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=max(64, concurrency * 2), max_keepalive_connections=max(64, concurrency * 2))
    direct = openai.AsyncOpenAI(
        base_url=direct_url,
        api_key="sk-bench",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )
    service = openai.AsyncOpenAI(
        base_url=f"{service_url}/v1",
        api_key=key,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )
    try:
        await _run(direct, MODEL, warmup, concurrency)
        await _run(service, "embedding", warmup, concurrency)
        direct_summary, _ = await _run(direct, MODEL, calls, concurrency)
        service_summary, overheads = await _run(service, "embedding", calls, concurrency)
    finally:
        await direct.close()
        await service.close()
    if overheads:
        print(
            f"concurrency {concurrency}: the service's x-pulse-overhead-ms p50 {statistics.median(overheads):.3f}, "
            f"p99 {_percentile(overheads, 0.99):.3f}",
            file=sys.stderr,
        )
    return {
        "direct": direct_summary,
        "service": service_summary,
        "added_p50_ms": round(service_summary["p50_ms"] - direct_summary["p50_ms"], 3),
        "added_p99_ms": round(service_summary["p99_ms"] - direct_summary["p99_ms"], 3),
    }


def _config(tmp: Path, upstream: str) -> Path:
    path = tmp / "pulse-ai.yaml"
    path.write_text(
        "providers:\n"
        "  upstream:\n"
        "    type: openai\n"
        "    api_key: sk-bench\n"
        f"    base_url: {upstream}\n"
        "    max_retries: 0\n"
        "    max_concurrency: 64\n"
        f"    models: [{{name: {MODEL}}}]\n"
        "pipelines:\n"
        f"  embedding: {{kind: embedding, candidates: [upstream/{MODEL}]}}\n"
        f"vector_store: {{backend: embedded, path: '{tmp / 'vectors'}'}}\n"
        f"database: {{url: 'sqlite+aiosqlite:///{tmp / 'pulse-ai.db'}'}}\n"
    )
    return path


def _start_service(config: Path, port: int, log: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "pulse_ai.cli", "serve", "--config", str(config), "--port", str(port)]
    command += ["--demo-key", "bench", "--rpm", "0", "--tpm", "0", "--log-level", "warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the service did not start: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not answer within 120 s")
        time.sleep(0.1)
    assert process.stdout is not None
    printed = ""
    while (match := re.search(r"pk_live_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", printed)) is None:
        printed += process.stdout.readline()
    return process, match.group(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    service: subprocess.Popen[str] | None = None
    try:
        assert upstream.stdout is not None
        upstream_url = upstream.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="pulse-ai-bench-") as directory:
            tmp = Path(directory)
            port = _free_port()
            service, key = _start_service(_config(tmp, upstream_url), port, tmp / "service.log")
            service_url = f"http://127.0.0.1:{port}"
            report = asyncio.run(_compare(upstream_url, service_url, key, args.calls, args.warmup, 1))
            report["c32"] = asyncio.run(
                _compare(upstream_url, service_url, key, args.calls, args.warmup, args.concurrency)
            )
            service.send_signal(2)
            service.wait(timeout=60)
    finally:
        for process in (service, upstream):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
