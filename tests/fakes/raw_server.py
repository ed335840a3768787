"""A raw TCP server for faults below HTTP: a connection reset mid-answer, a body cut short, broken
chunked framing. Each connection reads one request and answers with the configured behaviour."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

__all__ = ["RawFaultServer"]

_HEADERS_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                return
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            body += sock.recv(65536)
        self.server.requests += 1
        behaviour = self.server.behaviour
        if behaviour == "reset_mid_body":
            sock.sendall(_HEADERS_200 + b"content-length: 1000\r\n\r\n" + b'{"object": "list", "da')
            # SO_LINGER 0: the close sends a RST, the peer sees "connection reset"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        elif behaviour == "short_body":
            sock.sendall(_HEADERS_200 + b"content-length: 1000\r\n\r\n" + b'{"object": "list", "da')
            sock.shutdown(socket.SHUT_RDWR)
        elif behaviour == "bad_chunk":
            sock.sendall(_HEADERS_200 + b"transfer-encoding: chunked\r\n\r\n" + b"zz-not-hex\r\nhello\r\n0\r\n\r\n")
            sock.shutdown(socket.SHUT_RDWR)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    behaviour = "reset_mid_body"
    requests = 0


class RawFaultServer:
    def __init__(self, behaviour: str) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.behaviour = behaviour
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> int:
        return self._server.requests

    def __enter__(self) -> RawFaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
