"""Who is calling, and what they may touch. Every security rule of taskapp is here.

- Identity comes only from a JWT that Better Auth signed: flask-jwt-extended
  verifies it (`verify_jwt_in_request`), with its decode key loader pointed at Better
  Auth's JWKS (`signing_key_for`) or at the shared HS256 secret.
- Only the configured algorithms are accepted, and a JWKS key only with the
  algorithm it declares: `none`, or HS256 made with a public key, never verify.
- A token must expire, its times (`exp`, `nbf`, `iat`) must be numbers (RFC 7519's
  NumericDate), and it must name its user (`claims_problem`): its `sub`, or in
  secret mode, for Better Auth's session cache, its `session.userId`, which must be
  its `user.id` too (`caller_named_by`; taskapp.auth.session_cache decodes it).
- An accepted token is remembered, per app and per worker, while it is valid and
  the keys are unchanged, so its next requests skip the signature check; every rule
  above still applies to them (`taskapp.auth.token_cache` says how).
- A view needs a verified token (`token_required`), and the user in the path
  must be the caller (`verified_caller`, `owner_required`); every task query then
  filters on that user.
- The scheme is `Bearer` in any letter case (RFC 9110 §11.1), and a token that is not
  a JWT at all is refused in one sentence of ours, never the decoder's own
  (`verify_bearer_token`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, MutableMapping
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
    PyJWKError,
    PyJWTError,
)

from taskapp.auth.jwks import KeySet
from taskapp.auth.session_cache import SESSION_CLAIM, reads_session_cache
from taskapp.auth.token_cache import init_token_cache, remember_accepted
from taskapp.extensions import jwt
from taskapp.models import USER_ID_MAX
from taskapp.web.errors import error_response
from taskapp.web.metrics import count_jwt_failure

Claims = dict[str, Any]  # a token's header or payload
View = TypeVar("View", bound=Callable[..., Any])

KEYSET = "taskapp.keyset"
_CALLER = "_taskapp_caller"  # on `g`: the user the accepted token names
MAX_KID_LENGTH = 200
REALM = 'Bearer realm="taskapp"'
MAX_REASON_LENGTH = 120
NOT_A_JWT = "The token is not a well-formed JWT"
TIME_CLAIMS = ("exp", "nbf", "iat")
# The scheme at the start of one of the header's comma-separated credentials.
BEARER_SCHEME = re.compile(r"\s*(bearer)(?:\s|$)", re.IGNORECASE | re.ASCII)


class MalformedToken(Exception):
    """The Authorization header carries something that does not decode as a JWT."""


def init_auth(app: Flask) -> None:
    keyset = None
    if app.config["JWKS_URL"]:
        keyset = app.extensions[KEYSET] = KeySet(
            app.config["JWKS_URL"],
            timeout=app.config["JWKS_TIMEOUT_SECONDS"],
            cache_seconds=app.config["JWKS_CACHE_SECONDS"],
            min_refetch_seconds=app.config["JWKS_MIN_REFETCH_SECONDS"],
        )
    init_token_cache(app, keyset)
    jwt.init_app(app)
    # flask-jwt-extended maps the token errors it knows to its callbacks; any other
    # PyJWT error raised while verifying is still the token's fault, never a 500.
    app.register_error_handler(PyJWTError, _unverifiable_token)
    app.register_error_handler(MalformedToken, _malformed_token)


def key_server_ready() -> bool:
    keyset = current_app.extensions.get(KEYSET)
    return keyset is None or keyset.is_ready()


@jwt.decode_key_loader
def signing_key_for(header: Claims, _unverified_payload: Claims) -> Any:
    """The key that must have signed this token, chosen from its (unverified) header."""
    algorithm = header.get("alg")
    if (
        not isinstance(algorithm, str)
        or algorithm not in current_app.config["JWT_DECODE_ALGORITHMS"]
    ):
        raise InvalidAlgorithmError("The token's signing algorithm is not allowed")
    keyset: KeySet | None = current_app.extensions.get(KEYSET)
    if keyset is None:
        return current_app.config["JWT_SECRET_KEY"]
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise InvalidTokenError("The token has no usable key id")
    try:
        key = keyset.public_key(kid, algorithm)
    except (PyJWKError, InvalidKeyError, ValueError):
        raise InvalidAlgorithmError("The token's algorithm does not match its key") from None
    if key is None:
        raise InvalidTokenError("The token's key id is not known")
    return key


def caller_named_by(payload: Claims) -> Any:
    """The user a token names: its identity claim, or its session cache's `session.userId`.

    Only what the token says: `claims_problem` says whether it may be trusted.
    """
    if reads_session_cache(payload):
        return _session_user_id(payload)
    return payload.get(current_app.config["JWT_IDENTITY_CLAIM"])


def verified_caller() -> Any:
    """The user named by this request's token, as `token_required` found it."""
    return g.get(_CALLER)


def claims_problem(payload: Claims) -> str | None:
    """Why a verified token still cannot identify a caller, or None when it can."""
    # The session cache lives minutes (cookieCache.maxAge): these apply to it unchanged.
    if "exp" not in payload:
        return "The token has no expiry"
    for claim in TIME_CLAIMS:
        if claim in payload and not _is_numeric_date(payload[claim]):
            return f"The token's {claim} is not a NumericDate"
    # Compared, not subtracted: an int too large for a float is still just too far away.
    if payload["exp"] > time.time() + current_app.config["JWT_MAX_LIFETIME_SECONDS"]:
        return "The token expires too far in the future"
    if reads_session_cache(payload):
        return _session_cache_problem(payload)
    if not _is_user_id(caller_named_by(payload)):
        return "The token does not name a valid user"
    return None


