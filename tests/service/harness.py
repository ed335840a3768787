"""The service under test, over real HTTP: uvicorn on a free port of 127.0.0.1, in a thread, serving
``create_app`` over a facade whose providers are in-process fakes (``type: fake``)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from pulse_ai import PulseAI
from pulse_ai.service import ServiceSettings, create_app
from pulse_ai.testing import FakeProvider

__all__ = ["ADMIN_KEY", "ServiceServer", "service_yaml"]

ADMIN_KEY = "admin-key-for-the-service-tests-0123456789"
EMB = "text-embedding-3-small"
CHAT = "gpt-4o-mini"


# Breakers that tests of failures do not trip by accident (a test of breakers passes its own).
QUIET_BREAKER = "{window: 50, min_calls: 50}"


def service_yaml(
    tmp: Path, *, extra_pipelines: str = "", slow_latency: float = 0.0, breaker: str = QUIET_BREAKER
) -> str:
    """Two fake providers (a, b) behind an embedding and a chat pipeline, a slow one for streams,
    the embedded store and SQLite in ``tmp``."""
    models = f"[{{name: {EMB}, dimensions: 64}}, {{name: {CHAT}}}]"
    return (
        "providers:\n"
        f"  a: {{type: fake, models: {models}}}\n"
        f"  b: {{type: fake, models: {models}}}\n"
        f"  slow: {{type: fake, latency: {slow_latency}, models: [{{name: {CHAT}}}]}}\n"
        "pipelines:\n"
        f"  embedding: {{kind: embedding, candidates: [a/{EMB}, b/{EMB}], breaker: {breaker}}}\n"
        f"  chat: {{kind: generation, candidates: [a/{CHAT}, b/{CHAT}], breaker: {breaker}}}\n"
        f"  slow_chat: {{kind: generation, candidates: [slow/{CHAT}]}}\n"
        f"{extra_pipelines}"
        f"vector_store: {{backend: embedded, path: '{tmp / 'vectors'}'}}\n"
        f"database: {{url: 'sqlite+aiosqlite:///{tmp / 'pulse-ai.db'}'}}\n"
    )


class ServiceServer:
    """One service process-in-a-thread. ``ai`` is used only by the server's own event loop; tests
    read the fakes' counters and the database (with their own connection), never call ``ai``."""

    def __init__(self, yaml: str, settings: ServiceSettings | None = None) -> None:
        self.ai = PulseAI.from_yaml(yaml)
        self.settings = settings or ServiceSettings(admin_key=_secret(ADMIN_KEY))
        self.app = create_app(self.settings, ai=self.ai)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.ai.loaded.config.database.url

    def fake(self, name: str) -> FakeProvider:
        provider = self.ai.provider(name)
        assert isinstance(provider, FakeProvider)
        return provider

    def start(self) -> ServiceServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY (asyncio)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """A clean shutdown: the lifespan closes the facade (ledger flushed, store closed)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)
