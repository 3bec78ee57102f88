"""The API against a real Better Auth (tests/betterauth/server.mjs), configured as deployed.

Every app here is built with `BETTER_AUTH_URL` only, as a deployment would be (one rotation
test adds `JWKS_MIN_REFETCH_SECONDS=0` and says why). Users sign up on the real server and
fetch their JWTs both ways a frontend does: `GET /api/auth/token` and the `set-auth-jwt`
header of `get-session`.

- Happy path: two users drive every endpoint with their own tokens, each sees only their own
  tasks, and is refused on the other's path (403) and on the other's task ids (404), with
  Better Auth signing EdDSA (its default), ES256 and RS256, and with a custom `definePayload`.
- Key rotation: a new kid is accepted without rebuilding the app; the old key keeps working
  while it is listed.
- Tokens that must not open the API: from another Better Auth instance, and real tokens
  forged (payload edited, signature from another key, HS256 made with the public key).
- Better Auth down: cached keys keep working; a cold app answers 503.

Better Auth servers start once per module (a separate one for the rotation tests, which
change its keys); only the tests that stop their server start their own. The full attack
suite, against a hand-made key server, is tests/test_auth.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from tests.better_auth import BetterAuth, User
from tests.support import bearer

WAYS: dict[str, Callable[[User], str]] = {
    "token-endpoint": User.token_from_token_endpoint,
    "get-session": User.token_from_get_session,
}

# (method, suffix after the task id, body); suffix None means the collection path.
ENDPOINTS = {
    "list": ("GET", None, None),
    "create": ("POST", None, {"title": "Planted"}),
    "get": ("GET", "", None),
    "put": ("PUT", "", {"title": "Taken over", "priority": 5}),
    "complete": ("PATCH", "/complete", None),
    "complete-set": ("PATCH", "/complete", {"is_completed": True}),
    "delete": ("DELETE", "", None),
}
ITEM_ENDPOINTS = {name: spec for name, spec in ENDPOINTS.items() if spec[1] is not None}


# --- helpers -------------------------------------------------------------------------------


@dataclass
class Instance:
    """A running Better Auth server with two signed-up users."""

    server: BetterAuth
    alice: User
    bob: User

    @property
    def url(self) -> str:
        return self.server.base_url


@dataclass
class Caller:
    """A Better Auth user and a JWT that Better Auth issued to them."""

    id: str
    token: str

    @property
    def headers(self) -> dict:
        return bearer(self.token)


def caller(user: User, way: str = "token-endpoint") -> Caller:
    return Caller(user.id, WAYS[way](user))


def tasks_url(user_id: str, task_id: str | None = None, suffix: str | None = None) -> str:
    base = f"/api/{user_id}/tasks"
    return base if suffix is None else f"{base}/{task_id}{suffix}"


def call(client, endpoint: str, user_id: str, task_id: str, headers: dict):
    method, suffix, body = ENDPOINTS[endpoint]
    extra = {} if body is None else {"json": body}
    return client.open(tasks_url(user_id, task_id, suffix), method=method, headers=headers, **extra)


def create_task(client, who: Caller, title: str = "A task") -> dict:
    response = client.post(tasks_url(who.id), json={"title": title}, headers=who.headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["user_id"] == who.id
    return response.get_json()


def listed(client, who: Caller) -> list[dict]:
    response = client.get(tasks_url(who.id), headers=who.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assert_detail(response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert isinstance(body, dict)
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str)
    assert body["detail"]


def assert_unauthorized(response) -> None:
    assert_detail(response, 401)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def drive_every_endpoint(client, who: Caller) -> None:
    """Create, list, get, put, complete (toggle and set), reopen and delete one task."""
    created = client.post(
        tasks_url(who.id), json={"title": "Buy milk", "priority": 2}, headers=who.headers
    )
    assert created.status_code == 201, created.get_json()
    task = created.get_json()
    assert task["user_id"] == who.id
    item = tasks_url(who.id, task["id"], "")
    assert created.headers["Location"].endswith(item)

    assert [t["id"] for t in listed(client, who)] == [task["id"]]

    got = client.get(item, headers=who.headers)
    assert got.status_code == 200
    assert got.get_json() == task

    put = client.put(item, json={"title": "Buy oat milk", "priority": 4}, headers=who.headers)
    assert put.status_code == 200, put.get_json()
    assert (put.get_json()["title"], put.get_json()["priority"]) == ("Buy oat milk", 4)

    toggled = client.patch(f"{item}/complete", headers=who.headers)
    assert toggled.status_code == 200, toggled.get_json()
    assert toggled.get_json()["is_completed"] is True
    assert toggled.get_json()["completed_at"] is not None

    reopened = client.patch(f"{item}/complete", json={"is_completed": False}, headers=who.headers)
    assert reopened.status_code == 200, reopened.get_json()
    assert reopened.get_json()["is_completed"] is False
    assert reopened.get_json()["completed_at"] is None

    deleted = client.delete(item, headers=who.headers)
    assert deleted.status_code == 204
    assert_detail(client.get(item, headers=who.headers), 404)
    assert listed(client, who) == []


def assert_isolated(client, owner: Caller, intruder: Caller) -> None:
    """The intruder gets 403 on the owner's path and 404 on the owner's task id."""
    task = create_task(client, owner, "Owner's")
    before = listed(client, owner)
    assert_detail(call(client, "get", owner.id, task["id"], intruder.headers), 403)
    assert_detail(call(client, "delete", intruder.id, task["id"], intruder.headers), 404)
    assert listed(client, owner) == before


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def published_jwk(instance: Instance, kid: str) -> dict:
    return next(key for key in instance.server.jwks()["keys"] if key["kid"] == kid)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def better_auth():
    """`better_auth(name="default", **settings)`: a server started once per module and name.

    A distinct name gives a distinct server process (own keys, own `iss`), for tests that
    mutate it (rotation) or need a second instance.
    """
    started: dict[tuple, Instance] = {}

    def start(name: str = "default", **settings: str) -> Instance:
        key = (name, tuple(sorted(settings.items())))
        if key not in started:
            server = BetterAuth(**settings)
            started[key] = Instance(server, server.sign_up("Alice"), server.sign_up("Bob"))
        return started[key]

    yield start
    for instance in started.values():
        instance.server.stop()


@pytest.fixture(scope="module")
def default(better_auth) -> Instance:
    return better_auth()


@pytest.fixture
def api(make_app, default):
    """A client of the API deployed against the default Better Auth."""
    return make_app(BETTER_AUTH_URL=default.url).test_client()


@pytest.fixture
def alice(default) -> Caller:
    return caller(default.alice)


@pytest.fixture
def bob(default) -> Caller:
    return caller(default.bob)


@pytest.fixture
def doomed():
    """A Better Auth server of this test's own, which the test stops."""
    with BetterAuth() as server:
        yield server


