"""Due dates: `due_at` on a task, the `due_before`, `due_after` and `overdue` filters, and
the `due_at` sorts, which put tasks without a due date last in both directions.

Lists are inserted straight into the database (tests/test_listing.py's helpers) with many
tasks on the same due date and many without one, and read the way a client reads them:
every page, following `Link`, with small pages so that pages end on ties and across the
edge between the dated tasks and the undated ones.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.test_cursors import decoded, forged, page
from tests.test_listing import (
    BASE,
    assert_error,
    assert_read_in_full,
    cursor_of,
    insert_rows,
    read_all,
    row,
    url,
    varied_rows,
)

# --- the field --------------------------------------------------------------------


def test_a_task_is_created_with_a_due_date_answered_in_utc(client, auth, create_task):
    task = create_task(due_at="2026-01-17T17:00:00.5+01:00")
    assert task["due_at"] == "2026-01-17T16:00:00.500000Z"
    item = client.get(f"/api/alice/tasks/{task['id']}", headers=auth())
    assert item.json["due_at"] == "2026-01-17T16:00:00.500000Z"
    listed = client.get(url(), headers=auth()).json
    assert [each["due_at"] for each in listed] == ["2026-01-17T16:00:00.500000Z"]


def test_a_task_without_a_due_date_answers_null(client, auth, create_task):
    task = create_task()
    assert task["due_at"] is None
    assert client.get(f"/api/alice/tasks/{task['id']}", headers=auth()).json["due_at"] is None
    assert client.get(url(), headers=auth()).json[0]["due_at"] is None


@pytest.mark.parametrize("method", ["patch", "put"])
def test_a_change_sets_clears_or_keeps_the_due_date(client, auth, create_task, method):
    task = create_task(due_at="2026-01-17T09:30:00Z")
    item = f"/api/alice/tasks/{task['id']}"
    send = getattr(client, method)

    kept = send(item, json={"title": "renamed"}, headers=auth())
    assert kept.status_code == 200, kept.json
    assert kept.json["due_at"] == "2026-01-17T09:30:00.000000Z"

    moved = send(item, json={"due_at": "2026-02-01T00:00:00-05:00"}, headers=auth())
    assert moved.json["due_at"] == "2026-02-01T05:00:00.000000Z"
    assert client.get(item, headers=auth()).json["due_at"] == "2026-02-01T05:00:00.000000Z"

    cleared = send(item, json={"due_at": None}, headers=auth())
    assert cleared.status_code == 200, cleared.json
    assert cleared.json["due_at"] is None
    assert client.get(item, headers=auth()).json["due_at"] is None


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-17T09:30:00",  # no offset: its zone is a guess
        "2026-01-17",
        "17/01/2026 09:30",
        "tomorrow",
        "",
        "2026-13-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # the year 0 in UTC
        "9999-12-31T23:59:59-01:00",  # the year 10000 in UTC
        "10000-01-01T00:00:00Z",
        1768642200,
        True,
        ["2026-01-17T09:30:00Z"],
        {"at": "2026-01-17T09:30:00Z"},
    ],
)
@pytest.mark.parametrize("method", ["post", "patch", "put"])
def test_a_bad_due_date_is_422_naming_it_and_changes_nothing(
    client, auth, create_task, method, value
):
    task = create_task(due_at="2026-01-17T09:30:00Z")
    address = url() if method == "post" else f"/api/alice/tasks/{task['id']}"
    body = {"title": "x", "due_at": value} if method == "post" else {"due_at": value}
    response = getattr(client, method)(address, json=body, headers=auth())
    assert_error(response, "due_at")
    assert [each["due_at"] for each in client.get(url(), headers=auth()).json] == [
        "2026-01-17T09:30:00.000000Z"
    ]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
        ("0001-01-01T01:00:00+01:00", "0001-01-01T00:00:00.000000Z"),
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
        ("9999-12-31T22:59:59.999999-01:00", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_due_dates_at_the_first_and_last_moments_utc_holds_are_kept(
    client, auth, create_task, sent, stored
):
    task = create_task(due_at=sent)
    assert task["due_at"] == stored
    assert client.get(f"/api/alice/tasks/{task['id']}", headers=auth()).json["due_at"] == stored


def test_the_same_moment_in_two_offsets_is_one_idempotent_body(client, auth):
    headers = {**auth(), "Idempotency-Key": str(uuid.uuid4())}
    first = client.post(url(), json={"title": "t", "due_at": "2026-01-17T10:30:00+01:00"},
                        headers=headers)  # fmt: skip
    again = client.post(url(), json={"title": "t", "due_at": "2026-01-17T09:30:00Z"},
                        headers=headers)  # fmt: skip
    assert first.status_code == again.status_code == 201, again.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"]


# --- filters ----------------------------------------------------------------------

DUE = BASE + timedelta(days=3)


def dated(title, due_at, completed=False, user="alice") -> dict:
    return {**row(user, title=title, completed=completed), "due_at": due_at}


@pytest.fixture
def agenda(app):
    """Alice's tasks around DUE and around now; Bob's, due at DUE, which no filter shows her."""
    now = datetime.now(UTC)
    rows = [
        dated("just before", DUE - timedelta(microseconds=1)),
        dated("at", DUE),
        dated("at, done", DUE, completed=True),
        dated("after", DUE + timedelta(microseconds=1)),
        dated("long ago, done", now - timedelta(days=30), completed=True),
        dated("yesterday", now - timedelta(days=1)),
        dated("tomorrow", now + timedelta(days=1)),
        dated("next year", now + timedelta(days=365)),
        dated("undated", None),
        dated("undated, done", None, completed=True),
        dated("bob's", DUE, user="bob"),
    ]
    insert_rows(app, rows)
    return rows


def titles_of(client, auth, params) -> set[str]:
    response = client.get(url(params), headers=auth())
    assert response.status_code == 200, response.json
    return {task["title"] for task in response.json}


def test_due_before_is_exclusive(client, auth, agenda):
    assert titles_of(client, auth, [("due_before", DUE.isoformat())]) == {"just before"}


def test_due_after_is_inclusive(client, auth, agenda):
    assert titles_of(client, auth, [("due_after", DUE.isoformat())]) == {
        "at",
        "at, done",
        "after",
        "long ago, done",
        "yesterday",
        "tomorrow",
        "next year",
    }


def test_due_after_and_due_before_make_a_half_open_window(client, auth, agenda):
    just_after = (DUE + timedelta(microseconds=1)).isoformat()
    window = [("due_after", DUE.isoformat()), ("due_before", just_after)]
    assert titles_of(client, auth, window) == {"at", "at, done"}
    # The same moments in another offset are the same window.
    east = timezone_shifted(DUE, hours=5)
    assert titles_of(client, auth, [("due_after", east), ("due_before", east)]) == set()


def timezone_shifted(moment: datetime, hours: int) -> str:
    return moment.astimezone(timezone(timedelta(hours=hours))).isoformat()


def test_overdue_true_is_due_in_the_past_and_not_completed(client, auth, agenda):
    assert titles_of(client, auth, [("overdue", "true")]) == {
        "just before",
        "at",
        "after",
        "yesterday",
    }


def test_overdue_false_is_every_other_task(client, auth, agenda):
    overdue = titles_of(client, auth, [("overdue", "true")])
    rest = titles_of(client, auth, [("overdue", "false")])
    assert rest == {
        "at, done",
        "long ago, done",
        "tomorrow",
        "next year",
        "undated",
        "undated, done",
    }
    assert overdue | rest == titles_of(client, auth, [])
    assert not overdue & rest


def test_due_filters_combine_with_the_others(client, auth, agenda):
    params = [("overdue", "true"), ("due_after", DUE.isoformat()), ("q", "at")]
    assert titles_of(client, auth, params) == {"at"}
    assert titles_of(client, auth, [("due_after", DUE.isoformat()), ("completed", "true")]) == {
        "at, done",
        "long ago, done",
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("due_before=2026-01-17T09:30:00", "due_before"),  # no offset
        ("due_after=2026-01-17", "due_after"),
        ("due_before=yesterday", "due_before"),
        ("due_after=", "due_after"),
        ("due_before=0001-01-01T00:00:00%2B01:00", "due_before"),
        ("due_after=9999-12-31T23:59:59-01:00", "due_after"),
        ("overdue=yes", "overdue"),
        ("overdue=1", "overdue"),
        ("overdue=True", "overdue"),
        ("overdue=", "overdue"),
        ("sort=due", "sort"),
        ("sort=%2Bdue_at", "sort"),
        ("due=2026-01-17T09:30:00Z", "due"),
    ],
)
def test_a_bad_due_parameter_is_422_naming_it(client, auth, query, field):
    assert_error(client.get(f"/api/alice/tasks?{query}", headers=auth()), field)


def test_a_due_parameter_outside_the_years_utc_holds_says_so(client, auth):
    response = client.get(url([("due_after", "0001-01-01T00:00:00+01:00")]), headers=auth())
    assert response.json["errors"]["due_after"] == [
        "Must be a moment between the years 1 and 9999 in UTC."
    ]


# --- sorts and cursors ------------------------------------------------------------


def due_rows(number: int, user="alice", seed=7) -> list[dict]:
    """`varied_rows` with a third of them undated and the rest on a few due dates."""
    rows = varied_rows(number, user, seed)
    for index, each in enumerate(rows):
        each["due_at"] = None if index % 3 == 0 else DUE + timedelta(hours=index % 4)
    return rows


def in_due_order(rows, sort: str) -> list[str]:
    """Dated tasks by due date then id, in the sort's direction; then the undated, by id."""
    descending = sort.startswith("-")
    with_date = sorted(
        (task for task in rows if task["due_at"] is not None),
        key=lambda task: (task["due_at"], task["id"]),
        reverse=descending,
    )
    without = sorted(
        (task for task in rows if task["due_at"] is None),
        key=lambda task: task["id"],
        reverse=descending,
    )
    return [str(task["id"]) for task in with_date + without]


