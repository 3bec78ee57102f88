"""The token cache: an accepted token is verified once per app, and only while it is valid.

Real signed tokens and a real JWKS server (tests/support.py), as in tests/test_auth.py.
Signature checks are counted by wrapping PyJWT's own `verify` of the algorithm in use,
and time is moved by patching the clocks the code reads (`time.time` for taskapp,
`datetime` in PyJWT), never by waiting.
"""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from datetime import datetime

import jwt
import jwt.api_jwt
import pytest
from flask_jwt_extended import JWTManager, decode_token
from jwt.algorithms import HMACAlgorithm, OKPAlgorithm

from taskapp.auth import token_cache, tokens
from taskapp.auth.jwks import KeySet
from taskapp.auth.token_cache import TOKEN_CACHE, CachingJWTManager, TokenCache
from taskapp.extensions import jwt as jwt_manager
from tests.support import HS_SECRET, SigningKey, bearer, claims, hs256_token

TASKS = "/api/alice/tasks"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def jwks_app(make_app, key_server):
    """An app that trusts `key_server`; settings may be added by name."""
    return lambda **settings: make_app(BETTER_AUTH_URL=key_server.base_url, **settings)


@pytest.fixture
def token_for(key_server, signing_key):
    """`token_for(**claims)`: a token Better Auth would issue, signed by `signing_key`."""

    def sign(sub="alice", key=None, **extra):
        payload = claims(sub, **{"iss": key_server.base_url, "aud": key_server.base_url, **extra})
        return (key or signing_key).sign(payload)

    return sign


@pytest.fixture
def verifications(monkeypatch):
    """Every signature check PyJWT makes (EdDSA and HS256), in order."""
    checked = []
    for algorithm in (OKPAlgorithm, HMACAlgorithm):
        original = algorithm.verify

        def verify(self, msg, key, sig, _original=original):
            checked.append(msg)
            return _original(self, msg, key, sig)

        monkeypatch.setattr(algorithm, "verify", verify)
    return checked


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))


@pytest.fixture
def clock(monkeypatch):
    """The time every reader sees: taskapp (`time.time`) and PyJWT (`datetime.now`)."""
    clock = Clock()

    class PyJWTDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(clock.now, tz)

    monkeypatch.setattr(time, "time", lambda: clock.now)
    monkeypatch.setattr(jwt.api_jwt, "datetime", PyJWTDatetime)
    return clock


@pytest.fixture
def failures(monkeypatch):
    """The metric reasons of the refusals (taskapp_jwt_verification_failures_total)."""
    reasons = []
    monkeypatch.setattr(tokens, "count_jwt_failure", reasons.append)
    return reasons


def cache_of(app) -> TokenCache:
    return app.extensions[TOKEN_CACHE]


def refusal(response) -> tuple:
    assert response.status_code == 401, response.get_data(as_text=True)
    return response.status_code, response.get_json(), response.headers["WWW-Authenticate"]


# --- a token is verified once --------------------------------------------------------------


def test_second_request_with_the_same_token_is_not_verified_again(
    jwks_app, token_for, verifications
):
    app = jwks_app()
    client = app.test_client()
    headers = bearer(token_for())
    for _ in range(3):
        assert client.get(TASKS, headers=headers).status_code == 200
    assert len(verifications) == 1
    assert len(cache_of(app)) == 1


def test_hs256_token_is_verified_once_too(app, auth, verifications):
    client = app.test_client()
    headers = auth()
    assert client.get(TASKS, headers=headers).status_code == 200
    assert client.get(TASKS, headers=headers).status_code == 200
    assert len(verifications) == 1


