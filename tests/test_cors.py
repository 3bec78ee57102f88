"""CORS: only the configured browser origins may call the API."""

import pytest

from tests.support import HS_SECRET

FRONTEND = "https://app.example.com"


@pytest.fixture
def cors_client(make_app):
    return make_app(BETTER_AUTH_SECRET=HS_SECRET, CORS_ORIGINS=f"{FRONTEND}, http://localhost:3000")


def preflight(client, origin):
    return client.options(
        "/api/alice/tasks",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )


def test_preflight_from_an_allowed_origin_is_answered(cors_client):
    response = preflight(cors_client.test_client(), FRONTEND)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "if-match"} <= set(allowed.split(", "))
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_preflight_from_another_origin_gets_no_cors_headers(cors_client):
    response = preflight(cors_client.test_client(), "https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_responses_expose_the_paging_and_concurrency_headers(cors_client, auth):
    response = cors_client.test_client().get(
        "/api/alice/tasks", headers={**auth(), "Origin": FRONTEND}
    )
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    exposed = set(response.headers["Access-Control-Expose-Headers"].split(", "))
    assert {"ETag", "Link", "Location", "Retry-After"} <= exposed


def test_without_cors_origins_no_cors_headers_are_sent(client, auth):
    response = client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND})
    assert "Access-Control-Allow-Origin" not in response.headers
