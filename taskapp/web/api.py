"""flask-smorest's Api and Blueprint, fitted to taskapp through their extension points.

`Api` renders HTTP errors in taskapp's one shape and documents that shape, and
answers no content with no content type; `Blueprint` reads request bodies as strict
JSON within the size limit. Neither depends on the order in which `create_app()` sets
things up.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

import flask_smorest
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from taskapp.web import openapi
from taskapp.web.errors import ErrorSchema, handle_http_exception
from taskapp.web.request_body import StrictJSONParser, check_request_body

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., Any])


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema

    def __init__(self) -> None:
        super().__init__(spec_kwargs=openapi.SPEC_KWARGS)

    def init_app(self, app: Flask, *, spec_kwargs: dict[str, Any] | None = None) -> None:
        # Where the document is served is read from the app's config only.
        app.config.update(openapi.SERVED_AT)
        super().init_app(app, spec_kwargs=spec_kwargs)
        app.after_request(untyped_no_content)

    def handle_http_exception(self, error: HTTPException) -> Response:
        return handle_http_exception(error)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictJSONParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_request(check_request_body)

    def error_responses(self, *statuses: int) -> Callable[[ViewFunc], ViewFunc]:
        """Document the error answers a view can give, each with taskapp's error body."""

        def document(view: ViewFunc) -> ViewFunc:
            for status in statuses:
                view = self.alt_response(status, response=HTTPStatus(status).name)(view)
            return view

        return document


def untyped_no_content(response: Response) -> Response:
    """A 204 names no content type, as it has no content.

    flask-smorest builds `@blp.response(204)` with jsonify: Werkzeug sends neither its
    body nor its length, but keeps `Content-Type: application/json`, and a client that
    trusts the header parses an empty body as JSON and fails.
    """
    if response.status_code == 204:
        response.headers.pop("Content-Type", None)
    return response
