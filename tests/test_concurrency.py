"""Writers racing on one task over real HTTP: each gets a clear answer, never a 500."""

import json
import threading
import urllib.error
import urllib.request
from collections import Counter

import pytest

WRITERS = 20

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer


def race(requests):
    """Send each (method, url, body, headers) from its own thread at once; count the statuses."""
    return Counter(race_in_order(requests))


def race_in_order(requests) -> list:
    """As `race`, but the status of each request, in the order given."""
    barrier = threading.Barrier(len(requests))
    statuses = [None] * len(requests)

    def send(index, method, url, body, headers):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json", **headers}
        )
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                statuses[index] = response.status
        except urllib.error.HTTPError as error:
            statuses[index] = error.code

    threads = [threading.Thread(target=send, args=(i, *r)) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.fixture
def task_url(http_server, create_task):
    return f"{http_server}/api/alice/tasks/{create_task()['id']}"


def test_racing_deletes_delete_once(task_url, auth):
    headers = auth()
    statuses = race([("DELETE", task_url, None, headers)] * WRITERS)
    assert statuses[204] == 1
    assert set(statuses) <= {204, 404, 412}


def test_racing_puts_with_one_if_match_let_exactly_one_through(client, auth, task_url):
    path = task_url.split("://", 1)[1].split("/", 1)[1]
    etag = client.get(f"/{path}", headers=auth()).headers["ETag"]
    requests = [
        ("PUT", task_url, {"title": f"writer {n}"}, {**auth(), "If-Match": etag})
        for n in range(WRITERS)
    ]
    statuses = race_in_order(requests)
    assert Counter(statuses) == Counter({200: 1, 412: WRITERS - 1})
    winner = statuses.index(200)
    assert client.get(f"/{path}", headers=auth()).json["title"] == f"writer {winner}"


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer"], indirect=True)
def test_racing_toggles_on_postgresql_all_apply_in_turn(client, auth, task_url):
    statuses = race([("PATCH", f"{task_url}/complete", None, auth())] * WRITERS)
    assert statuses == Counter({200: WRITERS})
    path = task_url.split("://", 1)[1].split("/", 1)[1]
    assert client.get(f"/{path}", headers=auth()).json["is_completed"] is (WRITERS % 2 == 1)