# --- tokens from Better Auth are accepted ------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_token_from_better_auth_is_accepted(api, default, way):
    who = caller(default.alice, way)
    assert jwt.decode(who.token, options={"verify_signature": False})["sub"] == default.alice.id
    assert create_task(api, who)["user_id"] == default.alice.id
    assert len(listed(api, who)) == 1


@pytest.mark.parametrize("way", WAYS)
def test_two_users_drive_every_endpoint_with_their_own_tokens(api, default, way):
    for user in (default.alice, default.bob):
        drive_every_endpoint(api, caller(user, way))


def test_each_user_lists_only_their_own_tasks(api, alice, bob):
    alices = {create_task(api, alice, "Alice 1")["id"], create_task(api, alice, "Alice 2")["id"]}
    bobs = {create_task(api, bob, "Bob 1")["id"]}
    for who, own in ((alice, alices), (bob, bobs)):
        tasks = listed(api, who)
        assert {task["id"] for task in tasks} == own
        assert {task["user_id"] for task in tasks} == {who.id}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_other_users_path_is_403_and_leaves_their_task_unchanged(api, alice, bob, endpoint):
    for owner, intruder in ((alice, bob), (bob, alice)):
        task = create_task(api, owner, "Private")
        before = listed(api, owner)
        assert_detail(call(api, endpoint, owner.id, task["id"], intruder.headers), 403)
        assert listed(api, owner) == before
        assert api.get(tasks_url(owner.id, task["id"], ""), headers=owner.headers).json == task


