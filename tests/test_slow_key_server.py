"""A key server that answers slowly or too much holds no request beyond the fetch deadline.

The key server here is a real one on 127.0.0.1 (`SlowKeyServer`) that can drip its answer
a byte at a time, forever (each byte well within JWKS_TIMEOUT_SECONDS, so no single read
times out), or pad a valid key set past the size taskapp takes. The API runs behind a
real HTTP server, and under gunicorn where a worker's threads are what run out.

No test measures time: each asserts what the request is answered, and that it is
answered at all, with a client timeout far above the fetch deadline (ANSWER_TIMEOUT).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from taskapp.auth.jwks import MAX_JWKS_BYTES
from tests.support import (
    START_TIMEOUT,
    SigningKey,
    bearer,
    claims,
    run_gunicorn,
    served,
)

TASKS = "/api/alice/tasks"
FETCH_DEADLINE = "1"  # JWKS_TIMEOUT_SECONDS in these tests
DRIP_SECONDS = 0.1  # between two bytes of a dripping answer: far inside the deadline
ANSWER_TIMEOUT = 60  # a client that waits this long for an answer has been held


class SlowKeyServer:
    """A JWKS endpoint on 127.0.0.1 that answers as `mode` says, for every connection.

    - "drip": the status line, then one byte of a header every DRIP_SECONDS, until the
      client goes away or the server stops;
    - "keys": the key set of `keys`, as a key server should;
    - "padded": that key set followed by whitespace (still valid JSON) past
      MAX_JWKS_BYTES, with its Content-Length, or without ("padded-undeclared").
    """

    def __init__(self) -> None:
        self.mode = "drip"
        self.keys: list[dict] = []
        self.connections = 0
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def publish(self, key: SigningKey) -> None:
        self.keys = [key.public_jwk]

    def __enter__(self) -> SlowKeyServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._acceptor.join(timeout=START_TIMEOUT)
        self._listener.close()

    def wait_for_connections(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while self.connections < count:
            assert time.monotonic() < deadline, f"{self.connections} of {count} connections"
            self._stopped.wait(0.01)

    def _accept(self) -> None:
        # accept() is not woken by close() from another thread: it polls for the stop.
        self._listener.settimeout(0.05)
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by __exit__
                return
            connection.settimeout(None)
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection) -> None:
        with connection:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    received = connection.recv(4096)
                    if not received:
                        return
                    request += received
                mode = self.mode
                if mode == "drip":
                    connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slowly: ")
                    while not self._stopped.wait(DRIP_SECONDS):
                        connection.sendall(b"a")
                    return
                body = json.dumps({"keys": self.keys}).encode()
                if mode.startswith("padded"):
                    body += b" " * (MAX_JWKS_BYTES + 1 - len(body))
                head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                if mode != "padded-undeclared":  # else the body ends where the connection does
                    head += f"Content-Length: {len(body)}\r\n"
                connection.sendall(head.encode() + b"\r\n" + body)
            except OSError:  # the client gave up on us: what these tests want
                return


@pytest.fixture
def slow_key_server():
    with SlowKeyServer() as server:
        yield server


@pytest.fixture
def signing_key(slow_key_server):
    key = SigningKey("EdDSA")
    slow_key_server.publish(key)
    return key


@pytest.fixture
def token(slow_key_server, signing_key):
    base_url = slow_key_server.base_url
    return signing_key.sign(claims("alice", iss=base_url, aud=base_url))


@pytest.fixture
def api(make_app, slow_key_server):
    """The API, trusting `slow_key_server`, behind a real HTTP server: yields its base URL."""

    def serve(**settings):
        app = make_app(
            BETTER_AUTH_URL=slow_key_server.base_url,
            JWKS_TIMEOUT_SECONDS=FETCH_DEADLINE,
            **settings,
        )
        return served(app)

    return serve


def get(base_url: str, path: str, headers: dict | None = None) -> tuple[int, dict, dict]:
    """Status, headers and JSON body of a GET, or a failure if no answer comes in time."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=ANSWER_TIMEOUT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.headers), json.loads(response.read())
    except TimeoutError:
        pytest.fail(f"GET {path} had no answer in {ANSWER_TIMEOUT} s")
    finally:
        connection.close()


def assert_key_server_unavailable(answer: tuple[int, dict, dict]) -> None:
    status, headers, body = answer
    assert status == 503, body
    assert headers.get("Retry-After")
    assert set(body) == {"detail"}


# --- a dripping answer -------------------------------------------------------------------------


def test_dripping_key_server_is_a_503_once_the_fetch_deadline_passes(
    api, slow_key_server, token, capsys
):
    with api() as base_url:
        assert_key_server_unavailable(get(base_url, TASKS, bearer(token)))
    log = capsys.readouterr().err
    assert re.search(r"JWKS fetch from \S+ failed: no whole answer within 1 s", log), log


def test_requests_waiting_for_a_dripping_fetch_get_the_same_503(api, slow_key_server, token):
    # Refetches a minute apart: whatever the timing, only the first request fetches.
    with api(JWKS_MIN_REFETCH_SECONDS="60") as base_url, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: get(base_url, TASKS, bearer(token)), range(6)))
    for answer in answers:
        assert_key_server_unavailable(answer)
    assert slow_key_server.connections == 1


def test_next_request_after_the_key_server_recovers_is_served(
    api, slow_key_server, signing_key, token
):
    with api(JWKS_MIN_REFETCH_SECONDS="0") as base_url:
        assert_key_server_unavailable(get(base_url, TASKS, bearer(token)))
        slow_key_server.mode = "keys"
        status, _, body = get(base_url, TASKS, bearer(token))
    assert status == 200, body
    assert body == []


def test_healthz_answers_under_gunicorn_while_every_thread_waited_on_the_key_server(
    tmp_path, slow_key_server, token
):
    # One worker with two threads: before a fetch had a deadline, two requests for
    # tasks held both threads for as long as the key server dripped, and /healthz
    # queued behind them.
    env = {
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        "BETTER_AUTH_URL": slow_key_server.base_url,
        "JWKS_TIMEOUT_SECONDS": FETCH_DEADLINE,
        "JWKS_MIN_REFETCH_SECONDS": "0",
    }
    with run_gunicorn(tmp_path, env=env) as server, ThreadPoolExecutor(max_workers=4) as pool:
        server.worker_pids(1)
        waiting = [pool.submit(get, server.url, TASKS, bearer(token)) for _ in range(4)]
        slow_key_server.wait_for_connections(1)
        status, _, body = get(server.url, "/healthz")
        assert (status, body) == (200, {"status": "ok"})
        for answer in waiting:
            assert_key_server_unavailable(answer.result())


# --- an answer too large -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["padded", "padded-undeclared"])
def test_key_set_larger_than_the_limit_is_a_failed_fetch(api, slow_key_server, token, capsys, mode):
    slow_key_server.mode = mode
    with api() as base_url:
        assert_key_server_unavailable(get(base_url, TASKS, bearer(token)))
    log = capsys.readouterr().err
    assert f"failed: the key set is larger than {MAX_JWKS_BYTES} bytes" in log, log


def test_key_set_within_the_limit_is_used(api, slow_key_server, token):
    slow_key_server.mode = "keys"
    with api() as base_url:
        status, _, body = get(base_url, TASKS, bearer(token))
    assert status == 200, body
