"""The OpenAPI document: committed, in step with the code, and true to what the API does."""

import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from taskapp.tasks.schemas import SPACE, TITLE_PATTERN
from tests.support import HS_SECRET, ROOT

COMMITTED = ROOT / "openapi.json"


def test_committed_document_matches_the_code(app):
    result = app.test_cli_runner().invoke(args=["openapi", "print"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(COMMITTED.read_text()), (
        "openapi.json is out of date: run `make openapi` and commit it"
    )


def test_document_is_openapi_3_1_with_bearer_security(client):
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]


def test_every_operation_documents_its_errors_with_the_error_schema(client):
    spec = client.get("/openapi.json").json
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            documented = set(operation["responses"])
            assert {"401", "403", "429", "503"} <= documented, (method, path)
    error = spec["components"]["responses"]["UNAUTHORIZED"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/Error"}
    assert spec["components"]["schemas"]["Error"]["required"] == ["detail"]


def test_list_documents_its_paging_headers(client):
    spec = client.get("/openapi.json").json
    headers = spec["paths"]["/api/{user_id}/tasks"]["get"]["responses"]["200"]["headers"]
    assert {"Link", "X-Total-Count", "Preference-Applied"} <= set(headers)


def test_patch_changes_a_task_as_put_does_and_both_are_documented(client):
    item = client.get("/openapi.json").json["paths"]["/api/{user_id}/tasks/{task_id}"]
    body = {"$ref": "#/components/schemas/TaskUpdate"}
    for method in ("patch", "put"):
        assert item[method]["requestBody"]["content"]["application/json"]["schema"] == body
        assert set(item[method]["responses"]) == set(item["put"]["responses"])
        assert "ETag" in item[method]["responses"]["200"]["headers"]
    assert "PATCH" in item["put"]["description"]


def test_no_content_is_documented_without_content(client):
    item = client.get("/openapi.json").json["paths"]["/api/{user_id}/tasks/{task_id}"]
    assert "content" not in item["delete"]["responses"]["204"]


def test_docs_page_is_served_with_its_assets_from_the_app(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html
    assert "https://" not in html  # nothing loaded from a CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        with client.get(f"/docs/{asset}") as response:
            assert response.status_code == 200
            assert len(response.data) > 1000


EXAMPLES_PER_OPERATION = 25


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_api_conforms_to_its_document(make_app, auth):
    """Generated requests, valid and not, on every operation: no 5xx, each answer documented.

    A bounded number of examples per operation, as alice with a real token and
    on her own path (on another user's path everything is a documented 403).
    """
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    headers = auth("alice", lifetime=3600)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,  # the same examples on every run: CI never flickers
        )
        def conforms(case):
            if case.path_parameters and "user_id" in case.path_parameters:
                case.path_parameters["user_id"] = "alice"
            if case.query:
                # A cursor only the server can make; its checks are in test_listing.py.
                case.query.pop("cursor", None)
                # Likewise the change feed's token: tests/test_changes.py.
                case.query.pop("since", None)
            case.call_and_validate(headers=headers)

        conforms()


def test_documented_title_whitespace_is_what_the_server_trims():
    whitespace = re.compile(f"[{SPACE}]")
    assert all(
        bool(whitespace.fullmatch(chr(code))) == chr(code).isspace() for code in range(0x110000)
    )
    title = re.compile(TITLE_PATTERN)
    assert title.match("\u3000 Buy milk \x1d")
    assert not title.match("\x1d\r\n ")
    assert not title.match("x" * 256)