@pytest.mark.parametrize("endpoint", ITEM_ENDPOINTS)
def test_other_users_task_id_on_own_path_is_404_and_leaves_it_unchanged(api, alice, bob, endpoint):
    for owner, intruder in ((alice, bob), (bob, alice)):
        task = create_task(api, owner, "Private")
        before = (listed(api, owner), listed(api, intruder))
        assert_detail(call(api, endpoint, intruder.id, task["id"], intruder.headers), 404)
        assert (listed(api, owner), listed(api, intruder)) == before
        assert api.get(tasks_url(owner.id, task["id"], ""), headers=owner.headers).json == task


# --- signing algorithms and payloads -------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_happy_path_with_better_auth_signing(better_auth, make_app, alg):
    # EdDSA is Better Auth's default: that server is started without ALG.
    instance = better_auth() if alg == "EdDSA" else better_auth(ALG=alg)
    api = make_app(BETTER_AUTH_URL=instance.url).test_client()
    alice, bob = caller(instance.alice), caller(instance.bob, "get-session")
    assert jwt.get_unverified_header(alice.token)["alg"] == alg
    assert {key["alg"] for key in instance.server.jwks()["keys"]} == {alg}
    for who in (alice, bob):
        drive_every_endpoint(api, who)
    assert_isolated(api, alice, bob)
    assert_isolated(api, bob, alice)


def test_custom_payload_identity_still_comes_from_sub(better_auth, make_app):
    instance = better_auth(CUSTOM_PAYLOAD="1")
    api = make_app(BETTER_AUTH_URL=instance.url).test_client()
    alice, bob = caller(instance.alice), caller(instance.bob, "get-session")
    claims = jwt.decode(alice.token, options={"verify_signature": False})
    assert "id" not in claims
    assert "name" not in claims
    assert claims["sub"] == instance.alice.id
    assert create_task(api, alice)["user_id"] == instance.alice.id
    drive_every_endpoint(api, bob)
    assert_isolated(api, alice, bob)


# --- key rotation --------------------------------------------------------------------------------
# The app caches the JWKS and refetches it for an unknown kid at most once per
# JWKS_MIN_REFETCH_SECONDS (default 5 s). These tests rotate right after the app's first
# fetch, so without JWKS_MIN_REFETCH_SECONDS=0 the new kid would be refused for the rest of
# that window and the test would need to sleep; the setting changes nothing else.


def test_token_with_rotated_in_kid_is_accepted_by_an_app_built_before(better_auth, make_app):
    instance = better_auth("rotation")
    api = make_app(BETTER_AUTH_URL=instance.url, JWKS_MIN_REFETCH_SECONDS="0").test_client()
    before = caller(instance.alice)
    assert listed(api, before) == []  # the app now holds the JWKS from before the rotation

    new_kid = instance.server.rotate_key()
    after = caller(instance.alice)
    assert jwt.get_unverified_header(after.token)["kid"] == new_kid
    assert jwt.get_unverified_header(before.token)["kid"] != new_kid
    assert create_task(api, after)["user_id"] == instance.alice.id


def test_token_signed_with_the_old_key_keeps_working_while_it_is_listed(better_auth, make_app):
    instance = better_auth("rotation")
    api = make_app(BETTER_AUTH_URL=instance.url, JWKS_MIN_REFETCH_SECONDS="0").test_client()
    old = caller(instance.alice)
    old_kid = jwt.get_unverified_header(old.token)["kid"]
    assert listed(api, old) == []

    new_kid = instance.server.rotate_key()
    new = caller(instance.alice)
    assert jwt.get_unverified_header(new.token)["kid"] == new_kid
    assert listed(api, new) == []  # makes the app fetch the rotated JWKS
    assert old_kid in {key["kid"] for key in instance.server.jwks()["keys"]}
    assert create_task(api, old)["user_id"] == instance.alice.id


# --- tokens that must not open the API -----------------------------------------------------------


