"""Cursors built by hand, and timestamps at the edges of what UTC holds.

A cursor's checksum is an unkeyed hash, so a client can decode a cursor, change
anything in it and make the checksum right again. These tests do exactly that, with
the same algorithm written out here (base64url of 16 hex digits of SHA-256, then the
JSON): every such cursor must be followed to a correct page or refused with a 422 that
names `cursor`, on both databases and on both ways a page is read (the fast JSON read
the API answers with, and the ORM query it is pinned to), never answered with a 500.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskapp.models import TITLE_MAX
from taskapp.tasks import json_reads
from taskapp.tasks.listing import CURSOR_MAX_LENGTH, InvalidCursor, ListQuery, page_query
from tests.test_listing import (
    assert_error,
    comes_after,
    cursor_of,
    in_order,
    insert_rows,
    next_url,
    read_all,
    row,
    url,
    varied_rows,
)

FIRST_MOMENT = datetime(1, 1, 1, tzinfo=UTC)
LAST_MOMENT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
# One sort per kind of key, in both directions between them; due dates, which may be
# null, in both.
SORTS = ["-created_at", "updated_at", "-priority", "title", "due_at", "-due_at"]
LIMIT = 3


# --- building cursors as a client can ---------------------------------------------


def decoded(cursor: str) -> dict:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return json.loads(raw[16:])


def sealed(body: str | bytes) -> str:
    """A cursor of `body` with its checksum made right."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    checksum = hashlib.sha256(data).hexdigest()[:16].encode()
    return base64.urlsafe_b64encode(checksum + data).rstrip(b"=").decode()


def forged(payload) -> str:
    # json.dumps escapes non-ASCII, so "\ud800" is sent as the escape JSON allows.
    return sealed(json.dumps(payload, separators=(",", ":")))


@pytest.fixture
def tasks(app):
    """Alice's rows, with ties, and with the first and last moments UTC holds; and Bob's,
    with the same keys, which no cursor of Alice's may reach."""
    rows = varied_rows(9)
    rows += [row(title="first", created_at=FIRST_MOMENT), row(title="last", created_at=LAST_MOMENT)]
    bobs = varied_rows(9, user="bob")
    due_dates = [None, FIRST_MOMENT, LAST_MOMENT, datetime(2024, 1, 1, tzinfo=UTC)]
    for index, task in enumerate(rows + bobs):
        task["due_at"] = due_dates[index % len(due_dates)]
    insert_rows(app, rows + bobs)
    return rows


def genuine(client, auth, sort) -> dict:
    """The decoded cursor of alice's first page in `sort`."""
    response = client.get(url([("sort", sort), ("limit", LIMIT)]), headers=auth())
    return decoded(cursor_of(response))


def page(client, auth, sort, cursor):
    return client.get(url([("sort", sort), ("limit", LIMIT), ("cursor", cursor)]), headers=auth())


# --- every field edited to something it cannot be -----------------------------------

TIMESTAMPS = [
    "2024-01-01T12:00:00",  # no offset
    "2024-01-01",
    "0001-01-01T00:00:00+01:00",  # the year 0 in UTC
    "9999-12-31T23:59:59-01:00",  # the year 10000 in UTC
    "2024-13-01T00:00:00Z",
    "yesterday",
    "",
    "\ud800",
    1704110400,
    1.5,
    10**30,
    None,
    True,
    ["2024-01-01T12:00:00Z"],
    {"at": "2024-01-01T12:00:00Z"},
]
PRIORITIES = [0, 6, -1, 3.5, 2**63, 10**30, True, "3", "", None, [3], {"p": 3}]
TITLES = [
    "",
    "a" * (TITLE_MAX + 1),
    "\x00",
    "milk\x00",
    "\ud800",
    "a\udfffb",
    5,
    None,
    True,
    ["milk"],
    {},
]
VALUES = {
    "-created_at": TIMESTAMPS,
    "updated_at": TIMESTAMPS,
    "-priority": PRIORITIES,
    "title": TITLES,
    # null is a due date's cursor value (the page ended among the undated tasks)
    "due_at": [value for value in TIMESTAMPS if value is not None],
    "-due_at": [value for value in TIMESTAMPS if value is not None],
}
IDS = [5, 10**30, None, True, [], {}, "", "x" * 32, "0" * 31, "0" * 33, "\ud800", "\x00" * 32]
FINGERPRINTS = [None, 5, "", "0" * 16, ["f"], {"f": "0" * 16}]


