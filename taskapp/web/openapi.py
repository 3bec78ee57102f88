"""The OpenAPI document: its metadata, the helpers the views document themselves
with, and the `/docs` reference page.

flask-smorest builds the document from the views and schemas; this module adds
what they cannot say (title, version, the bearer scheme, the API's description)
and serves Swagger UI from the flask-swagger-ui package, so `/docs` needs no
internet.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

DESCRIPTION = """A per-user task API for frontends that sign in with Better Auth.

Send the JWT from Better Auth's JWT plugin (or, with a shared secret, Better
Auth's session cache) as `Authorization: Bearer <token>`; `{user_id}` in every
path must be the token's user (its `sub`, or the session cache's
`session.userId`). Every error is `{"detail": "...", "errors"?: {"field": ["..."]}}`.
An operation takes the query parameters listed for it and no others: an unknown one
is a 422 that names it, as an unknown body field is.

Requests are rate limited per user and per client IP: answers carry
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (Unix
time), and a 429 carries `Retry-After` (seconds)."""

SPEC_KWARGS: dict[str, Any] = {
    "title": "taskapp",
    "version": "1.0.0",
    "openapi_version": "3.1.0",
    "info": {"description": DESCRIPTION},
    "security": [{"bearerAuth": []}],
    "components": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
    },
}
# flask-smorest serves the document at OPENAPI_URL_PREFIX + OPENAPI_JSON_PATH.
SERVED_AT = {"OPENAPI_URL_PREFIX": "/", "OPENAPI_JSON_PATH": "openapi.json"}

# Every task operation needs a token for the path's user, is rate limited, and
# may meet a database outage; one with a body may meet the body's errors.
ALWAYS = (401, 403, 429, 503)
WITH_BODY = (400, 413, 415, 422)


def header(description: str) -> dict[str, Any]:
    """A documented response header."""
    return {"description": description, "schema": {"type": "string"}}


ETAG = {"ETag": header("The task's version, for If-Match and If-None-Match.")}


def init_openapi(app: Flask) -> None:
    """The `/docs` page."""
    app.register_blueprint(
        get_swaggerui_blueprint(
            "/docs", "/openapi.json", config={"app_name": "taskapp API"}, blueprint_name="docs"
        )
    )
