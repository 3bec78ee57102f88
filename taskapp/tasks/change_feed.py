"""`GET /api/<user_id>/tasks/changes`: what changed in the caller's tasks since a token.

The data and its guarantee are taskapp.tasks.changes'; this is the endpoint: its query,
its answer's shape, and its errors. It is protected, counted and refused exactly as
the task endpoints are (taskapp.tasks.views.PROTECTED).

`/changes` is a fixed segment, so Werkzeug matches it before `/<task_id>` whatever
the order the routes were added in: `GET /tasks/changes` never reads as a task id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Flask
from marshmallow import Schema, fields, validate
from webargs.flaskparser import abort  # flask-smorest's abort, typed

from taskapp.extensions import api
from taskapp.tasks.changes import (
    TOKEN_MAX_LENGTH,
    ChangePage,
    InvalidToken,
    TokenExpired,
    changes_after,
    decode_token,
    encode_token,
)
from taskapp.tasks.schemas import TaskResponseSchema, UTCTimestamp
from taskapp.tasks.views import PROTECTED
from taskapp.web.api import Blueprint, MethodView
from taskapp.web.openapi import ALWAYS

LIMIT_MAX = 1000
DEFAULT_LIMIT = 500
EXPIRED = (
    "This token is older than the deletions the server keeps (or not one of its own): "
    "sync again from nothing, without since, and replace every task you hold."
)

blp = Blueprint(
    "changes",
    __name__,
    url_prefix="/api/<user_id>/tasks",
    description="What changed in a signed-in user's tasks: for clients that keep a copy.",
)


class ChangesQuerySchema(Schema):
    """Query parameters of the change feed."""

    MISNAMED: ClassVar[dict[str, str]] = {
        "cursor": "Did you mean since (the previous answer's next)?",
        "token": "Did you mean since (the previous answer's next)?",
        "after": "Did you mean since (the previous answer's next)?",
        "updated_since": "The change feed takes since, the previous answer's next.",
        "per_page": "Did you mean limit?",
        "page_size": "Did you mean limit?",
    }

    since = fields.String(
        validate=validate.Length(min=1, max=TOKEN_MAX_LENGTH),
        metadata={
            "description": "The previous answer's `next`. Without it the feed starts "
            "from nothing: every current task, as upserts."
        },
    )
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=LIMIT_MAX),
        metadata={"description": f"Changes per answer, 1 to {LIMIT_MAX}."},
    )


class UpsertChangeSchema(Schema):
    op = fields.String(required=True, validate=validate.OneOf(["upsert"]))
    task = fields.Nested(
        TaskResponseSchema,
        required=True,
        metadata={"description": "The task as it is now: store it, replacing any copy."},
    )


class DeleteChangeSchema(Schema):
    op = fields.String(required=True, validate=validate.OneOf(["delete"]))
    id = fields.UUID(
        required=True, metadata={"description": "The deleted task's id: remove it, if held."}
    )
    deleted_at = UTCTimestamp(required=True, metadata={"description": "When it was deleted."})


# Each change is one of these, told apart by `op`: a union in the OpenAPI document (and
# so in the typed client), which a marshmallow field cannot say by itself.
CHANGE_SCHEMAS = {"UpsertChange": UpsertChangeSchema, "DeleteChange": DeleteChangeSchema}
UPSERT, DELETE = UpsertChangeSchema(), DeleteChangeSchema()


class ChangeFeedSchema(Schema):
    changes = fields.List(
        fields.Raw(
            metadata={
                "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in CHANGE_SCHEMAS]
            }
        ),
        required=True,
        metadata={"description": "In the order they happened; a task at most once."},
    )
    next = fields.String(
        required=True, metadata={"description": "The token of the next request's `since`."}
    )
    has_more = fields.Boolean(
        required=True,
        metadata={"description": "Whether more changes wait: ask again at once with `next`."},
    )


def init_change_feed(app: Flask) -> None:
    for name, schema in CHANGE_SCHEMAS.items():
        api.spec.components.schema(name, schema=schema)
    api.register_blueprint(blp)


@blp.route("/changes")
class TaskChanges(MethodView):
    decorators = PROTECTED

    @blp.arguments(ChangesQuerySchema(), location="query")
    @blp.response(200, ChangeFeedSchema)
    @blp.error_responses(*ALWAYS, 410, 422)
    def get(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        """What changed in your tasks since a token, oldest first.

        Apply each change in order: `upsert` stores the task (replacing any copy with
        its id), `delete` removes the task with its `id` (if held). Then ask again with
        `since` set to the answer's `next`: at once while `has_more`, later to poll.
        A task changed several times since the token appears once, as it is now.
        A client that applies every answer this way holds exactly the server's tasks,
        even while other requests write. 410 means the token is older than the
        deletions the server keeps: start again without `since`.
        """
        start = None
        if "since" in args:
            try:
                start = decode_token(user_id, args["since"])
            except InvalidToken:
                abort(422, messages={"query": {"since": ["Not a valid token of this feed."]}})
        try:
            page = changes_after(user_id, start, args["limit"])
        except TokenExpired:
            abort(410, message=EXPIRED)
        return feed(user_id, page)


def feed(user_id: str, page: ChangePage) -> dict[str, Any]:
    """The answer, for ChangeFeedSchema to dump (each change already dumped by its own)."""
    changes: list[dict[str, Any]] = []
    for change in page.changes:
        if change.task is not None:
            changes.append(UPSERT.dump({"op": "upsert", "task": change.task}))
        elif change.tombstone is not None:
            tombstone = change.tombstone
            deleted = {"op": "delete", "id": tombstone.task_id, "deleted_at": tombstone.deleted_at}
            changes.append(DELETE.dump(deleted))
    return {
        "changes": changes,
        "next": encode_token(user_id, page.next),
        "has_more": page.more,
    }
