"""Production as deployed: nginx (deploy/nginx.conf) -> gunicorn (gunicorn.conf.py) -> PostgreSQL.

The tests start gunicorn on a unix socket in their own temporary directory and,
in front of it, a foreground nginx whose configuration is deploy/nginx.conf with
only the addresses and file paths changed; they wait for both by reading their
logs. They need Debian's nginx (`apt-get install nginx`): without it they are
skipped, and in CI they fail.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from taskapp.extensions import db
from taskapp.models import Task
from tests.support import (
    HS_SECRET,
    ROOT,
    START_TIMEOUT,
    Log,
    debian_server,
    free_port,
    run_gunicorn,
    stop,
)

HOST = "api.example.com"
REQUEST_TIMEOUT = 15  # a request that takes longer counts as hung
BODY_LIMIT = 64 * 1024  # MAX_BODY_BYTES' default, and client_max_body_size
WORKERS = 2
STREAM_THREADS = 4

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def nginx_binary() -> str:
    return debian_server("nginx", "nginx tests")


@contextlib.contextmanager
def deployed_gunicorn(directory: Path, database_url: str, **settings: str):
    """gunicorn as deployed, on a unix socket in `directory`; yields once its workers booted."""
    env = {
        "GUNICORN_WORKERS": str(WORKERS),
        "GUNICORN_THREADS": "4",
        "PROXY_HOPS": "1",
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": HS_SECRET,
        **settings,
    }
    with run_gunicorn(directory, env=env, unix_socket=True) as server:
        server.worker_pids(WORKERS)
        yield server


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def site_config(port: int, socket_path: Path, cert: Path, key: Path, directory: Path) -> str:
    """deploy/nginx.conf with its addresses, certificate and log files moved here."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for deployed, tested in {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 443 ssl default_server;": f"listen 127.0.0.1:{port} ssl default_server;",
        "listen [::]:443 ssl default_server;": "",
        "unix:/run/taskapp/gunicorn.sock": f"unix:{socket_path}",
        "/etc/letsencrypt/live/api.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/api.example.com/privkey.pem": str(key),
        "/var/log/nginx/taskapp.access.log": str(directory / "access.log"),
        "/var/log/nginx/taskapp.error.log": str(directory / "error.log"),
    }.items():
        # Each one exactly once: a changed deploy file fails here, loudly.
        assert site.count(deployed) == 1, f"deploy/nginx.conf no longer has {deployed!r}"
        site = site.replace(deployed, tested)
    return site


LOCAL = "127.0.0.1"  # the one client address deploy/nginx.conf lets read /metrics
OUTSIDE = "127.0.0.2"  # any other client: another loopback address will do


class LocalConnection(http.client.HTTPSConnection):
    """HTTPS to nginx on 127.0.0.1 from `source`, naming `server_name` in TLS (SNI)
    as a client of https://api.example.com would; None sends no name."""

    def __init__(self, port, context, source, server_name):
        super().__init__(
            server_name or LOCAL,
            port,
            context=context,
            timeout=REQUEST_TIMEOUT,
            source_address=(source, 0),
        )
        self.tls, self.server_name = context, server_name

    def connect(self):
        plain = socket.create_connection((LOCAL, self.port), self.timeout, self.source_address)
        self.sock = self.tls.wrap_socket(plain, server_hostname=self.server_name)


