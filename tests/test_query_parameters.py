"""Query strings: a parameter an endpoint does not take is a 422 that names it.

A misspelt filter that was ignored would answer the wrong question with a 200
(`?search=milk` listing every task), so every API operation refuses what it does not
declare, with a hint where the meaning is plain. Declared parameters, the cursor and
repeated parameters work as before; the probes and the document take any.
"""

import pytest

from tests.support import bearer, hs256_token

TASKS = "/api/alice/tasks"
LIST_PARAMETERS = [
    "completed",
    "cursor",
    "due_after",
    "due_before",
    "limit",
    "overdue",
    "priority",
    "q",
    "sort",
    "tag",
    "updated_since",
]
# A body each write accepts, so the query string is the only thing wrong
# (`PATCH …/complete` takes none: it toggles).
BODIES = {"POST": {"title": "Planted"}, "PUT": {"title": "Changed"}, "PATCH": {"title": "Changed"}}


def assert_unknown(response, *names):
    """A 422 in the error shape whose `errors` name exactly `names`; returns the messages."""
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.json
    assert body["detail"] == "The request failed validation."
    assert set(body["errors"]) == set(names), body
    for name in names:
        assert body["errors"][name][0].startswith("Unknown parameter."), body
    return {name: body["errors"][name] for name in names}


@pytest.fixture
def task(create_task):
    return create_task(title="Buy milk", description="2 litres", priority=2)


def api_operations(app, task_id):
    """Every (method, path) the app serves under /api, with alice's path and task."""
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = rule.rule.replace("<user_id>", "alice").replace("<task_id:task_id>", task_id)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


def test_every_api_operation_refuses_an_unknown_parameter_and_changes_nothing(
    app, client, auth, task
):
    url = f"{TASKS}/{task['id']}"
    etag = client.get(url, headers=auth()).headers["ETag"]
    operations = list(api_operations(app, task["id"]))
    assert len(operations) >= 7  # every one, and any added later
    for method, path in operations:
        body = None if path.endswith("/complete") else BODIES.get(method)
        response = client.open(f"{path}?colour=blue", method=method, json=body, headers=auth())
        assert_unknown(response, "colour")
    assert client.get(url, headers=auth()).headers["ETag"] == etag
    assert client.get(TASKS, headers=auth()).json == [task]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("search", "Did you mean q?"),
        ("status", "Did you mean completed (true or false)?"),
        ("order", "Use sort, with a - prefix for descending: sort=-created_at."),
        ("page", "Pages are not numbered: follow the Link header's next URL (its cursor)."),
        ("per_page", "Did you mean limit?"),
        ("priorities", "Did you mean priority?"),
        ("update_since", "Did you mean updated_since?"),
        ("Q", "Did you mean q? Names are case-sensitive."),
        ("tag_ids", "Did you mean tag?"),
        ("colour", f"This endpoint takes {', '.join(LIST_PARAMETERS)}."),
        ("due", "Use due_before and due_after (ISO 8601 with an offset), or overdue=true."),
        ("due_date", "Use due_before and due_after (ISO 8601 with an offset), or overdue=true."),
    ],
)
def test_unknown_list_parameter_says_what_to_send(client, auth, task, name, hint):
    messages = assert_unknown(client.get(f"{TASKS}?{name}=x", headers=auth()), name)
    assert messages[name] == [f"Unknown parameter. {hint}"]


def test_search_is_refused_instead_of_listing_every_task(client, auth, task, create_task):
    create_task(title="Call mum")
    assert_unknown(client.get(f"{TASKS}?search=milk", headers=auth()), "search")
    assert client.get(f"{TASKS}?q=milk", headers=auth()).json == [task]


def test_every_unknown_parameter_is_named_once(client, auth, task):
    response = client.get(
        f"{TASKS}?status=completed&order=desc&tag_ids=1&tag_ids=2&q=milk", headers=auth()
    )
    messages = assert_unknown(response, "status", "order", "tag_ids")
    assert len(messages["tag_ids"]) == 1


