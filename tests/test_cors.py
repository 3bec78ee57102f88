"""CORS: only the configured browser origins may call the API, with credentials, and
every answer says it depends on the Origin."""

import http.client

import pytest

from taskapp import create_app
from taskapp.config import ConfigError
from tests.support import HS_SECRET, served

FRONTEND = "https://app.example.com"
ALLOW_ORIGIN = "Access-Control-Allow-Origin"
ALLOW_CREDENTIALS = "Access-Control-Allow-Credentials"


@pytest.fixture
def cors_app(make_app):
    """An app that allows FRONTEND and a local development server; settings may be added."""
    return lambda **settings: make_app(
        BETTER_AUTH_SECRET=HS_SECRET,
        CORS_ORIGINS=f"{FRONTEND}, http://localhost:3000",
        **settings,
    )


@pytest.fixture
def cors_client(cors_app):
    return cors_app().test_client()


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, if-match",
}


def preflight(client, origin):
    return client.options("/api/alice/tasks", headers={**PREFLIGHT, "Origin": origin})


def varies_on_origin(response) -> bool:
    return "origin" in {value.lower() for value in response.vary}


def test_preflight_from_an_allowed_origin_is_answered(cors_client):
    response = preflight(cors_client, FRONTEND)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "if-match"} <= set(allowed.split(", "))
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_preflight_with_credentials_over_real_http(cors_app):
    # What a browser reads before `fetch(url, {credentials: "include"})`: the raw headers.
    with served(cors_app()) as base_url:
        connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=5)
        try:
            connection.request(
                "OPTIONS",
                "/api/alice/tasks",
                headers={**PREFLIGHT, "Origin": FRONTEND, "Connection": "close"},
            )
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
    assert response.status == 200
    headers = response.headers
    assert headers.get_all(ALLOW_ORIGIN) == [FRONTEND]
    assert headers.get_all(ALLOW_CREDENTIALS) == ["true"]
    assert "Origin" in [name.strip() for name in ", ".join(headers.get_all("Vary")).split(",")]
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()


def test_answers_to_an_allowed_origin_allow_credentials(cors_client, auth):
    response = cors_client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND})
    assert response.status_code == 200
    assert response.headers[ALLOW_ORIGIN] == FRONTEND
    assert response.headers[ALLOW_CREDENTIALS] == "true"


def test_a_401_is_readable_by_the_page_too(cors_client):
    # The frontend refreshes its token on a 401: it must be able to see that status.
    response = cors_client.get("/api/alice/tasks", headers={"Origin": FRONTEND})
    assert response.status_code == 401
    assert response.headers[ALLOW_ORIGIN] == FRONTEND
    assert response.headers[ALLOW_CREDENTIALS] == "true"


def test_preflight_from_another_origin_gets_no_cors_headers(cors_client):
    response = preflight(cors_client, "https://evil.example.com")
    assert ALLOW_ORIGIN not in response.headers
    assert ALLOW_CREDENTIALS not in response.headers
    assert varies_on_origin(response)


@pytest.mark.parametrize(
    "origin",
    [
        "https://App.example.com",  # another letter case is another origin here
        "HTTPS://APP.EXAMPLE.COM",
        "https://app.example.com.evil.example",
        "https://evil.example/https://app.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
    ],
)
def test_only_the_exact_origin_is_allowed(cors_client, origin):
    for response in (
        preflight(cors_client, origin),
        cors_client.get("/api/alice/tasks", headers={"Origin": origin}),
    ):
        assert ALLOW_ORIGIN not in response.headers
        assert ALLOW_CREDENTIALS not in response.headers


def test_an_origin_with_regex_characters_matches_only_itself(make_app):
    # flask-cors would read "[::1]" as a character class; taskapp compares the string.
    client = make_app(BETTER_AUTH_SECRET=HS_SECRET, CORS_ORIGINS="http://[::1]:3000").test_client()
    assert preflight(client, "http://[::1]:3000").headers[ALLOW_ORIGIN] == "http://[::1]:3000"
    for origin in ("http://1:3000", "http://::3000", "http://[::1]:30000"):
        assert ALLOW_ORIGIN not in preflight(client, origin).headers


def test_no_allow_origin_without_an_origin_header(cors_client, auth):
    response = cors_client.get("/api/alice/tasks", headers=auth())
    assert response.status_code == 200
    assert ALLOW_ORIGIN not in response.headers
    assert ALLOW_CREDENTIALS not in response.headers
    assert varies_on_origin(response)


