"""Better Auth's session cache as the bearer token, in secret mode, from a real Better Auth.

The server (tests/betterauth/server.mjs) runs with `COOKIE_CACHE="jwt"`, that is
`session: { cookieCache: { enabled: true, strategy: "jwt" } }`, so each sign-in sets the
`better-auth.session_data` cookie: an HS256 JWT signed with Better Auth's secret, whose
user is `session.userId` (no `sub`). The API runs in secret mode with that secret.

- The real token: its shape, and the secret it is signed with (as given, no derived key).
- Accepted: it drives the endpoints for its own user, is refused (403) on another user's
  path, is remembered by the token cache, and is rate limited as its own user.
- Refused with 401: expired, `iat` in the future, too long-lived, `session.userId` and
  `user.id` that differ, no `session` claim, an unusable `session.userId`, re-signed
  with another secret or edited, without the `iss` or `aud` a deployment expects; and
  in JWKS mode, even when the secret is configured.
- Never logged: neither the token nor the session's own token (`session.token`).

Tokens the real server cannot be made to sign (expired, mismatched) are the real
token's claims, changed and signed here with the same secret: the server proves the
shape, the rule is proved with the shape.
"""

from __future__ import annotations

import inspect
import json
import time

import jwt
import pytest
from flask_jwt_extended import JWTManager
from flask_jwt_extended.tokens import _decode_jwt

from taskapp.auth.session_cache import SessionCacheJWTManager
from taskapp.auth.token_cache import TOKEN_CACHE, CachingJWTManager
from tests.better_auth import SECRET, BetterAuth, User
from tests.support import bearer, hs256_token

OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture(scope="module")
def server():
    with BetterAuth(COOKIE_CACHE="jwt") as running:
        yield running


@pytest.fixture(scope="module")
def accounts(server) -> dict[str, User]:
    return {"alice": server.sign_up("Alice"), "bob": server.sign_up("Bob")}


@pytest.fixture
def session_token(server, accounts):
    """`session_token("alice")`: the session cache of a fresh sign-in (it lives 5 minutes)."""

    def fresh(name: str = "alice") -> str:
        return server.sign_in(accounts[name]).session_cache_token()

    return fresh


@pytest.fixture
def api(make_app):
    """The API in secret mode, with Better Auth's secret."""
    return make_app(BETTER_AUTH_SECRET=SECRET).test_client()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def resigned(token: str, secret: str = SECRET, **changes) -> str:
    """The real token's claims with `changes` (None removes a claim), signed as Better Auth does."""
    claims = claims_of(token)
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm="HS256")


def tasks_url(user_id: str) -> str:
    return f"/api/{user_id}/tasks"


def assert_unauthorized(response, detail: str | None = None) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert set(response.json) == {"detail"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if detail is not None:
        assert response.json["detail"] == detail


# --- the real token ----------------------------------------------------------------------------


def test_real_session_cache_is_an_hs256_jwt_signed_with_the_secret_as_given(
    session_token, accounts
):
    token = session_token("alice")
    assert jwt.get_unverified_header(token) == {"alg": "HS256"}  # no kid, no typ
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert set(claims) == {"session", "user", "updatedAt", "version", "iat", "exp"}
    assert claims["session"]["userId"] == claims["user"]["id"] == accounts["alice"].id
    assert isinstance(claims["session"]["token"], str)
    assert claims["session"]["token"]
    assert claims["exp"] - claims["iat"] == 300  # cookieCache.maxAge's default
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET + "-derived", algorithms=["HS256"])


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_session_cache_lists_and_creates_tasks_for_its_user(api, session_token, accounts, name):
    user_id = accounts[name].id
    headers = bearer(session_token(name))
    created = api.post(tasks_url(user_id), json={"title": "Buy milk"}, headers=headers)
    assert created.status_code == 201, created.json
    assert created.json["user_id"] == user_id
    listed = api.get(tasks_url(user_id), headers=headers)
    assert listed.status_code == 200
    assert [task["id"] for task in listed.json] == [created.json["id"]]
    item = f"{tasks_url(user_id)}/{created.json['id']}"
    done = api.patch(f"{item}/complete", headers=headers)
    assert done.status_code == 200
    assert done.json["is_completed"] is True
    assert api.delete(item, headers=headers).status_code == 204


