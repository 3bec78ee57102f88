"""Marshmallow schemas: every request body is validated here, every task dumped here.

JSON types are strict: `"true"` is not a boolean and `"2"`, `2.5` or `true` are
not priorities. A field the server owns, or one nobody knows, is refused.
"""

import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from taskapp.models import (
    DESCRIPTION_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TAG_MAX,
    TAGS_MAX,
    TITLE_MAX,
    tag_key,
)
from taskapp.tasks.listing import CURSOR_MAX_LENGTH, DEFAULT_SORT, SORTS
from taskapp.timestamps import in_utc

SERVER_OWNED_FIELDS = ("id", "user_id", "created_at", "updated_at", "completed_at")


class Text(fields.String):
    """A string PostgreSQL can store: no NUL character, no lone UTF-16 surrogate."""

    default_error_messages = {
        "nul": "Must not contain NUL characters.",
        "encoding": "Must be valid Unicode text.",
    }

    def __init__(self, **kwargs: Any) -> None:
        # Tell the OpenAPI document too, so generated clients and fuzzers know.
        kwargs["metadata"] = {"pattern": r"^[^\u0000]*$", **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("nul")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.make_error("encoding") from None
        return text


class Title(Text):
    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


class StrictBoolean(fields.Boolean):
    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, bool):  # bool is an int to Python, not to JSON
            raise self.make_error("invalid")
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON (and JSON Schema) has one number type: 4.0 is 4
        return super()._deserialize(value, attr, data, **kwargs)


class UTCTimestamp(fields.DateTime):
    """ISO 8601 in UTC with a `Z`, e.g. 2026-01-17T09:30:00.123456Z."""

    def _serialize(
        self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any
    ) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class TaskResponseSchema(Schema):
    id = fields.UUID(required=True)
    user_id = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    is_completed = fields.Boolean(required=True)
    priority = fields.Integer(required=True)
    tags = fields.List(fields.String(), required=True, metadata={"description": "`[]` when none."})
    due_at = UTCTimestamp(required=True, allow_none=True)
    completed_at = UTCTimestamp(required=True, allow_none=True)
    created_at = UTCTimestamp(required=True)
    updated_at = UTCTimestamp(required=True)


# The title rule for the OpenAPI document, where "1 to 255 characters after trimming"
# cannot be a maxLength: optional whitespace, 1-255 characters that start and end
# with a non-space, optional whitespace, and no NUL anywhere.
# Whitespace is spelled out as the characters str.strip() removes: `\s` means
# less in the ECMAScript regexes of JSON Schema (U+001C-U+001F, for one).
SPACE = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TITLE_PATTERN = (
    rf"^[{SPACE}]*[^{SPACE}\u0000](?:[^\u0000]{{0,{TITLE_MAX - 2}}}[^{SPACE}\u0000])?[{SPACE}]*$"
)


def _title_length(title: str) -> None:
    # A function, not validate.Length: the document's bounds come from TITLE_PATTERN.
    if not 1 <= len(title) <= TITLE_MAX:
        raise ValidationError(f"Must be 1 to {TITLE_MAX} characters after trimming.")


def _title(**kwargs: Any) -> Title:
    return Title(
        validate=_title_length,
        metadata={"description": "Surrounding whitespace is removed.", "pattern": TITLE_PATTERN},
        **kwargs,
    )


# A tag: 1 to TAG_MAX characters after trimming, none of them a control character
# (Unicode category Cc: C0, DEL and C1), surrounding whitespace allowed and removed.
CONTROL = r"\u0000-\u001f\u007f-\u009f"
TAG_PATTERN = (
    rf"^[{SPACE}]*[^{SPACE}{CONTROL}](?:[^{CONTROL}]{{0,{TAG_MAX - 2}}}[^{SPACE}{CONTROL}])?"
    rf"[{SPACE}]*$"
)


