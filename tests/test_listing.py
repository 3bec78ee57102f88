"""The task list: keyset paging in every sort order, filters, and query validation.

Large lists are inserted straight into the real database (one bulk INSERT through
the app's own session) with chosen timestamps, often deliberately equal, so the
`id` tie-breaker is exercised; behaviour that is about the API (creating, changing
and deleting tasks between pages, the sync flow) goes through the API.

The expected order is always computed here in Python from the rows: the sort key,
then the id, both ascending or both descending. Titles are lowercase ASCII so that
order is the same under any collation. A list is read the way a client reads it:
the first page, then the URL in each `Link: <...>; rel="next"` until there is none.

`X-Total-Count` comes free on a first page that holds every match, and otherwise only
with `Prefer: count=exact` (`EXACT`), which the answer confirms in `Preference-Applied`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from itertools import count
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from sqlalchemy import insert

from taskapp.extensions import db
from taskapp.models import ChangeCounter, Task

SORTS = [
    "-created_at",
    "created_at",
    "-updated_at",
    "updated_at",
    "-priority",
    "priority",
    "-title",
    "title",
]
BASE = datetime(2024, 1, 1, 12, tzinfo=UTC)  # every inserted timestamp is in the past
WORDS = ["apple", "bank", "call", "dentist", "email", "fix", "gym", "laundry", "milk", "zoo"]
LINK = re.compile(r'<(?P<url>[^<>]+)>; rel="next"')
EXACT = {"Prefer": "count=exact"}
TASK_FIELDS = {
    "id",
    "user_id",
    "title",
    "description",
    "is_completed",
    "priority",
    "tags",
    "due_at",
    "completed_at",
    "created_at",
    "updated_at",
}


# --- rows in the database -------------------------------------------------------


def row(user="alice", *, title="task", description=None, priority=1, completed=False,
        created_at=BASE, updated_at=None) -> dict:  # fmt: skip
    """One tasks row, every column given, as `insert_rows` takes it."""
    updated_at = updated_at or created_at
    return {
        "user_id": user,
        "id": uuid.uuid4(),
        "title": title,
        "description": description,
        "is_completed": completed,
        "priority": priority,
        "completed_at": updated_at if completed else None,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def varied_rows(number: int, user="alice", seed=4) -> list[dict]:
    """Rows whose every sort key has many ties: few distinct seconds, words, priorities."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(number):
        created_at = BASE + timedelta(seconds=rnd.randrange(number // 3))
        rows.append(
            row(
                user,
                title=rnd.choice(WORDS),
                description=rnd.choice([None, "plain note", "Save 50% & MORE today"]),
                priority=rnd.randint(1, 5),
                completed=rnd.random() < 0.4,
                created_at=created_at,
                updated_at=created_at + timedelta(minutes=rnd.choice([0, 0, 1, 90])),
            )
        )
    return rows


def insert_rows(app, rows: list[dict]) -> None:
    with app.app_context():
        # Around the ORM, so around the change feed's numbering: the rows take the next
        # numbers of their user's counter, as a write through the API would.
        numbered = []
        for row_ in rows:
            counter = db.session.get(ChangeCounter, row_["user_id"])
            if counter is None:
                counter = ChangeCounter(user_id=row_["user_id"], last_seq=0, purged_seq=0)
                db.session.add(counter)
            counter.last_seq += 1
            numbered.append({**row_, "change_seq": counter.last_seq})
        db.session.execute(insert(Task), numbered)
        db.session.commit()


def from_json(task: dict) -> dict:
    """A task the API returned, shaped like the rows above (for sorting)."""
    return {
        **task,
        "id": uuid.UUID(task["id"]),
        "created_at": datetime.fromisoformat(task["created_at"]),
        "updated_at": datetime.fromisoformat(task["updated_at"]),
    }


# --- the expected order ---------------------------------------------------------


def position(sort: str, task: dict) -> tuple:
    """Where a task sits in an ascending walk: its sort key, then its id."""
    return (task[sort.lstrip("-")], task["id"])


def in_order(rows, sort: str) -> list[str]:
    """The ids of `rows` as the list must return them for `sort`."""
    ordered = sorted(rows, key=lambda task: position(sort, task), reverse=sort.startswith("-"))
    return [str(task["id"]) for task in ordered]


def comes_after(sort: str, task: dict, last: dict) -> bool:
    """Whether `task` sorts after `last`, the row a page ended with."""
    if sort.startswith("-"):
        return position(sort, task) < position(sort, last)
    return position(sort, task) > position(sort, last)


# --- reading lists like a client ------------------------------------------------


def url(params=(), user="alice") -> str:
    query = urlencode(list(params))
    return f"/api/{user}/tasks?{query}" if query else f"/api/{user}/tasks"


def next_url(response) -> str | None:
    """The `rel="next"` URL of an RFC 8288 `Link` header, or None when there is none."""
    header = response.headers.get("Link")
    if header is None:
        return None
    match = LINK.fullmatch(header)
    assert match, header
    return match["url"]


def cursor_of(response) -> str:
    return parse_qs(urlsplit(next_url(response)).query)["cursor"][0]


def assert_link_keeps(response, params, user="alice") -> None:
    """The next link is this list's absolute URL with every parameter but the cursor kept."""
    parts = urlsplit(next_url(response))
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://localhost/api/{user}/tasks"
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name != "cursor"]
    assert sorted(kept) == sorted((name, str(value)) for name, value in params)
    assert [name for name, _ in query].count("cursor") == 1


def read_all(client, headers, params, user="alice") -> list:
    """Every page of a list, following `Link` from the first page to the last."""
    pages, address = [], url(params, user)
    while address:
        assert len(pages) < 200, "the list never ends"
        response = client.get(address, headers=headers)
        assert response.status_code == 200, response.json
        pages.append(response)
        address = next_url(response)
    return pages


def ids(pages) -> list[str]:
    return [task["id"] for page in pages for task in page.json]


def assert_read_in_full(pages, expected: list[str], params, exact=False) -> None:
    """`pages` hold the tasks `expected`, in order, and each but the last links to the
    next keeping `params`. Every page counts them all when `exact` (the pages were asked
    with `Prefer: count=exact`); otherwise only a first page that is the last one does."""
    assert ids(pages) == expected
    for page in pages[:-1]:
        assert_link_keeps(page, params)
    assert "Link" not in pages[-1].headers
    if exact:
        assert all(page.headers["X-Total-Count"] == str(len(expected)) for page in pages)
        assert all(page.headers["Preference-Applied"] == "count=exact" for page in pages)
    elif len(pages) == 1:
        assert pages[0].headers["X-Total-Count"] == str(len(expected))
    else:
        assert not any("X-Total-Count" in page.headers for page in pages)
    if not exact:
        assert not any("Preference-Applied" in page.headers for page in pages)


def assert_error(response, field):
    """422 with the JSON error shape and `errors` naming `field`."""
    assert response.status_code == 422, response.get_data(as_text=True)
    assert isinstance(response.json["detail"], str)
    assert field in response.json["errors"], response.json


# --- paging ---------------------------------------------------------------------


@pytest.mark.parametrize("sort", SORTS)
def test_paging_through_250_tasks_sees_each_once_in_order(app, client, auth, sort):
    rows = varied_rows(250)
    insert_rows(app, rows + varied_rows(30, user="bob", seed=5))
    for limit, exact in ((100, False), (7, False), (100, True)):
        params = [("sort", sort), ("limit", limit)]
        pages = read_all(client, {**auth(), **(EXACT if exact else {})}, params)
        assert_read_in_full(pages, in_order(rows, sort), params, exact)  # 250 when counted
        assert len(pages) == math.ceil(250 / limit)
        assert all(len(page.json) == limit for page in pages[:-1])


@pytest.mark.parametrize("sort", SORTS)
def test_paging_a_filtered_list_keeps_every_parameter_and_counts_the_matches(
    app, client, auth, sort
):
    rows = varied_rows(250)
    insert_rows(app, rows)
    matching = [
        task
        for task in rows
        if task["priority"] in (4, 5)
        and not task["is_completed"]
        and "50% & more" in (task["description"] or "").lower()
    ]
    assert len(matching) > 14
    params = [
        ("priority", 4),
        ("completed", "false"),
        ("q", "50% & more"),
        ("priority", 5),
        ("sort", sort),
        ("limit", 7),
    ]
    pages = read_all(client, {**auth(), **EXACT}, params)
    assert_read_in_full(pages, in_order(matching, sort), params, exact=True)


@pytest.mark.parametrize("sort", SORTS)
def test_paging_stays_exact_while_tasks_are_inserted_and_deleted_between_pages(
    app, client, auth, sort
):
    """Between pages: two rows with random keys are inserted, one task is POSTed, a
    task not yet seen is deleted and, every third page, the last row seen too.

    A new task must appear exactly when it sorts after the page's last row; a
    deleted unseen task must not appear; everything else is seen once, in order.
    """
    rnd = random.Random(sort)
    rows = {task["id"]: task for task in varied_rows(250)}
    insert_rows(app, list(rows.values()))
    initial = set(rows)
    must_see = set(rows)
    behind_cursor, deleted_unseen, posted = set(), set(), set()
    seen: list[str] = []
    address = url([("sort", sort), ("limit", 25)])
    for page_number in count():
        response = client.get(address, headers=auth())
        assert response.status_code == 200
        seen += [task["id"] for task in response.json]
        address = next_url(response)
        if address is None:
            break
        last = rows[uuid.UUID(seen[-1])]

        new_rows = [
            row(
                title=rnd.choice(WORDS),
                priority=rnd.randint(1, 5),
                created_at=BASE + timedelta(seconds=rnd.randrange(83)),
            )
            for _ in range(2)
        ]
        insert_rows(app, new_rows)
        created = client.post(
            url(),
            json={"title": rnd.choice(WORDS), "priority": rnd.randint(1, 5)},
            headers=auth(),
        )
        assert created.status_code == 201
        posted.add(created.json["id"])
        for task in [*new_rows, from_json(created.json)]:
            rows[task["id"]] = task
            (must_see if comes_after(sort, task, last) else behind_cursor).add(task["id"])

        unseen = sorted(must_see - {uuid.UUID(task_id) for task_id in seen})
        victims = [rnd.choice(unseen)]
        if page_number % 3 == 1:
            victims.append(last["id"])
        for victim in victims:
            assert client.delete(f"{url()}/{victim}", headers=auth()).status_code == 204
        must_see.discard(victims[0])  # the last row seen was seen: it stays in `seen`
        deleted_unseen.add(str(victims[0]))

    assert must_see - initial, "no new task sorted after a cursor: the test proves nothing"
    assert behind_cursor, "no new task sorted before a cursor: the test proves nothing"
    assert seen == in_order([rows[task_id] for task_id in must_see], sort)
    assert not deleted_unseen & set(seen)
    assert not {str(task_id) for task_id in behind_cursor} & set(seen)
    if sort in ("-created_at", "-updated_at"):  # posted now: newer than any cursor
        assert not posted & set(seen)


@pytest.mark.parametrize("sort", SORTS)
def test_ties_on_the_sort_key_are_broken_by_id_with_none_skipped_or_repeated(
    app, client, auth, sort
):
    same = [row(title="milk", priority=3, created_at=BASE) for _ in range(40)]
    earlier = [row(title="apple", priority=1, created_at=BASE - timedelta(hours=1))]
    later = [row(title="zoo", priority=5, created_at=BASE + timedelta(hours=1))]
    insert_rows(app, same + earlier + later)
    pages = read_all(client, auth(), [("sort", sort), ("limit", 7)])
    tied = sorted(str(task["id"]) for task in same)  # UUID order is hex order
    if sort.startswith("-"):
        expected = [str(later[0]["id"]), *reversed(tied), str(earlier[0]["id"])]
    else:
        expected = [str(earlier[0]["id"]), *tied, str(later[0]["id"])]
    assert ids(pages) == expected
    assert ids(pages) == in_order(same + earlier + later, sort)


def test_no_parameters_returns_the_100_newest_first_and_the_total_on_request(app, client, auth):
    rows = varied_rows(150)
    insert_rows(app, rows)
    response = client.get(url(), headers=auth())
    assert response.status_code == 200
    assert [task["id"] for task in response.json] == in_order(rows, "-created_at")[:100]
    assert "X-Total-Count" not in response.headers  # a full page cannot tell
    assert_link_keeps(response, [])
    counted = client.get(url(), headers={**auth(), **EXACT})
    assert counted.json == response.json
    assert counted.headers["X-Total-Count"] == "150"
    assert counted.headers["Preference-Applied"] == "count=exact"


def test_the_body_is_a_plain_json_array_of_tasks_even_when_paged(client, auth, create_task):
    for title in ("one", "two", "three"):
        create_task(title=title)
    response = client.get(url([("limit", 2)]), headers=auth())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert isinstance(response.json, list)
    assert [set(task) for task in response.json] == [TASK_FIELDS, TASK_FIELDS]
    assert [task["title"] for task in response.json] == ["three", "two"]
    assert "Link" in response.headers


# --- the total -------------------------------------------------------------------


def test_a_first_page_that_holds_every_match_counts_itself_without_a_count(
    app, client, auth, statements
):
    insert_rows(app, varied_rows(9))
    statements.clear()
    response = client.get(url([("limit", 10)]), headers=auth())
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "9"
    assert "Preference-Applied" not in response.headers
    assert response.headers["Vary"] == "Prefer"
    assert len(statements) == 1  # the page, nothing else: one round trip
    assert "total" not in statements[0][0]  # json_reads labels its COUNT so


def test_a_full_first_page_and_later_pages_have_no_total_unless_asked(
    app, client, auth, statements
):
    insert_rows(app, varied_rows(10))
    first = client.get(url([("limit", 5)]), headers=auth())  # full: more may follow
    later = client.get(next_url(first), headers=auth())  # the last page, but not the first
    for page in (first, later):
        assert page.status_code == 200
        assert len(page.json) == 5
        assert "X-Total-Count" not in page.headers
        assert "Preference-Applied" not in page.headers
    assert not any("total" in statement for statement, _autocommit in statements)


@pytest.mark.parametrize(
    "prefer",
    [
        ["count=exact"],
        ["return=minimal, count=exact"],
        ["Count=Exact"],
        ["count = exact; foo=bar"],
        ["return=minimal", "count=exact"],
    ],
)
def test_prefer_count_exact_counts_every_page_and_says_so(app, client, auth, prefer):
    insert_rows(app, varied_rows(12) + varied_rows(4, user="bob"))
    headers = [*auth().items(), *(("Prefer", value) for value in prefer)]
    first = client.get(url([("limit", 5)]), headers=headers)
    later = client.get(next_url(first), headers=headers)
    small = client.get(url([("limit", 100)]), headers=headers)  # the page proves it too
    for page in (first, later, small):
        assert page.status_code == 200
        assert page.headers["X-Total-Count"] == "12"
        assert page.headers["Preference-Applied"] == "count=exact"


@pytest.mark.parametrize("prefer", ["count=estimated", "count", "return=minimal", "count=exactly"])
def test_other_preferences_are_not_counted(app, client, auth, prefer):
    insert_rows(app, varied_rows(12))
    response = client.get(url([("limit", 5)]), headers={**auth(), "Prefer": prefer})
    assert response.status_code == 200
    assert "X-Total-Count" not in response.headers
    assert "Preference-Applied" not in response.headers


# --- filters --------------------------------------------------------------------


@pytest.fixture
def catalogue(app):
    """Alice's tasks for the filter tests, and bob's, which match every filter too."""
    specs = [  # title, description, priority, completed
        ("Buy milk", "2 litres", 1, False),
        ("Call the BANK", None, 4, False),
        ("bank statement", "file it", 5, True),
        ("Notes", "pay the Bank on friday", 2, False),
        ("Crème brûlée", "dessert for the ÉTÉ party", 3, False),
        ("100%", "done", 2, True),
        ("1x0", None, 2, False),
        ("snake_case", None, 5, False),
        ("snakeXcase", None, 4, True),
        ("C:\\temp", "clean it", 1, False),
    ]
    alice = [
        row(
            title=title,
            description=description,
            priority=priority,
            completed=completed,
            created_at=BASE + timedelta(minutes=n),
        )
        for n, (title, description, priority, completed) in enumerate(specs)
    ]
    bob = [
        row(
            "bob",
            title=title,
            description=description,
            priority=priority,
            completed=completed,
            created_at=BASE + timedelta(minutes=n, seconds=30),
        )
        for n, (title, description, priority, completed) in enumerate(specs)
    ]
    insert_rows(app, alice + bob)
    by_title = {task["title"]: task for task in alice}
    return by_title, bob


def titles(client, auth, params, user="alice") -> list[str]:
    """The titles of one page, checking that X-Total-Count counts exactly them."""
    response = client.get(url(params, user), headers=auth(user))
    assert response.status_code == 200, response.json
    assert response.headers["X-Total-Count"] == str(len(response.json))
    assert "Link" not in response.headers
    return [task["title"] for task in response.json]


def newest_first(*names: str) -> list[str]:
    return list(reversed(names))  # the catalogue was created in the order listed


def test_completed_filter_returns_only_tasks_in_that_state(client, auth, catalogue):
    assert titles(client, auth, [("completed", "true")]) == newest_first(
        "bank statement", "100%", "snakeXcase"
    )
    assert titles(client, auth, [("completed", "false")]) == newest_first(
        "Buy milk", "Call the BANK", "Notes", "Crème brûlée", "1x0", "snake_case", "C:\\temp"
    )


def test_priority_filter_takes_one_value_or_several(client, auth, catalogue):
    assert titles(client, auth, [("priority", 4)]) == newest_first("Call the BANK", "snakeXcase")
    assert titles(client, auth, [("priority", 5), ("priority", 1)]) == newest_first(
        "Buy milk", "bank statement", "snake_case", "C:\\temp"
    )
    assert titles(client, auth, [("priority", 3), ("priority", 3)]) == ["Crème brûlée"]


def test_q_matches_title_and_description_ignoring_case(client, auth, catalogue):
    assert titles(client, auth, [("q", "bank")]) == newest_first(
        "Call the BANK", "bank statement", "Notes"
    )
    assert titles(client, auth, [("q", "FILE IT")]) == ["bank statement"]
    assert titles(client, auth, [("q", "Litres")]) == ["Buy milk"]


def test_q_matches_non_ascii_text_ignoring_case(client, auth, catalogue):
    assert titles(client, auth, [("q", "brûlée")]) == ["Crème brûlée"]
    assert titles(client, auth, [("q", "BRÛLÉE")]) == ["Crème brûlée"]
    assert titles(client, auth, [("q", "été party")]) == ["Crème brûlée"]


def test_q_treats_percent_underscore_and_backslash_literally(client, auth, catalogue):
    assert titles(client, auth, [("q", "100%")]) == ["100%"]
    assert titles(client, auth, [("q", "%")]) == ["100%"]
    assert titles(client, auth, [("q", "1_0")]) == []
    assert titles(client, auth, [("q", "_")]) == ["snake_case"]
    assert titles(client, auth, [("q", "snake_case")]) == ["snake_case"]
    assert titles(client, auth, [("q", "\\t")]) == ["C:\\temp"]


def test_q_that_matches_nothing_is_an_empty_array_without_link(client, auth, catalogue):
    response = client.get(url([("q", "no such words"), ("limit", 1)]), headers=auth())
    assert response.status_code == 200
    assert response.json == []
    assert response.headers["X-Total-Count"] == "0"
    assert "Link" not in response.headers


def test_updated_since_returns_only_tasks_updated_strictly_after_it(client, auth, catalogue):
    by_title, _ = catalogue
    since = by_title["Notes"]["updated_at"].isoformat()  # BASE + 3 min, "+00:00"
    after_notes = ["Crème brûlée", "100%", "1x0", "snake_case", "snakeXcase", "C:\\temp"]
    assert titles(client, auth, [("updated_since", since)]) == newest_first(*after_notes)

    task = by_title["Buy milk"]  # created first, at BASE
    put = client.put(f"{url()}/{task['id']}", json={"priority": 2}, headers=auth())
    assert put.status_code == 200
    expected = newest_first("Buy milk", *after_notes)
    assert titles(client, auth, [("updated_since", since)]) == expected
    same_moment_in_utc_plus_2 = "2024-01-01T14:03:00+02:00"
    assert titles(client, auth, [("updated_since", same_moment_in_utc_plus_2)]) == expected
    assert titles(client, auth, [("updated_since", put.json["updated_at"])]) == []


def test_filters_combine(client, auth, catalogue):
    not_done_high = [("completed", "false"), ("priority", 4), ("priority", 5)]
    assert titles(client, auth, not_done_high) == newest_first("Call the BANK", "snake_case")
    assert titles(client, auth, [*not_done_high, ("q", "bank")]) == ["Call the BANK"]
    assert titles(client, auth, [("completed", "true"), ("q", "bank"), ("priority", 5)]) == [
        "bank statement"
    ]
    since = (BASE + timedelta(minutes=4)).isoformat()
    assert titles(client, auth, [("updated_since", since), ("priority", 2)]) == newest_first(
        "100%", "1x0"
    )
    assert titles(
        client, auth, [("updated_since", since), ("completed", "false"), ("q", "snake")]
    ) == ["snake_case"]


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("q", "bank")],
        [("q", "%")],
        [("priority", 4), ("priority", 5)],
        [("completed", "true")],
        [("updated_since", "2000-01-01T00:00:00Z")],
        [("completed", "false"), ("q", "e"), ("sort", "title")],
    ],
    ids=lambda params: urlencode(params) or "no-filter",
)
def test_filters_never_reveal_another_users_tasks(client, auth, catalogue, params):
    by_title, bob = catalogue
    response = client.get(url(params), headers=auth())
    assert response.status_code == 200
    assert response.json
    assert {task["user_id"] for task in response.json} == {"alice"}
    assert not {task["id"] for task in response.json} & {str(task["id"]) for task in bob}
    assert response.headers["X-Total-Count"] == str(len(response.json))
    assert len(response.json) <= len(by_title)


