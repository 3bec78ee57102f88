"""Test helpers: real keys and tokens, a real JWKS server, and the app under real servers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server


def unavailable(tests: str, missing: str) -> NoReturn:
    """What `tests` need is missing: a skip on a laptop, a failure in CI, where every suite runs."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the {tests}: {missing}")
    pytest.skip(f"the {tests} need {missing}")


HS_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
ISSUER = "http://auth.example.test"


def _make_private_key(algorithm: str):
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ES512":
        return ec.generate_private_key(ec.SECP521R1())
    if algorithm in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(algorithm)


_JWK_WRITERS = {
    "EdDSA": OKPAlgorithm,
    "ES256": ECAlgorithm,
    "ES512": ECAlgorithm,
    "RS256": RSAAlgorithm,
    "PS256": RSAPSSAlgorithm,
}


@dataclass
class SigningKey:
    """A private key with the public JWK a JWKS server would publish for it."""

    algorithm: str
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    private_key: object = None

    def __post_init__(self):
        if self.private_key is None:
            self.private_key = _make_private_key(self.algorithm)

    @property
    def public_jwk(self) -> dict:
        writer = _JWK_WRITERS[self.algorithm]
        jwk = writer.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm}

    def sign(self, payload: dict, headers: dict | None = None, kid: str | None = None) -> str:
        return jwt.encode(
            payload,
            self.private_key,
            algorithm=self.algorithm,
            headers={"kid": self.kid if kid is None else kid, **(headers or {})},
        )


def claims(sub: str | None = "alice", lifetime: int = 900, **extra) -> dict:
    """Claims shaped like Better Auth's: sub, iat, exp, iss, aud, and the user object."""
    now = int(time.time())
    payload = {"iat": now, "exp": now + lifetime, **extra}
    if sub is not None:
        payload.setdefault("id", sub)
        payload["sub"] = sub
    return payload


def hs256_token(sub: str | None = "alice", secret: str = HS_SECRET, **extra) -> str:
    return jwt.encode(claims(sub, **extra), secret, algorithm="HS256")


def bearer(token: str) -> dict:
    """The Authorization header that sends `token`: the one place tests spell it.

    For a user's fresh HS256 token there is the `auth` fixture (tests/conftest.py),
    built on this; only tests of malformed headers write theirs by hand.
    """
    return {"Authorization": f"Bearer {token}"}


class KeyServer:
    """Serves a JWKS document over real HTTP and counts how often it is fetched."""

    def __init__(self):
        self.keys: list[dict] = []
        self.fetches = 0
        self.available = True
        self.requested_paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requested_paths.append(self.path)
                if self.path != "/api/auth/jwks":
                    self.send_error(404)
                    return
                server.fetches += 1
                if not server.available:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def publish(self, *keys: SigningKey) -> None:
        self.keys = [key.public_jwk for key in keys]

    def __enter__(self) -> KeyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextlib.contextmanager
