"""flask-smorest's Api and Blueprint, fitted to taskapp through their extension points.

`Api` renders HTTP errors in taskapp's one shape and documents that shape, and
answers no content with no content type; `Blueprint` reads request bodies as strict
JSON within the size limit, and a query schema given to its `arguments` declares the
view's query parameters; `MethodView` refuses any other. None of them depends on the
order in which `create_app()` sets things up.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar

import flask.views
import flask_smorest
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from taskapp.web import openapi, request_query
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

    def arguments(
        self, schema: Any, *, location: str = "json", **kwargs: Any
    ) -> Callable[[ViewFunc], ViewFunc]:
        """flask-smorest's `arguments`; a query schema also declares the view's query
        parameters, the only ones `MethodView` lets through."""
        parse: Callable[[ViewFunc], ViewFunc] = super().arguments(
            schema, location=location, **kwargs
        )
        if location != "query":
            return parse
        instance = schema() if isinstance(schema, type) else schema
        parameters = request_query.declared_by(instance)

        def declare(view: ViewFunc) -> ViewFunc:
            parsed = parse(view)
            setattr(parsed, request_query.DECLARED, parameters)
            return parsed

        return declare

    def error_responses(self, *statuses: int) -> Callable[[ViewFunc], ViewFunc]:
        """Document the error answers a view can give, each with taskapp's error body."""

        def document(view: ViewFunc) -> ViewFunc:
            for status in statuses:
                view = self.alt_response(status, response=HTTPStatus(status).name)(view)
            return view

        return document


class MethodView(flask.views.MethodView):
    """Flask's MethodView, answering 422 to a query parameter its method does not declare.

    The check runs inside the class's `decorators`, where the method's own arguments
    are read: a request without a valid token is a 401 whatever its query string.
    """

    _query_parameters: ClassVar[dict[str, request_query.QueryParameters]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Once per class, so a request only looks its method up.
        cls._query_parameters = {
            method: request_query.declared_on(getattr(cls, method.lower()))
            for method in cls.methods or ()
        }
        if "GET" in cls._query_parameters:  # Flask answers HEAD with GET
            cls._query_parameters.setdefault("HEAD", cls._query_parameters["GET"])

    def dispatch_request(self, **kwargs: Any) -> Any:
        if request.query_string:
            parameters = self._query_parameters.get(request.method, request_query.NONE)
            request_query.refuse_undeclared(parameters)
        return super().dispatch_request(**kwargs)


def untyped_no_content(response: Response) -> Response:
    """A 204 names no content type, as it has no content.

    flask-smorest builds `@blp.response(204)` with jsonify: Werkzeug sends neither its
    body nor its length, but keeps `Content-Type: application/json`, and a client that
    trusts the header parses an empty body as JSON and fails.
    """
    if response.status_code == 204:
        response.headers.pop("Content-Type", None)
    return response
