"""A real Better Auth server (tests/betterauth/server.mjs) for the tests, and its users.

`BetterAuth(**settings)` starts one server process on a free 127.0.0.1 port;
`sign_up()` creates a user and returns a `User` whose session cookie fetches JWTs
both ways a frontend does, and who holds Better Auth's session cache when the server
runs with `COOKIE_CACHE="jwt"`.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support import unavailable

SERVER_DIR = Path(__file__).parent / "betterauth"
PASSWORD = "correct horse battery staple"
# Better Auth's BETTER_AUTH_SECRET: the session cache is signed with it.
SECRET = "test-only-secret-of-better-auth-0123456789"
SESSION_CACHE_COOKIE = "better-auth.session_data"  # on http; `__Secure-` in front on https


def require_node() -> None:
    """Skip on a laptop without Node.js or `npm ci`; in CI that is a failure instead."""
    missing = None
    if shutil.which("node") is None:
        missing = "Node.js is not installed"
    elif not (SERVER_DIR / "node_modules" / "better-auth").is_dir():
        missing = "run `npm ci --prefix tests/betterauth` (make test does it when npm exists)"
    if missing is None:
        return
    unavailable("Better Auth tests", missing)


@dataclass
class User:
    server: BetterAuth
    id: str
    email: str
    opener: urllib.request.OpenerDirector  # carries the session cookie
    cookies: http.cookiejar.CookieJar

    def token_from_token_endpoint(self) -> str:
        """`GET /api/auth/token` with the session cookie."""
        with self.opener.open(f"{self.server.base_url}/api/auth/token", timeout=10) as response:
            return json.load(response)["token"]

    def token_from_get_session(self) -> str:
        """The `set-auth-jwt` header of `GET /api/auth/get-session`."""
        url = f"{self.server.base_url}/api/auth/get-session"
        with self.opener.open(url, timeout=10) as response:
            return response.headers["set-auth-jwt"]

    def session_cache_token(self) -> str:
        """The `better-auth.session_data` cookie: the session cache, a JWT with COOKIE_CACHE=jwt."""
        return next(cookie.value for cookie in self.cookies if cookie.name == SESSION_CACHE_COOKIE)


class BetterAuth:
    """One Better Auth server process; settings as in server.mjs (ALG, COOKIE_CACHE, ...)."""

    def __init__(self, **settings: str):
        require_node()
        self.process = subprocess.Popen(
            ["node", str(SERVER_DIR / "server.mjs")],
            cwd=SERVER_DIR,
            env={**os.environ, "BETTER_AUTH_SECRET": SECRET, **settings},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The server prints its address once it listens: reading that line is the wait.
        first_line = self.process.stdout.readline()
        if not first_line:
            self.process.wait(timeout=10)
            raise RuntimeError(f"Better Auth did not start: {self.process.stderr.read()}")
        self.base_url = json.loads(first_line)["baseURL"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()

    def __enter__(self) -> BetterAuth:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _post(self, opener, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(body or {}).encode(),
            method="POST",
            # Better Auth refuses sign-up and sign-in from an origin it does not trust.
            headers={"Content-Type": "application/json", "Origin": self.base_url},
        )
        with opener.open(request, timeout=10) as response:
            return json.load(response)

    def sign_up(self, name: str = "Test User") -> User:
        email = f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:8]}@example.com"
        cookies = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        body = {"email": email, "password": PASSWORD, "name": name}
        user = self._post(opener, "/api/auth/sign-up/email", body)["user"]
        return User(server=self, id=user["id"], email=email, opener=opener, cookies=cookies)

    def sign_in(self, user: User) -> User:
        cookies = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        body = {"email": user.email, "password": PASSWORD}
        self._post(opener, "/api/auth/sign-in/email", body)
        return User(server=self, id=user.id, email=user.email, opener=opener, cookies=cookies)

    def rotate_key(self) -> str:
        """Mint a new signing key; the old ones stay listed. Returns the new kid."""
        return self._post(urllib.request.build_opener(), "/__test__/rotate")["kid"]

    def jwks(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/api/auth/jwks", timeout=10) as response:
            return json.load(response)
