"""Request ids, structured request logs, security headers and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import secrets
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import pytest

from taskapp import create_app
from taskapp.config import ConfigError
from tests.support import HS_SECRET, bearer, run_gunicorn


def log_lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def request_lines(captured: str) -> list[dict]:
    return [line for line in log_lines(captured) if line.get("event") == "request"]


# --- request ids ------------------------------------------------------------------------------


def test_request_id_is_generated_when_none_is_given(client):
    response = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_valid_request_id_from_the_proxy_is_echoed(client):
    response = client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.42:1"})
    assert response.headers["X-Request-ID"] == "edge-7f3a.42:1"


@pytest.mark.parametrize("offered", ["has spaces", "x" * 129, 'quote"d', "semi;colon", ""])
def test_invalid_request_id_is_replaced(client, offered):
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    assert response.headers["X-Request-ID"] != offered
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


@pytest.mark.parametrize("path", ["/api/alice/tasks", "/no/such/route"])
def test_error_responses_carry_the_request_id(client, path):
    response = client.get(path, headers={"X-Request-ID": "trace-me"})
    assert response.status_code in (401, 404)
    assert response.headers["X-Request-ID"] == "trace-me"


# --- request logs -----------------------------------------------------------------------------


def test_one_structured_line_per_request(client, auth, capsys):
    token_headers = auth()
    client.post("/api/alice/tasks", json={"title": "secret body text"}, headers=token_headers)
    captured = capsys.readouterr().err
    (line,) = request_lines(captured)
    assert line["method"] == "POST"
    assert line["route"] == "/api/<user_id>/tasks"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float)
    assert line["user_id"] == "alice"
    assert line["client_ip"] == "127.0.0.1"
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
    assert line["timestamp"].endswith("Z")
    token = token_headers["Authorization"].split()[1]
    assert token not in captured
    assert "secret body text" not in captured


def test_unauthenticated_request_is_logged_without_a_user(client, capsys):
    client.get("/api/alice/tasks")
    (line,) = request_lines(capsys.readouterr().err)
    assert line["status"] == 401
    assert line["user_id"] is None


def test_stack_traces_carry_the_request_id(app, client, capsys):
    @app.get("/explode")
    def explode():
        raise RuntimeError("boom")

    client.get("/explode", headers={"X-Request-ID": "trace-500"})
    lines = log_lines(capsys.readouterr().err)
    (error,) = [line for line in lines if line.get("event") == "unhandled exception"]
    assert error["request_id"] == "trace-500"
    assert "RuntimeError: boom" in error["exception"]
    assert {line["request_id"] for line in lines} == {"trace-500"}


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_an_unexpected_exception_logs_its_traceback_in_either_format(log_format, tmp_path, capsys):
    # Known outages log one line (tests/test_database_outage.py); a bug keeps its trace.
    app = create_app(
        {"BETTER_AUTH_SECRET": HS_SECRET, "LOG_FORMAT": log_format},
        instance_path=str(tmp_path),
    )

    @app.get("/explode")
    def explode():
        raise RuntimeError("boom")

    assert app.test_client().get("/explode").status_code == 500
    logged = capsys.readouterr().err
    assert "Traceback" in logged
    assert "RuntimeError" in logged
    assert "boom" in logged
    assert "in explode" in logged  # the frame that raised it


def test_console_format_is_for_people(make_app, capsys):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, LOG_FORMAT="console")
    app.test_client().get("/healthz")
    captured = capsys.readouterr().err
    assert "request" in captured
    assert not log_lines(captured)


def test_request_lines_read_like_every_other_line(app, client, capsys):
    client.get("/healthz")
    logging.getLogger("taskapp.somewhere").warning("something else")
    request_line, other = log_lines(capsys.readouterr().err)
    assert request_line["logger"] == "taskapp.requests"
    assert request_line["level"] == "info"
    assert other["logger"] == "taskapp.somewhere"
    request_fields = {"method", "route", "status", "duration_ms", "user_id", "client_ip"}
    # Logged outside a request, the other line has no request id.
    assert request_line.keys() - request_fields - {"request_id"} == other.keys()


def test_a_log_level_above_info_leaves_request_lines_out(make_app, capsys):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, LOG_LEVEL="WARNING")
    app.test_client().get("/healthz")
    assert request_lines(capsys.readouterr().err) == []


def test_unknown_log_format_is_refused():
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        create_app({"BETTER_AUTH_SECRET": HS_SECRET, "LOG_FORMAT": "xml"})


# --- hardening --------------------------------------------------------------------------------


def test_api_responses_forbid_sniffing_caching_and_framing(client, auth):
    response = client.get("/api/alice/tasks", headers=auth())
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_error_responses_are_not_cached_either(client):
    assert client.get("/api/alice/tasks").headers["Cache-Control"] == "no-store"


def test_docs_page_gets_a_policy_that_allows_only_its_own_assets(client):
    policy = client.get("/docs").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "https:" not in policy


def test_debug_mode_is_refused_in_production():
    with pytest.raises(ConfigError, match="debug"):
        create_app({"BETTER_AUTH_SECRET": HS_SECRET, "FLASK_DEBUG": "1"})


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_are_off_unless_enabled(client):
    assert client.get("/metrics").status_code == 404


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_by_route_and_status_and_token_failures(make_app, auth):
    client = make_app(BETTER_AUTH_SECRET=HS_SECRET, METRICS_ENABLED="true").test_client()
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        client.get("/api/alice/tasks", headers=auth())
    client.get("/api/alice/tasks")
    client.get("/api/alice/tasks", headers=bearer("not.a.token"))
    after = client.get("/metrics").get_data(as_text=True)
    route = {"url_rule": "/api/<user_id>/tasks"}

    def grew(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("taskapp_http_request_duration_seconds_count", status="200", **route) == 3
    assert grew("taskapp_http_request_duration_seconds_count", status="401", **route) == 2
    assert grew("taskapp_jwt_verification_failures_total", reason="missing") == 1
    assert grew("taskapp_jwt_verification_failures_total", reason="invalid") == 1
    assert "alice" not in after


def test_metrics_add_up_across_gunicorn_workers(database_url, tmp_path, auth):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": HS_SECRET,
        "METRICS_ENABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    with run_gunicorn(tmp_path, "--workers", "2", "--log-level", "info", env=env) as server:
        server.worker_pids(2, timeout=60)  # both workers booted
        requests = 40
        headers = auth(lifetime=600)

        def get(_):
            request = urllib.request.Request(f"{server.url}/api/alice/tasks", headers=headers)
            # Generous: on a loaded machine a request that timed out here would still be
            # in flight, and counted only after the figures are read below.
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status

        # Concurrent requests, so both workers serve some of them; every one answered.
        with ThreadPoolExecutor(max_workers=requests) as pool:
            assert list(pool.map(get, range(requests))) == [200] * requests
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert len(list(multiproc.iterdir())) >= 2  # each worker wrote its own figures
        counted = metric(
            text,
            "taskapp_http_request_duration_seconds_count",
            status="200",
            url_rule="/api/<user_id>/tasks",
        )
        assert counted == requests


# --- metrics: every label from a fixed set ----------------------------------------------------

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
KNOWN_STATUSES = {str(status.value) for status in HTTPStatus} | {"other"}


def series(text: str) -> set[str]:
    """Each series /metrics exposes: its name and labels, without the value."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def label_values(text: str, label: str) -> set[str]:
    return set(re.findall(rf'\b{label}="([^"]*)"', text))