class Tag(Title):
    """One tag, trimmed: 1 to TAG_MAX characters with no control character."""

    default_error_messages = {
        "length": f"Must be 1 to {TAG_MAX} characters after trimming.",
        "control": "Must not contain control characters.",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {"pattern": TAG_PATTERN, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        tag = super()._deserialize(value, attr, data, **kwargs)
        if not 1 <= len(tag) <= TAG_MAX:
            raise self.make_error("length")
        if any(unicodedata.category(character) == "Cc" for character in tag):
            raise self.make_error("control")
        return tag


def _distinct_ignoring_case(tags: list[str]) -> None:
    seen: dict[str, str] = {}
    for tag in tags:
        key = tag_key(tag)
        if key in seen:
            raise ValidationError(f"Tags must differ ignoring case: {seen[key]!r} and {tag!r}.")
        seen[key] = tag


def _tags(**kwargs: Any) -> fields.List[str]:
    return fields.List(
        Tag(),
        validate=[validate.Length(max=TAGS_MAX), _distinct_ignoring_case],
        error_messages={"null": "Must be an array of tags: send [] to remove them all."},
        metadata={
            "description": f"At most {TAGS_MAX}, kept in this order; no two the same "
            "ignoring case. `[]` removes them all.",
            "uniqueItems": True,
        },
        **kwargs,
    )


def _priority(**kwargs: Any) -> StrictInteger:
    return StrictInteger(validate=validate.Range(min=PRIORITY_MIN, max=PRIORITY_MAX), **kwargs)


class Moment(fields.AwareDateTime):
    """ISO 8601 with an offset, read as the same moment in UTC: a naive time is refused
    (its zone is a guess), and so is one UTC cannot hold (taskapp.timestamps.in_utc)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> datetime:
        if not isinstance(value, str):  # JSON has no date type: 1704110400 is not one
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return in_utc(moment)
        except ValueError as error:
            raise ValidationError(str(error)) from None


def _due_at() -> Moment:
    return Moment(
        allow_none=True,
        metadata={
            "description": "ISO 8601 with an offset (e.g. `2026-01-17T17:00:00+01:00`), "
            "answered in UTC; `null` clears it."
        },
    )


class _TaskBodySchema(Schema):
    title = _title()
    description = Text(allow_none=True, validate=validate.Length(max=DESCRIPTION_MAX))
    is_completed = StrictBoolean()
    priority = _priority()
    tags = _tags()
    due_at = _due_at()

    @pre_load
    def refuse_server_owned_fields(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            owned = [name for name in SERVER_OWNED_FIELDS if name in data]
            if owned:
                raise ValidationError({name: ["Read-only field."] for name in owned})
        return data


class TaskCreateSchema(_TaskBodySchema):
    title = _title(required=True)
    priority = _priority(load_default=PRIORITY_MIN)


class TaskUpdateSchema(_TaskBodySchema):
    """Every field optional: only the fields sent are changed."""


class CompletionSchema(Schema):
    is_completed = StrictBoolean(
        metadata={"description": "Set to this value; without a body the state is toggled."}
    )


def _in_utc_range(moment: datetime) -> None:
    # 0001-01-01T00:00:00+14:00 is a valid ISO 8601 moment that UTC cannot hold; a
    # cursor's timestamps pass the same check (taskapp.tasks.listing).
    try:
        in_utc(moment)
    except ValueError as error:
        raise ValidationError(str(error)) from None


class TaskListQuerySchema(Schema):
    """Query parameters of the task list; each bad value is a 422 naming it, and so is a
    parameter that is not one of these (taskapp.web.request_query)."""

    # What frontends send when they mean one of these, and what the 422 says to send.
    MISNAMED: ClassVar[dict[str, str]] = {
        "search": "Did you mean q?",
        "query": "Did you mean q?",
        "status": "Did you mean completed (true or false)?",
        "done": "Did you mean completed (true or false)?",
        "order": "Use sort, with a - prefix for descending: sort=-created_at.",
        "order_by": "Did you mean sort?",
        "sort_by": "Did you mean sort?",
        "page": "Pages are not numbered: follow the Link header's next URL (its cursor).",
        "offset": "Pages are not numbered: follow the Link header's next URL (its cursor).",
        "per_page": "Did you mean limit?",
        "page_size": "Did you mean limit?",
        "since": "Did you mean updated_since?",
        "tags": "Did you mean tag? Repeat it for each tag: tag=work&tag=home.",
        "due": "Use due_before and due_after (ISO 8601 with an offset), or overdue=true.",
        "due_date": "Use due_before and due_after (ISO 8601 with an offset), or overdue=true.",
    }

    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=100),
        metadata={"description": "Tasks per page, 1 to 100."},
    )
    cursor = fields.String(
        validate=validate.Length(min=1, max=CURSOR_MAX_LENGTH),
        metadata={"description": "The next page's cursor, from the previous page's `Link`."},
    )
    completed = fields.Boolean(
        truthy={"true"}, falsy={"false"}, metadata={"description": "`true` or `false`."}
    )
    priorities = fields.List(
        fields.Integer(validate=validate.Range(min=PRIORITY_MIN, max=PRIORITY_MAX)),
        data_key="priority",
        metadata={"description": "Repeatable: `priority=4&priority=5`."},
    )
    q = Text(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Case-insensitive text in the title or description."},
    )
    updated_since = fields.AwareDateTime(
        format="iso",
        validate=_in_utc_range,
        metadata={"description": "ISO 8601 with an offset: only tasks changed after it."},
    )
    tags = fields.List(
        Tag(),
        data_key="tag",
        validate=validate.Length(max=TAGS_MAX),
        metadata={
            "description": "Repeatable: `tag=work&tag=home` lists the tasks carrying every "
            f"one, ignoring case; at most {TAGS_MAX}."
        },
    )
    due_before = fields.AwareDateTime(
        format="iso",
        validate=_in_utc_range,
        metadata={"description": "ISO 8601 with an offset: only tasks due before it."},
    )
    due_after = fields.AwareDateTime(
        format="iso",
        validate=_in_utc_range,
        metadata={"description": "ISO 8601 with an offset: only tasks due at or after it."},
    )
    overdue = fields.Boolean(
        truthy={"true"},
        falsy={"false"},
        metadata={
            "description": "`true`: only tasks due before now and not completed; "
            "`false`: every other task (no due date, due later, or completed)."
        },
    )
    sort = fields.String(
        load_default=DEFAULT_SORT,
        validate=validate.OneOf(list(SORTS)),
        metadata={
            "description": "Order; `id` breaks ties. Tasks without a due date come last "
            "in both `due_at` orders."
        },
    )


class TagCountSchema(Schema):
    name = fields.String(
        required=True,
        metadata={
            "description": "As the most recently updated task carrying it spells it "
            "(tags that differ only in case are one tag)."
        },
    )
    count = fields.Integer(required=True, metadata={"description": "How many tasks carry it."})


class TagListSchema(Schema):
    tags = fields.List(
        fields.Nested(TagCountSchema),
        required=True,
        metadata={"description": "Most used first; equal counts by name, ignoring case."},
    )