def test_any_spelling_of_the_scheme_finds_the_cached_token(jwks_app, token_for, verifications):
    app = jwks_app()
    client = app.test_client()
    token = token_for()
    for scheme in ("bearer", "Bearer", "BEARER"):
        response = client.get(TASKS, headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 200
    assert len(verifications) == 1
    assert cache_of(app).tokens() == [token]


def test_cached_token_still_gets_the_owner_rule(jwks_app, token_for, verifications):
    client = jwks_app().test_client()
    headers = bearer(token_for("alice"))
    assert client.get(TASKS, headers=headers).status_code == 200
    assert client.get("/api/bob/tasks", headers=headers).status_code == 403
    assert len(verifications) == 1


def test_claims_from_the_cache_are_a_copy(jwks_app, token_for):
    app = jwks_app()
    token = token_for()
    with app.test_request_context(TASKS, headers=bearer(token)):
        first = jwt_manager._decode_jwt_from_config(token)
        tokens.claims_are_acceptable(jwt.get_unverified_header(token), first)
    with app.test_request_context(TASKS, headers=bearer(token)):
        cached = jwt_manager._decode_jwt_from_config(token)
        cached["sub"] = "mallory"
        assert jwt_manager._decode_jwt_from_config(token)["sub"] == "alice"


# --- what is never cached --------------------------------------------------------------------


def test_refused_tokens_are_not_cached(jwks_app, key_server, token_for, clock):
    app = jwks_app()
    client = app.test_client()
    now = int(clock.now)
    refused = [
        token_for(aud="https://evil.example"),  # fails PyJWT
        token_for(iat=now - 1000, exp=now - 120),  # expired
        token_for(None),  # verified, but names no user: fails claims_are_acceptable
        token_for(exp=now + 40 * 365 * 86400),  # verified, but lives too long
        token_for(exp=str(now + 900)),  # PyJWT takes the digits, claims_are_acceptable not
        token_for(nbf=str(now)),
        token_for(key=SigningKey("EdDSA", kid=SigningKey("EdDSA").kid)),  # unknown kid
    ]
    for token in refused:
        refusal(client.get(TASKS, headers=bearer(token)))
    assert len(cache_of(app)) == 0


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "payload", "signature"])
def test_token_one_character_off_a_cached_one_is_refused(
    jwks_app, token_for, verifications, segment
):
    app = jwks_app()
    client = app.test_client()
    token = token_for()
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    parts = token.split(".")
    middle = len(parts[segment]) // 2
    swapped = "B" if parts[segment][middle] == "A" else "A"
    parts[segment] = parts[segment][:middle] + swapped + parts[segment][middle + 1 :]
    forged = ".".join(parts)
    refusal(client.get(TASKS, headers=bearer(forged)))
    assert forged not in cache_of(app)
    assert cache_of(app).tokens() == [token]


# --- an entry lives only while its token is valid ---------------------------------------------


def test_cached_token_that_expires_gets_the_same_401_as_an_uncached_expired_one(
    jwks_app, token_for, verifications, clock, failures
):
    app = jwks_app(JWT_LEEWAY_SECONDS="0")
    client = app.test_client()
    token = token_for(lifetime=60)
    exp = int(clock.now) + 60
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    clock.now = exp - 1  # the last second of its life: still served from the cache
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    assert len(verifications) == 1

    clock.now = exp  # PyJWT: expired once exp <= now - leeway
    cached_expired = refusal(client.get(TASKS, headers=bearer(token)))
    assert token not in cache_of(app)
    never_cached = token_for(lifetime=0, jti=uuid.uuid4().hex)
    uncached_expired = refusal(client.get(TASKS, headers=bearer(never_cached)))

    assert cached_expired == uncached_expired
    assert cached_expired[1] == {"detail": "The token has expired."}
    assert failures == ["expired", "expired"]


def test_cached_token_is_served_within_the_leeway_and_refused_after_it(
    jwks_app, token_for, verifications, clock, failures
):
    client = jwks_app(JWT_LEEWAY_SECONDS="30").test_client()
    token = token_for(lifetime=60)
    exp = int(clock.now) + 60
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    clock.now = exp + 29
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    assert len(verifications) == 1
    clock.now = exp + 30
    assert refusal(client.get(TASKS, headers=bearer(token)))[1] == {
        "detail": "The token has expired."
    }
    assert failures == ["expired"]


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_cached_token_is_refused_when_the_clock_goes_back_before_its_iat_or_nbf(
    jwks_app, token_for, clock, claim
):
    app = jwks_app(JWT_LEEWAY_SECONDS="0")
    client = app.test_client()
    now = int(clock.now)
    times = {"iat": now, "exp": now + 900} if claim == "iat" else {"iat": now - 60, "nbf": now}
    token = token_for(**times)
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    clock.now = now - 5
    cached = refusal(client.get(TASKS, headers=bearer(token)))
    assert token not in cache_of(app)
    uncached = refusal(client.get(TASKS, headers=bearer(token_for(**times, jti="other"))))
    assert cached == uncached
    assert cached[1] == {"detail": f"The token is invalid: The token is not yet valid ({claim})."}


def test_decoding_an_expired_token_on_purpose_bypasses_the_cache(jwks_app, token_for, clock):
    app = jwks_app(JWT_LEEWAY_SECONDS="0")
    token = token_for(lifetime=60)
    clock.now += 60
    with app.test_request_context(TASKS):
        assert decode_token(token, allow_expired=True)["sub"] == "alice"
    assert len(cache_of(app)) == 0


# --- the key set --------------------------------------------------------------------------------


def test_key_rotation_drops_the_cache_and_a_withdrawn_key_is_refused(
    jwks_app, key_server, signing_key, token_for, verifications
):
    app = jwks_app(JWKS_MIN_REFETCH_SECONDS="0")
    client = app.test_client()
    old_token = token_for()
    assert client.get(TASKS, headers=bearer(old_token)).status_code == 200
    assert client.get(TASKS, headers=bearer(old_token)).status_code == 200
    assert len(verifications) == 1

    new_key = SigningKey("EdDSA")
    key_server.publish(new_key)  # the old key is withdrawn
    # A token with the new, unknown kid makes the app refetch the JWKS.
    assert client.get(TASKS, headers=bearer(token_for(key=new_key))).status_code == 200
    assert old_token not in cache_of(app)

    detail = refusal(client.get(TASKS, headers=bearer(old_token)))[1]["detail"]
    assert detail == "The token is invalid: The token's key id is not known."


