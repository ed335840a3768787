"""A fake OpenAI-compatible server: real HTTP on 127.0.0.1, driven by the real ``openai`` SDK.

It serves ``/v1/embeddings``, ``/v1/chat/completions`` (plain and streamed) and ``/v1/models``, and
Azure's ``/openai/deployments/{deployment}/...`` paths. Faults are scripted per request, in order
(``script``), or for every request (``always``). Every request it receives is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import socket
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_faults import Fault

__all__ = ["FakeOpenAIServer", "Fault", "RecordedRequest", "fake_vector"]

# Request headers that carry no credentials (everything else is echoed by the echo faults).
_PLAIN_HEADERS = {
    "host",
    "accept",
    "accept-encoding",
    "connection",
    "content-length",
    "content-type",
    "user-agent",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "x-stainless-timeout",
    "idempotency-key",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float
    fault: Fault | None = None


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    scripted: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None
    latency: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _credentials(recorded: RecordedRequest) -> str:
    """Every header of a request that may carry a credential, as ``name=value`` pairs."""
    return " ".join(f"{k}={v}" for k, v in recorded.headers.items() if k not in _PLAIN_HEADERS)


def _keep_alive(base: dict[str, Any], mode: str | None) -> str:
    """An SSE comment, or a chunk whose delta holds no text."""
    if mode == "comment":
        return ": keep-alive\n\n"
    choice = {"index": 0, "delta": {"content": ""}, "finish_reason": None}
    return f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"


def _encoded(body: bytes, encoding: str, headers: dict[str, str]) -> Response:
    """``body`` compressed with ``encoding`` (gzip, deflate or identity) and labelled so."""
    if encoding == "gzip":
        body = gzip.compress(body, compresslevel=9)
    elif encoding == "deflate":
        body = zlib.compress(body, 9)
    if encoding != "identity":
        headers = {**headers, "content-encoding": encoding}
    return Response(body, media_type="application/json", headers=headers)


def fake_vector(text: str, dims: int) -> np.ndarray:
    """A deterministic unit vector for ``text``: the same text always gets the same vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeOpenAIServer:
    def __init__(self, dimensions: int = 1536, latency: float = 0.0) -> None:
        self.dimensions = dimensions
        self.state = _State(latency=latency)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.open_streams = 0  # streamed answers still being sent

    # ---- control -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def script(self, *faults: Fault) -> None:
        with self.state.lock:
            self.state.scripted.extend(faults)

    def always(self, fault: Fault | None) -> None:
        with self.state.lock:
            self.state.always = fault

    def set_latency(self, seconds: float) -> None:
        self.state.latency = seconds

    @property
    def max_in_flight(self) -> int:
        """The most requests this server was handling at once since the last reset."""
        return self.state.max_in_flight

    def reset(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.scripted.clear()
            self.state.always = None
            self.state.max_in_flight = 0

    def start(self) -> FakeOpenAIServer:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets of a TCP-proto listener,
        # and without it every answer waits ~40 ms for a delayed ACK (Nagle)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP ----------------------------------------------------------------------------
    def _app(self) -> Starlette:
        routes = [
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/openai/deployments/{deployment}/embeddings", self._embeddings, methods=["POST"]),
            Route("/openai/deployments/{deployment}/chat/completions", self._chat, methods=["POST"]),
            Route("/openai/models", self._models, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    async def _record(self, request: Request) -> tuple[RecordedRequest, Fault | None]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        with self.state.lock:
            fault = self.state.scripted.popleft() if self.state.scripted else self.state.always
            recorded = RecordedRequest(
                request.method,
                request.url.path,
                dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()},
                body,
                time.monotonic(),
                fault,
            )
            self.state.requests.append(recorded)
            self.state.in_flight += 1
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        try:
            if self.state.latency:
                await asyncio.sleep(self.state.latency)
            if fault is not None and fault.kind == "slow":
                await asyncio.sleep(fault.delay)
        finally:
            with self.state.lock:
                self.state.in_flight -= 1
        return recorded, fault

    @staticmethod
    def _fault_response(fault: Fault | None, recorded: RecordedRequest | None = None) -> Response | None:
        if fault is None:
            return None
        if fault.kind == "echo_key" and recorded is not None:
            creds = _credentials(recorded)
            body = {"error": {"message": f"Incorrect API key provided: {creds}", "type": "invalid_api_key"}}
            return JSONResponse(body, status_code=401, headers={"x-echo": creds[:200]})
        if fault.kind == "redirect":
            return Response(status_code=fault.status, headers={"location": fault.message or "/"})
        if fault.kind == "status":
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            code = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(fault.status, "error")
            message = fault.message or f"scripted {fault.status}"
            body = {"error": {"message": message, "type": code, "code": code}}
            return JSONResponse(body, status_code=fault.status, headers=headers)
        if fault.kind == "malformed":
            return Response("{this is not json", media_type="application/json")
        if fault.kind == "answer":
            body = fault.value if isinstance(fault.value, str) else json.dumps(fault.value)
            return Response(body, media_type=fault.media_type, headers=dict(fault.headers))
        return None

    async def _embeddings(self, request: Request) -> Response:
        recorded, fault = await self._record(request)
        failure = self._fault_response(fault, recorded)
        if failure is not None:
            return failure
        body = recorded.body
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or self.dimensions)
        if fault is not None and fault.kind == "wrong_dim":
            dims -= 1
        if fault is not None and fault.kind == "too_few":
            inputs = inputs[:-1]
        as_base64 = body.get("encoding_format") == "base64" and not (fault is not None and fault.kind == "floats")
        data = []
        if fault is not None and fault.kind == "echo_key_in_vector":
            as_base64 = False
        for index, text in enumerate(inputs):
            vector = fake_vector(text, dims)
            if fault is not None and fault.kind == "zero_vector" and index == 0:
                vector = np.zeros(dims, np.float32)
            if fault is not None and fault.kind == "scaled":
                vector = (vector * float(fault.value)).astype(np.float32)
            encoded: Any = base64.b64encode(vector.tobytes()).decode() if as_base64 else vector.tolist()
            if fault is not None and fault.kind == "echo_key_in_vector" and index == 0:
                encoded = [_credentials(recorded)]
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) for text in inputs)
        payload: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self._answer(payload, fault, recorded)

    def _answer(self, payload: dict[str, Any], fault: Fault | None, recorded: RecordedRequest) -> Response:
        """A JSON answer, with the answer-shaping faults applied."""
        if fault is not None and fault.kind == "usage":
            if fault.value == "missing":
                payload.pop("usage", None)
            else:
                payload["usage"] = fault.value
        headers: dict[str, str] = {}
        if fault is not None and fault.kind == "echo_key_header":
            headers["x-echo"] = _credentials(recorded)
        if fault is not None and fault.kind == "encoded":
            return _encoded(json.dumps(payload).encode() + b" " * int(fault.value), str(fault.message), headers)
        if fault is not None and fault.kind == "trickle":
            raw = json.dumps(payload).encode()
            pieces = int(fault.value)
            size = max(1, len(raw) // pieces + 1)

            async def slowly() -> Any:
                for start in range(0, len(raw), size):
                    await asyncio.sleep(fault.delay / pieces)
                    yield raw[start : start + size]

            return StreamingResponse(slowly(), media_type=fault.media_type, headers=headers)
        return JSONResponse(payload, headers=headers)

    async def _chat(self, request: Request) -> Response:
        recorded, fault = await self._record(request)
        failure = self._fault_response(fault, recorded)
        if failure is not None:
            return failure
        body = recorded.body
        prompt = " ".join(m["content"] for m in body["messages"])
        reply = f"echo: {body['messages'][-1]['content']}"
        prompt_tokens, completion_tokens = len(prompt.split()), len(reply.split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
            return self._answer(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}, fault, recorded
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> Any:
            if fault is not None and fault.kind == "events":
                for event in fault.value:
                    yield f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"
                yield "data: [DONE]\n\n"
                return
            words = reply.split(" ")
            if fault is not None and fault.kind == "cut_stream" and fault.value is not None:
                words = words[: int(fault.value)]
            for i, word in enumerate(words):
                if fault is not None and fault.kind == "slow_stream":
                    await asyncio.sleep(fault.delay)
                if fault is not None and fault.kind == "stall_stream" and i == fault.value[0]:
                    for _ in range(fault.value[1]):
                        await asyncio.sleep(fault.delay)
                        yield _keep_alive(base, fault.message)
                delta = {"content": word if i == 0 else f" {word}"}
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"
            if fault is not None and fault.kind == "cut_stream":
                return  # ends cleanly: no finish_reason, no usage, no [DONE]
            last = {"index": 0, "delta": {}, "finish_reason": "stop"}
            yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [last]})}\n\n"
            if include_usage:
                final_usage: Any = usage
                if fault is not None and fault.kind == "usage":
                    final_usage = None if fault.value == "missing" else fault.value
                chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": final_usage}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        self.open_streams += 1

        async def counted() -> Any:
            try:
                async for event in events():
                    yield event
            finally:
                self.open_streams -= 1

        return StreamingResponse(counted(), media_type="text/event-stream")

    async def _models(self, request: Request) -> Response:
        _, fault = await self._record(request)
        failure = self._fault_response(fault)
        if failure is not None:
            return failure
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "me"}]})


def main() -> None:
    """Run a fake server in its own process (for benchmarks): prints its base URL, serves until killed."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--dimensions", type=int, default=1536)
    args = parser.parse_args()
    server = FakeOpenAIServer(dimensions=args.dimensions, latency=args.latency).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
