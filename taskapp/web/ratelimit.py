"""Rate limits: per client IP on every request, per user once the token is verified.

The IP limit (`RATELIMIT_PER_IP`) is an application limit of `limiter`: it runs
before authentication, so guessing tokens is throttled too. `per_user_limit`
(`RATELIMIT_PER_USER`) is a decorator the task views list after their token
check, keyed by the token's identity: one user's requests never use up another's.
Over either limit the answer is 429 in the JSON error shape with `Retry-After`;
every limited answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from flask_jwt_extended import get_jwt_identity
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits.errors import StorageError
from limits.storage import MemoryStorage

from taskapp.web.errors import error_response

log = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"
HEADERS = (LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER)
USER_SCOPE = "user"
# A slow or unreachable Redis may delay a request by this much before the
# limiter falls back to counting in memory.
STORAGE_TIMEOUT_SECONDS = 1


class SweptMemoryStorage(MemoryStorage):
    """limits' memory storage, without a thread per hit: what memory:// means in taskapp.

    limits 5.8's MemoryStorage starts a `threading.Timer` to drop expired counters
    whenever the previous one has ended, which under steady traffic is on almost
    every request (about 200 µs each here). Counters are already expired when read;
    the sweep of the ones nobody reads any more runs on the request path instead, by
    one thread at a time, at most once per SWEEP_SECONDS. It replaces
    MemoryStorage's private `__schedule_expiry` (checked against limits 5.8.0;
    tests/test_rate_limits.py fails if that hook goes away). Naming the scheme
    registers the class for it with limits, in place of its own.
    """

    STORAGE_SCHEME = ["memory"]
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self._swept_at = time.monotonic()
        self._sweeping = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:
        if time.monotonic() - self._swept_at < self.SWEEP_SECONDS:
            return
        if not self._sweeping.acquire(blocking=False):
            return  # another thread is sweeping
        try:
            self._swept_at = time.monotonic()
            self._sweep()
        finally:
            self._sweeping.release()

    def _sweep(self) -> None:
        # Other threads read and drop expired counters meanwhile (MemoryStorage.get),
        # so every key may be gone by the time it is looked at.
        now = time.time()
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)


# The limit values are read per request, since tests build several apps in one
# process (Flask-Limiter keeps its storage on this object: the last app bound sets it).
limiter = Limiter(
    get_remote_address,
    application_limits=[
        ApplicationLimit(lambda: current_app.config["RATELIMIT_PER_IP"], scope="ip")
    ],
    strategy="fixed-window",
    # Headers are written below: Flask-Limiter's own add Retry-After to every
    # answer and would stretch a 503's Retry-After to the window's end.
    headers_enabled=False,
    # Storage down (Redis): count in this process's memory until it is back, and
    # never fail a request because of the limiter.
    in_memory_fallback_enabled=True,
    swallow_errors=True,
)
# Flask-Limiter's logger has a NullHandler, so without logging configured its
# warnings (such as "storage unreachable") would be lost; taskapp's are not.
limiter.logger = log


def caller_identity() -> str:
    """The verified token's identity; with AUTH_ENABLED=false, the path's user."""
    if current_app.config["AUTH_ENABLED"]:
        return str(get_jwt_identity())
    return str((request.view_args or {}).get("user_id", ""))


per_user_limit = limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_PER_USER"], scope=USER_SCOPE, key_func=caller_identity
)


@limiter.request_filter
def _not_limited() -> bool:
    # A CORS preflight is answered without running a view; a 429 there would reach
    # the page as an opaque network error instead of a readable 429.
    return not current_app.config["RATELIMIT_ENABLED"] or request.method == "OPTIONS"


def storage_options(config: dict[str, Any]) -> dict[str, Any]:
    """Flask-Limiter's storage options for the configured RATELIMIT_STORAGE_URI."""
    # Storage errors arrive as limits.errors.StorageError, whatever the client.
    options: dict[str, Any] = {"wrap_exceptions": True}
    if urlsplit(config["RATELIMIT_STORAGE_URI"]).scheme != "memory":
        options.update(
            key_prefix=config["RATELIMIT_KEY_PREFIX"],
            socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
            socket_timeout=STORAGE_TIMEOUT_SECONDS,
        )
    return options


def init_rate_limits(app: Flask) -> None:
    # Flask-Limiter takes its storage options from the app's config.
    app.config["RATELIMIT_STORAGE_OPTIONS"] = storage_options(app.config)
    limiter.init_app(app)
    if app.config["RATELIMIT_ENABLED"]:
        app.register_error_handler(RateLimitExceeded, _too_many_requests)
        app.after_request(_add_rate_limit_headers)


def _seconds_until_reset(error: RateLimitExceeded) -> int:
    breached = limiter.current_limit
    if breached is not None:
        try:
            reset_time = breached.window.reset_time
        except StorageError:
            pass
        else:
            return max(1, math.ceil(reset_time - time.time()))
    return int(error.limit.limit.get_expiry())  # the window's end is unknown: a whole window


def _too_many_requests(error: RateLimitExceeded) -> Response:
    seconds = _seconds_until_reset(error)
    who = "for this user" if error.limit.scope == USER_SCOPE else "from this address"
    return error_response(
        429,
        f"Too many requests {who} (limit: {error.limit.limit}); retry in {seconds} seconds.",
        headers={"Retry-After": str(seconds)},
    )


def _add_rate_limit_headers(response: Response) -> Response:
    """The limit this request counted against: the user's once the token is verified,
    else the client IP's. Exempt requests (/healthz, /readyz) get none."""
    current = limiter.current_limit
    if current is None:
        return response
    try:
        window = current.window
    except StorageError:
        log.warning("rate limit storage unreachable: no rate-limit headers on this answer")
        return response
    response.headers[LIMIT_HEADER] = str(current.limit.amount)
    response.headers[REMAINING_HEADER] = str(window.remaining)
    response.headers[RESET_HEADER] = str(math.ceil(window.reset_time))  # Unix time, seconds
    return response
