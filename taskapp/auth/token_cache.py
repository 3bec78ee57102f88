"""Verify a token once per worker while it is valid: a bounded cache of accepted tokens.

A client sends the same Better Auth JWT with every request until it refreshes it, and
verifying it (four parses and a signature check in flask-jwt-extended and PyJWT) was
most of the cost of a request's authentication. So each app keeps, in
`app.extensions`, an LRU of the tokens it has accepted, keyed by the whole encoded
token: a hit skips the parsing and the signature check in `_decode_jwt_from_config`.

What makes a hit as strict as a full verification (tokens.py holds the rules):

- Only accepted tokens enter: flask-jwt-extended verified the signature, `iss`, `aud`,
  `sub`, the times and the identity claim (`_decode_jwt_from_config`; `session` for
  Better Auth's session cache), and then our token verification loader
  (`claims_are_acceptable`) accepted the claims; the loader calls
  `remember_accepted`, which stores the token. A token that fails anything is
  never stored. The key is the whole token, so a token that differs by one character
  is another token, verified in full.
- On every hit the key loader (`signing_key_for`) runs again with the stored header,
  so the algorithm allow-list and the key choice by `kid` apply as they did, and a
  key set past its cache lifetime is refetched just as a full verification would.
- An entry lives only while its token is valid: `exp`, `nbf` and `iat` are compared
  with the current time and the configured leeway exactly as PyJWT compares them;
  when that fails the entry is dropped and the full verification runs, so an expired
  token gets the very same 401 (and `expired` metric) as one that was never cached.
- The cache is emptied when the key set changes (`KeySet.generation`), so a token
  whose key was withdrawn from the JWKS is verified again, and refused.
- flask-jwt-extended still runs, on every request, its own checks after decoding:
  token type, blocklist, and our verification loader (maximum lifetime, identity, and
  for the session cache `session.userId` against `user.id`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g

from taskapp.auth.jwks import KeySet
from taskapp.auth.session_cache import SessionCacheJWTManager

Claims = dict[str, Any]  # a token's header or payload

TOKEN_CACHE = "taskapp.token_cache"  # noqa: S105 (an app.extensions name)
# Better Auth's JWTs live 15 minutes by default, and each gunicorn worker has its own
# cache: 1,024 entries hold the tokens of 1,024 clients active in that window on one
# worker, at 2-3 KB each (token, header and claims), a few MB at most. Past that the
# least recently used token is verified in full again, as every token was before.
CACHE_SIZE = 1024
_PENDING = "_taskapp_token_pending"  # on `g`: the token decoded in full by this request


@dataclass(frozen=True)
class _Entry:
    header: Claims
    payload: Claims


@dataclass(frozen=True)
class _Pending:
    token: str
    payload: Claims
    generation: int


class TokenCache:
    """Accepted tokens by their encoded form, least recently used first; thread-safe."""

    def __init__(self, keyset: KeySet | None, size: int) -> None:
        self.size = size
        self._keyset = keyset
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._generation = self.key_generation()
        self._lock = threading.Lock()

    def key_generation(self) -> int:
        """Which key set the keys come from: the JWKS's generation; one HS256 secret is 0."""
        return 0 if self._keyset is None else self._keyset.generation

    def __len__(self) -> int:
        with self._lock:
            self._forget_replaced_keys()
            return len(self._entries)

    def __contains__(self, token: object) -> bool:
        with self._lock:
            self._forget_replaced_keys()
            return token in self._entries

    def get(self, token: str) -> _Entry | None:
        with self._lock:
            self._forget_replaced_keys()
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def put(self, token: str, header: Claims, payload: Claims, generation: int) -> None:
        """Remember an accepted token, verified with keys of `generation`."""
        with self._lock:
            self._forget_replaced_keys()
            if generation != self._generation:
                return  # verified with keys that have been replaced since
            self._entries[token] = _Entry(dict(header), dict(payload))
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def tokens(self) -> list[str]:
        """The tokens held, least recently used first."""
        with self._lock:
            self._forget_replaced_keys()
            return list(self._entries)

    def _forget_replaced_keys(self) -> None:
        # Under the lock. The key set changes rarely: the next use of the cache empties it.
        generation = self.key_generation()
        if generation != self._generation:
            self._entries.clear()
            self._generation = generation

    def discard(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)


def _still_valid(payload: Claims, now: float, leeway: float) -> bool:
    """PyJWT's time checks (jwt.api_jwt `_validate_iat`, `_nbf`, `_exp`), as booleans.

    They are numbers: `claims_are_acceptable` (tokens.py) refuses any other before a
    token is stored.
    """
    if "iat" in payload and int(payload["iat"]) > now + leeway:
        return False
    if "nbf" in payload and int(payload["nbf"]) > now + leeway:
        return False
    return not ("exp" in payload and int(payload["exp"]) <= now - leeway)


class CachingJWTManager(SessionCacheJWTManager):
    """flask-jwt-extended's JWTManager, decoding each accepted token once per worker.

    flask-jwt-extended has no extension point for the decoding itself, so this
    overrides `JWTManager._decode_jwt_from_config`, which `decode_token` (and so
    `verify_jwt_in_request`) calls, checked against flask-jwt-extended 4.7.4 (requirements.txt).
    tests/test_token_cache.py fails if that method disappears or changes its signature.
    On a miss it calls the decoding of taskapp.auth.session_cache, so Better Auth's
    session cache is remembered like any other token.
    """

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if csrf_value is not None or allow_expired:  # not asked by taskapp: never cached
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        cache: TokenCache = current_app.extensions[TOKEN_CACHE]
        payload = self._cached_claims(cache, encoded_token)
        if payload is not None:
            return payload
        # Read before the key is chosen: if the keys change meanwhile, the entry is refused.
        generation = cache.key_generation()
        payload = super()._decode_jwt_from_config(encoded_token)
        setattr(g, _PENDING, _Pending(encoded_token, payload, generation))
        return payload

    def _cached_claims(self, cache: TokenCache, encoded_token: str) -> dict[str, Any] | None:
        entry = cache.get(encoded_token)
        if entry is None:
            return None
        generation = cache.key_generation()
        try:
            # The algorithm allow-list and the key choice by kid, as for a new token;
            # a refusal here is the one the full verification would give.
            self._decode_key_callback(entry.header, dict(entry.payload))
        except Exception:
            cache.discard(encoded_token)
            raise
        leeway = current_app.config["JWT_DECODE_LEEWAY"]
        if cache.key_generation() != generation or not _still_valid(
            entry.payload, time.time(), leeway
        ):
            # The keys changed while choosing one, or the token is no longer valid:
            # verify it in full, which refuses it as it would an uncached token.
            cache.discard(encoded_token)
            return None
        return dict(entry.payload)


def init_token_cache(app: Flask, keyset: KeySet | None) -> None:
    """Give `app` its own cache: apps in one process never share one."""
    app.extensions[TOKEN_CACHE] = TokenCache(keyset, CACHE_SIZE)


def remember_accepted(header: Claims, payload: Claims) -> None:
    """Cache the token this request verified in full, now that every rule accepted it.

    Called by the token verification loader (the last rule flask-jwt-extended applies)
    with the header and the claims of the token it checked.
    """
    pending: _Pending | None = g.pop(_PENDING, None)
    if pending is None or pending.payload is not payload:
        return
    cache: TokenCache = current_app.extensions[TOKEN_CACHE]
    cache.put(pending.token, header, payload, pending.generation)
