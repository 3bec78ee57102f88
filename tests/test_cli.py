"""The developer commands: `flask dev-token` and `flask seed`."""

import jwt

from tests.support import HS_SECRET, bearer


def test_dev_token_prints_a_token_the_api_accepts(app, client):
    result = app.test_cli_runner().invoke(args=["dev-token", "carol"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert jwt.decode(token, HS_SECRET, algorithms=["HS256"])["sub"] == "carol"
    response = client.get("/api/carol/tasks", headers=bearer(token))
    assert response.status_code == 200


def test_dev_token_lifetime_follows_minutes(app):
    result = app.test_cli_runner().invoke(args=["dev-token", "carol", "--minutes", "5"])
    payload = jwt.decode(result.output.strip(), HS_SECRET, algorithms=["HS256"])
    assert payload["exp"] - payload["iat"] == 300


def test_dev_token_refuses_in_jwks_mode(make_app):
    app = make_app(BETTER_AUTH_URL="https://auth.example.com")
    result = app.test_cli_runner().invoke(args=["dev-token", "carol"])
    assert result.exit_code != 0
    assert "BETTER_AUTH_SECRET" in result.output


def test_seed_creates_the_requested_number_of_tasks(app, client, auth):
    result = app.test_cli_runner().invoke(args=["seed", "dave", "--count", "7"])
    assert result.exit_code == 0, result.output
    assert "Created 7 tasks for dave." in result.output
    tasks = client.get("/api/dave/tasks", headers=auth("dave")).json
    assert len(tasks) == 7
    assert all(1 <= task["priority"] <= 5 for task in tasks)


def test_seed_refuses_a_count_below_one(app):
    result = app.test_cli_runner().invoke(args=["seed", "dave", "--count", "0"])
    assert result.exit_code != 0