def _edits():
    """(name, sort, edit): edit(genuine payload) is a body (str or bytes) or a payload to seal."""
    for sort, values in VALUES.items():
        for value in values:
            yield f"v={value!r:.30}", sort, lambda p, value=value: {**p, "v": value}
    for sort in SORTS:
        for value in IDS:
            yield f"i={value!r:.30}", sort, lambda p, value=value: {**p, "i": value}
    for value in FINGERPRINTS:
        yield f"f={value!r:.30}", "-created_at", lambda p, value=value: {**p, "f": value}
    structural = {
        "extra key": lambda p: {**p, "x": 1},
        "no v": lambda p: {k: v for k, v in p.items() if k != "v"},
        "no i": lambda p: {k: v for k, v in p.items() if k != "i"},
        "no f": lambda p: {k: v for k, v in p.items() if k != "f"},
        "an array": lambda p: list(p.values()),
        "a string": lambda p: json.dumps(json.dumps(p)),
        "null": lambda p: None,
        "a number": lambda p: 10**400,
        "NaN": lambda p: json.dumps({**p, "v": float("nan")}),
        "Infinity": lambda p: json.dumps({**p, "v": float("inf")}),
        "a duplicate key": lambda p: json.dumps(p)[:-1] + ',"v":"9999-12-31T23:59:59-01:00"}',
        "trailing text": lambda p: json.dumps(p) + "x",
        "empty": lambda p: "",
        "arrays 1400 deep": lambda p: "[" * 1400,
        "a value 900 deep": lambda p: json.dumps({**p, "v": "@"}).replace(
            '"@"', "[" * 900 + "]" * 900
        ),
        "not UTF-8": lambda p: json.dumps(p).encode()[:-1] + b"\xff}",
        "the longest cursor plus one": lambda p: json.dumps({**p, "x": "a" * CURSOR_MAX_LENGTH}),
    }
    for name, edit in structural.items():
        yield name, "-created_at", edit


EDITS = list(_edits())


def forgery(client, auth, sort, edit) -> str:
    changed = edit(genuine(client, auth, sort))
    return sealed(changed) if isinstance(changed, (str, bytes)) else forged(changed)


@pytest.mark.parametrize(
    ("sort", "edit"),
    [(sort, edit) for _, sort, edit in EDITS],
    ids=[f"{sort}:{name}" for name, sort, _ in EDITS],
)
def test_a_cursor_edited_and_resealed_is_422_naming_it(client, auth, tasks, sort, edit):
    assert_error(page(client, auth, sort, forgery(client, auth, sort, edit)), "cursor")


@pytest.mark.parametrize("sort", sorted(VALUES))
def test_the_fast_read_and_the_orm_query_refuse_the_same_cursors(app, client, auth, tasks, sort):
    for edit in [edit for _, edited, edit in EDITS if edited == sort]:
        query = ListQuery(
            user_id="alice", sort=sort, limit=LIMIT, cursor=forgery(client, auth, sort, edit)
        )
        with app.app_context():
            with pytest.raises(InvalidCursor):
                json_reads.task_page(query)
            with pytest.raises(InvalidCursor):
                page_query(query)


