"""Authentication: which bearer tokens open the API, and how every other one is refused.

Two deployments are exercised with real keys and real HTTP, no mocks:

- HS256 mode (`client`, `auth`): tokens signed with the shared BETTER_AUTH_SECRET.
- JWKS mode (`KeyServer`): tokens signed like Better Auth's (EdDSA, ES256, ES512, RS256,
  PS256), verified with the public keys the key server publishes, `iss` and `aud` defaulting
  to BETTER_AUTH_URL.

Every refusal is a 401 with a `{"detail": ...}` body and a `WWW-Authenticate: Bearer ...`
challenge (never a 500); a key server that is down with no key cached is a 503.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import secrets
import socket
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import OKPAlgorithm

from taskapp.auth.jwks import KeySet
from tests.support import HS_SECRET, KeyServer, SigningKey, bearer, claims, free_port, hs256_token

ASYMMETRIC = ["EdDSA", "ES256", "ES512", "RS256", "PS256"]
TASKS = "/api/alice/tasks"


# --- helpers -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hmac_token(header: dict, payload: dict, secret: bytes, digest=hashlib.sha256) -> str:
    """An HMAC-signed JWS built by hand, so any header and any key bytes can be used."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def signed_with_header(key: SigningKey, header: dict, payload: dict) -> str:
    """A token correctly signed by `key` with exactly `header` (PyJWT refuses some headers)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    algorithm = jwt.get_algorithm_by_name(key.algorithm)
    signature = algorithm.sign(signing_input.encode(), key.private_key)
    return f"{signing_input}.{b64url(signature)}"


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert isinstance(body, dict)
    assert list(body) == ["detail"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def assert_service_unavailable(response) -> None:
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.headers.get("Retry-After")
    body = response.get_json()
    assert isinstance(body, dict)
    assert isinstance(body.get("detail"), str)
    assert body["detail"]


def better_auth_claims(base_url: str, sub: str | None = "alice", **extra) -> dict:
    """Claims as Better Auth issues them: `iss` and `aud` are its base URL."""
    return claims(sub, **{"iss": base_url, "aud": base_url, **extra})


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def attacker_server():
    with KeyServer() as server:
        yield server


@pytest.fixture
def jwks_client(make_app, key_server):
    """A client of an app that trusts `key_server`; settings may be added by name."""

    def build(**settings):
        return make_app(BETTER_AUTH_URL=key_server.base_url, **settings).test_client()

    return build


@pytest.fixture
def valid_claims(key_server):
    return lambda sub="alice", **extra: better_auth_claims(key_server.base_url, sub, **extra)


# --- HS256 mode: the token and where it is sent ----------------------------------------------


def test_hs256_valid_token_is_accepted(client, auth):
    response = client.get(TASKS, headers=auth())
    assert response.status_code == 200
    assert response.get_json() == []


def test_missing_authorization_header_is_401(client):
    assert_unauthorized(client.get(TASKS))


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    ", "bearer", "BEARER "])
def test_bearer_without_a_token_is_401(client, value):
    assert_unauthorized(client.get(TASKS, headers={"Authorization": value}))


def test_bearer_with_two_tokens_is_401(client):
    token = hs256_token()
    assert_unauthorized(client.get(TASKS, headers={"Authorization": f"Bearer {token} {token}"}))


def test_10_kb_of_junk_is_401(client):
    junk = secrets.token_urlsafe(7680)
    assert len(junk) >= 10 * 1024
    assert_unauthorized(client.get(TASKS, headers=bearer(junk)))


def test_10_kb_of_junk_with_dots_is_401(client):
    junk = ".".join(secrets.token_urlsafe(2560) for _ in range(3))
    assert len(junk) >= 10 * 1024
    assert_unauthorized(client.get(TASKS, headers=bearer(junk)))


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(client, scheme):
    # RFC 9110 §11.1: an authentication scheme is matched case-insensitively.
    response = client.get(TASKS, headers={"Authorization": f"{scheme} {hs256_token()}"})
    assert response.status_code == 200, response.get_json()


def test_lower_case_scheme_among_other_credentials_is_found(client):
    header = f"Basic YWxpY2U6c2VjcmV0, bearer {hs256_token()}"
    assert client.get(TASKS, headers={"Authorization": header}).status_code == 200


def test_lower_case_scheme_gets_the_same_refusals(client):
    token = hs256_token(lifetime=-120)
    for scheme in ("Bearer", "bearer"):
        response = client.get(TASKS, headers={"Authorization": f"{scheme} {token}"})
        assert_unauthorized(response)
        assert response.get_json() == {"detail": "The token has expired."}
    two = f"bearer {hs256_token()}, Bearer {hs256_token()}"  # which one? neither
    assert_unauthorized(client.get(TASKS, headers={"Authorization": two}))


@pytest.mark.parametrize("scheme", ["Token", "JWT", "Basic", "Bearerx", "xbearer"])
def test_wrong_scheme_is_401(client, scheme):
    response = client.get(TASKS, headers={"Authorization": f"{scheme} {hs256_token()}"})
    assert_unauthorized(response)


@pytest.mark.parametrize("name", ["jwt", "access_token"])
def test_token_in_query_string_is_not_accepted(client, name):
    assert_unauthorized(client.get(TASKS, query_string={name: hs256_token()}))


@pytest.mark.parametrize("name", ["access_token_cookie", "access_token", "jwt"])
def test_token_in_cookie_is_not_accepted(client, name):
    client.set_cookie(name, hs256_token())
    assert_unauthorized(client.get(TASKS))


# --- HS256 mode: signature and algorithm ----------------------------------------------------


def test_token_signed_with_another_secret_is_401(client, auth):
    secret = "another-secret-that-is-also-long-enough-0123456789"
    assert_unauthorized(client.get(TASKS, headers=auth(secret=secret)))


def test_payload_edited_after_signing_is_401(client):
    header, _payload, signature = hs256_token("alice").split(".")
    forged = f"{header}.{segment(claims('mallory'))}.{signature}"
    assert_unauthorized(client.get("/api/mallory/tasks", headers=bearer(forged)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_alg_none_token_is_401(client, alg):
    token = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}."
    assert_unauthorized(client.get(TASKS, headers=bearer(token)))


def test_hs512_token_is_401(client):
    header = {"alg": "HS512", "typ": "JWT"}
    token = hmac_token(header, claims(), HS_SECRET.encode(), digest=hashlib.sha512)
    assert_unauthorized(client.get(TASKS, headers=bearer(token)))


def test_crit_header_with_a_newline_is_401_not_500(client):
    header = {"alg": "HS256", "typ": "JWT", "crit": ["x\r\nSet-Cookie: session=stolen"]}
    token = hmac_token(header, claims(), HS_SECRET.encode())
    response = client.get(TASKS, headers=bearer(token))
    assert_unauthorized(response)
    assert "Set-Cookie" not in response.headers


def test_crit_header_with_non_latin1_text_is_401_over_real_http(http_server):
    header = {"alg": "HS256", "typ": "JWT", "crit": ["\u20ac"]}
    token = hmac_token(header, claims(), HS_SECRET.encode())
    host, port = http_server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", TASKS, headers={**bearer(token), "Connection": "close"})
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 401
    assert list(body) == ["detail"]
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")


# --- tokens that are not JWTs: one sentence, nothing of the decoder's or the token's --------

NOT_A_JWT = "The token is not a well-formed JWT."
GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIGNATURE = hs256_token().split(".")
NON_UTF8 = b64url(bytes([0xC3, 0x28, 0xFF, 0xFE, 0x80]))
GARBAGE = {
    "random bytes, base64url": ".".join(b64url(secrets.token_bytes(48)) for _ in range(3)),
    "random text": secrets.token_urlsafe(40),
    "two segments": f"{GOOD_HEADER}.{GOOD_PAYLOAD}",
    "four segments": f"{GOOD_HEADER}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}.{GOOD_SIGNATURE}",
    "empty segments": "..",
    "non-UTF-8 header": f"{NON_UTF8}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
    "non-UTF-8 payload": f"{GOOD_HEADER}.{NON_UTF8}.{GOOD_SIGNATURE}",
    "bad JSON header": f"{b64url(b'{alg: HS256}')}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
    "header a JSON array": f"{segment(['HS256'])}.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
    "bad JSON payload": f"{GOOD_HEADER}.{b64url(b'{sub: alice')}.{GOOD_SIGNATURE}",
    "bad header padding": f"{GOOD_HEADER}x.{GOOD_PAYLOAD}.{GOOD_SIGNATURE}",
    "signature not base64url": f"{GOOD_HEADER}.{GOOD_PAYLOAD}.!!!!",
}


def assert_not_a_jwt(response, token: str) -> None:
    assert_unauthorized(response)
    assert response.get_json() == {"detail": NOT_A_JWT}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="taskapp", error="invalid_token", '
        f'error_description="{NOT_A_JWT.rstrip(".")}"'
    )
    answer = response.get_data(as_text=True) + str(response.headers)
    for part in token.split("."):
        assert len(part) < 4 or part not in answer


@pytest.mark.parametrize("token", GARBAGE.values(), ids=GARBAGE.keys())
def test_token_that_is_not_a_jwt_gets_one_plain_sentence(client, token):
    assert_not_a_jwt(client.get(TASKS, headers=bearer(token)), token)


def test_claim_of_the_wrong_type_is_not_a_well_formed_jwt(client):
    token = hmac_token({"alg": "HS256"}, {**claims(), "exp": "tomorrow"}, HS_SECRET.encode())
    assert_not_a_jwt(client.get(TASKS, headers=bearer(token)), token)


def test_raw_non_utf8_bytes_over_real_http_get_the_same_sentence(http_server):
    junk = bytes(range(0x80, 0x100)) + secrets.token_bytes(64)
    # One word of bytes (no comma, no control or blank character, even read as Latin-1):
    # all of it is the token.
    junk = bytes(
        byte for byte in junk if byte > 0x20 and byte not in b",\x7f" and not chr(byte).isspace()
    )
    host, port = http_server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.putrequest("GET", TASKS)
        connection.putheader("Authorization", b"Bearer " + junk)
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 401
    assert body == {"detail": NOT_A_JWT}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"exp": 1}, "expired"),
        ({"aud": "https://evil.example"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": None}, '"aud" claim'),
        ({"sub": None}, "sub"),
        ({"exp": None}, "no expiry"),
    ],
    ids=["expired", "audience", "issuer", "no aud", "no sub", "no exp"],
)
def test_well_formed_tokens_keep_their_own_reasons(
    jwks_client, signing_key, valid_claims, change, words
):
    payload = {**valid_claims(), **change}
    payload = {name: value for name, value in payload.items() if value is not None}
    response = jwks_client().get(TASKS, headers=bearer(signing_key.sign(payload)))
    assert_unauthorized(response)
    assert words in response.get_json()["detail"].lower()


def test_bad_signature_keeps_its_own_reason(client):
    header, payload, _signature = hs256_token().split(".")
    forged = f"{header}.{payload}.{b64url(bytes(32))}"
    response = client.get(TASKS, headers=bearer(forged))
    assert_unauthorized(response)
    assert "signature" in response.get_json()["detail"].lower()


# --- HS256 mode: time claims -----------------------------------------------------------------


def test_expired_token_is_401(client, auth):
    now = int(time.time())
    assert_unauthorized(client.get(TASKS, headers=auth(iat=now - 1000, exp=now - 120)))


def test_nbf_in_the_future_beyond_leeway_is_401(client, auth):
    assert_unauthorized(client.get(TASKS, headers=auth(nbf=int(time.time()) + 120)))


def test_iat_in_the_future_beyond_leeway_is_401(client, auth):
    now = int(time.time())
    assert_unauthorized(client.get(TASKS, headers=auth(iat=now + 120, exp=now + 900)))


def test_token_expired_within_the_leeway_is_accepted(client, auth):
    now = int(time.time())
    response = client.get(TASKS, headers=auth(iat=now - 900, exp=now - 10))
    assert response.status_code == 200


def test_token_without_exp_is_401(client):
    payload = {"sub": "alice", "id": "alice", "iat": int(time.time())}
    token = hmac_token({"alg": "HS256", "typ": "JWT"}, payload, HS_SECRET.encode())
    assert_unauthorized(client.get(TASKS, headers=bearer(token)))


# --- both modes: times that are not numbers (RFC 7519 NumericDate) ----------------------------

# Each is refused with a 401, never a 500, or accepted as the number it is.
NOT_NUMERIC_DATES = {
    "exp-digits": {"exp": "9999999999"},
    "exp-digits-soon": {"exp": str(int(time.time()) + 900)},
    "exp-true": {"exp": True},
    "exp-null": {"exp": None},
    "exp-infinite": {"exp": float("inf")},
    "exp-list": {"exp": [1]},
    "nbf-digits": {"nbf": "0"},
    "nbf-true": {"nbf": True},
    "nbf-null": {"nbf": None},
    "iat-digits": {"iat": "0"},
    "iat-false": {"iat": False},
    "iat-null": {"iat": None},
}
NUMERIC_DATES_REFUSED = {
    "exp-past": {"exp": -1},
    "exp-beyond-a-float": {"exp": 10**400},
    "exp-far-away": {"exp": 10**30},
    "nbf-far-away": {"nbf": 10**400},
    "iat-far-away": {"iat": 10**400},
}
NUMERIC_DATES_ACCEPTED = {
    "exp-fraction": {"exp": time.time() + 900.5},
    "nbf-fraction": {"nbf": time.time() - 0.5},
    "nbf-negative": {"nbf": -1},
    "iat-fraction": {"iat": time.time() - 0.5},
    "iat-negative": {"iat": -1},
}


def signed_by_hand(sign, times: dict) -> str:
    # PyJWT's encoder turns some values into others (and refuses Infinity): the payload
    # is written and signed as given.
    return sign({**claims("alice"), **times})


def hs256_by_hand(payload: dict) -> str:
    return hmac_token({"alg": "HS256", "typ": "JWT"}, payload, HS_SECRET.encode())


def jwks_by_hand(key: SigningKey, base_url: str):
    return lambda payload: signed_with_header(
        key,
        {"alg": key.algorithm, "kid": key.kid, "typ": "JWT"},
        {**payload, "iss": base_url, "aud": base_url},
    )


@pytest.mark.parametrize("times", NOT_NUMERIC_DATES.values(), ids=NOT_NUMERIC_DATES)
def test_time_claim_that_is_not_a_number_is_401_in_secret_mode(client, times):
    for _ in range(2):  # and never remembered as accepted
        assert_unauthorized(client.get(TASKS, headers=bearer(signed_by_hand(hs256_by_hand, times))))


@pytest.mark.parametrize("times", NOT_NUMERIC_DATES.values(), ids=NOT_NUMERIC_DATES)
def test_time_claim_that_is_not_a_number_is_401_in_jwks_mode(
    jwks_client, key_server, signing_key, times
):
    client = jwks_client()
    token = signed_by_hand(jwks_by_hand(signing_key, key_server.base_url), times)
    for _ in range(2):
        assert_unauthorized(client.get(TASKS, headers=bearer(token)))


def test_exp_as_digits_names_the_claim_and_counts_as_a_refused_token(make_app):
    client = make_app(BETTER_AUTH_SECRET=HS_SECRET, METRICS_ENABLED="true").test_client()
    token = signed_by_hand(hs256_by_hand, {"exp": "9999999999"})

    def refused_for_their_claims() -> float:
        # The counter is the process's: only what this request adds is this test's.
        metrics = client.get("/metrics").get_data(as_text=True)
        found = re.search(
            r'^taskapp_jwt_verification_failures_total\{reason="claims"\} (\S+)$',
            metrics,
            re.MULTILINE,
        )
        return float(found[1]) if found else 0.0

    before = refused_for_their_claims()
    response = client.get(TASKS, headers=bearer(token))
    assert_unauthorized(response)
    assert response.get_json() == {"detail": "The token's exp is not a NumericDate."}
    assert refused_for_their_claims() == before + 1


@pytest.mark.parametrize("times", NUMERIC_DATES_REFUSED.values(), ids=NUMERIC_DATES_REFUSED)
@pytest.mark.parametrize("mode", ["secret", "jwks"])
def test_numeric_time_claim_out_of_range_is_401(make_app, key_server, signing_key, mode, times):
    if mode == "secret":
        client, sign = make_app(BETTER_AUTH_SECRET=HS_SECRET).test_client(), hs256_by_hand
    else:
        client = make_app(BETTER_AUTH_URL=key_server.base_url).test_client()
        sign = jwks_by_hand(signing_key, key_server.base_url)
    assert_unauthorized(client.get(TASKS, headers=bearer(signed_by_hand(sign, times))))


@pytest.mark.parametrize("times", NUMERIC_DATES_ACCEPTED.values(), ids=NUMERIC_DATES_ACCEPTED)
@pytest.mark.parametrize("mode", ["secret", "jwks"])
def test_numeric_time_claim_with_a_fraction_or_before_1970_is_accepted(
    make_app, key_server, signing_key, mode, times
):
    if mode == "secret":
        client, sign = make_app(BETTER_AUTH_SECRET=HS_SECRET).test_client(), hs256_by_hand
    else:
        client = make_app(BETTER_AUTH_URL=key_server.base_url).test_client()
        sign = jwks_by_hand(signing_key, key_server.base_url)
    response = client.get(TASKS, headers=bearer(signed_by_hand(sign, times)))
    assert response.status_code == 200, response.get_data(as_text=True)


# --- HS256 mode: identity --------------------------------------------------------------------


def test_token_without_sub_is_401(client, auth):
    assert_unauthorized(client.get(TASKS, headers=auth(None)))


@pytest.mark.parametrize("sub", ["", "   "])
def test_blank_sub_is_401(client, auth, sub):
    # Were the token accepted, the identity would differ from "alice": 403, not 401.
    assert_unauthorized(client.get(TASKS, headers=auth(sub)))


def test_non_string_sub_is_401(client, auth):
    assert_unauthorized(client.get("/api/123/tasks", headers=auth(123)))


# --- JWKS mode: accepted tokens --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
def test_jwks_valid_token_creates_and_lists_tasks(jwks_client, key_server, valid_claims, algorithm):
    key = SigningKey(algorithm)
    key_server.publish(key)
    client = jwks_client()
    headers = bearer(key.sign(valid_claims()))
    created = client.post(TASKS, json={"title": f"signed with {algorithm}"}, headers=headers)
    assert created.status_code == 201, created.get_json()
    listed = client.get(TASKS, headers=headers)
    assert listed.status_code == 200
    assert [task["id"] for task in listed.get_json()] == [created.get_json()["id"]]


def test_better_auth_user_claims_are_harmless(jwks_client, signing_key, valid_claims):
    user = {
        "id": "alice",
        "email": "alice@example.com",
        "name": "Alice",
        "emailVerified": True,
        "image": None,
        "createdAt": "2026-01-17T09:30:00.000Z",
        "updatedAt": "2026-01-17T09:30:00.000Z",
    }
    token = signing_key.sign(valid_claims(**user))
    assert jwks_client().get(TASKS, headers=bearer(token)).status_code == 200


def test_identity_claim_setting_names_the_user(jwks_client, signing_key, valid_claims):
    client = jwks_client(JWT_IDENTITY_CLAIM="user_id")
    token = signing_key.sign(valid_claims("alice", user_id="bob"))
    assert client.get("/api/bob/tasks", headers=bearer(token)).status_code == 200


def test_identity_claim_setting_ignores_sub(jwks_client, signing_key, valid_claims):
    client = jwks_client(JWT_IDENTITY_CLAIM="user_id")
    token = signing_key.sign(valid_claims("alice", user_id="bob"))
    assert client.get(TASKS, headers=bearer(token)).status_code == 403


def test_identity_claim_setting_refuses_tokens_without_it(jwks_client, signing_key, valid_claims):
    client = jwks_client(JWT_IDENTITY_CLAIM="user_id")
    assert_unauthorized(client.get(TASKS, headers=bearer(signing_key.sign(valid_claims()))))


# --- JWKS mode: issuer and audience ----------------------------------------------------------


def test_wrong_issuer_is_401(jwks_client, signing_key, valid_claims):
    token = signing_key.sign(valid_claims(iss="https://evil.example"))
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


def test_wrong_audience_is_401(jwks_client, signing_key, valid_claims):
    token = signing_key.sign(valid_claims(aud="https://evil.example"))
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


OVERRIDES = {
    "JWT_ISSUER": "https://auth-a.example, https://auth-b.example",
    "JWT_AUDIENCE": "tasks-api,https://app.example",
}


@pytest.mark.parametrize(
    ("iss", "aud"),
    [("https://auth-a.example", "tasks-api"), ("https://auth-b.example", "https://app.example")],
)
def test_jwt_issuer_and_audience_lists_are_accepted(
    jwks_client, signing_key, valid_claims, iss, aud
):
    token = signing_key.sign(valid_claims(iss=iss, aud=aud))
    assert jwks_client(**OVERRIDES).get(TASKS, headers=bearer(token)).status_code == 200


def test_jwt_issuer_replaces_the_default_issuer(jwks_client, signing_key, valid_claims):
    token = signing_key.sign(valid_claims(aud="tasks-api"))  # iss: BETTER_AUTH_URL
    assert_unauthorized(jwks_client(**OVERRIDES).get(TASKS, headers=bearer(token)))


def test_jwt_audience_replaces_the_default_audience(jwks_client, signing_key, valid_claims):
    token = signing_key.sign(valid_claims(iss="https://auth-a.example"))  # aud: BETTER_AUTH_URL
    assert_unauthorized(jwks_client(**OVERRIDES).get(TASKS, headers=bearer(token)))


# --- JWKS mode: kid --------------------------------------------------------------------------


def test_signature_by_another_key_with_the_published_kid_is_401(
    jwks_client, signing_key, valid_claims
):
    impostor = SigningKey("EdDSA", kid=signing_key.kid)
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(impostor.sign(valid_claims()))))


def test_unknown_kid_is_401(jwks_client, signing_key, valid_claims):
    token = signing_key.sign(valid_claims(), kid=uuid.uuid4().hex)
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


def test_very_long_kid_is_401(jwks_client, signing_key, valid_claims):
    token = signing_key.sign(valid_claims(), kid="k" * 5000)
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


@pytest.mark.parametrize(
    "kid", ["../../etc/passwd", "http://evil/x?y#z", "/api/auth/jwks/../../admin", "%2e%2e%2f"]
)
def test_kid_with_path_or_url_characters_is_401_and_only_the_jwks_is_fetched(
    jwks_client, key_server, signing_key, valid_claims, kid
):
    token = signing_key.sign(valid_claims(), kid=kid)
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))
    assert set(key_server.requested_paths) == {"/api/auth/jwks"}


@pytest.mark.parametrize("kid", [123, {"kid": "x"}, ["x"], None])
def test_non_string_kid_is_401(jwks_client, signing_key, valid_claims, kid):
    header = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
    token = signed_with_header(signing_key, header, valid_claims())
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


def test_token_without_kid_is_401(jwks_client, signing_key, valid_claims):
    token = jwt.encode(valid_claims(), signing_key.private_key, algorithm="EdDSA")
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


# --- JWKS mode: algorithm confusion and key headers -----------------------------------------


def public_key_pem(key: SigningKey) -> bytes:
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "secret_of",
    [
        pytest.param(public_key_pem, id="pem"),
        pytest.param(lambda key: base64.urlsafe_b64decode(key.public_jwk["x"] + "=="), id="x"),
        pytest.param(lambda key: key.public_jwk["x"].encode(), id="x-text"),
    ],
)
def test_hs256_signed_with_the_public_key_is_401(jwks_client, signing_key, valid_claims, secret_of):
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}
    token = hmac_token(header, valid_claims(), secret_of(signing_key))
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


def test_algorithm_other_than_the_keys_declared_alg_is_401(jwks_client, key_server, valid_claims):
    rsa_key = SigningKey("RS256")
    key_server.publish(rsa_key)
    token = jwt.encode(
        valid_claims(), rsa_key.private_key, algorithm="PS256", headers={"kid": rsa_key.kid}
    )
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


@pytest.mark.parametrize("header_name", ["jku", "x5u", "jwk"])
def test_key_location_headers_are_ignored(
    jwks_client, signing_key, attacker_server, valid_claims, header_name
):
    attacker = SigningKey("EdDSA")
    attacker_server.publish(attacker)
    value = {
        "jku": f"{attacker_server.base_url}/api/auth/jwks",
        "x5u": f"{attacker_server.base_url}/api/auth/jwks",
        "jwk": attacker.public_jwk,
    }[header_name]
    token = attacker.sign(valid_claims(), headers={header_name: value})
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))
    assert attacker_server.fetches == 0
    assert attacker_server.requested_paths == []


def test_key_published_with_its_private_part_is_not_trusted(jwks_client, key_server, valid_claims):
    leaked = SigningKey("EdDSA")
    private_jwk = OKPAlgorithm.to_jwk(leaked.private_key, as_dict=True)
    key_server.keys = [{**private_jwk, "kid": leaked.kid, "alg": "EdDSA"}]
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(leaked.sign(valid_claims()))))


def test_malformed_key_in_the_jwks_does_not_block_the_valid_key(
    jwks_client, key_server, signing_key, valid_claims
):
    key_server.keys = [{"kid": "no-kty"}, signing_key.public_jwk]
    response = jwks_client().get(TASKS, headers=bearer(signing_key.sign(valid_claims())))
    assert response.status_code == 200, response.get_json()


# --- JWKS mode: rotation and fetch throttling -------------------------------------------------


def test_rotated_in_key_is_accepted_without_rebuilding_the_app(
    jwks_client, key_server, signing_key, valid_claims
):
    client = jwks_client(JWKS_MIN_REFETCH_SECONDS="0")
    assert client.get(TASKS, headers=bearer(signing_key.sign(valid_claims()))).status_code == 200
    new_key = SigningKey("EdDSA")
    key_server.publish(signing_key, new_key)
    assert client.get(TASKS, headers=bearer(new_key.sign(valid_claims()))).status_code == 200


def test_old_key_keeps_working_while_still_listed(
    jwks_client, key_server, signing_key, valid_claims
):
    client = jwks_client(JWKS_MIN_REFETCH_SECONDS="0")
    old_token = signing_key.sign(valid_claims())
    assert client.get(TASKS, headers=bearer(old_token)).status_code == 200
    new_key = SigningKey("EdDSA")
    key_server.publish(signing_key, new_key)
    assert client.get(TASKS, headers=bearer(new_key.sign(valid_claims()))).status_code == 200
    assert client.get(TASKS, headers=bearer(old_token)).status_code == 200


def test_random_unknown_kids_do_not_hammer_the_key_server(
    jwks_client, key_server, signing_key, valid_claims
):
    client = jwks_client()
    payload = valid_claims()
    for _ in range(1000):
        token = signing_key.sign(payload, kid=uuid.uuid4().hex)
        assert client.get(TASKS, headers=bearer(token)).status_code == 401
    assert 1 <= key_server.fetches <= 2


# --- JWKS mode: key server outages -----------------------------------------------------------


def test_cached_keys_keep_working_when_the_key_server_is_down(
    jwks_client, key_server, signing_key, valid_claims
):
    # No cache lifetime and no throttle: the second request does ask the server, and fails.
    client = jwks_client(JWKS_CACHE_SECONDS="0", JWKS_MIN_REFETCH_SECONDS="0")
    headers = bearer(signing_key.sign(valid_claims()))
    assert client.get(TASKS, headers=headers).status_code == 200
    key_server.available = False
    assert client.get(TASKS, headers=headers).status_code == 200
    assert key_server.fetches == 2


def test_cold_start_with_the_key_server_unavailable_is_503(
    jwks_client, key_server, signing_key, valid_claims
):
    key_server.available = False
    response = jwks_client().get(TASKS, headers=bearer(signing_key.sign(valid_claims())))
    assert_service_unavailable(response)


def test_cold_start_with_nothing_listening_is_503(make_app):
    base_url = f"http://127.0.0.1:{free_port()}"
    key = SigningKey("EdDSA")
    client = make_app(BETTER_AUTH_URL=base_url).test_client()
    response = client.get(TASKS, headers=bearer(key.sign(better_auth_claims(base_url))))
    assert_service_unavailable(response)


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_the_key_server_down_logs_short_lines_not_a_traceback(make_app, log_format, capsys):
    base_url = f"http://127.0.0.1:{free_port()}"
    key = SigningKey("EdDSA")
    client = make_app(BETTER_AUTH_URL=base_url, LOG_FORMAT=log_format).test_client()
    capsys.readouterr()
    response = client.get(TASKS, headers=bearer(key.sign(better_auth_claims(base_url))))
    assert_service_unavailable(response)
    logged = capsys.readouterr().err
    # The failed fetch, the 503 and the request line; each says what it is about.
    assert len(logged.splitlines()) <= 3, logged
    assert "Traceback" not in logged
    assert "key server is unreachable" in logged


def test_key_server_that_never_answers_is_503_after_the_fetch_timeout(make_app):
    # A listening socket that is never accepted from: the connection opens, no reply comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = make_app(BETTER_AUTH_URL=base_url, JWKS_TIMEOUT_SECONDS="0.2").test_client()
        key = SigningKey("EdDSA")
        response = client.get(TASKS, headers=bearer(key.sign(better_auth_claims(base_url))))
    assert_service_unavailable(response)


def test_key_server_recovery_needs_no_new_app(jwks_client, key_server, signing_key, valid_claims):
    client = jwks_client(JWKS_MIN_REFETCH_SECONDS="0")
    headers = bearer(signing_key.sign(valid_claims()))
    key_server.available = False
    assert_service_unavailable(client.get(TASKS, headers=headers))
    key_server.available = True
    assert client.get(TASKS, headers=headers).status_code == 200


def test_reachable_key_server_without_usable_keys_is_401_not_503(jwks_client, key_server):
    key = SigningKey("EdDSA")
    key_server.keys = []
    response = jwks_client().get(
        TASKS, headers=bearer(key.sign(better_auth_claims(key_server.base_url)))
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("curve_of", "algorithm"), [("ES256", "ES512"), ("ES512", "ES256")])
def test_ec_key_without_alg_used_with_the_wrong_curve_is_401(
    jwks_client, key_server, valid_claims, curve_of, algorithm
):
    key = SigningKey(curve_of)
    jwk = {k: v for k, v in key.public_jwk.items() if k != "alg"}
    key_server.keys = [jwk]
    header = {"alg": algorithm, "kid": key.kid, "typ": "JWT"}
    signing_input = f"{segment(header)}.{segment(valid_claims())}"
    size = 132 if algorithm == "ES512" else 64
    token = f"{signing_input}.{b64url(bytes(size))}"
    assert_unauthorized(jwks_client().get(TASKS, headers=bearer(token)))


def test_token_expiring_decades_from_now_is_401(client, auth):
    exp = int(time.time()) + 40 * 365 * 86400
    assert_unauthorized(client.get(TASKS, headers=auth(exp=exp)))


def test_max_token_lifetime_is_configurable(make_app, auth):
    client = make_app(BETTER_AUTH_SECRET=HS_SECRET, JWT_MAX_LIFETIME_SECONDS="600").test_client()
    assert client.get(TASKS, headers=auth(lifetime=500)).status_code == 200
    assert_unauthorized(client.get(TASKS, headers=auth(lifetime=900)))


def test_readyz_in_jwks_mode_follows_the_key_server(jwks_client, key_server, signing_key):
    client = jwks_client(JWKS_MIN_REFETCH_SECONDS="0")
    key_server.available = False
    assert_service_unavailable(client.get("/readyz"))
    key_server.available = True
    assert client.get("/readyz").status_code == 200


def test_readyz_does_not_bypass_the_refetch_limit(jwks_client, key_server):
    client = jwks_client()
    key_server.available = False
    for _ in range(20):
        assert client.get("/readyz").status_code == 503
    assert key_server.fetches == 1


def test_readyz_survives_a_malformed_jwks_document(jwks_client, key_server, signing_key):
    key_server.keys = [{"kid": "broken", "kty": "OKP", "crv": "Ed25519", "x": "%%%"}]
    response = jwks_client().get("/readyz")
    assert response.status_code == 200


# --- taskapp.auth.jwks.KeySet ----------------------------------------------------------------


def keyset_for(server: KeyServer) -> KeySet:
    url = f"{server.base_url}/api/auth/jwks"
    return KeySet(url, timeout=3, cache_seconds=600, min_refetch_seconds=0)


def assert_key_verifies(keyset: KeySet, key: SigningKey) -> None:
    public_key = keyset.public_key(key.kid, key.algorithm)
    assert public_key is not None
    decoded = jwt.decode(key.sign(claims()), public_key, algorithms=[key.algorithm])
    assert decoded["sub"] == "alice"


def test_keyset_ignores_keys_with_private_parameters(key_server, signing_key):
    leaked = SigningKey("EdDSA")
    private_jwk = OKPAlgorithm.to_jwk(leaked.private_key, as_dict=True)
    key_server.keys = [{**private_jwk, "kid": leaked.kid, "alg": "EdDSA"}, signing_key.public_jwk]
    keyset = keyset_for(key_server)
    assert keyset.jwk(leaked.kid) is None
    assert_key_verifies(keyset, signing_key)


def test_keyset_generation_counts_changes_of_the_keys(key_server, signing_key):
    keyset = keyset_for(key_server)
    assert keyset.jwk(signing_key.kid) is not None
    assert keyset.generation == 0  # the first keys are not a change
    assert keyset.jwk("unknown") is None  # a refetch that finds the same keys
    assert keyset.generation == 0
    key_server.publish(signing_key, SigningKey("EdDSA"))
    assert keyset.jwk("unknown") is None
    assert keyset.generation == 1
    key_server.publish(SigningKey("EdDSA"))  # the first key is withdrawn
    assert keyset.jwk("unknown") is None
    assert keyset.jwk(signing_key.kid) is None
    assert keyset.generation == 2


MALFORMED_KEYS = {
    "no-kty": {"kid": "bad"},
    "unknown-kty": {"kty": "XYZ", "kid": "bad"},
    "okp-without-x": {"kty": "OKP", "crv": "Ed25519", "kid": "bad"},
    "okp-bad-x": {"kty": "OKP", "crv": "Ed25519", "x": "%%%not-base64%%%", "kid": "bad"},
    "okp-unknown-curve": {"kty": "OKP", "crv": "Ed448x", "x": "AAAA", "kid": "bad"},
    "ec-without-y": {"kty": "EC", "crv": "P-256", "x": "AAAA", "kid": "bad"},
    "rsa-without-e": {"kty": "RSA", "n": "AQAB", "kid": "bad"},
    "not-an-object": "bad",
    "null": None,
}


@pytest.mark.parametrize("malformed", MALFORMED_KEYS.values(), ids=MALFORMED_KEYS.keys())
def test_keyset_ignores_malformed_keys(key_server, signing_key, malformed):
    key_server.keys = [malformed, signing_key.public_jwk]
    keyset = keyset_for(key_server)
    assert keyset.jwk("bad") is None
    assert_key_verifies(keyset, signing_key)
