"""Test helpers: real keys and tokens, a real JWKS server, and the app under real servers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm
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


ROOT = Path(__file__).resolve().parent.parent


class Gunicorn:
    """`gunicorn wsgi:app` on a free 127.0.0.1 port; its log lines are collected as they come.

    Tests wait on those lines (`wait_for`), never on the clock.
    """

    def __init__(self, *options: str, env: dict[str, str]):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *options, "wsgi:app"],
            cwd=ROOT,
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stderr:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()

    def wait_for(self, seen, timeout: float) -> bool:
        """Whether `seen(lines)` became true within `timeout` seconds."""
        with self._new_line:
            return self._new_line.wait_for(lambda: seen(self.lines), timeout=timeout)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.process.stderr.close()