@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
@pytest.mark.parametrize("limit", [1, 2, 7, 100])
def test_paging_by_due_date_puts_undated_tasks_last_and_sees_each_once(
    app, client, auth, sort, limit
):
    rows = due_rows(40)
    insert_rows(app, rows + due_rows(10, user="bob"))
    params = [("sort", sort), ("limit", limit)]
    pages = read_all(client, auth(), params)
    assert_read_in_full(pages, in_due_order(rows, sort), params)


@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
def test_paging_a_filtered_list_by_due_date_counts_the_matches(app, client, auth, sort):
    rows = due_rows(30)
    insert_rows(app, rows)
    params = [("sort", sort), ("limit", 4), ("completed", "false")]
    pages = read_all(client, {**auth(), "Prefer": "count=exact"}, params)
    expected = in_due_order([task for task in rows if not task["is_completed"]], sort)
    assert_read_in_full(pages, expected, params, exact=True)


@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
def test_only_undated_tasks_page_by_id(app, client, auth, sort):
    rows = [dated(f"t{index}", None) for index in range(7)]
    insert_rows(app, rows)
    params = [("sort", sort), ("limit", 2)]
    assert_read_in_full(read_all(client, auth(), params), in_due_order(rows, sort), params)


@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
def test_a_cursor_in_the_undated_tasks_carries_a_null_due_date(app, client, auth, sort):
    rows = [dated("dated", DUE)] + [dated(f"undated {index}", None) for index in range(4)]
    insert_rows(app, rows)
    first = client.get(url([("sort", sort), ("limit", 2)]), headers=auth())
    cursor = decoded(cursor_of(first))
    assert cursor["v"] is None  # the page ended with the first undated task
    expected = in_due_order(rows, sort)
    assert [task["id"] for task in first.json] == expected[:2]
    rest = client.get(
        url([("sort", sort), ("limit", 2), ("cursor", cursor_of(first))]), headers=auth()
    )
    assert [task["id"] for task in rest.json] == expected[2:4]


