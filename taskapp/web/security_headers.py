"""Headers that keep browsers and caches from doing the wrong thing with our answers."""

from flask import Flask, Response, request

# The API answers JSON only: nothing in it may load, run or be framed.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI's page: its own scripts and styles (one inline bootstrap script), its
# document, nothing from elsewhere.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    docs = request.path == "/docs" or request.path.startswith("/docs/")
    headers.setdefault("Content-Security-Policy", DOCS_POLICY if docs else API_POLICY)
    if request.path.startswith("/api/"):
        # Per-user data: no shared cache may keep it, no browser may store it.
        headers["Cache-Control"] = "no-store"
    return response


def init_security_headers(app: Flask) -> None:
    app.after_request(add_security_headers)
