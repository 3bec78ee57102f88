"""Rate limits: per client IP on every request, per user once the token is verified.

The IP limit (`RATELIMIT_PER_IP`) is checked before anything else runs, so guessing
tokens is throttled too. It counts every request: CORS preflights, requests that match
no route (404, 405) and `/readyz` alike, so no kind of request is a free flood. Only
views marked `exempt` (the liveness probe) and clients in RATELIMIT_EXEMPT_ADDRESSES
(the health checkers an operator names) are never counted. `per_user_limit`
(`RATELIMIT_PER_USER`) is a decorator the task views list after their token check,
keyed by the token's identity: one user's requests never use up another's. Over either
limit the answer is 429 in the JSON error shape with `Retry-After`; every limited
answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

Windows are fixed and aligned to the clock (a one-minute window starts on the
minute), so one counter increment is all a limit costs: the count comes back from
the storage, and the window's end is known without asking it. The counters live in
`limits`' storages (memory:// or Redis). When Redis cannot be reached, requests are
counted in the worker's memory for a while and Redis is tried again after that: the
limiter never fails a request.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string

from taskapp.auth.tokens import verified_caller
from taskapp.web.errors import error_response

log = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"
HEADERS = (LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER)
IP_SCOPE = "ip"
USER_SCOPE = "user"
EXTENSION = "taskapp.rate_limits"
_COUNTED = "_taskapp_rate_limit_window"  # on `g`: the window the headers describe
# A slow or unreachable Redis may delay a request by this much before the
# limiter falls back to counting in memory...
STORAGE_TIMEOUT_SECONDS = 1
# ...and it is tried again this long after it failed: often enough to notice its
# return soon, seldom enough that an outage does not cost every request a timeout.
STORAGE_RETRY_SECONDS = 5.0

# Set on a view function by `exempt`: its requests are never counted.
_EXEMPT = "_taskapp_rate_limit_exempt"

P = ParamSpec("P")
R = TypeVar("R")
View = TypeVar("View", bound=Callable[..., Any])
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclass(frozen=True)
class Window:
    """One limit's current window, as counted by this request."""

    limit: RateLimitItem
    scope: str
    count: int
    reset: int  # Unix time, seconds: when the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit.amount - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit.amount


class RateLimits:
    """One app's limits and the storage that counts them (`app.extensions[EXTENSION]`)."""

    def __init__(
        self, config: dict[str, Any], monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_ip = parse_many(config["RATELIMIT_PER_IP"])
        self.per_user = parse_many(config["RATELIMIT_PER_USER"])
        # Synchronous: config.py admits only memory:// and redis:// (not async+...).
        self.storage = cast(
            Storage, storage_from_string(config["RATELIMIT_STORAGE_URI"], **storage_options(config))
        )
        self.fallback = SweptMemoryStorage()
        self.exempt_networks: tuple[IPNetwork, ...] = config["RATELIMIT_EXEMPT_ADDRESSES"]
        self._monotonic = monotonic
        self._retry_storage_at = 0.0  # on `monotonic`'s clock; 0: the storage is in use

    def exempts(self, address: str) -> bool:
        """Whether the client `address` (as the app sees it, after ProxyFix) is never counted."""
        if not self.exempt_networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # no address (a unix socket's peer) or not an IP
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # an IPv4 client of a dual-stack socket: ::ffff:10.0.0.1
        return any(ip in network for network in self.exempt_networks)

    def count(self, limits: list[RateLimitItem], scope: str, identity: str) -> Window:
        """Count one request against each of `limits`; the window with the least left."""
        now = time.time()
        windows = []
        for limit in limits:
            seconds = limit.get_expiry()
            number = int(now // seconds)
            key = limit.key_for(scope, identity, str(number))
            windows.append(
                Window(limit, scope, self._increment(key, seconds), (number + 1) * seconds)
            )
        return min(windows, key=lambda window: (not window.exceeded, window.remaining))

    def _increment(self, key: str, seconds: int) -> int:
        if self._monotonic() >= self._retry_storage_at:
            try:
                count = self.storage.incr(key, seconds)
            except StorageError as error:
                self._retry_storage_at = self._monotonic() + STORAGE_RETRY_SECONDS
                log.warning(
                    "Rate limit storage unreachable (%s): counting in this worker's memory, "
                    "trying it again in %.0f seconds",
                    error.storage_error,
                    STORAGE_RETRY_SECONDS,
                )
            else:
                if self._retry_storage_at:
                    self._retry_storage_at = 0.0
                    log.warning("Rate limit storage reachable again: counting there")
                return count
        return self.fallback.incr(key, seconds)


def storage_options(config: dict[str, Any]) -> dict[str, Any]:
    """limits' storage options for the configured RATELIMIT_STORAGE_URI."""
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
    if not app.config["RATELIMIT_ENABLED"]:
        return
    app.extensions[EXTENSION] = RateLimits(app.config)
    app.before_request(_limit_client_ip)
    app.after_request(_add_rate_limit_headers)


def exempt(view: View) -> View:
    """Never count requests to `view`: a probe that costs less to answer than to count."""
    setattr(view, _EXEMPT, True)
    return view


def caller_identity() -> str:
    """The verified token's identity; with AUTH_ENABLED=false, the path's user."""
    if current_app.config["AUTH_ENABLED"]:
        return str(verified_caller())
    return str((request.view_args or {}).get("user_id", ""))


def per_user_limit(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Count the request against the caller's RATELIMIT_PER_USER; 429 when over it."""

    @functools.wraps(view)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        limits: RateLimits | None = current_app.extensions.get(EXTENSION)
        if limits is not None:
            window = limits.count(limits.per_user, USER_SCOPE, caller_identity())
            setattr(g, _COUNTED, window)
            if window.exceeded:
                return _too_many_requests(window)
        return view(*args, **kwargs)

    return limited


def _limit_client_ip() -> ResponseReturnValue | None:
    # Every request counts, those that run no view too: a flood of preflights, 404s or
    # 405s is still a flood. (A refused preflight reaches a page as a network error,
    # not a readable 429; by then the address is over its limit for every request.)
    limits: RateLimits = current_app.extensions[EXTENSION]
    address = request.remote_addr or ""
    if _exempt_view() or limits.exempts(address):
        return None
    window = limits.count(limits.per_ip, IP_SCOPE, address)
    setattr(g, _COUNTED, window)
    if window.exceeded:
        return _too_many_requests(window)
    return None


def _exempt_view() -> bool:
    # No endpoint: the request matched no route, and is counted.
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    return getattr(view, _EXEMPT, False)


def _too_many_requests(window: Window) -> Response:
    seconds = max(1, math.ceil(window.reset - time.time()))
    who = "for this user" if window.scope == USER_SCOPE else "from this address"
    return error_response(
        429,
        f"Too many requests {who} (limit: {window.limit}); retry in {seconds} seconds.",
        headers={"Retry-After": str(seconds)},
    )


def _add_rate_limit_headers(response: Response) -> Response:
    """The limit this request counted against last: the user's once the token is
    verified, else the client IP's. Uncounted requests (/healthz, exempt addresses) get none."""
    window: Window | None = g.get(_COUNTED)
    if window is not None:
        response.headers[LIMIT_HEADER] = str(window.limit.amount)
        response.headers[REMAINING_HEADER] = str(window.remaining)
        response.headers[RESET_HEADER] = str(window.reset)
    return response