def test_every_answer_varies_on_origin(cors_client, auth):
    answers = [
        cors_client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND}),
        cors_client.get("/api/alice/tasks", headers={**auth(), "Origin": "https://evil.example"}),
        cors_client.get("/api/alice/tasks", headers=auth()),
        cors_client.get("/api/alice/tasks"),  # 401
        cors_client.get("/nowhere", headers={"Origin": FRONTEND}),  # 404
        cors_client.get("/healthz"),
    ]
    assert all(varies_on_origin(response) for response in answers)


def test_vary_keeps_the_views_own_entries(cors_client, auth):
    response = cors_client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND})
    assert response.headers.getlist("Vary") == ["Prefer, Origin"]


def test_credentials_can_be_turned_off(cors_app, auth):
    client = cors_app(CORS_ALLOW_CREDENTIALS="false").test_client()
    for response in (
        preflight(client, FRONTEND),
        client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND}),
    ):
        assert response.headers[ALLOW_ORIGIN] == FRONTEND
        assert ALLOW_CREDENTIALS not in response.headers


def test_responses_expose_the_paging_and_concurrency_headers(cors_client, auth):
    response = cors_client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND})
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    exposed = set(response.headers["Access-Control-Expose-Headers"].split(", "))
    assert {"ETag", "Link", "Location", "Retry-After"} <= exposed


def test_without_cors_origins_no_cors_headers_are_sent(client, auth):
    response = client.get("/api/alice/tasks", headers={**auth(), "Origin": FRONTEND})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Vary" not in response.headers or not varies_on_origin(response)


# --- any origin, and the configuration -------------------------------------------------------


def test_any_origin_is_answered_with_a_star_and_no_credentials(make_app, auth):
    client = make_app(
        BETTER_AUTH_SECRET=HS_SECRET, CORS_ORIGINS="*", CORS_ALLOW_CREDENTIALS="false"
    ).test_client()
    for origin in (FRONTEND, "https://anyone.example"):
        for response in (
            preflight(client, origin),
            client.get("/api/alice/tasks", headers={**auth(), "Origin": origin}),
        ):
            assert response.headers[ALLOW_ORIGIN] == "*"  # never the caller's origin echoed
            assert ALLOW_CREDENTIALS not in response.headers
    assert ALLOW_ORIGIN not in client.get("/api/alice/tasks", headers=auth()).headers


def config(**settings):
    return create_app({"BETTER_AUTH_SECRET": HS_SECRET, "DATABASE_URL": "sqlite://", **settings})


@pytest.mark.parametrize("credentials", [None, "true"])
def test_any_origin_with_credentials_is_refused_at_start_up(credentials):
    settings = {"CORS_ORIGINS": "*"}
    if credentials:
        settings["CORS_ALLOW_CREDENTIALS"] = credentials
    with pytest.raises(ConfigError, match=r"CORS_ORIGINS=\* cannot allow credentials"):
        config(**settings)


def test_any_origin_beside_named_ones_is_refused():
    with pytest.raises(ConfigError, match=r"either \* \(any origin\) or a list"):
        config(CORS_ORIGINS=f"{FRONTEND}, *", CORS_ALLOW_CREDENTIALS="false")


def test_configured_origins_are_written_as_browsers_send_them():
    app = config(CORS_ORIGINS="https://App.Example.com/, http://localhost:3000")
    assert app.config["CORS_ORIGINS"] == [FRONTEND, "http://localhost:3000"]
    assert preflight(app.test_client(), FRONTEND).headers[ALLOW_ORIGIN] == FRONTEND


@pytest.mark.parametrize(
    "value",
    [
        "app.example.com",
        "localhost:3000",
        "https://app.example.com/app",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "https://app.example.com:port",
        "https://bücher.example",
        "null",
    ],
)
def test_a_value_that_is_not_an_origin_is_refused(value):
    with pytest.raises(ConfigError, match="CORS_ORIGINS takes origins"):
        config(CORS_ORIGINS=value)


def test_allow_credentials_must_be_a_boolean():
    with pytest.raises(ConfigError, match="CORS_ALLOW_CREDENTIALS must be true or false"):
        config(CORS_ORIGINS=FRONTEND, CORS_ALLOW_CREDENTIALS="sometimes")
