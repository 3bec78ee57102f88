"""The tasks blueprint: `/api/<user_id>/tasks`, one user's tasks and nobody else's.

`owner_required` has checked that `user_id` is the caller before any view runs,
and every query below filters on it.
"""

from __future__ import annotations

import uuid

from flask import Response, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select

from taskapp.auth import owner_required
from taskapp.extensions import db
from taskapp.models import Task
from taskapp.request_body import StrictJSONParser, check_request_body
from taskapp.schemas import (
    CompletionSchema,
    TaskCreateSchema,
    TaskResponseSchema,
    TaskUpdateSchema,
)
from taskapp.timestamps import utcnow

LIST_LIMIT = 100

blp = Blueprint(
    "tasks", __name__, url_prefix="/api/<user_id>/tasks", description="A signed-in user's tasks."
)


blp.ARGUMENTS_PARSER = StrictJSONParser()
blp.before_request(check_request_body)


def find_task(user_id: str, task_id: str, for_update: bool = False) -> Task:
    """The caller's task with this id, or 404: another user's task does not exist for them.

    `for_update` locks the row (PostgreSQL) until the transaction ends, so a second
    writer waits and then sees the first one's result instead of failing mid-way.
    """
    try:
        key = uuid.UUID(task_id)
    except ValueError:
        abort(422, messages={"path": {"task_id": ["Not a valid UUID."]}})
    task = db.session.get(Task, (user_id, key), with_for_update=for_update)
    if task is None:
        abort(404, message="Task not found.")
    return task


def check_if_match(task: Task) -> None:
    """412 when the client's `If-Match` names an older version: nothing is changed."""
    if request.if_match and not request.if_match.contains(task.etag.strip('"')):
        abort(412)


def single_task_headers(task: Task) -> dict:
    return {"ETag": task.etag}


@blp.route("")
class TaskCollection(MethodView):
    decorators = [owner_required]

    @blp.response(200, TaskResponseSchema(many=True))
    def get(self, user_id: str):
        """List your tasks, newest first."""
        query = (
            select(Task)
            .where(Task.user_id == user_id)
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(LIST_LIMIT)
        )
        return db.session.scalars(query).all()

    @blp.arguments(TaskCreateSchema)
    @blp.response(201, TaskResponseSchema)
    def post(self, fields: dict, user_id: str):
        """Create a task."""
        completed = fields.pop("is_completed", False)
        task = Task(user_id=user_id, created_at=utcnow(), **fields)
        task.set_completed(completed, at=task.created_at)
        db.session.add(task)
        db.session.commit()
        location = url_for("tasks.TaskItem", user_id=user_id, task_id=task.id, _external=True)
        return task, 201, {"Location": location, **single_task_headers(task)}


@blp.route("/<task_id>")
class TaskItem(MethodView):
    decorators = [owner_required]

    @blp.response(200, TaskResponseSchema)
    def get(self, user_id: str, task_id: str):
        """Get one task."""
        task = find_task(user_id, task_id)
        # Weak comparison (RFC 9110): a proxy that compresses may weaken the ETag.
        if request.if_none_match.contains_weak(task.etag.strip('"')):
            return Response(status=304, headers=single_task_headers(task))
        return task, 200, single_task_headers(task)

    @blp.arguments(TaskUpdateSchema)
    @blp.response(200, TaskResponseSchema)
    def put(self, fields: dict, user_id: str, task_id: str):
        """Change a task: only the fields sent are changed."""
        task = find_task(user_id, task_id, for_update=True)
        check_if_match(task)
        if "is_completed" in fields:
            task.set_completed(fields.pop("is_completed"))
        for name, value in fields.items():
            setattr(task, name, value)
        db.session.commit()
        return task, 200, single_task_headers(task)

    @blp.response(204)
    def delete(self, user_id: str, task_id: str):
        """Delete a task."""
        task = find_task(user_id, task_id, for_update=True)
        check_if_match(task)
        db.session.delete(task)
        db.session.commit()


@blp.route("/<task_id>/complete")
class TaskCompletion(MethodView):
    decorators = [owner_required]

    @blp.arguments(CompletionSchema, required=False)
    @blp.response(200, TaskResponseSchema)
    def patch(self, fields: dict, user_id: str, task_id: str):
        """Complete or reopen a task: toggles without a body, sets `is_completed` with one."""
        task = find_task(user_id, task_id, for_update=True)
        check_if_match(task)
        if "is_completed" in fields:
            task.set_completed(fields["is_completed"])
        elif request.get_data(cache=True).strip():
            # A body means "set": `{}` must not toggle on every retry.
            abort(422, messages={"json": {"is_completed": ["Missing data for required field."]}})
        else:
            task.set_completed(not task.is_completed)
        db.session.commit()
        return task, 200, single_task_headers(task)
