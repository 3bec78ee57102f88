"""CORS, for frontends that call the API from a browser on another origin.

Only the origins in CORS_ORIGINS are allowed. Requests may send the headers the
API reads, and scripts may read the headers it answers with; each name comes from
the module that owns the header.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

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
    if not app.config["CORS_ORIGINS"]:
        return
    cors.init_app(
        app,
        origins=app.config["CORS_ORIGINS"],
        allow_headers=REQUEST_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        max_age=600,
        # Tokens travel in the Authorization header, never in cookies.
        supports_credentials=False,
    )
