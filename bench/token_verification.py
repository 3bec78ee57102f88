"""How long the JWT part of a request takes, in-process, for an EdDSA token via a JWKS.

    python -m bench.token_verification

It serves a JWKS over real HTTP on 127.0.0.1 (tests.support.KeyServer), builds an app
that trusts it (no database is touched), and times flask-jwt-extended's
`verify_jwt_in_request()` inside a request context carrying the token: reading the
header, decoding, choosing the key, verifying, the claims rules. Routing, the view
and the database are left out. It prints the median and p95 in microseconds for the
same token sent again and again (what a client does between refreshes) and for a
fresh token each time (what the first request with a token costs).
"""

from __future__ import annotations

import gc
import statistics
import time

from flask_jwt_extended import verify_jwt_in_request

from taskapp import create_app
from tests.support import KeyServer, SigningKey, bearer, claims

ROUNDS = 5
HOST = "localhost"  # the request context's, which TRUSTED_HOSTS must name
REQUESTS = 2_000


def _time(app: object, tokens: list[str]) -> list[float]:
    timings = []
    for token in tokens:
        with app.test_request_context("/api/alice/tasks", headers=bearer(token)):  # type: ignore[attr-defined]
            started = time.perf_counter()
            verify_jwt_in_request()
            timings.append((time.perf_counter() - started) * 1e6)
    return timings


def _report(name: str, timings: list[float]) -> None:
    p95 = statistics.quantiles(timings, n=20)[-1]
    print(f"{name:<28} median {statistics.median(timings):6.1f} µs   p95 {p95:6.1f} µs")


def main() -> int:
    with KeyServer() as server:
        key = SigningKey("EdDSA")
        server.publish(key)
        app = create_app(
            {
                "BETTER_AUTH_URL": server.base_url,
                "DATABASE_URL": "sqlite://",
                "TRUSTED_HOSTS": HOST,
            },
        )
        payload = claims("alice", iss=server.base_url, aud=server.base_url)
        same = [key.sign(payload)] * REQUESTS
        _time(app, same[:100])  # warm up: fetch the JWKS, parse the key
        gc.disable()
        try:
            repeated, fresh = [], []
            for round_ in range(ROUNDS):
                repeated += _time(app, same)
                distinct = [
                    key.sign({**payload, "jti": f"{round_}-{n}"}) for n in range(REQUESTS // 4)
                ]
                fresh += _time(app, distinct)
        finally:
            gc.enable()
    _report("same token each request", repeated)
    _report("a new token each request", fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
