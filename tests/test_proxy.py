"""Behind a proxy: PROXY_HOPS decides whose X-Forwarded-* headers are believed."""

import json
import socket

import pytest
from flask import request

from taskapp import create_app
from taskapp.config import ConfigError
from tests.support import HS_SECRET, run_gunicorn

REQUEST_TIMEOUT = 30  # seconds; generous for a loaded machine

FORWARDED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "api.example.com",
    "X-Forwarded-Port": "443",
}


@pytest.fixture
def proxied_app(make_app):
    """The app as deploy/nginx.conf runs it: one proxy in front."""
    return make_app(BETTER_AUTH_SECRET=HS_SECRET, PROXY_HOPS="1")


def create(app, auth, headers):
    response = app.test_client().post(
        "/api/alice/tasks", json={"title": "A task"}, headers={**auth("alice"), **headers}
    )
    assert response.status_code == 201, response.json
    return response


def test_location_uses_the_forwarded_scheme_and_host_behind_one_proxy(proxied_app, auth):
    response = create(proxied_app, auth, FORWARDED)
    task_id = response.json["id"]
    assert response.headers["Location"] == f"https://api.example.com/api/alice/tasks/{task_id}"


def test_a_forwarded_port_other_than_the_default_stays_in_the_url(proxied_app, auth):
    response = create(proxied_app, auth, {**FORWARDED, "X-Forwarded-Port": "8443"})
    assert response.headers["Location"].startswith("https://api.example.com:8443/api/alice/")


def test_forwarded_headers_are_ignored_without_a_proxy(app, auth):
    response = create(app, auth, FORWARDED)
    assert response.headers["Location"].startswith("http://localhost/api/alice/tasks/")


def test_link_uses_the_forwarded_scheme_and_host(proxied_app, auth):
    for _ in range(2):
        create(proxied_app, auth, {})
    response = proxied_app.test_client().get(
        "/api/alice/tasks?limit=1", headers={**auth("alice"), **FORWARDED}
    )
    assert response.headers["Link"].startswith("<https://api.example.com/api/alice/tasks?")


def test_only_the_nearest_proxys_values_are_trusted(proxied_app, auth):
    # A client may send its own X-Forwarded-*; a proxy that appends to them
    # leaves the client's values first, and one hop trusts only the last.
    response = create(
        proxied_app,
        auth,
        {
            "X-Forwarded-Proto": "http, https",
            "X-Forwarded-Host": "evil.example, api.example.com",
            "X-Forwarded-Port": "80, 443",
        },
    )
    assert response.headers["Location"].startswith("https://api.example.com/api/alice/")


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "client"),
    [
        ("0", "203.0.113.7", "127.0.0.1"),
        ("1", "203.0.113.7", "203.0.113.7"),
        ("1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the first is the client's own claim
        ("2", "198.51.100.1, 203.0.113.7", "198.51.100.1"),
    ],
)
def test_client_address_comes_from_exactly_the_configured_hops(hops, forwarded_for, client):
    app = create_app(
        {"BETTER_AUTH_SECRET": HS_SECRET, "DATABASE_URL": "sqlite://", "PROXY_HOPS": hops}
    )
    app.add_url_rule("/client-address", "client_address", lambda: request.remote_addr)
    response = app.test_client().get("/client-address", headers={"X-Forwarded-For": forwarded_for})
    assert response.text == client


def test_proxy_hops_default_to_none():
    app = create_app({"BETTER_AUTH_SECRET": HS_SECRET, "DATABASE_URL": "sqlite://"})
    assert app.config["PROXY_HOPS"] == 0


@pytest.mark.parametrize("value", ["-1", "1.5", "one", "inf"])
def test_proxy_hops_must_be_a_whole_number(value):
    with pytest.raises(ConfigError, match="PROXY_HOPS"):
        create_app({"PROXY_HOPS": value, "BETTER_AUTH_SECRET": HS_SECRET})


# --- the host a request names: TRUSTED_HOSTS -------------------------------------------------


def test_a_request_for_another_host_is_refused_in_the_json_shape(make_app, auth):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, TRUSTED_HOSTS="api.example.com")
    response = app.test_client().post(
        "/api/alice/tasks",
        json={"title": "A task"},
        headers={**auth("alice"), "Host": "evil.example"},
    )
    assert response.status_code == 400
    assert response.json == {"detail": "The request names a host this API does not serve."}
    assert "Location" not in response.headers