def test_session_cache_on_another_users_path_is_403(api, session_token, accounts):
    bobs = bearer(session_token("bob"))
    created = api.post(tasks_url(accounts["bob"].id), json={"title": "Bob's"}, headers=bobs)
    assert created.status_code == 201
    alices = bearer(session_token("alice"))
    for method, path in (
        ("GET", tasks_url(accounts["bob"].id)),
        ("POST", tasks_url(accounts["bob"].id)),
        ("DELETE", f"{tasks_url(accounts['bob'].id)}/{created.json['id']}"),
    ):
        body = {"json": {"title": "Planted"}} if method == "POST" else {}
        response = api.open(path, method=method, headers=alices, **body)
        assert response.status_code == 403, (method, path)
        assert response.json == {"detail": "You may only access your own tasks."}
    assert [t["id"] for t in api.get(tasks_url(accounts["bob"].id), headers=bobs).json] == [
        created.json["id"]
    ]


def test_tokens_with_sub_keep_working_beside_the_session_cache(make_app, session_token, accounts):
    api = make_app(BETTER_AUTH_SECRET=SECRET).test_client()
    alice_id = accounts["alice"].id
    own = bearer(hs256_token(alice_id, secret=SECRET))
    assert api.get(tasks_url(alice_id), headers=own).status_code == 200
    assert api.get(tasks_url(alice_id), headers=bearer(session_token())).status_code == 200


def test_session_cache_is_remembered_and_still_checked_on_every_request(
    make_app, session_token, accounts
):
    app = make_app(BETTER_AUTH_SECRET=SECRET)
    api = app.test_client()
    token = session_token("alice")
    assert api.get(tasks_url(accounts["alice"].id), headers=bearer(token)).status_code == 200
    with app.app_context():
        assert token in app.extensions[TOKEN_CACHE]
    # A hit still goes through the owner check and the claims rules.
    assert api.get(tasks_url(accounts["bob"].id), headers=bearer(token)).status_code == 403
    assert api.get(tasks_url(accounts["alice"].id), headers=bearer(token)).status_code == 200
    mismatched = resigned(token, user={**claims_of(token)["user"], "id": accounts["bob"].id})
    assert_unauthorized(api.get(tasks_url(accounts["alice"].id), headers=bearer(mismatched)))
    with app.app_context():
        assert mismatched not in app.extensions[TOKEN_CACHE]


def test_rate_limit_counts_each_session_cache_user_apart(make_app, session_token, accounts):
    # Per hour, so that the three requests fall in one window.
    api = make_app(
        BETTER_AUTH_SECRET=SECRET, RATELIMIT_ENABLED="true", RATELIMIT_PER_USER="10/hour"
    ).test_client()
    alice, bob = bearer(session_token("alice")), bearer(session_token("bob"))
    remaining = [
        api.get(tasks_url(accounts[name].id), headers=headers).headers["X-RateLimit-Remaining"]
        for name, headers in (("alice", alice), ("alice", alice), ("bob", bob))
    ]
    assert remaining == ["9", "8", "9"]


# --- refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "detail"),
    [
        (lambda now: {"iat": now - 900, "exp": now - 600}, "The token has expired."),
        (
            lambda now: {"iat": now + 600, "exp": now + 900},
            "The token is invalid: The token is not yet valid (iat).",
        ),
        (
            lambda now: {"iat": now, "exp": now + 31 * 86400},
            "The token expires too far in the future.",
        ),
    ],
    ids=["expired", "issued-in-the-future", "too-long-lived"],
)
def test_session_cache_meets_the_time_rules_of_every_token(
    api, session_token, accounts, times, detail
):
    token = resigned(session_token("alice"), **times(int(time.time())))
    assert_unauthorized(api.get(tasks_url(accounts["alice"].id), headers=bearer(token)), detail)


