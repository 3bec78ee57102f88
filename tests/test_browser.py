"""End to end in headless Chromium: a frontend page signs in to Better Auth and uses the API.

The page (tests/betterauth/app.html) is served by the test Better Auth server, on its
origin, as a Next.js frontend is in a real deployment, and calls the API through the
TypeScript client (clients/typescript), built for the test. The API runs on another
origin behind a real HTTP server, so every call from the page is a CORS request with a
preflight, sent with credentials as many Better Auth frontends send them, and Chromium
(driven by tests/betterauth/e2e.mjs) enforces the answer.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from taskapp.extensions import db
from taskapp.models import Task
from tests.better_auth import SERVER_DIR, BetterAuth, require_node
from tests.support import served, unavailable
from tests.typescript_client import build_client, require_client

CHROMIUM = Path("/usr/bin/chromium")
E2E_SCRIPT = SERVER_DIR / "e2e.mjs"
E2E_TIMEOUT_SECONDS = 90  # the script gives up on its own after 30 s per browser step


def require_browser() -> None:
    """Skip on a laptop without playwright-core, Chromium or the client's packages; in CI
    that is a failure instead."""
    require_node()
    require_client()
    missing = None
    if not (SERVER_DIR / "node_modules" / "playwright-core").is_dir():
        missing = "run `npm ci --prefix tests/betterauth` (make test does it when npm exists)"
    elif not CHROMIUM.is_file():
        missing = "Chromium is not installed: `apt-get install -y chromium`"
    if missing is None:
        return
    unavailable("browser tests", missing)


@pytest.fixture(scope="module")
def better_auth():
    require_browser()
    build_client()
    with BetterAuth() as server:
        yield server


def open_page(better_auth: BetterAuth, api_url: str) -> tuple[dict, str]:
    """Open the frontend page with the API at `api_url` in Chromium.

    Returns what the page recorded (window.__result) and the browser's console.
    """
    page_url = f"{better_auth.base_url}/app?{urlencode({'api': api_url})}"
    run = subprocess.run(
        ["node", str(E2E_SCRIPT), page_url],
        cwd=SERVER_DIR,
        capture_output=True,
        text=True,
        timeout=E2E_TIMEOUT_SECONDS,
        check=False,
    )
    assert run.returncode == 0, f"e2e.mjs exited with {run.returncode}: {run.stderr}"
    return json.loads(run.stdout), run.stderr


def signed_in(result: dict) -> str:
    """Check the page signed up and got a JWT for its user; return the Better Auth user id."""
    steps = result["steps"]
    assert steps["signUp"]["status"] == 200, result
    assert steps["token"]["status"] == 200, result
    user_id = result["user"]["id"]
    assert user_id
    assert result["tokenSub"] == user_id
    return user_id


def test_page_on_an_allowed_origin_creates_lists_completes_and_deletes_a_task(
    better_auth, make_app
):
    app = make_app(BETTER_AUTH_URL=better_auth.base_url, CORS_ORIGINS=better_auth.base_url)
    with served(app) as api_url:
        result, console = open_page(better_auth, api_url)

    assert "error" not in result, (result, console)
    user_id = signed_in(result)
    steps = result["steps"]

    created = steps["create"]["value"]
    task = created["task"]
    assert task["title"] == "Written in a browser"
    assert task["priority"] == 3
    assert task["is_completed"] is False
    assert task["user_id"] == user_id
    # Exposed headers: the page could read where the task lives, and its version.
    assert created["location"].endswith(f"/api/{user_id}/tasks/{task['id']}")
    assert created["etag"] == '"1"'
    assert created["replayed"] is False

    # The Idempotency-Key passed the preflight; the replay says so in an exposed header.
    again = steps["createAgain"]["value"]
    assert again["task"] == task
    assert again["replayed"] is True
    second = steps["createSecond"]["value"]["task"]

    # Paging and counting read Link and X-Total-Count, Prefer passed the preflight.
    first_page = steps["firstPage"]["value"]
    assert [listed["id"] for listed in first_page["tasks"]] == [second["id"]]
    assert first_page["nextCursor"]
    assert first_page["totalCount"] == 2
    assert [listed["id"] for listed in steps["allPages"]["value"]] == [second["id"], task["id"]]

    # If-Match passed the preflight: with the ETag read at creation the completion applied,
    # and the delete that still held that ETag afterwards was refused.
    completed = steps["complete"]["value"]
    assert completed["task"]["id"] == task["id"]
    assert completed["task"]["is_completed"] is True
    assert completed["task"]["completed_at"] is not None
    assert completed["etag"] != created["etag"]
    stale = steps["deleteStale"]
    assert stale["status"] == 412
    assert stale["detail"] == "The resource has changed since you last fetched it."

    assert steps["delete"] == {"value": None}
    remaining = steps["listAfterDelete"]["value"]["tasks"]
    assert [listed["id"] for listed in remaining] == [second["id"]]


def test_page_on_a_disallowed_origin_is_blocked_by_the_browser_and_creates_nothing(
    better_auth, make_app
):
    app = make_app(BETTER_AUTH_URL=better_auth.base_url, CORS_ORIGINS="http://allowed.example")
    with served(app) as api_url:
        # The API is up and answers: what stops the page is CORS, not the network.
        with urllib.request.urlopen(f"{api_url}/healthz", timeout=10) as response:
            assert response.status == 200
        result, console = open_page(better_auth, api_url)

    user_id = signed_in(result)  # the page had a valid token for the API
    steps = result["steps"]
    assert steps["create"]["blocked"] is True, result
    assert "createAgain" not in steps
    assert "blocked by CORS policy" in console
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Task)) == 0
        assert not db.session.scalars(select(Task).where(Task.user_id == user_id)).all()
