"""ETags on single tasks: `If-None-Match` saves a download, `If-Match` stops a lost update."""

import pytest

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer


@pytest.fixture
def task_url(create_task):
    return f"/api/alice/tasks/{create_task(title='Original')['id']}"


def etag_of(client, auth, url):
    return client.get(url, headers=auth()).headers["ETag"]


def test_every_single_task_response_carries_its_etag(client, auth, task_url):
    etag = etag_of(client, auth, task_url)
    updated = client.put(task_url, json={"title": "New"}, headers=auth())
    assert updated.headers["ETag"] != etag
    assert updated.headers["ETag"] == etag_of(client, auth, task_url)
    completed = client.patch(f"{task_url}/complete", headers=auth())
    assert completed.headers["ETag"] not in (etag, updated.headers["ETag"])
    patched = client.patch(task_url, json={"priority": 3}, headers=auth())
    assert patched.headers["ETag"] not in (etag, updated.headers["ETag"], completed.headers["ETag"])
    assert patched.headers["ETag"] == etag_of(client, auth, task_url)


def test_etag_changes_when_the_task_changes(client, auth, task_url):
    before = etag_of(client, auth, task_url)
    client.put(task_url, json={"priority": 4}, headers=auth())
    assert etag_of(client, auth, task_url) != before


def test_if_none_match_compares_weakly(client, auth, task_url):
    etag = etag_of(client, auth, task_url)
    response = client.get(task_url, headers={**auth(), "If-None-Match": f"W/{etag}"})
    assert response.status_code == 304


def test_if_none_match_with_an_old_etag_returns_the_task(client, auth, task_url):
    old = etag_of(client, auth, task_url)
    client.put(task_url, json={"title": "New"}, headers=auth())
    response = client.get(task_url, headers={**auth(), "If-None-Match": old})
    assert response.status_code == 200
    assert response.json["title"] == "New"


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("patch", "", {"title": "Lost update"}),
        ("put", "", {"title": "Lost update"}),
        ("patch", "/complete", None),
        ("delete", "", None),
    ],
)
def test_stale_if_match_is_412_and_changes_nothing(client, auth, task_url, method, suffix, body):
    stale = etag_of(client, auth, task_url)
    client.put(task_url, json={"description": "someone else's edit"}, headers=auth())
    current = client.get(task_url, headers=auth()).json
    response = getattr(client, method)(
        task_url + suffix, json=body, headers={**auth(), "If-Match": stale}
    )
    assert response.status_code == 412
    assert isinstance(response.json["detail"], str)
    assert client.get(task_url, headers=auth()).json == current


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"),
    [
        ("patch", "", {"title": "Edited"}, 200),
        ("put", "", {"title": "Edited"}, 200),
        ("patch", "/complete", None, 200),
        ("delete", "", None, 204),
    ],
)
def test_current_if_match_lets_the_write_through(
    client, auth, task_url, method, suffix, body, status
):
    etag = etag_of(client, auth, task_url)
    response = getattr(client, method)(
        task_url + suffix, json=body, headers={**auth(), "If-Match": etag}
    )
    assert response.status_code == status


def test_if_match_star_lets_the_write_through(client, auth, task_url):
    response = client.put(task_url, json={"title": "Any"}, headers={**auth(), "If-Match": "*"})
    assert response.status_code == 200
    assert response.json["title"] == "Any"


@pytest.mark.parametrize("method", ["patch", "put"])
def test_if_match_on_another_users_task_is_still_404(client, auth, task_url, method):
    bobs_url = task_url.replace("/api/alice/", "/api/bob/")
    response = client.open(
        bobs_url, method=method, json={"title": "x"}, headers={**auth("bob"), "If-Match": "*"}
    )
    assert response.status_code == 404