@dataclass
class Nginx:
    process: subprocess.Popen
    port: int
    certificate: Path
    error_log: Path

    def request(self, method, path, body=None, headers=None, source=LOCAL, server_name=HOST):
        """One HTTPS request on a new connection: (status, headers, body bytes)."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        context.check_hostname = server_name is not None
        connection = LocalConnection(self.port, context, source, server_name)
        try:
            connection.request(method, path, body=body, headers={"Host": HOST, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def json(self, method, path, payload=None, headers=None):
        """A JSON request: (status, headers, decoded body or None)."""
        body = None if payload is None else json.dumps(payload)
        headers = {**({"Content-Type": "application/json"} if body else {}), **(headers or {})}
        status, response_headers, content = self.request(method, path, body, headers)
        return status, response_headers, json.loads(content) if content else None


@contextlib.contextmanager
def run_nginx(directory: Path, socket_path: Path, upstream: str | None = None):
    """nginx in the foreground with deploy/nginx.conf, on a free port of 127.0.0.1.

    `upstream`, an `upstream taskapp { ... }` block, takes the place of the file's own.
    """
    binary = nginx_binary()
    port = free_port()
    cert, key = self_signed_certificate(directory)
    site = site_config(port, socket_path, cert, key, directory)
    if upstream is not None:
        site, replaced = re.subn(r"(?ms)^upstream taskapp \{.*?^\}\n", lambda _: upstream, site)
        assert replaced == 1, "deploy/nginx.conf no longer has one upstream taskapp block"
    (directory / "taskapp.conf").write_text(site)
    # The worker processes must reach the socket in this root-only directory.
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        f"""
        {user}
        worker_processes 1;
        pid {directory / "nginx.pid"};
        error_log stderr notice;
        events {{ worker_connections 256; }}
        http {{
            client_body_temp_path {directory / "client_body"};
            proxy_temp_path {directory / "proxy"};
            fastcgi_temp_path {directory / "fastcgi"};
            uwsgi_temp_path {directory / "uwsgi"};
            scgi_temp_path {directory / "scgi"};
            access_log {directory / "access.log"};
            include {directory / "taskapp.conf"};
        }}
        """
    )
    command = [binary, "-p", directory, "-c", directory / "nginx.conf", "-e", "stderr"]
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # nginx opens its listening socket before it starts its workers.
        Log(process.stderr).wait_for(r"start worker process \d+")
        yield Nginx(process, port, cert, directory / "error.log")
    finally:
        stop(process, signal.SIGQUIT)


@pytest.fixture
def gunicorn(database_url, tmp_path):
    with deployed_gunicorn(tmp_path, database_url) as server:
        yield server


@pytest.fixture
def nginx(gunicorn, tmp_path):
    with run_nginx(tmp_path, gunicorn.socket_path) as proxy:
        yield proxy


@pytest.fixture
def headers(auth):
    return auth("alice", lifetime=3600)


def assert_error_shape(content: bytes) -> None:
    body = json.loads(content)
    assert isinstance(body.get("detail"), str) and body["detail"], body


@postgresql_only
def test_the_contract_through_nginx_gunicorn_and_postgresql(app, nginx, headers):
    base = f"https://{HOST}:{nginx.port}"

    status, response, created = nginx.json(
        "POST", "/api/alice/tasks", {"title": "Buy milk", "priority": 3}, headers
    )
    assert status == 201, created
    # The scheme, host and port the client used, not gunicorn's unix socket.
    task_url = f"{base}/api/alice/tasks/{created['id']}"
    assert response["Location"] == task_url
    assert response["Server"] == "nginx"  # server_tokens off: no version
    path = task_url.removeprefix(base)

    status, response, task = nginx.json("GET", path, headers=headers)
    assert (status, task) == (200, created)
    etag = response["ETag"]

    nginx.json("POST", "/api/alice/tasks", {"title": "Call mum"}, headers)
    status, response, page = nginx.json(
        "GET", "/api/alice/tasks?limit=1", headers={**headers, "Prefer": "count=exact"}
    )
    assert status == 200
    assert [t["title"] for t in page] == ["Call mum"]
    assert response["X-Total-Count"] == "2"
    assert response["Preference-Applied"] == "count=exact"
    assert response["Link"].startswith(f"<{base}/api/alice/tasks?")
    assert response["Link"].endswith('>; rel="next"')

    status, response, task = nginx.json(
        "PUT", path, {"description": "2 litres"}, {**headers, "If-Match": etag}
    )
    assert status == 200, task
    assert task["description"] == "2 litres"

    status, _, task = nginx.json("PATCH", f"{path}/complete", headers=headers)
    assert (status, task["is_completed"]) == (200, True)

    status, _, body = nginx.json("DELETE", path, headers=headers)
    assert (status, body) == (204, None)
    status, _, body = nginx.json("GET", path, headers=headers)
    assert (status, body) == (404, {"detail": "Task not found."})

    status, response, body = nginx.json("GET", "/api/alice/tasks")
    assert status == 401 and "detail" in body  # the app's own error passes through
    assert response["WWW-Authenticate"].startswith("Bearer")


def padded_task(size: int) -> bytes:
    """A valid TaskCreate of exactly `size` bytes (JSON allows the padding spaces)."""
    body = json.dumps({"title": "Padded"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


@postgresql_only
def test_a_body_at_the_limit_passes_both_layers(app, nginx, headers):
    status, _, content = nginx.request(
        "POST",
        "/api/alice/tasks",
        padded_task(BODY_LIMIT),
        {**headers, "Content-Type": "application/json"},
    )
    assert status == 201, content


@postgresql_only
def test_a_body_over_the_limit_is_refused_by_nginx_in_the_json_shape(app, nginx, headers):
    status, response, content = nginx.request(
        "POST",
        "/api/alice/tasks",
        padded_task(BODY_LIMIT + 1),
        {**headers, "Content-Type": "application/json"},
    )
    assert status == 413
    assert response["Content-Type"] == "application/json"
    assert_error_shape(content)
    assert "client intended to send too large body" in nginx.error_log.read_text()


@postgresql_only
def test_a_chunked_body_over_the_limit_is_refused_in_the_json_shape(app, nginx, headers):
    body = padded_task(BODY_LIMIT + 1)
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    status, _, content = nginx.request(
        "POST", "/api/alice/tasks", chunks, {**headers, "Content-Type": "application/json"}
    )
    assert status == 413
    assert_error_shape(content)


@postgresql_only
def test_the_apps_own_limit_answers_through_nginx(app, database_url, tmp_path, headers):
    # With MAX_BODY_BYTES below nginx's limit it is the app that refuses.
    with (
        deployed_gunicorn(tmp_path, database_url, MAX_BODY_BYTES="1024") as server,
        run_nginx(tmp_path, server.socket_path) as proxy,
    ):
        status, response, content = proxy.request(
            "POST",
            "/api/alice/tasks",
            padded_task(2048),
            {**headers, "Content-Type": "application/json"},
        )
    assert status == 413
    assert json.loads(content) == {"detail": "The request body is larger than the limit."}
    assert response["Content-Type"] == "application/json"


@postgresql_only
def test_gzip_compresses_json_and_if_match_still_matches(app, nginx, headers):
    _, _, created = nginx.json(
        "POST", "/api/alice/tasks", {"title": "Long", "description": "x" * 4000}, headers
    )
    path = f"/api/alice/tasks/{created['id']}"
    status, response, content = nginx.request(
        "GET", path, headers={**headers, "Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert response["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(content)) == created
    # nginx weakened the ETag as it compressed; sent back, it still matches.
    assert response["ETag"] == 'W/"1"'
    status, _, task = nginx.json(
        "PUT", path, {"title": "Longer"}, {**headers, "If-Match": response["ETag"]}
    )
    assert status == 200, task
    assert task["title"] == "Longer"
    status, _, _ = nginx.json("PUT", path, {"title": "Stale"}, {**headers, "If-Match": 'W/"1"'})
    assert status == 412


def test_nginx_answers_502_in_json_when_gunicorn_is_down(tmp_path):
    with run_nginx(tmp_path, tmp_path / "no-gunicorn-here.sock") as proxy:
        status, response, content = proxy.request("GET", "/healthz")
    assert status == 502
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "5"
    assert response["Server"] == "nginx"
    assert_error_shape(content)


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        pytest.param("/" + "a" * 9000, {}, 414, id="url-too-long"),
        pytest.param("/healthz", {"X-Large": "b" * 20000}, 400, id="headers-too-large"),
        pytest.param("/_nginx/413", {}, 404, id="nginx-internal-page"),
    ],
)
def test_nginxs_own_errors_are_in_the_json_shape(tmp_path, path, headers, expected):
    with run_nginx(tmp_path, tmp_path / "no-gunicorn-here.sock") as proxy:
        status, response, content = proxy.request("GET", path, headers=headers)
    assert status == expected
    assert response["Content-Type"] == "application/json"
    assert_error_shape(content)


def test_plain_http_to_the_tls_port_is_answered_in_the_json_shape(tmp_path):
    with (
        run_nginx(tmp_path, tmp_path / "no-gunicorn-here.sock") as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=REQUEST_TIMEOUT) as plain,
    ):
        plain.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        )
        response = b""
        while chunk := plain.recv(65536):
            response += chunk
    head, _, content = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/json" in head
    assert_error_shape(content)


# --- signals: reload and stop without failing a request -------------------------------


class Stream:
    """Threads that create, fetch and list tasks through nginx until stopped."""

    def __init__(self, nginx: Nginx, headers: dict):
        self.nginx, self.headers = nginx, headers
        self.results: list[tuple[int | str, bytes]] = []
        self.refused = threading.Event()  # nginx answered 502: gunicorn's socket is gone
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(STREAM_THREADS)]

    def _record(self, status, content):
        with self._progress:
            self.results.append((status, content))
            self._progress.notify_all()
        if status == 502:
            self.refused.set()

    def _run(self):
        while not self._stop.is_set():
            for method, path, payload in (
                ("POST", "/api/alice/tasks", {"title": "streamed"}),
                ("GET", "/api/alice/tasks?limit=5", None),
            ):
                try:
                    status, _, content = self.nginx.request(
                        method,
                        path,
                        json.dumps(payload) if payload else None,
                        {**self.headers, "Content-Type": "application/json"},
                    )
                except OSError as error:
                    status, content = f"no answer: {error!r}", b""
                self._record(status, content)

    def succeeded(self) -> int:
        with self._lock:
            return sum(1 for status, _ in self.results if status in (200, 201))

    def wait_for_successes(self, count: int) -> None:
        """Wait until `count` more requests than now have succeeded."""
        target = self.succeeded() + count
        deadline = time.monotonic() + START_TIMEOUT
        with self._progress:
            while sum(1 for s, _ in self.results if s in (200, 201)) < target:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the stream stalled: {self.summary()}"
                self._progress.wait(remaining)

    def summary(self) -> dict:
        counts: dict = {}
        for status, _ in self.results:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT * 3)


class HeldRequest:
    """A create sent straight to gunicorn's socket that a worker is in the middle of.

    The request says `Expect: 100-continue`; gunicorn answers "100 Continue" from
    the worker thread that is about to run the app, which then waits for the body.
    So once `__init__` returns, the request is in flight, until `finish()`.
    """

    def __init__(self, socket_path: Path, headers: dict, title: str):
        self.body = json.dumps({"title": title}).encode()
        head = {
            "Host": HOST,
            "Content-Type": "application/json",
            "Content-Length": str(len(self.body)),
            "Expect": "100-continue",
            "Connection": "close",
            **headers,
        }
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(REQUEST_TIMEOUT)
        self.sock.connect(str(socket_path))
        lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        self.sock.sendall(f"POST /api/alice/tasks HTTP/1.1\r\n{lines}\r\n".encode())
        interim = self._read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim

    def _read_until(self, end: bytes | None) -> bytes:
        received = b""
        while end is None or end not in received:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received

    def finish(self) -> tuple[int, dict]:
        """Send the body and read the whole answer: (status, JSON body)."""
        try:
            self.sock.sendall(self.body)
            response = self._read_until(None)
        finally:
            self.sock.close()
        head, _, content = response.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(content)


@postgresql_only
def test_hup_replaces_the_workers_without_failing_a_request(app, gunicorn, nginx, headers):
    old_workers = gunicorn.worker_pids(WORKERS)
    with Stream(nginx, headers) as stream:
        stream.wait_for_successes(20)
        held = HeldRequest(gunicorn.socket_path, headers, "held across the reload")

        mark = gunicorn.log.mark()
        gunicorn.process.send_signal(signal.SIGHUP)
        gunicorn.log.wait_for(r"Hang up: Master", start=mark)
        new_workers = gunicorn.worker_pids(WORKERS, start=mark)
        # The old workers are told to stop together; the one without the held
        # request exits as soon as its requests are done.
        gunicorn.log.wait_for(rf"Worker exiting \(pid: ({'|'.join(old_workers)})\)", start=mark)
        status, task = held.finish()
        assert status == 201, task
        gunicorn.log.wait_for(
            rf"Worker exiting \(pid: ({'|'.join(old_workers)})\)", count=WORKERS, start=mark
        )
        # Only the new workers are left: they serve.
        stream.wait_for_successes(20)

    failures = [(s, c) for s, c in stream.results if s not in (200, 201)]
    assert not failures, f"requests failed across the reload: {stream.summary()} {failures[:3]}"
    assert gunicorn.process.poll() is None, "the master must survive a reload"
    assert new_workers.isdisjoint(old_workers)
    with app.app_context():
        assert db.session.scalar(select(Task.title).where(Task.id == task["id"])) == task["title"]


@postgresql_only
def test_term_lets_requests_in_flight_finish(app, gunicorn, nginx, headers):
    with Stream(nginx, headers) as stream:
        stream.wait_for_successes(20)
        held = [
            HeldRequest(gunicorn.socket_path, headers, f"in flight at TERM {n}") for n in range(3)
        ]
        gunicorn.process.send_signal(signal.SIGTERM)
        # The master closes (and removes) the socket, then tells the workers to
        # stop: nginx's 502 for a new request shows the shutdown has begun.
        assert stream.refused.wait(START_TIMEOUT), f"gunicorn kept serving: {stream.summary()}"
        finished = [request.finish() for request in held]

    assert [status for status, _ in finished] == [201, 201, 201], finished
    assert gunicorn.process.wait(timeout=START_TIMEOUT) == 0
    gunicorn.log.wait_for(r"Shutting down: Master")
    # Every other request either succeeded or, once the socket was gone, was
    # answered by nginx in the API's error shape: none hung or broke off.
    for status, content in stream.results:
        assert status in (200, 201, 502), stream.summary()
        if status == 502:
            assert_error_shape(content)
    with app.app_context():
        stored = set(db.session.scalars(select(Task.title)))
    assert {task["title"] for _, task in finished} <= stored


# --- /metrics from this host only, however it is spelt ----------------------------------------

METRICS_SPELLINGS = [
    "/metrics",
    "/metrics?name[]=taskapp_http_request_total",
    "/metrics/",
    "/metrics%2F",
    "/metrics%2f",
    "/metrics//",
    "//metrics",
    "/%2Fmetrics",
    "/Metrics",
    "/METRICS",
    "/%6detrics",
    "/metrics;x",
    "/metrics%3Bx",
    "/metrics/.",
    "/./metrics",
    "/x/../metrics",
    "/x/..%2Fmetrics",
]


@pytest.fixture
def metrics_nginx(database_url, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    with (
        deployed_gunicorn(
            tmp_path,
            database_url,
            METRICS_ENABLED="true",
            PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        ) as server,
        run_nginx(tmp_path, server.socket_path) as proxy,
    ):
        yield proxy


@postgresql_only
def test_this_host_reads_the_metrics_through_nginx(app, metrics_nginx):
    metrics_nginx.request("GET", "/api/alice/tasks", source=OUTSIDE)  # a 401, counted
    status, _, content = metrics_nginx.request("GET", "/metrics", source=LOCAL)
    assert status == 200
    assert b"taskapp_http_request_total" in content


@postgresql_only
def test_no_spelling_of_metrics_reaches_them_from_outside(app, metrics_nginx):
    for path in METRICS_SPELLINGS:
        status, _, content = metrics_nginx.request("GET", path, source=OUTSIDE)
        assert b"taskapp_" not in content, path
        assert (status, json.loads(content)) == (403, {"detail": "Not from here."}), path
    # The API itself is still served to the outside.
    assert metrics_nginx.request("GET", "/healthz", source=OUTSIDE)[0] == 200


# --- one host: other names get nothing -------------------------------------------------------


def raw_exchange(proxy: Nginx, request: bytes, server_name: str | None = HOST) -> bytes:
    """Send `request` as is over TLS; everything nginx answers before it closes."""
    context = ssl.create_default_context(cafile=str(proxy.certificate))
    context.check_hostname = server_name is not None
    with (
        socket.create_connection((LOCAL, proxy.port), timeout=REQUEST_TIMEOUT) as plain,
        context.wrap_socket(plain, server_hostname=server_name) as tls,
    ):
        tls.sendall(request)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            id="host-header",
        ),
        pytest.param(
            b"GET https://evil.example/healthz HTTP/1.1\r\nHost: api.example.com\r\n"
            b"Connection: close\r\n\r\n",
            id="request-line",
        ),
        pytest.param(b"GET /healthz HTTP/1.0\r\n\r\n", id="no-host"),
    ],
)
def test_nginx_closes_the_connection_for_another_host(tmp_path, request_bytes):
    with run_nginx(tmp_path, tmp_path / "no-gunicorn-here.sock") as proxy:
        assert raw_exchange(proxy, request_bytes) == b""
        # The API's own name, on the same connection setup, is answered (502: no gunicorn).
        answer = raw_exchange(proxy, f"GET /healthz HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 502 ")


@pytest.mark.parametrize("server_name", ["evil.example", None], ids=["other-name", "no-name"])
def test_nginx_shows_no_certificate_without_the_apis_name(tmp_path, server_name):
    with (
        run_nginx(tmp_path, tmp_path / "no-gunicorn-here.sock") as proxy,
        pytest.raises(ssl.SSLError, match=r"TLSV1_UNRECOGNIZED_NAME"),
    ):
        raw_exchange(proxy, b"GET /healthz HTTP/1.0\r\n\r\n", server_name=server_name)


@postgresql_only
def test_the_app_refuses_another_host_that_gets_past_nginx(app, gunicorn, headers):
    # Straight to gunicorn's socket, as a second proxy or a misconfigured site would.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REQUEST_TIMEOUT)
    with sock:
        sock.connect(str(gunicorn.socket_path))
        sock.sendall(
            b"GET /api/alice/tasks HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Forwarded-Host: evil.example\r\nConnection: close\r\n"
            + f"Authorization: {headers['Authorization']}\r\n\r\n".encode()
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, content = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(content) == {"detail": "The request names a host this API does not serve."}