@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
def test_a_cursor_moved_to_the_undated_tasks_by_hand_resumes_there(app, client, auth, sort):
    rows = due_rows(12)
    insert_rows(app, rows)
    real = decoded(cursor_of(client.get(url([("sort", sort), ("limit", 3)]), headers=auth())))
    undated = [task for task in rows if task["due_at"] is None]
    expected = in_due_order(rows, sort)
    resume_after = in_due_order(undated, sort)[0]
    edited = forged({**real, "v": None, "i": uuid.UUID(resume_after).hex})
    response = page(client, auth, sort, edited)
    assert response.status_code == 200, response.json
    start = expected.index(resume_after) + 1
    assert [task["id"] for task in response.json] == expected[start : start + 3]


@pytest.mark.parametrize(
    "value", ["2026-01-17T09:30:00", "0001-01-01T00:00:00+01:00", "", 5, True, [], {}]
)
@pytest.mark.parametrize("sort", ["due_at", "-due_at"])
def test_a_cursor_with_a_due_date_that_cannot_be_one_is_422(app, client, auth, sort, value):
    insert_rows(app, due_rows(6))
    real = decoded(cursor_of(client.get(url([("sort", sort), ("limit", 2)]), headers=auth())))
    assert_error(page(client, auth, sort, forged({**real, "v": value})), "cursor")


def test_a_cursor_made_without_a_due_filter_is_422_with_one(app, client, auth):
    insert_rows(app, due_rows(6))
    first = client.get(url([("sort", "due_at"), ("limit", 2)]), headers=auth())
    params = [("sort", "due_at"), ("limit", 2), ("overdue", "true")]
    later = url([*params, ("cursor", cursor_of(first))])
    assert_error(client.get(later, headers=auth()), "cursor")
