"""Better Auth's public keys: fetched over HTTP, cached in-process, looked up by `kid`.

The cache is refreshed when it is older than `cache_seconds` or when a token names
a `kid` it does not hold (rotation), but never more often than once per
`min_refetch_seconds`, so tokens with random kids cannot hammer the key server.
When the key server is down, the keys already held keep working. `generation` counts
the changes of the keys in use, so what was verified with older keys can be forgotten
(taskapp.auth.token_cache).

A slow key server must not hold requests: a fetch has a deadline for the whole of it,
`timeout` (JWKS_TIMEOUT_SECONDS), however slowly the answer trickles in, and an answer
larger than MAX_JWKS_BYTES is a failed fetch. With no keys held, a request waits for
another's fetch no longer than that deadline either, and then answers as that fetch did.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.request
from types import TracebackType
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from taskapp.web.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# Better Auth publishes a few keys of at most a few KB each.
MAX_JWKS_BYTES = 256 * 1024


class KeySet:
    def __init__(
        self, url: str, timeout: float, cache_seconds: float, min_refetch_seconds: float
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str, dict[str, Any]] = {}
        # Bumped when a refresh finds other keys than those held. The first keys are
        # not a change: nothing can have been verified before there were keys.
        self.generation = 0
        self._parsed: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at = float("-inf")
        self._attempts = 0  # fetches started, so a request that waited knows one ended
        self._reachable = False
        self._lock = threading.Lock()

    def jwk(self, kid: str) -> dict[str, Any] | None:
        """The JWK published under `kid`, or None if the key server does not list it.

        Raises ServiceUnavailable only when no key is held at all and the key
        server cannot be reached: then nothing can be verified.
        """
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        self._refresh()
        return self._keys.get(kid)

    def public_key(self, kid: str, algorithm: str) -> Any:
        """The key object for `kid` used with `algorithm`, parsed once; None if not listed.

        (Its type depends on the algorithm; PyJWT's prepare_key returns Any.)

        Raises PyJWKError when the key cannot be used with that algorithm: one
        that declares its `alg` is used with that algorithm only.
        """
        jwk = self.jwk(kid)
        if jwk is None:
            return None
        if jwk.get("alg", algorithm) != algorithm:
            raise PyJWKError(f"key {kid!r} is for {jwk['alg']}, not {algorithm}")
        parsed = self._parsed.get((kid, algorithm))
        if parsed is None or parsed[0] is not jwk:
            key = PyJWK(jwk, algorithm)
            # Parsing alone accepts, say, a P-256 key for ES512; preparing it checks
            # the curve and size, here rather than in the middle of verification.
            parsed = (jwk, key.Algorithm.prepare_key(key.key))
            self._parsed[(kid, algorithm)] = parsed
        return parsed[1]

    def is_ready(self) -> bool:
        """True when keys are held or the key server answered (subject to the refetch limit)."""
        if self._keys:
            return True
        try:
            self._refresh()
        except ServiceUnavailable:
            return False
        return True

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self.cache_seconds

    def _refresh(self) -> None:
        # While another thread fetches, requests that can be served from the keys
        # already held go on with them instead of queueing behind a slow key server.
        # Those that cannot wait for that fetch, at most as long as it may take.
        attempts = self._attempts
        if self._keys:
            if not self._lock.acquire(blocking=False):
                return
        elif not self._lock.acquire(timeout=self.timeout):
            raise ServiceUnavailable("no signing keys and the key server is slow")
        try:
            now = time.monotonic()
            # A fetch that ended while this request waited is its answer too.
            if attempts == self._attempts and now - self._attempted_at >= self.min_refetch_seconds:
                self._attempted_at = now
                self._attempts += 1
                try:
                    keys = self._fetch()
                    if self._keys and keys != self._keys:
                        self.generation += 1
                    self._keys = keys
                    self._fetched_at = now
                    self._reachable = True
                except (OSError, ValueError, http.client.HTTPException) as error:
                    log.warning("JWKS fetch from %s failed: %s", self.url, error)
                    self._reachable = False
            if not self._keys and not self._reachable:
                raise ServiceUnavailable("no signing keys and the key server is unreachable")
        finally:
            self._lock.release()

    def _fetch(self) -> dict[str, dict[str, Any]]:
        with _Deadline(self.timeout) as deadline:
            try:
                body = _download(self.url, deadline)
            except (OSError, http.client.HTTPException):
                if deadline.expired:
                    raise deadline.error() from None
                raise
            if deadline.expired:  # cut off: what was read is not the whole answer
                raise deadline.error()
        document = json.loads(body)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError("JWKS document has no 'keys' list")
        usable = {}
        for jwk in keys:
            if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and _is_public_key(jwk):
                usable[jwk["kid"]] = jwk
        return usable


def _is_public_key(jwk: dict[str, Any]) -> bool:
    # Private parameters ("d", "p", ...) mean a misconfigured server: ignore the key.
    if "d" in jwk:
        return False
    try:
        PyJWK(jwk)
    except (PyJWTError, ValueError, TypeError, KeyError):
        return False
    return True


def _download(url: str, deadline: _Deadline) -> bytes:
    """The body of a GET of `url`, within `deadline`, at most MAX_JWKS_BYTES long.

    urllib as before (proxies from the environment, redirects, certificate checks),
    with connections that `deadline` can cut.
    """
    # The URL is the operator's, checked to be http(s) by taskapp.config.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    opener = urllib.request.build_opener(
        _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline)
    )
    with opener.open(request, timeout=deadline.remaining()) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
            raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes ({declared})")
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
    return body


class _Deadline:
    """The end of one fetch: its connections are shut down then, wherever they wait.

    A socket timeout bounds each read, so a server sending a byte now and then
    never trips it; shutting the socket down ends any read blocked on it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._end = time.monotonic() + seconds
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()

    def error(self) -> TimeoutError:
        return TimeoutError(f"no whole answer within {self.seconds:g} s")

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise self.error()
        return left

    def watch(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _shut_down(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                _shut_down(connection)


def _shut_down(connection: http.client.HTTPConnection) -> None:
    # shutdown(), not close(): it wakes a read blocked in another thread at once.
    # (During a TLS handshake `sock` is the plain socket the TLS one was made from,
    # already handed over: then this does nothing, and the handshake's own timeout,
    # the time left when it began, bounds it.)
    if connection.sock is not None:
        with contextlib.suppress(OSError):  # already closed
            socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    """A connection that `deadline` can cut: each stage gets only the time left."""

    def __init__(self, host: str, *, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        self.timeout = self._deadline.remaining()
        super().connect()
        # For https, the TLS handshake that follows (HTTPSConnection.connect) has
        # only what is left of the deadline after connecting.
        self.sock.settimeout(self._deadline.remaining())
        self._deadline.watch(self)


class _DeadlineHTTPSConnection(http.client.HTTPSConnection, _DeadlineHTTPConnection):
    """HTTPSConnection, whose connect() wraps the one of _DeadlineHTTPConnection in TLS."""


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPConnection, req, deadline=self._deadline)  # type: ignore[arg-type]


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_DeadlineHTTPSConnection, req, deadline=self._deadline)