def test_updated_since_sync_flow_returns_exactly_what_changed(client, auth, create_task):
    for n in range(12):
        create_task(title=f"task {n}")
    pages = read_all(client, auth(), [("limit", 5)])
    first_sync = ids(pages)
    assert len(first_sync) == 12
    watermark = max(task["updated_at"] for page in pages for task in page.json)

    edited, completed, reprioritised = first_sync[2], first_sync[5], first_sync[9]
    tasks = url()
    assert client.put(f"{tasks}/{edited}", json={"title": "new"}, headers=auth()).status_code == 200
    assert client.patch(f"{tasks}/{completed}/complete", headers=auth()).status_code == 200
    put = client.put(f"{tasks}/{reprioritised}", json={"priority": 5}, headers=auth())
    assert put.status_code == 200
    added = create_task(title="added later")["id"]

    delta = read_all(client, {**auth(), **EXACT}, [("updated_since", watermark), ("limit", 2)])
    assert sorted(ids(delta)) == sorted([edited, completed, reprioritised, added])
    assert all(page.headers["X-Total-Count"] == "4" for page in delta)
    changes = {task["id"]: task for page in delta for task in page.json}
    assert changes[edited]["title"] == "new"
    assert changes[completed]["is_completed"] is True
    assert changes[reprioritised]["priority"] == 5

    next_watermark = max(task["updated_at"] for task in changes.values())
    assert ids(read_all(client, auth(), [("updated_since", next_watermark)])) == []