def test_endpoint_without_parameters_says_it_takes_none(client, auth, task):
    response = client.get(f"{TASKS}/{task['id']}?foo=1", headers=auth())
    assert assert_unknown(response, "foo") == {
        "foo": ["Unknown parameter. This endpoint takes no query parameters."]
    }


def test_head_is_checked_as_get(client, auth, task):
    assert client.head(f"{TASKS}/{task['id']}?foo=1", headers=auth()).status_code == 422
    assert client.head(f"{TASKS}?search=milk", headers=auth()).status_code == 422
    assert client.head(f"{TASKS}?q=milk", headers=auth()).status_code == 200


def test_empty_query_string_and_bare_question_mark_are_fine(client, auth, task):
    assert client.get(f"{TASKS}/{task['id']}?", headers=auth()).status_code == 200
    assert client.get(f"{TASKS}?", headers=auth()).json == [task]


def test_a_value_less_unknown_parameter_is_refused_too(client, auth, task):
    assert_unknown(client.get(f"{TASKS}/{task['id']}?debug", headers=auth()), "debug")


def test_token_is_checked_before_the_query_string(client, task):
    response = client.get(f"{TASKS}?search=milk")
    assert response.status_code == 401
    expired = bearer(hs256_token("alice", lifetime=-3600))
    assert client.get(f"{TASKS}?search=milk", headers=expired).status_code == 401


def test_another_users_path_is_403_whatever_the_query_string(client, auth, task):
    response = client.get(f"{TASKS}/{task['id']}?foo=1", headers=auth("bob"))
    assert response.status_code == 403


def test_every_documented_parameter_is_accepted_at_once(client, auth, task):
    query = (
        "limit=5&completed=false&priority=1&priority=2&q=milk"
        "&updated_since=2020-01-01T00:00:00Z&sort=-priority"
    )
    response = client.get(f"{TASKS}?{query}", headers=auth())
    assert response.status_code == 200
    assert response.json == [task]


def test_the_due_date_parameters_are_accepted_at_once(client, auth, create_task):
    late = create_task(title="Late", due_at="2020-01-01T12:00:00Z")
    create_task(title="Someday")
    query = (
        "due_after=2020-01-01T12:00:00Z&due_before=2020-01-02T00:00:00%2B02:00"
        "&overdue=true&sort=-due_at"
    )
    response = client.get(f"{TASKS}?{query}", headers=auth())
    assert response.status_code == 200, response.json
    assert response.json == [late]


def test_list_accepts_exactly_the_parameters_it_documents(client):
    spec = client.get("/openapi.json").json
    documented = spec["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    assert sorted(p["name"] for p in documented if p["in"] == "query") == LIST_PARAMETERS


def test_following_link_with_its_cursor_still_works(client, auth, create_task):
    made = [create_task(title=f"task {n}")["id"] for n in range(3)]
    seen, url = [], f"{TASKS}?limit=1&priority=1"
    while url:
        response = client.get(url, headers=auth())
        assert response.status_code == 200, response.json
        seen += [t["id"] for t in response.json]
        link = response.headers.get("Link")
        url = link[1 : link.index(">")].removeprefix("http://localhost") if link else None
    assert seen == made[::-1]


def test_repeated_parameters_behave_as_before(client, auth, create_task):
    low, high = create_task(priority=1), create_task(priority=5)
    both = client.get(f"{TASKS}?priority=1&priority=5", headers=auth()).json
    assert [t["id"] for t in both] == [high["id"], low["id"]]
    # A single-valued parameter given twice: the first value counts, as it always has.
    first = client.get(f"{TASKS}?limit=1&limit=100", headers=auth()).json
    assert [t["id"] for t in first] == [high["id"]]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs/"])
def test_probes_and_documents_ignore_query_strings(client, path):
    # Not the API: monitors add cache-busters that must not fail a probe.
    assert client.get(f"{path}?_=1700000000").status_code == 200
