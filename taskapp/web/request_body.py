"""What a request body must be before a schema sees it: JSON, strict, within the limit."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Request, current_app, request
from flask_smorest import abort
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request


def _refuse_constant(name: str) -> NoReturn:
    # Python's json module accepts NaN and Infinity; JSON (RFC 8259) does not.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


class StrictJSONParser(FlaskParser):
    """webargs' Flask parser, reading bodies as RFC 8259 JSON only."""

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        body = req.get_data(cache=True)
        try:
            return json.loads(body, parse_constant=_refuse_constant)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as error:
            # Integers past Python's digit limit, nesting past the recursion limit.
            raise json.JSONDecodeError(f"unreadable JSON: {error}", "body", 0) from None


def check_request_body() -> None:
    """415 for a body that is not JSON; 413 for a streamed body over the limit.

    A body with a Content-Length over the limit is refused by Flask itself
    (MAX_CONTENT_LENGTH). A chunked body has no length up front, and Werkzeug stops
    reading it at the limit without saying so: read it here, and refuse it when it
    reaches the limit, before anything could act on a truncated body.
    """
    chunked = (
        request.content_length is None
        and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )
    if not (request.content_length or chunked):
        return
    if not request.is_json:
        abort(415)
    if chunked and len(request.get_data(cache=True)) >= current_app.config["MAX_CONTENT_LENGTH"]:
        abort(413)
