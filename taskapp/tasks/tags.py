"""`GET /api/<user_id>/tags`: the caller's tags, with how many tasks carry each.

Read from task_tags, which keeps every task's tags by key (taskapp.models.TaskTag),
so one statement counts them however many tasks there are. Tags that differ only in
case are one tag; it is shown as the most recently updated task carrying it spells it,
so renaming "work" to "Work" on one task shows "Work".
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import and_, func, select

from taskapp.extensions import api, db
from taskapp.models import Task, TaskTag
from taskapp.tasks.schemas import TagListSchema
from taskapp.tasks.views import PROTECTED
from taskapp.web.api import Blueprint, MethodView
from taskapp.web.openapi import ALWAYS

blp = Blueprint(
    "tags", __name__, url_prefix="/api/<user_id>/tags", description="A signed-in user's tags."
)


def init_tags(app: Flask) -> None:
    api.register_blueprint(blp)


def tag_counts(user_id: str) -> list[dict[str, Any]]:
    """The user's tags and their counts, most used first, then by key (ignoring case)."""
    carrying = and_(Task.user_id == TaskTag.user_id, Task.id == TaskTag.task_id)
    ranked = (
        select(
            TaskTag.tag_key,
            TaskTag.name,
            func.count().over(partition_by=TaskTag.tag_key).label("tasks"),
            func.row_number()
            .over(partition_by=TaskTag.tag_key, order_by=(Task.updated_at.desc(), Task.id.desc()))
            .label("newest_first"),
        )
        .join(Task, carrying)
        .where(TaskTag.user_id == user_id)
        .subquery()
    )
    rows = list(
        db.session.execute(
            select(ranked.c.tag_key, ranked.c.name, ranked.c.tasks).where(
                ranked.c.newest_first == 1
            )
        )
    )
    # Sorted here, by code point: the databases' collations would order keys differently.
    rows.sort(key=lambda row: (-row.tasks, row.tag_key))
    return [{"name": row.name, "count": row.tasks} for row in rows]


@blp.route("")
class TagCollection(MethodView):
    decorators = PROTECTED

    @blp.response(200, TagListSchema)
    @blp.error_responses(*ALWAYS)
    def get(self, user_id: str) -> dict[str, Any]:
        """List your tags, most used first, each with how many of your tasks carry it.

        Tags that differ only in case are one tag, shown as the most recently updated
        task carrying it spells it; equal counts are ordered by name, ignoring case.
        """
        return {"tags": tag_counts(user_id)}
