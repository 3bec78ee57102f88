"""Better Auth's session cache as a bearer token: decoded in secret mode, though it has no `sub`.

With `session: { cookieCache: { enabled: true, strategy: "jwt" } }`, Better Auth (1.7)
keeps each session in its `better-auth.session_data` cookie (`__Secure-` in front on
https) as an HS256 JWT signed with BETTER_AUTH_SECRET itself, its UTF-8 bytes, no
derived key. The header is only `{"alg": "HS256"}`; the claims are `session` (the
session row: `userId`, the session's own `token`, ...), `user` (with `id`), `updatedAt`,
`version`, `iat` and `exp` (`cookieCache.maxAge` later, 5 minutes by default): no
`sub`, `iss` or `aud`. It is the one token an unmodified Better Auth signs with its
secret, so secret mode takes it.

flask-jwt-extended insists that every token carry the identity claim
(JWT_IDENTITY_CLAIM, `sub`). In secret mode a token without it is decoded exactly as
flask-jwt-extended decodes any other, with `session` as the claim that must be there
(`SessionCacheJWTManager`). taskapp.auth.tokens reads the user from it and holds every
rule about it. A JWKS deployment never reads one: there an HS256 token is refused, and
a token without `sub` is refused as it always was.
"""

from __future__ import annotations

from typing import Any

import jwt
from flask import current_app
from flask_jwt_extended import JWTManager
from flask_jwt_extended.config import config
from flask_jwt_extended.exceptions import JWTDecodeError
from flask_jwt_extended.tokens import _decode_jwt
from jwt.exceptions import ExpiredSignatureError

Claims = dict[str, Any]  # a token's header or payload

SESSION_CLAIM = "session"


def reads_session_cache(payload: Claims) -> bool:
    """Whether the token's user is its `session.userId`: no identity claim, secret mode."""
    return (
        current_app.config["JWKS_URL"] is None
        and current_app.config["JWT_IDENTITY_CLAIM"] not in payload
    )


class SessionCacheJWTManager(JWTManager):
    """flask-jwt-extended's JWTManager, also decoding Better Auth's session cache.

    flask-jwt-extended has no extension point for the claim it requires, so this
    overrides `JWTManager._decode_jwt_from_config`, checked against flask-jwt-extended
    4.7.4 (requirements.txt): for the session cache it runs that method's own steps,
    with `session` for the identity claim. tests/test_session_cache.py fails if the
    method or `flask_jwt_extended.tokens._decode_jwt` change their signatures.
    """

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if csrf_value is None and not allow_expired and current_app.config["JWKS_URL"] is None:
            unverified_claims = jwt.decode(
                encoded_token,
                algorithms=config.decode_algorithms,
                options={"verify_signature": False},
            )
            if reads_session_cache(unverified_claims):
                return self._decode_session_cache(encoded_token, unverified_claims)
        return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)

    def _decode_session_cache(self, encoded_token: str, unverified_claims: Claims) -> Claims:
        unverified_headers = jwt.get_unverified_header(encoded_token)
        secret = self._decode_key_callback(unverified_headers, unverified_claims)
        kwargs: dict[str, Any] = {
            "algorithms": config.decode_algorithms,
            "audience": config.decode_audience,
            "csrf_value": None,
            "encoded_token": encoded_token,
            "identity_claim_key": SESSION_CLAIM,
            "issuer": config.decode_issuer,
            "leeway": config.leeway,
            "secret": secret,
            "verify_aud": config.decode_audience is not None,
            "verify_sub": config.verify_sub,
        }
        try:
            try:
                return _decode_jwt(**kwargs, allow_expired=False)
            except ExpiredSignatureError as error:
                # As flask-jwt-extended does: its expired-token callback reads both.
                error.jwt_header = unverified_headers  # type: ignore[attr-defined]
                error.jwt_data = _decode_jwt(**kwargs, allow_expired=True)  # type: ignore[attr-defined]
                raise
        except JWTDecodeError:
            # Raised only for the missing claim (there is no CSRF value): name both.
            identity = config.identity_claim_key
            raise JWTDecodeError(
                f"Missing claim: {identity} (or {SESSION_CLAIM}, as in Better Auth's session cache)"
            ) from None
