"""The OpenAPI document's extras and the `/docs` reference page.

flask-smorest builds the document from the views and schemas; this module adds
what they cannot say (the bearer scheme, the API's description) and serves
Swagger UI from the flask-swagger-ui package, so `/docs` needs no internet.
"""

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

DESCRIPTION = """A per-user task API for frontends that sign in with Better Auth.

Send the JWT from Better Auth's JWT plugin as `Authorization: Bearer <token>`;
`{user_id}` in every path must be the token's user (its `sub`). Every error is
`{"detail": "...", "errors"?: {"field": ["..."]}}`.

Requests are rate limited per user and per client IP: answers carry
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (Unix
time), and a 429 carries `Retry-After` (seconds)."""

SPEC_OPTIONS = {
    "info": {"description": DESCRIPTION},
    "security": [{"bearerAuth": []}],
    "components": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
    },
}


def init_openapi(app: Flask) -> None:
    """Before `api.init_app`: the document's options, and the `/docs` page."""
    app.config["API_SPEC_OPTIONS"] = SPEC_OPTIONS
    app.register_blueprint(
        get_swaggerui_blueprint(
            "/docs", "/openapi.json", config={"app_name": "taskapp API"}, blueprint_name="docs"
        )
    )