# --- any cursor at all: a correct page or a 422 ------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
OFFSETS = st.integers(-24 * 60 + 1, 24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
MOMENTS = st.one_of(
    st.datetimes(timezones=OFFSETS).map(datetime.isoformat),
    st.sampled_from([FIRST_MOMENT, LAST_MOMENT]).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # no offset
)
SORT_VALUES = {
    "-created_at": MOMENTS,
    "updated_at": MOMENTS,
    "-priority": st.integers(-2, 8),
    "title": st.one_of(st.text(max_size=TITLE_MAX + 2), st.sampled_from(["apple", "milk", "zoo"])),
    "due_at": st.one_of(st.none(), MOMENTS),
    "-due_at": st.one_of(st.none(), MOMENTS),
}


def due_walk(sort: str, due_at: datetime | None, task_id: uuid.UUID) -> tuple[int, int, int]:
    """Where a (due date, id) sits in the walk of a due_at sort, as numbers: the dated
    tasks by due date then id in the sort's direction, then the undated ones by id."""
    sign = -1 if sort.startswith("-") else 1
    if due_at is None:
        return (1, 0, sign * task_id.int)
    microseconds = (due_at - FIRST_MOMENT) // timedelta(microseconds=1)
    return (0, sign * microseconds, sign * task_id.int)


def in_sort_order(rows, sort) -> list[str]:
    """The ids of `rows` as the list orders them for `sort`."""
    if sort.lstrip("-") != "due_at":
        return in_order(rows, sort)
    walked = sorted(rows, key=lambda task: due_walk(sort, task["due_at"], task["id"]))
    return [str(task["id"]) for task in walked]


@st.composite
def cursors(draw, real: dict, ids: list[str], sort: str):
    """A cursor for `sort`: each field kept, changed to a plausible value, or to any JSON."""
    payload = dict(real)
    payload["v"] = draw(st.one_of(st.just(real["v"]), SORT_VALUES[sort], JSON))
    payload["i"] = draw(
        st.one_of(
            st.sampled_from(ids),
            st.uuids().map(lambda value: value.hex),
            st.uuids().map(str),
            JSON,
        )
    )
    payload["f"] = draw(st.one_of(st.just(real["f"]), st.just(real["f"]), JSON))
    for key in draw(st.sets(st.sampled_from(["v", "i", "f"]), max_size=1)):
        del payload[key]
    payload.update(draw(st.dictionaries(st.text(max_size=2), JSON, max_size=1)))
    return forged(payload)


def expected_page(rows, sort, payload) -> list[str] | None:
    """The page after the cursor's row as Python orders `rows`, when its values are ones
    the list could hold; None for titles, whose order is the database's collation."""
    if sort.lstrip("-") == "title":
        return None
    if sort.lstrip("-") == "due_at":
        due_at = payload["v"] and datetime.fromisoformat(payload["v"]).astimezone(UTC)
        last = due_walk(sort, due_at, uuid.UUID(payload["i"]))
        after = [task for task in rows if due_walk(sort, task["due_at"], task["id"]) > last]
        return in_sort_order(after, sort)[:LIMIT]
    key = payload["v"]
    if sort.lstrip("-") != "priority":
        key = datetime.fromisoformat(key).astimezone(UTC)
    last = {sort.lstrip("-"): key, "id": uuid.UUID(payload["i"])}
    after = [task for task in rows if comes_after(sort, task, last)]
    return in_order(after, sort)[:LIMIT]


@pytest.mark.parametrize("sort", SORTS)
def test_any_resealed_cursor_gets_a_correct_page_or_a_422(client, auth, tasks, sort):
    real = genuine(client, auth, sort)
    ids = [task["id"].hex for task in tasks]
    whole = [task["id"] for task in client.get(url([("sort", sort)]), headers=auth()).json]
    assert whole == in_sort_order(tasks, sort)  # lowercase ASCII titles: any collation agrees
    answered = []

    @given(cursor=cursors(real, ids, sort))
    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,  # the same cursors on every run
        suppress_health_check=list(HealthCheck),
    )
    def followed_or_refused(cursor):
        response = page(client, auth, sort, cursor)
        if response.status_code == 422:
            assert_error(response, "cursor")
            return
        assert response.status_code == 200, response.get_data(as_text=True)
        got = [task["id"] for task in response.json]
        expected = expected_page(tasks, sort, decoded(cursor))
        if expected is not None:
            assert got == expected
        else:  # a run of the list as the database orders it
            start = whole.index(got[0]) if got else len(whole)
            assert got == whole[start : start + LIMIT]
        answered.append(cursor)

    followed_or_refused()
    assert answered, "no forged cursor was followed: the test proves only refusals"


