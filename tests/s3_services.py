"""Real local S3: moto's standalone server, and a loopback fault proxy in front of it."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.prefect_server import free_port


class MotoServer:
    def __init__(self, authorize_after: int | None = None):
        """`authorize_after`: requests served before moto starts enforcing IAM (its
        INITIAL_NO_AUTH_ACTION_COUNT); by default it never does."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": str(authorize_after)} if authorize_after else {})}

    def start(self) -> MotoServer:
        exe = str(Path(sys.executable).parent / "moto_server")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, env=self.env)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto server did not start")

    def stop(self):
        if self.proc:
            os.killpg(self.proc.pid, 9)


def _read_http(sock: socket.socket, expect_body: bool = True, on_expect=None) -> bytes | None:
    """One HTTP message (head + body by Content-Length or chunked) from sock, or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not expect_body:
        return head + b"\r\n\r\n"
    if on_expect is not None and b"expect: 100-continue" in head.lower() and len(body) < length:
        on_expect()  # the client holds its body until told to go on
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return head + b"\r\n\r\n" + body


SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: %d\r\n\r\n")
SLOW_DOWN_BODY = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
ERROR_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
ERROR_500_BODY = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"


class FaultProxy:
    """Per request: drop the connection, answer 500 or 503 SlowDown, or forward to the upstream."""

    def __init__(self, upstream_port: int, drop=0.1, slow_down=0.1, error=0.05, seed=0, link_mb_s: float | None = None):
        self.upstream_port = upstream_port
        # A link of this bandwidth shared by every connection: each request waits its turn on it and
        # for its bytes to pass, asleep (a network, not a CPU, is the bottleneck).
        self.link_mb_s, self._link_free_at = link_mb_s, 0.0
        self.rates = (drop, slow_down, error)
        self.rng = random.Random(seed)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.faults = {"drop": 0, "slow_down": 0, "error": 0, "forwarded": 0}
        self.enabled = True
        # A request line starting with this is forwarded once and its response lost (connection closed).
        self.lose_response_of: bytes | None = None
        self.lost: list[bytes] = []
        # Requests whose request line starts with this all get a 500 (S3 failing one kind of call).
        self.fail_requests: bytes | None = None
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", self.port))

    def start(self) -> FaultProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _pick(self) -> str:
        with self._lock:
            if not self.enabled:
                return "forwarded"
            r = self.rng.random()
        drop, slow, err = self.rates
        if r < drop:
            return "drop"
        if r < drop + slow:
            return "slow_down"
        if r < drop + slow + err:
            return "error"
        return "forwarded"

    def _handle(self, conn: socket.socket):
        with conn:
            while True:
                request = _read_http(conn, on_expect=lambda: conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"))
                if request is None:
                    return
                request = request.replace(b"Expect: 100-continue\r\n", b"").replace(b"expect: 100-continue\r\n", b"")
                fault = "error" if self.fail_requests and request.startswith(self.fail_requests) else self._pick()
                with self._lock:
                    self.faults[fault] += 1
                if fault == "drop":
                    return
                if fault == "slow_down":
                    conn.sendall(SLOW_DOWN % len(SLOW_DOWN_BODY) + SLOW_DOWN_BODY)
                    return
                if fault == "error":
                    conn.sendall(ERROR_500 % len(ERROR_500_BODY) + ERROR_500_BODY)
                    return
                if self.link_mb_s:
                    with self._lock:
                        self._link_free_at = max(time.monotonic(), self._link_free_at) + len(request) / (
                            self.link_mb_s * 2**20)
                        until = self._link_free_at
                    time.sleep(max(0.0, until - time.monotonic()))
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                    up.sendall(request)
                    response = _read_response(up, request)
                if response is None:
                    return
                with self._lock:
                    lose = self.lose_response_of is not None and request.startswith(self.lose_response_of)
                    if lose:
                        self.lose_response_of = None
                        self.lost.append(request.split(b"\r\n", 1)[0])
                if lose:  # the upstream did the work; the client never hears of it
                    return
                conn.sendall(response)

    def stop(self):
        self._sock.close()


def _read_response(sock, request: bytes) -> bytes | None:
    while True:
        data = _read_http(sock, expect_body=not request.startswith(b"HEAD "))
        if data is None or not data.startswith(b"HTTP/1.1 1"):
            return data