def _is_numeric_date(value: Any) -> bool:
    """RFC 7519's NumericDate: a JSON number of seconds, nothing else.

    PyJWT checks the times with int(), which also takes "9999999999" and true; those
    are refused here, before anything compares them with a number.
    """
    if isinstance(value, bool):
        return False
    # An int is finite however large (math.isfinite would overflow converting it).
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _session_cache_problem(payload: Claims) -> str | None:
    # Better Auth writes both from one session row; tokens that differ were not made by it.
    user_id = _session_user_id(payload)
    if not _is_user_id(user_id):
        return "The token's session.userId is not a valid user id"
    user = payload.get("user")
    if not isinstance(user, dict) or user.get("id") != user_id:
        return "The token's session.userId and user.id differ"
    return None


def _session_user_id(payload: Claims) -> Any:
    session = payload.get(SESSION_CLAIM)
    return session.get("userId") if isinstance(session, dict) else None


def _is_user_id(identity: Any) -> bool:
    return (
        isinstance(identity, str)
        and bool(identity.strip())
        and len(identity) <= USER_ID_MAX
        and "\x00" not in identity
    )


@jwt.token_verification_loader
def claims_are_acceptable(header: Claims, payload: Claims) -> bool:
    # flask-jwt-extended calls this last, after every other check, on every request.
    if claims_problem(payload) is not None:
        return False
    remember_accepted(header, payload)
    return True


def _unauthorized(description: str, reason: str, error: str | None = "invalid_token") -> Response:
    # Library reasons can quote the token's own header, so they are cut short, and
    # only printable ASCII (no quote, no backslash) may enter the header value.
    count_jwt_failure(reason)
    description = description[:MAX_REASON_LENGTH].rstrip(".")
    challenge = REALM
    if error:
        safe = "".join(c for c in description if " " <= c <= "~" and c not in '"\\')
        challenge += f', error="{error}", error_description="{safe}"'
    return error_response(401, f"{description}.", headers={"WWW-Authenticate": challenge})


def _unverifiable_token(_error: PyJWTError) -> Response:
    return _unauthorized("The token could not be verified", "unverifiable")


def _malformed_token(_error: MalformedToken) -> Response:
    return _unauthorized(NOT_A_JWT, "invalid")


@jwt.unauthorized_loader
def _missing_token(_reason: str) -> Response:
    return _unauthorized(
        "A bearer token is required in the Authorization header", "missing", error=None
    )


@jwt.invalid_token_loader
def _invalid_token(reason: str) -> Response:
    return _unauthorized(f"The token is invalid: {reason}", "invalid")


@jwt.expired_token_loader
def _expired_token(_header: Claims, _payload: Claims) -> Response:
    return _unauthorized("The token has expired", "expired")


@jwt.token_verification_failed_loader
def _unacceptable_claims(_header: Claims, payload: Claims) -> Response:
    return _unauthorized(
        claims_problem(payload) or "The token's claims are not acceptable", "claims"
    )


def token_required(view: View) -> View:
    """A valid token (`verify_bearer_token`), or 401 before the view runs.

    With AUTH_ENABLED=false (development only, refused elsewhere by the config)
    no token is asked for.
    """

    @wraps(view)
    def check_token(*args: Any, **kwargs: Any) -> Any:
        if current_app.config["AUTH_ENABLED"]:
            verify_bearer_token()
            # Once: the rate limit and the owner check both need it.
            setattr(g, _CALLER, caller_named_by(get_jwt()))
        return view(*args, **kwargs)

    return cast(View, check_token)


def verify_bearer_token() -> None:
    """flask-jwt-extended's `verify_jwt_in_request`, for `Bearer` in any letter case.

    PyJWT says why a token did not decode in the words of the decoder that failed
    (a codec's or json's own message, "Invalid header padding"), which can quote the
    token: such a token raises MalformedToken instead. A bad signature, though a
    DecodeError too, keeps its own message, as every other refusal does.
    """
    spell_bearer_as_flask_jwt_extended_does(request.environ)
    try:
        verify_jwt_in_request()
    except DecodeError as error:
        if isinstance(error, InvalidSignatureError):
            raise
        raise MalformedToken() from None


def spell_bearer_as_flask_jwt_extended_does(environ: MutableMapping[str, Any]) -> None:
    """Write the scheme as `Bearer`, the only spelling flask-jwt-extended accepts.

    Each of the comma-separated credentials it would look at is rewritten
    (`_decode_jwt_from_headers`); the token itself is left as it is, so the token
    cache still finds it.
    """
    header = environ.get("HTTP_AUTHORIZATION")
    if header is None or (header.startswith("Bearer ") and "," not in header):
        return  # what nearly every client sends: nothing to rewrite
    environ["HTTP_AUTHORIZATION"] = ",".join(map(_bearer_spelled_out, header.split(",")))


def _bearer_spelled_out(credentials: str) -> str:
    # Matched at the start only: a long token is never scanned.
    scheme = BEARER_SCHEME.match(credentials)
    if scheme is None:
        return credentials
    return f"{credentials[: scheme.start(1)]}Bearer{credentials[scheme.end(1) :]}"


def owner_required(view: View) -> View:
    """403 unless the path's `user_id` is the verified token's identity.

    With AUTH_ENABLED=false the path's user is trusted as it is.
    """

    @wraps(view)
    def check_owner(*args: Any, **kwargs: Any) -> Any:
        if not current_app.config["AUTH_ENABLED"]:
            return view(*args, **kwargs)
        g.user_id = verified_caller()  # for the request log
        if g.user_id != kwargs.get("user_id"):
            return error_response(403, "You may only access your own tasks.")
        return view(*args, **kwargs)

    return cast(View, check_owner)