@pytest.mark.parametrize(
    "times",
    [{"exp": "9999999999"}, {"exp": True}, {"iat": "0"}, {"nbf": "0"}],
    ids=["exp-digits", "exp-true", "iat-digits", "nbf-digits"],
)
def test_session_cache_with_a_time_that_is_not_a_number_is_401(api, session_token, accounts, times):
    token = resigned(session_token("alice"), **times)
    for _ in range(2):  # and never remembered as accepted
        assert_unauthorized(api.get(tasks_url(accounts["alice"].id), headers=bearer(token)))


def test_session_user_and_user_id_that_differ_are_401(api, session_token, accounts):
    real = claims_of(session_token("alice"))
    alice_id, bob_id = accounts["alice"].id, accounts["bob"].id
    for session_user, user_id, path_user in (
        (bob_id, alice_id, bob_id),  # the session claims bob, the user is alice
        (alice_id, bob_id, alice_id),
    ):
        token = resigned(
            session_token("alice"),
            session={**real["session"], "userId": session_user},
            user={**real["user"], "id": user_id},
        )
        assert_unauthorized(
            api.get(tasks_url(path_user), headers=bearer(token)),
            "The token's session.userId and user.id differ.",
        )
    no_user = resigned(session_token("alice"), user=None)
    assert_unauthorized(
        api.get(tasks_url(alice_id), headers=bearer(no_user)),
        "The token's session.userId and user.id differ.",
    )


def test_session_cache_without_a_session_claim_is_401_naming_the_claims(
    api, session_token, accounts
):
    token = resigned(session_token("alice"), session=None)
    assert_unauthorized(
        api.get(tasks_url(accounts["alice"].id), headers=bearer(token)),
        "The token is invalid: Missing claim: sub (or session, as in Better Auth's session cache).",
    )


@pytest.mark.parametrize(
    "session",
    ["alice", [], {}, {"userId": ""}, {"userId": "  "}, {"userId": 42}, {"userId": "a\x00b"}],
    ids=["string", "list", "no-user-id", "empty", "blank", "number", "nul"],
)
def test_unusable_session_user_id_is_401(api, session_token, accounts, session):
    user_id = session.get("userId") if isinstance(session, dict) else None
    token = resigned(
        session_token("alice"), session=session, user={"id": user_id or accounts["alice"].id}
    )
    assert_unauthorized(
        api.get(tasks_url(accounts["alice"].id), headers=bearer(token)),
        "The token's session.userId is not a valid user id.",
    )


def test_session_cache_signed_with_another_secret_or_edited_is_401(api, session_token, accounts):
    alice_id, bob_id = accounts["alice"].id, accounts["bob"].id
    other_secret = resigned(session_token("alice"), secret=OTHER_SECRET)
    assert_unauthorized(api.get(tasks_url(alice_id), headers=bearer(other_secret)))
    # bob's ids put into alice's real token, keeping its signature.
    real = session_token("alice")
    header, _payload, signature = real.split(".")
    claims = claims_of(real)
    claims["session"]["userId"] = claims["user"]["id"] = bob_id
    edited = jwt.encode(claims, OTHER_SECRET, algorithm="HS256").split(".")[1]
    assert_unauthorized(
        api.get(tasks_url(bob_id), headers=bearer(f"{header}.{edited}.{signature}"))
    )