def test_a_listed_host_is_served_with_its_port(make_app, auth):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, TRUSTED_HOSTS="api.example.com")
    response = create(app, auth, {"Host": "api.example.com:8443"})
    assert response.headers["Location"].startswith("http://api.example.com:8443/api/alice/")


def test_a_leading_dot_trusts_every_name_under_it(make_app, auth):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, TRUSTED_HOSTS=".example.com")
    create(app, auth, {"Host": "eu.api.example.com"})
    response = app.test_client().get("/healthz", headers={"Host": "example.com.evil"})
    assert response.status_code == 400


def test_the_forwarded_host_is_checked_against_the_same_list(make_app, auth):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, PROXY_HOPS="1", TRUSTED_HOSTS="api.example.com")
    create(app, auth, FORWARDED)
    response = app.test_client().post(
        "/api/alice/tasks",
        json={"title": "A task"},
        headers={**auth("alice"), **FORWARDED, "X-Forwarded-Host": "evil.example"},
    )
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_a_list_of_hosts_is_lower_cased(make_app):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, TRUSTED_HOSTS=" API.Example.com , localhost")
    assert app.config["TRUSTED_HOSTS"] == ["api.example.com", "localhost"]


def test_production_without_trusted_hosts_serves_this_machines_names_only(monkeypatch):
    monkeypatch.delenv("TRUSTED_HOSTS")
    app = create_app({"BETTER_AUTH_SECRET": HS_SECRET, "DATABASE_URL": "sqlite://"})
    client = app.test_client()
    for host in ("localhost", "127.0.0.1:8000"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200
    refused = client.get("/healthz", headers={"Host": "evil.example"})
    assert refused.status_code == 400
    assert refused.get_json() == {"detail": "The request names a host this API does not serve."}


def test_development_serves_any_host_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("TRUSTED_HOSTS")
    app = create_app({"APP_ENV": "development", "DATABASE_URL": "sqlite://"})
    assert app.config["TRUSTED_HOSTS"] is None
    assert app.test_client().get("/healthz", headers={"Host": "anything.test"}).status_code == 200


def test_a_star_serves_any_host_when_said_so(make_app):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, TRUSTED_HOSTS="*")
    assert app.test_client().get("/healthz", headers={"Host": "anything.test"}).status_code == 200


@pytest.mark.parametrize(
    "value",
    ["https://api.example.com", "api.example.com:443", "api.example.com/", "*,api.example.com"],
)
def test_trusted_hosts_must_be_host_names(value):
    with pytest.raises(ConfigError, match="TRUSTED_HOSTS"):
        create_app({"BETTER_AUTH_SECRET": HS_SECRET, "TRUSTED_HOSTS": value})


# --- gunicorn agrees with the app ------------------------------------------------------------


def post_through_gunicorn(server, headers: dict) -> str:
    """POST a task to `server` (port or unix socket) with `headers`: its Location."""
    body = json.dumps({"title": "A task"}).encode()
    head = {
        "Host": "127.0.0.1",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **headers,
    }
    if server.socket_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(REQUEST_TIMEOUT)
        sock.connect(str(server.socket_path))
    else:
        host, port = server.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT)
    with sock:
        lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        sock.sendall(f"POST /api/alice/tasks HTTP/1.1\r\n{lines}\r\n".encode() + body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, *header_lines = response.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    assert status_line.split()[1] == "201", response
    headers_by_name = dict(line.split(": ", 1) for line in header_lines)
    return headers_by_name["Location"]


@pytest.mark.parametrize("unix_socket", [False, True], ids=["port", "unix-socket"])
@pytest.mark.parametrize(("hops", "scheme"), [("0", "http"), ("1", "https")])
def test_gunicorn_believes_the_forwarded_scheme_exactly_when_the_app_does(
    app, database_url, tmp_path, auth, unix_socket, hops, scheme
):
    # `app` on the same database removes the tasks created here once the test ends.
    env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": HS_SECRET,
        "PROXY_HOPS": hops,
        "GUNICORN_WORKERS": "1",
    }
    with run_gunicorn(tmp_path, env=env, unix_socket=unix_socket) as server:
        # From 127.0.0.1 or over the socket: the clients gunicorn trusted by default.
        location = post_through_gunicorn(server, {**auth("alice"), "X-Forwarded-Proto": "https"})
    assert location.startswith(f"{scheme}://127.0.0.1/api/alice/tasks/")