# --- genuine cursors at the edges --------------------------------------------------


def test_the_cursor_after_the_longest_title_is_followed(client, auth, create_task):
    # JSON writes each control character as six (\u0001): the longest cursor there is.
    for _ in range(2):
        create_task(title="\x01" * TITLE_MAX)
    first = client.get(url([("sort", "title"), ("limit", 1)]), headers=auth())
    assert len(cursor_of(first)) == CURSOR_MAX_LENGTH
    second = client.get(next_url(first), headers=auth())
    assert second.status_code == 200, second.json
    assert [task["id"] for task in first.json + second.json] == [
        task["id"] for task in client.get(url([("sort", "title")]), headers=auth()).json
    ]


@pytest.mark.parametrize(
    "sort", ["-created_at", "created_at", "-updated_at", "updated_at", "-due_at", "due_at"]
)
def test_paging_through_the_first_and_last_moments_sees_every_task_once(client, auth, tasks, sort):
    pages = read_all(client, auth(), [("sort", sort), ("limit", 2)])
    assert [task["id"] for p in pages for task in p.json] == in_sort_order(tasks, sort)


# --- updated_since and the date headers --------------------------------------------


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:59:59+01:00"],
)
def test_updated_since_outside_the_years_utc_holds_is_422_saying_so(client, auth, moment):
    response = client.get(url([("updated_since", moment)]), headers=auth())
    assert_error(response, "updated_since")
    assert response.json["errors"]["updated_since"] == [
        "Must be a moment between the years 1 and 9999 in UTC."
    ]


@pytest.mark.parametrize(
    ("since", "after"),
    [
        ("0001-01-01T00:00:00Z", "all but the first"),
        ("0001-01-01T01:00:00+01:00", "all but the first"),
        ("9999-12-31T23:59:59.999998Z", "the last"),
        ("9999-12-31T23:59:59.999999Z", "none"),
        ("9999-12-31T22:59:59.999999-01:00", "none"),
    ],
)
def test_updated_since_at_the_first_and_last_moments_is_answered_exactly(
    client, auth, tasks, since, after
):
    expected = [t for t in tasks if t["updated_at"] > datetime.fromisoformat(since)]
    params = [("updated_since", since), ("sort", "updated_at"), ("limit", 2)]
    pages = read_all(client, {**auth(), "Prefer": "count=exact"}, params)
    assert [task["id"] for p in pages for task in p.json] == in_order(expected, "updated_at")
    assert pages[0].headers["X-Total-Count"] == str(len(expected))
    assert len(expected) == {"all but the first": len(tasks) - 1, "the last": 1, "none": 0}[after]


@pytest.mark.parametrize("header", ["If-Modified-Since", "If-Unmodified-Since"])
@pytest.mark.parametrize(
    "value",
    [
        "Mon, 01 Jan 0001 00:00:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "0001-01-01T00:00:00+01:00",
        "tomorrow",
    ],
)
def test_date_headers_the_api_does_not_read_change_nothing(
    client, auth, create_task, header, value
):
    task = create_task()
    item = f"/api/alice/tasks/{task['id']}"
    assert client.get(url(), headers={**auth(), header: value}).status_code == 200
    assert client.get(item, headers={**auth(), header: value}).status_code == 200
    changed = client.patch(item, json={"priority": 2}, headers={**auth(), header: value})
    assert changed.status_code == 200, changed.json
