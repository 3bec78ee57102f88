"""The one JSON error shape, `{"detail": ..., "errors"?: ...}`, for every layer.

`error_response` renders every error answer. Werkzeug's HTTP errors (routing
404, 405, 413, webargs' 400 and 422) reach it through flask-smorest's
`Api.handle_http_exception` (taskapp.web.api); database outages, the key server
being down and unexpected exceptions through the handlers registered below; the
401s of taskapp.auth.tokens and the 429s of taskapp.web.ratelimit call it directly.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from marshmallow import Schema, fields
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException, InternalServerError, SecurityError

from taskapp.web.metrics import count_database_error

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"
# Werkzeug's message quotes the client's Host back; the answer need not.
UNTRUSTED_HOST = "The request names a host this API does not serve."

# Werkzeug's stock descriptions are paragraphs; these are the one-sentence versions.
DEFAULT_DETAILS = {
    400: "The request body is not valid JSON.",
    401: "Authentication is required.",
    403: "You may not access this resource.",
    404: "No such resource.",
    405: "That method is not allowed on this resource.",
    409: "A conflicting request is in progress.",
    412: "The resource has changed since you last fetched it.",
    413: "The request body is larger than the limit.",
    415: "The request body must be JSON (Content-Type: application/json).",
    422: "The request failed validation.",
    429: "Too many requests.",
    500: "Internal server error.",
    503: "The service is temporarily unavailable; retry shortly.",
}


class ErrorSchema(Schema):
    """The error body, for the OpenAPI document (flask-smorest's `Api.ERROR_SCHEMA`)."""

    detail = fields.String(required=True, metadata={"description": "One human sentence."})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Validation messages by field."},
    )


class ServiceUnavailable(Exception):
    """A dependency (the database, the key server) cannot be reached right now."""


def error_response(
    status: int,
    detail: str | None = None,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"detail": detail or DEFAULT_DETAILS.get(status, "Request failed.")}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _validation_errors(messages: dict[str, Any]) -> dict[str, list[str]]:
    """webargs reports `{location: {field: [...]}}`; clients want `{field: [...]}`."""
    errors: dict[str, list[str]] = {}
    for location_messages in messages.values():
        if isinstance(location_messages, dict):
            for field, field_messages in location_messages.items():
                errors.setdefault(field, []).extend(_flat(field_messages))
        else:  # a message about the whole body, e.g. "Invalid input type."
            errors.setdefault("_body", []).extend(_flat(location_messages))
    return errors


def _flat(messages: object) -> list[str]:
    if isinstance(messages, dict):  # nested, e.g. {"_schema": [...]}
        return [text for value in messages.values() for text in _flat(value)]
    if isinstance(messages, list):
        return [text for value in messages for text in _flat(value)]
    return [str(messages)]


def handle_http_exception(error: HTTPException) -> Response:
    if isinstance(error, InternalServerError):
        return handle_unexpected_exception(error.original_exception or error)
    if isinstance(error, SecurityError):  # Flask's TRUSTED_HOSTS check
        return error_response(400, UNTRUSTED_HOST)
    status = error.code or 500
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    data = getattr(error, "data", None) or {}
    if status == 422 and "messages" in data:
        headers.update(data.get("headers") or {})
        return error_response(422, errors=_validation_errors(data["messages"]), headers=headers)
    # `abort(404, message=...)` (flask-smorest) or `abort(404, "...")` (Flask) name the detail.
    detail = data.get("message")
    if detail is None and error.description != type(error).description:
        detail = error.description
    return error_response(status, detail, headers=headers)


def handle_service_unavailable(error: Exception) -> Response:
    # A known outage: one line saying what failed. Its traceback would tell nothing
    # more, on every request while the outage lasts (in the console format, a thousand
    # lines that take seconds to render); unexpected errors keep theirs.
    log.warning("dependency unavailable: %s", _outage_summary(error))
    return error_response(503, headers={"Retry-After": RETRY_AFTER_SECONDS})


def _outage_summary(error: Exception) -> str:
    """What failed and the error's first line, e.g. `database: OperationalError:
    connection to server at "db", port 5432 failed: Connection refused`."""
    if isinstance(error, SQLAlchemyError):
        # The driver's own error says what happened; SQLAlchemy's wraps it in several
        # lines (the statement, a link to its docs).
        cause = getattr(error, "orig", None) or error
        return f"database: {type(cause).__name__}: {_first_line(cause)}"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    # args[0], not str(): SQLAlchemy's str() appends a link to its documentation.
    message = str(error.args[0]) if error.args else str(error)
    return message.strip().split("\n", 1)[0] or type(error).__name__


def handle_database_error(error: DBAPIError) -> Response:
    # A dropped or refused connection is an outage to retry, not a bug.
    if isinstance(error, (OperationalError, InterfaceError)) or error.connection_invalidated:
        count_database_error("unavailable")
        return handle_service_unavailable(error)
    count_database_error("other")
    return handle_unexpected_exception(error)


def handle_lost_race(_error: StaleDataError) -> Response:
    # Another request changed or deleted the row between our read and our write.
    return error_response(412, "The task was changed by another request; fetch it and retry.")


def handle_unexpected_exception(error: BaseException) -> Response:
    log.error("unhandled exception", exc_info=error)
    return error_response(500)


def register_error_handlers(app: Flask) -> None:
    """Everything but HTTP errors, which flask-smorest's Api hands to handle_http_exception."""
    app.register_error_handler(ServiceUnavailable, handle_service_unavailable)
    app.register_error_handler(PoolTimeoutError, handle_service_unavailable)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(StaleDataError, handle_lost_race)
    app.register_error_handler(Exception, handle_unexpected_exception)
