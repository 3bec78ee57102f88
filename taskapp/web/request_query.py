"""What a query string may hold: the parameters its view declares, and nothing else.

An ignored parameter answers the wrong question with a 200 (`?search=milk` lists every
task, since the parameter is `q`); refused, it is a 422 that names it, as an unknown
body field is. A view declares its parameters with a query schema,
`@blp.arguments(Schema, location="query")` (taskapp.web.api); a view with none takes
none. The schema may name what clients send instead of its parameters (`MISNAMED`),
so the 422 says what to send.

Only the API is checked. `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/docs`
ignore what they do not read: no parameter can make them answer a different question,
and probes and monitors add their own (a cache-buster) that must not fail them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import request
from flask_smorest import abort
from marshmallow import Schema

# The attribute, on a view method, that holds its declared QueryParameters.
DECLARED = "_taskapp_query_parameters"


@dataclass(frozen=True)
class QueryParameters:
    names: frozenset[str] = frozenset()
    # Names clients reach for that mean one of `names`, in lower case, and what to say.
    misnamed: Mapping[str, str] = field(default_factory=dict)


NONE = QueryParameters()


def declared_by(schema: Schema) -> QueryParameters:
    """The parameters a query schema reads, by the names they have in the URL."""
    names = frozenset(field.data_key or name for name, field in schema.load_fields.items())
    return QueryParameters(names, getattr(schema, "MISNAMED", {}))


def declared_on(view: Any) -> QueryParameters:
    parameters: QueryParameters = getattr(view, DECLARED, NONE)
    return parameters


def refuse_undeclared(parameters: QueryParameters) -> None:
    """422 naming every parameter in the query string that `parameters` does not declare."""
    names = request.args
    if parameters.names.issuperset(names):  # the list's hot path: one C call
        return
    messages = {
        name: [f"Unknown parameter. {_hint(name, parameters)}"]
        for name in names
        if name not in parameters.names
    }
    abort(422, messages={"query": messages})


def _hint(name: str, parameters: QueryParameters) -> str:
    key = name.lower()
    if key in parameters.misnamed:
        return parameters.misnamed[key]
    if key in parameters.names:
        return f"Did you mean {key}? Names are case-sensitive."
    close = difflib.get_close_matches(key, sorted(parameters.names), n=1)
    if close:
        return f"Did you mean {close[0]}?"
    if not parameters.names:
        return "This endpoint takes no query parameters."
    return f"This endpoint takes {', '.join(sorted(parameters.names))}."
