"""Better Auth's public keys: fetched over HTTP, cached in-process, looked up by `kid`.

The cache is refreshed when it is older than `cache_seconds` or when a token names
a `kid` it does not hold (rotation), but never more often than once per
`min_refetch_seconds`, so tokens with random kids cannot hammer the key server.
When the key server is down, the keys already held keep working. `generation` counts
the changes of the keys in use, so what was verified with older keys can be forgotten
(taskapp.auth.token_cache).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.request
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from taskapp.web.errors import ServiceUnavailable

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024


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
        if not self._lock.acquire(blocking=not self._keys):
            return
        try:
            now = time.monotonic()
            if now - self._attempted_at >= self.min_refetch_seconds:
                self._attempted_at = now
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
        # The URL is the operator's, checked to be http(s) by taskapp.config.
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            document = json.loads(response.read(MAX_JWKS_BYTES))
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