def test_token_from_another_better_auth_instance_is_401(api, default, better_auth):
    other = better_auth("other")
    stranger = caller(other.alice)
    header = jwt.get_unverified_header(stranger.token)
    claims = jwt.decode(stranger.token, options={"verify_signature": False})
    assert header["kid"] not in {key["kid"] for key in default.server.jwks()["keys"]}
    assert claims["iss"] == other.url != default.url
    assert_unauthorized(api.get(tasks_url(stranger.id), headers=stranger.headers))


@pytest.mark.parametrize("mismatch", ["issuer", "audience", "both"])
def test_token_from_another_instance_is_401_even_when_its_keys_are_trusted(
    make_app, default, better_auth, mismatch
):
    """The API trusts the other instance's JWKS but expects the first one's `iss`/`aud`."""
    other = better_auth("other")
    stranger = caller(other.alice)
    settings = {
        "BETTER_AUTH_JWKS_URL": f"{other.url}/api/auth/jwks",
        "JWT_ISSUER": default.url if mismatch in ("issuer", "both") else other.url,
        "JWT_AUDIENCE": default.url if mismatch in ("audience", "both") else other.url,
    }
    api = make_app(**settings).test_client()
    assert_unauthorized(api.get(tasks_url(stranger.id), headers=stranger.headers))
    # The signature alone would have passed: with both claims matching, the token opens it.
    matching = make_app(**{**settings, "JWT_ISSUER": other.url, "JWT_AUDIENCE": other.url})
    assert listed(matching.test_client(), stranger) == []


def test_real_token_with_payload_edited_to_another_user_is_401(api, alice, bob):
    header, payload, signature = alice.token.split(".")
    claims = json.loads(b64url_decode(payload))
    edited = segment({**claims, "sub": bob.id, "id": bob.id})
    forged = f"{header}.{edited}.{signature}"
    assert_unauthorized(api.get(tasks_url(bob.id), headers=bearer(forged)))


def test_real_token_signed_by_another_ed25519_key_is_401(api, alice):
    header, payload, _signature = alice.token.split(".")
    signature = ed25519.Ed25519PrivateKey.generate().sign(f"{header}.{payload}".encode())
    forged = f"{header}.{payload}.{b64url(signature)}"
    assert_unauthorized(api.get(tasks_url(alice.id), headers=bearer(forged)))


def _public_key_pem(jwk: dict) -> bytes:
    public_key = OKPAlgorithm.from_jwk(jwk)
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


PUBLIC_KEY_BYTES = {
    "raw": lambda jwk: b64url_decode(jwk["x"]),
    "x-text": lambda jwk: jwk["x"].encode(),
    "pem": _public_key_pem,
    "jwk-json": lambda jwk: json.dumps(jwk).encode(),
}


@pytest.mark.parametrize("key_bytes", PUBLIC_KEY_BYTES)
def test_real_token_switched_to_hs256_with_the_jwks_public_key_is_401(
    api, default, alice, key_bytes
):
    header = jwt.get_unverified_header(alice.token)
    _header, payload, _signature = alice.token.split(".")
    secret = PUBLIC_KEY_BYTES[key_bytes](published_jwk(default, header["kid"]))
    signing_input = f"{segment({**header, 'alg': 'HS256'})}.{payload}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64url(signature)}"
    assert_unauthorized(api.get(tasks_url(alice.id), headers=bearer(forged)))


# Expired: Better Auth cannot be made to issue an already expired token, and a hand-made
# one is tests/test_auth.py's test_expired_token_is_401.


# --- Better Auth down ------------------------------------------------------------------------


def test_cached_keys_keep_working_after_better_auth_stops(make_app, doomed):
    api = make_app(BETTER_AUTH_URL=doomed.base_url).test_client()
    alice = caller(doomed.sign_up("Alice"))
    assert listed(api, alice) == []  # the app now holds Better Auth's keys
    doomed.stop()
    assert create_task(api, alice)["user_id"] == alice.id
    assert len(listed(api, alice)) == 1


def test_cold_app_with_better_auth_stopped_is_503(make_app, doomed):
    alice = caller(doomed.sign_up("Alice"))
    doomed.stop()
    api = make_app(BETTER_AUTH_URL=doomed.base_url).test_client()
    response = api.get(tasks_url(alice.id), headers=alice.headers)
    assert_detail(response, 503)
    assert response.headers.get("Retry-After")