@pytest.mark.parametrize(
    ("setting", "claim"), [("JWT_ISSUER", "iss"), ("JWT_AUDIENCE", "aud")], ids=["iss", "aud"]
)
def test_session_cache_is_401_when_secret_mode_expects_an_issuer_or_audience(
    make_app, session_token, accounts, setting, claim
):
    # It carries neither: the rules configured for every token apply to it too.
    api = make_app(BETTER_AUTH_SECRET=SECRET, **{setting: "https://app.example.com"}).test_client()
    assert_unauthorized(
        api.get(tasks_url(accounts["alice"].id), headers=bearer(session_token())),
        f'The token is invalid: Token is missing the "{claim}" claim.',
    )


@pytest.mark.parametrize("with_secret", [False, True], ids=["jwks-only", "jwks-and-secret"])
def test_session_cache_is_401_in_jwks_mode(make_app, server, session_token, accounts, with_secret):
    settings = {"BETTER_AUTH_URL": server.base_url}
    if with_secret:
        settings["BETTER_AUTH_SECRET"] = SECRET
    api = make_app(**settings).test_client()
    # The same server's JWT plugin token is accepted: the app is configured right.
    jwt_plugin_token = accounts["alice"].token_from_token_endpoint()
    assert (
        api.get(tasks_url(accounts["alice"].id), headers=bearer(jwt_plugin_token)).status_code
        == 200
    )
    assert_unauthorized(api.get(tasks_url(accounts["alice"].id), headers=bearer(session_token())))


# --- never logged ------------------------------------------------------------------------------


def test_neither_the_token_nor_the_session_token_is_ever_logged(
    make_app, session_token, accounts, capsys
):
    api = make_app(BETTER_AUTH_SECRET=SECRET, LOG_LEVEL="DEBUG").test_client()
    token = session_token("alice")
    real = claims_of(token)
    alice_id, bob_id = accounts["alice"].id, accounts["bob"].id
    now = int(time.time())
    sent = [
        token,  # accepted, then remembered
        token,
        resigned(token, iat=now - 900, exp=now - 600),
        resigned(token, user={**real["user"], "id": bob_id}),
        resigned(token, session=None),
        resigned(token, secret=OTHER_SECRET),
        f"{token}x",
    ]
    capsys.readouterr()
    statuses = [api.get(tasks_url(alice_id), headers=bearer(each)).status_code for each in sent]
    statuses.append(api.get(tasks_url(bob_id), headers=bearer(token)).status_code)
    statuses.append(
        api.post(tasks_url(alice_id), json={"title": "x"}, headers=bearer(token)).status_code
    )
    logged = capsys.readouterr().err
    assert statuses == [200, 200, 401, 401, 401, 401, 401, 403, 201]
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    assert len([line for line in lines if line.get("event") == "request"]) == len(statuses)
    for secret_text in (*sent, *(t.split(".")[2] for t in sent), real["session"]["token"]):
        assert secret_text not in logged


# --- the flask-jwt-extended internals the decoding follows -------------------------------------


def test_flask_jwt_extended_decoding_it_follows_is_unchanged():
    """SessionCacheJWTManager repeats JWTManager._decode_jwt_from_config's steps (4.7.4).

    If this fails, flask-jwt-extended changed the method or the `_decode_jwt` it calls:
    read its new code and check taskapp/auth/session_cache.py against it.
    """
    base = inspect.signature(JWTManager._decode_jwt_from_config)
    ours = inspect.signature(SessionCacheJWTManager._decode_jwt_from_config)
    assert [(p.name, p.default) for p in ours.parameters.values()] == [
        (p.name, p.default) for p in base.parameters.values()
    ]
    assert list(inspect.signature(_decode_jwt).parameters) == [
        "algorithms",
        "allow_expired",
        "audience",
        "csrf_value",
        "encoded_token",
        "identity_claim_key",
        "issuer",
        "leeway",
        "secret",
        "verify_aud",
        "verify_sub",
    ]
    assert "_decode_jwt(**kwargs" in inspect.getsource(JWTManager._decode_jwt_from_config)
    assert issubclass(CachingJWTManager, SessionCacheJWTManager)