# --- bad parameters -------------------------------------------------------------

BAD_PARAMETERS = [
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=-1", "limit"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("completed=yes", "completed"),
    ("completed=1", "completed"),
    ("completed=TRUE", "completed"),
    ("priority=0", "priority"),
    ("priority=6", "priority"),
    ("priority=x", "priority"),
    ("priority=4&priority=6", "priority"),
    ("sort=id", "sort"),
    ("sort=-foo", "sort"),
    ("updated_since=2026-01-17T09:30:00", "updated_since"),
    ("updated_since=yesterday", "updated_since"),
    # Valid ISO 8601, but outside the years UTC (and Python) can hold.
    ("updated_since=0001-01-01T00:00:00%2B14:00", "updated_since"),
    ("updated_since=9999-12-31T23:59:59-14:00", "updated_since"),
    ("q=", "q"),
    (f"q={'a' * 201}", "q"),
    ("cursor=not-a-cursor", "cursor"),
    ("cursor=%21%21%21%21", "cursor"),
    (f"cursor={base64.urlsafe_b64encode(bytes(range(90))).decode()}", "cursor"),
    (f"cursor={base64.urlsafe_b64encode(b'0123456789abcdef{}').decode()}", "cursor"),
]


@pytest.mark.parametrize(
    ("query", "field"), BAD_PARAMETERS, ids=[query[:40] for query, _ in BAD_PARAMETERS]
)
def test_a_bad_parameter_is_422_naming_it(client, auth, query, field):
    assert_error(client.get(f"{url()}?{query}", headers=auth()), field)