def served(app):
    """`app` behind a real HTTP server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (until someone binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ROOT = Path(__file__).resolve().parent.parent  # the checkout
START_TIMEOUT = 30  # seconds for a server to come up, or for a line to reach its log


class Log:
    """A child process's output, read line by line as it comes.

    Tests wait for lines (`wait_for`), never on the clock.
    """

    def __init__(self, stream):
        self.lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._reader.start()

    def _drain(self, stream) -> None:
        with stream:
            for line in stream:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def mark(self) -> int:
        """A position: `wait_for(..., start=mark)` looks only at lines written after it."""
        with self._changed:
            return len(self.lines)

    def matches(self, pattern: str, start: int = 0) -> list[re.Match]:
        """The lines so far (from `start`) in which `pattern` is found, as matches."""
        with self._changed:
            return [m for line in self.lines[start:] if (m := re.search(pattern, line))]

    def wait_for(
        self, pattern: str, count: int = 1, start: int = 0, timeout: float = START_TIMEOUT
    ) -> list[re.Match]:
        """Wait until `count` lines (from `start`) match `pattern`; returns the matches.

        Fails the test, showing the log, at `timeout` or once the process closes its output.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := self.matches(pattern, start)) < count:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    pytest.fail(f"{count} x {pattern!r} not in the log:\n{''.join(self.lines)}")
                self._changed.wait(remaining)
            return found

    def close(self) -> None:
        """After the process ended: wait until every line it wrote has been read."""
        self._reader.join(timeout=START_TIMEOUT)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Send `sig` to the process (by its id) unless it has ended; kill it if it hangs on.

    Returns its exit status.
    """
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=START_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class Gunicorn:
    """A gunicorn master started by a test, and its log (stdout and stderr, line by line)."""

    process: subprocess.Popen
    log: Log
    url: str | None  # http://127.0.0.1:<port> on a port; None on a unix socket
    socket_path: Path | None  # on a unix socket; None on a port

    def worker_pids(self, count: int, start: int = 0, timeout: float = START_TIMEOUT) -> set[str]:
        """The pids of the workers booted after `start`, once at least `count` have."""
        booted = self.log.wait_for(r"Booting worker with pid: (\d+)", count, start, timeout)
        return {match[1] for match in booted}


@contextlib.contextmanager
def run_gunicorn(
    directory: Path,
    *options: str,
    env: dict[str, str],
    unix_socket: bool = False,
    port: int | None = None,
) -> Iterator[Gunicorn]:
    """gunicorn serving this checkout's app until the block ends; yields once it listens.

    Settings are the deployed ones: gunicorn.conf.py's, with its bind through
    GUNICORN_BIND (as deploy/taskapp.service gives it), `env` on top of the test's
    environment, and gunicorn's command-line `options` over both. It binds a free
    port on 127.0.0.1 (or `port`) or, with `unix_socket`, `directory`/gunicorn.sock. It runs in
    `directory`, not the checkout, so no developer's .env is read.
    """
    if unix_socket:
        socket_path, url = directory / "gunicorn.sock", None
        bind = f"unix:{socket_path}"
    else:
        socket_path, url = None, f"http://127.0.0.1:{port or free_port()}"
        bind = url.removeprefix("http://")
    inherited = {name: value for name, value in os.environ.items() if name != "GUNICORN_CMD_ARGS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), *options],
        cwd=directory,
        env={**inherited, "PYTHONPATH": str(ROOT), "GUNICORN_BIND": bind, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = Log(process.stdout)
    try:
        log.wait_for(r"Listening at: ")
        yield Gunicorn(process, log, url, socket_path)
    finally:
        stop(process)
        log.close()


def pgbouncer_config(database_url: str, port: int, connect_query: str | None = None) -> str:
    """deploy/pgbouncer.ini in front of `database_url`'s database on 127.0.0.1:`port`.

    Only what ties it to a machine changes: the addresses, the log and pid files, and
    authentication (any client name, logged in to PostgreSQL as the URL's user).
    `connect_query` runs on each new server connection (a `search_path`, say).
    """
    url = make_url(database_url)
    server = f"host={url.host or '127.0.0.1'} port={url.port or 5432} dbname={url.database}"
    server += f" user={url.username}"
    if url.password:
        server += f" password={url.password}"
    if connect_query:
        server += f" connect_query='{connect_query}'"
    config = (ROOT / "deploy" / "pgbouncer.ini").read_text()
    for deployed, tested in {
        "taskapp = host=127.0.0.1 port=5432 dbname=taskapp": f"taskapp = {server}",
        "listen_addr = 10.0.0.10": "listen_addr = 127.0.0.1",
        "listen_port = 6432": f"listen_port = {port}",
        "unix_socket_dir = /var/run/postgresql": "unix_socket_dir =",
        "auth_type = scram-sha-256": "auth_type = any",
        "auth_file = /etc/pgbouncer/userlist.txt": "",
        "logfile = /var/log/postgresql/pgbouncer.log": "",  # stderr
        "pidfile = /var/run/postgresql/pgbouncer.pid": "",
    }.items():
        # Each one exactly once: a changed deploy file fails here, loudly.
        assert config.count(deployed) == 1, f"deploy/pgbouncer.ini no longer has {deployed!r}"
        config = config.replace(deployed, tested)
    return config


def debian_server(name: str, tests: str) -> str:
    """The path of Debian's `name` server program (in sbin, which a user's PATH may
    lack), or `unavailable` for `tests`."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    unavailable(tests, f"Debian's {name} (apt-get install {name})")


def pgbouncer_binary() -> str:
    return debian_server("pgbouncer", "PgBouncer tests")


@contextlib.contextmanager
def run_pgbouncer(
    directory: Path, database_url: str, connect_query: str | None = None
) -> Iterator[str]:
    """A private PgBouncer (deploy/pgbouncer.ini: transaction pooling) in front of
    `database_url`'s database until the block ends; yields the URL that goes through it."""
    binary = pgbouncer_binary()
    port = free_port()
    ini = directory / "pgbouncer.ini"
    ini.write_text(pgbouncer_config(database_url, port, connect_query))
    # PgBouncer refuses to run as root; it reads its file first, then becomes `nobody`.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [binary, *user, str(ini)], stderr=subprocess.PIPE, text=True, cwd=directory
    )
    log = Log(process.stderr)
    try:
        log.wait_for(r"process up: PgBouncer")
        name = quote(make_url(database_url).username or "taskapp")
        yield f"postgresql://{name}@127.0.0.1:{port}/taskapp"
    finally:
        stop(process)
        log.close()