def random_method() -> str:
    return "M" + secrets.token_hex(4).upper()


def random_path() -> str:
    return f"/{secrets.token_hex(6)}/{secrets.token_hex(3)}"


def assert_labels_bounded(text: str, routes: set[str]) -> None:
    assert label_values(text, "method") <= KNOWN_METHODS
    assert label_values(text, "status") <= KNOWN_STATUSES
    assert label_values(text, "url_rule") <= routes | {"unmatched"}
    assert label_values(text, "reason") <= {
        "missing",
        "invalid",
        "expired",
        "claims",
        "unverifiable",
        "other",
    }


def test_made_up_methods_paths_and_statuses_add_no_series(make_app):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, METRICS_ENABLED="true")

    @app.get("/odd-status/<int:status>")
    def odd_status(status):
        return {}, status

    client = app.test_client()

    def probe():
        client.open("/api/alice/tasks", method=random_method())
        client.open(random_path(), method=random_method())
        client.get(random_path())
        client.get(f"/odd-status/{secrets.choice([299, 477, 599])}")
        client.get("/api/alice/tasks", headers=bearer(secrets.token_hex(8)))

    for _ in range(3):  # every kind of request seen once
        probe()
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(200):
        probe()
    after = client.get("/metrics").get_data(as_text=True)

    assert series(after) == series(before)
    assert len(after) < 2 * len(before)
    assert_labels_bounded(after, {rule.rule for rule in app.url_map.iter_rules()})
    assert metric(after, "taskapp_http_request_total", method="other", status="405") == 203
    assert metric(after, "taskapp_http_request_total", method="other", status="404") == 203
    assert metric(after, "taskapp_http_request_total", method="GET", status="other") == 203


def test_made_up_methods_and_paths_add_no_series_under_gunicorn(database_url, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": HS_SECRET,
        "METRICS_ENABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }

    def send(method: str, path: str) -> int:
        request = urllib.request.Request(f"{server.url}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def probe(_):
        return (
            send(random_method(), "/api/alice/tasks"),
            send(random_method(), random_path()),
            send("GET", random_path()),
        )

    def scrape() -> str:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=60) as response:
            return response.read().decode()

    with run_gunicorn(tmp_path, "--workers", "2", env=env) as server:
        server.worker_pids(2, timeout=60)
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(probe, range(8))) == {(405, 404, 404)}
            before = scrape()
            assert set(pool.map(probe, range(100))) == {(405, 404, 404)}
        after = scrape()

    assert series(after) == series(before)
    assert len(after) < 2 * len(before)
    assert_labels_bounded(after, {"/api/<user_id>/tasks"})
    assert metric(after, "taskapp_http_request_total", method="other", status="405") == 108


# The path as the server hands it to the app (PATH_INFO, percent-decoded: /metrics%2F
# arrives as /metrics/).
@pytest.mark.parametrize("path", ["/metrics/", "//metrics", "/metrics//", "/Metrics"])
def test_metrics_are_served_at_one_path_only(make_app, path):
    client = make_app(BETTER_AUTH_SECRET=HS_SECRET, METRICS_ENABLED="true").test_client()
    assert client.get("/metrics").status_code == 200
    response = client.get("/", environ_overrides={"PATH_INFO": path})
    assert response.status_code == 404
    assert "Location" not in response.headers
    assert "taskapp_" not in response.get_data(as_text=True)