def test_boundary_values_are_accepted(client, auth, create_task):
    create_task()
    for params in ([("limit", 1)], [("limit", 100)], [("q", "a" * 200)]):
        assert client.get(url(params), headers=auth()).status_code == 200


@pytest.fixture
def first_page(app, client, auth):
    """A page of alice's list (limit 2, default sort) that has a next page."""
    insert_rows(app, varied_rows(9))
    response = client.get(url([("limit", 2)]), headers=auth())
    assert next_url(response)
    return response


def test_a_tampered_cursor_is_422(client, auth, first_page):
    cursor = cursor_of(first_page)
    assert client.get(url([("limit", 2), ("cursor", cursor)]), headers=auth()).status_code == 200
    for index in range(0, len(cursor) - 1, 7):  # the last character may be padding bits only
        flipped = cursor[:index] + ("B" if cursor[index] == "A" else "A") + cursor[index + 1 :]
        response = client.get(url([("limit", 2), ("cursor", flipped)]), headers=auth())
        assert_error(response, "cursor")


def reseal(cursor: str, value) -> str:
    """The cursor with another last-row value and a checksum recomputed for it.

    The checksum is only SHA-256, so any client can do this: the server must still
    refuse a value that cannot be this sort's key.
    """
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    payload = {**json.loads(raw[16:]), "v": value}  # 16 hex digits of checksum, then JSON
    body = json.dumps(payload, separators=(",", ":"))
    resealed = hashlib.sha256(body.encode()).hexdigest()[:16] + body
    return base64.urlsafe_b64encode(resealed.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("-created_at", "2024-01-01T12:00:00"),  # no offset
        ("-created_at", "0001-01-01T00:00:00+14:00"),  # before year 1 in UTC
        ("updated_at", "9999-12-31T23:59:59-14:00"),  # after year 9999 in UTC
        ("-created_at", 5),
        ("priority", "abc"),
        ("priority", [1]),
        ("priority", None),
        ("title", {"a": 1}),
        ("title", 10**30),
    ],
)
def test_a_resealed_cursor_with_a_value_of_the_wrong_kind_is_422(app, client, auth, sort, value):
    insert_rows(app, varied_rows(9))
    cursor = cursor_of(client.get(url([("sort", sort), ("limit", 2)]), headers=auth()))
    forged = reseal(cursor, value)
    response = client.get(url([("sort", sort), ("limit", 2), ("cursor", forged)]), headers=auth())
    assert_error(response, "cursor")


def test_a_cursor_from_another_users_list_is_422(app, client, auth, first_page):
    insert_rows(app, varied_rows(9, user="bob"))
    bobs_page = client.get(url([("limit", 2)], user="bob"), headers=auth("bob"))
    response = client.get(url([("limit", 2), ("cursor", cursor_of(bobs_page))]), headers=auth())
    assert_error(response, "cursor")


@pytest.mark.parametrize(
    "changed",
    [
        [("sort", "created_at")],
        [("sort", "-priority")],
        [("completed", "true")],
        [("priority", 3)],
        [("q", "milk")],
        [("updated_since", "2000-01-01T00:00:00Z")],
    ],
    ids=lambda params: urlencode(params),
)
def test_a_cursor_used_with_another_sort_or_other_filters_is_422(client, auth, first_page, changed):
    params = [("limit", 2), *changed, ("cursor", cursor_of(first_page))]
    assert_error(client.get(url(params), headers=auth()), "cursor")
