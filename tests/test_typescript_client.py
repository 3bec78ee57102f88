"""The TypeScript client (clients/typescript) against a live taskapp and a real Better Auth.

The client's tests are Node's own (`node --test`, in clients/typescript/test/): they sign
users up to Better Auth and drive every endpoint through the client. This starts what they
talk to, on each database, and runs them with `npm test`, which builds the client and
compiles them first (a test that no longer type-checks fails here too).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.better_auth import BetterAuth
from tests.support import served
from tests.typescript_client import CLIENT_DIR, require_client

NODE_TESTS_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def better_auth():
    require_client()
    with BetterAuth() as server:
        yield server


def test_the_clients_node_tests_pass_against_taskapp_and_better_auth(better_auth, make_app):
    app = make_app(BETTER_AUTH_URL=better_auth.base_url)
    # The same database and keys, rate limited: for the client's 429 test.
    limited = make_app(
        BETTER_AUTH_URL=better_auth.base_url,
        RATELIMIT_ENABLED="true",
        RATELIMIT_PER_USER="3/hour",
        RATELIMIT_PER_IP="10000/hour",
    )
    with served(app) as api_url, served(limited) as limited_url:
        run = subprocess.run(
            ["npm", "test", "--silent"],
            cwd=CLIENT_DIR,
            env={
                **os.environ,
                "TASKAPP_URL": api_url,
                "TASKAPP_LIMITED_URL": limited_url,
                "BETTER_AUTH_URL": better_auth.base_url,
                "NO_COLOR": "1",
            },
            capture_output=True,
            text=True,
            timeout=NODE_TESTS_TIMEOUT_SECONDS,
            check=False,
        )

    output = f"{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, output
    passed = re.search(r"^\S+ pass (\d+)$", run.stdout, re.MULTILINE)
    failed = re.search(r"^\S+ fail (\d+)$", run.stdout, re.MULTILINE)
    assert passed and int(passed[1]) > 0, output
    assert failed and int(failed[1]) == 0, output
