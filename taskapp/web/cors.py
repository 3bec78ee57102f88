"""CORS, for frontends that call the API from a browser on another origin.

Only the origins in CORS_ORIGINS are allowed, each compared exactly with the
request's `Origin`. They may send credentials (CORS_ALLOW_CREDENTIALS, on by
default): Better Auth frontends often fetch with `credentials: "include"`, and
since taskapp reads no cookies that opens nothing to other sites. Requests may
send the headers the API reads, and scripts may read the headers it answers
with; each name comes from the module that owns the header.
"""

from __future__ import annotations

import re

from flask import Flask, Response
from flask_cors import CORS

from taskapp.config import ANY_ORIGIN
from taskapp.tasks import idempotency
from taskapp.web import logs, ratelimit

cors = CORS()

REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Prefer",
    idempotency.HEADER,
    logs.REQUEST_ID_HEADER,
]
EXPOSED_HEADERS = [
    "ETag",
    "Link",
    "Location",
    "Preference-Applied",
    "Retry-After",
    "X-Total-Count",
    logs.REQUEST_ID_HEADER,
    idempotency.REPLAYED_HEADER,
    *ratelimit.HEADERS,
]


def init_cors(app: Flask) -> None:
    origins = app.config["CORS_ORIGINS"]
    if not origins:
        return
    any_origin = origins == [ANY_ORIGIN]
    cors.init_app(
        app,
        origins=ANY_ORIGIN if any_origin else [exactly(origin) for origin in origins],
        # With "*", answer `*` itself, never the caller's origin (the config has
        # refused credentials with it, as browsers do).
        send_wildcard=any_origin,
        supports_credentials=app.config["CORS_ALLOW_CREDENTIALS"],
        # No Access-Control-Allow-Origin on a request without an Origin header.
        always_send=False,
        # flask-cors adds `Vary: Origin` to some answers only: every one gets it below.
        vary_header=False,
        allow_headers=REQUEST_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        max_age=600,
    )
    app.after_request(vary_on_origin)


def exactly(origin: str) -> re.Pattern[str]:
    """A pattern only `origin` matches, in the same letter case.

    flask-cors compares origin strings case-insensitively and reads any with `*`, `?`,
    `[` … in them as regular expressions, which it compiles case-insensitively; a
    pattern compiled here it uses as it is.
    """
    return re.compile(re.escape(origin) + r"\Z")


def vary_on_origin(response: Response) -> Response:
    # Every answer depends on the request's Origin, those without CORS headers too (no
    # Origin, or one not allowed): a shared cache must never give one origin's answer
    # to another.
    response.vary.add("Origin")
    return response