def test_key_withdrawn_is_refused_on_the_next_request_once_the_jwks_is_stale(
    jwks_app, key_server, token_for, verifications
):
    # Without a cache lifetime, every request (cached or not) asks the key server.
    client = jwks_app(JWKS_CACHE_SECONDS="0", JWKS_MIN_REFETCH_SECONDS="0").test_client()
    token = token_for()
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    key_server.keys = []
    refusal(client.get(TASKS, headers=bearer(token)))


def test_refetch_that_finds_the_same_keys_keeps_the_cache(
    jwks_app, key_server, token_for, verifications
):
    app = jwks_app(JWKS_CACHE_SECONDS="0", JWKS_MIN_REFETCH_SECONDS="0")
    client = app.test_client()
    headers = bearer(token_for())
    for _ in range(3):
        assert client.get(TASKS, headers=headers).status_code == 200
    assert key_server.fetches == 3  # the key set was consulted on every request...
    assert len(verifications) == 1  # ...and the signature checked once
    assert len(cache_of(app)) == 1


# --- bounded, thread-safe, per app --------------------------------------------------------------


def test_cache_is_bounded_and_evicts_the_least_recently_used(
    monkeypatch, jwks_app, token_for, verifications
):
    monkeypatch.setattr(token_cache, "CACHE_SIZE", 2)
    app = jwks_app()
    client = app.test_client()
    first, second, third = (token_for(jti=str(n)) for n in range(3))
    for token in (first, second, first, third):  # `first` is used again before `third`
        assert client.get(TASKS, headers=bearer(token)).status_code == 200
    assert len(verifications) == 3
    assert cache_of(app).tokens() == [first, third]

    assert client.get(TASKS, headers=bearer(second)).status_code == 200  # evicted: verified
    assert len(verifications) == 4
    assert cache_of(app).tokens() == [third, second]


def test_cache_stays_bounded_under_threads():
    cache = TokenCache(None, size=64)
    payload = {"sub": "alice"}

    def fill(worker: int) -> None:
        for n in range(500):
            cache.put(f"{worker}-{n}", {"alg": "HS256"}, payload, 0)
            cache.get(f"{worker}-{n // 2}")

    threads = [threading.Thread(target=fill, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 64


def test_entry_verified_with_replaced_keys_is_not_stored(key_server, signing_key):
    keyset = KeySet(f"{key_server.base_url}/api/auth/jwks", 3, 600, 0)
    cache = TokenCache(keyset, size=8)
    keyset.jwk(signing_key.kid)
    verified_with = keyset.generation
    key_server.publish(SigningKey("EdDSA"))
    keyset.jwk("unknown")  # the keys change while a token is being verified
    cache.put("token", {}, {"sub": "alice"}, verified_with)
    assert cache.get("token") is None


def test_two_apps_do_not_share_a_cache(jwks_app, token_for, verifications):
    first, second = jwks_app(), jwks_app()
    headers = bearer(token_for())
    assert first.test_client().get(TASKS, headers=headers).status_code == 200
    assert second.test_client().get(TASKS, headers=headers).status_code == 200
    assert len(verifications) == 2
    assert cache_of(first) is not cache_of(second)
    assert len(cache_of(first)) == len(cache_of(second)) == 1


def test_an_hs256_app_does_not_accept_a_token_cached_by_another_app(make_app, verifications):
    trusting = make_app(BETTER_AUTH_SECRET=HS_SECRET)
    other = make_app(BETTER_AUTH_SECRET="another-secret-that-is-also-long-enough-0123456789")
    headers = bearer(hs256_token())
    assert trusting.test_client().get(TASKS, headers=headers).status_code == 200
    refusal(other.test_client().get(TASKS, headers=headers))


# --- the flask-jwt-extended method it overrides -------------------------------------------------


def test_overridden_flask_jwt_extended_method_is_still_there_unchanged():
    """CachingJWTManager overrides JWTManager._decode_jwt_from_config (4.7.4).

    If this fails, flask-jwt-extended changed the method the cache replaces: read its
    new code and check the override in taskapp/auth/token_cache.py against it.
    """
    base = inspect.signature(JWTManager._decode_jwt_from_config)
    ours = inspect.signature(CachingJWTManager._decode_jwt_from_config)
    described = [(p.name, p.kind, p.default) for p in base.parameters.values()]
    assert described == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("encoded_token", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ("csrf_value", inspect.Parameter.POSITIONAL_OR_KEYWORD, None),
        ("allow_expired", inspect.Parameter.POSITIONAL_OR_KEYWORD, False),
    ]
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == described
    # What the override calls on the manager, set by JWTManager.decode_key_loader:
    assert callable(JWTManager()._decode_key_callback)
    assert isinstance(jwt_manager, CachingJWTManager)
