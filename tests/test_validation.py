"""Request bodies: what TaskCreate, TaskUpdate and PATCH /complete accept and refuse.

Every refused request is checked three ways: its status, its JSON error shape
(`detail`, and `errors` naming the field where there is one), and that it left
no trace: alice's tasks read back exactly as they were before it.
"""

import http.client
import json
import uuid
from urllib.parse import urlsplit

import pytest

TASKS = "/api/alice/tasks"
BODY_LIMIT = 64 * 1024


def assert_error(response, status, field=None):
    """The response is `status` with the JSON error shape; `errors` names `field` if given."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.json
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if field is not None:
        assert field in body["errors"], body
    return body


class Writer:
    """Sends bodies to one write endpoint as alice, and snapshots her tasks around it."""

    def __init__(self, client, headers, method, url):
        self.client = client
        self.headers = headers
        self.method = method
        self.url = url
        self.before = self.tasks()

    def tasks(self):
        listing = self.client.get(TASKS, headers=self.headers)
        assert listing.status_code == 200
        return listing.json

    def send(self, body=None, *, raw=None, content_type="application/json"):
        data = json.dumps(body) if raw is None else raw
        return self.client.open(
            self.url, method=self.method, data=data, content_type=content_type, headers=self.headers
        )

    def stored(self, response):
        """The task the successful `response` returned, as a fresh GET reads it."""
        url = f"{TASKS}/{response.json['id']}"
        return self.client.get(url, headers=self.headers).json

    def assert_nothing_changed(self):
        assert self.tasks() == self.before


@pytest.fixture
def original(create_task):
    """Alice's existing task, which no refused request may change."""
    return create_task(title="Original", description="Keep me", priority=2)


@pytest.fixture
def creator(client, auth, original):
    return Writer(client, auth(), "POST", TASKS)


@pytest.fixture
def completer(client, auth, original):
    return Writer(client, auth(), "PATCH", f"{TASKS}/{original['id']}/complete")


@pytest.fixture(params=["POST", "PATCH", "PUT"])
def writer(request, client, auth, original):
    """The same rule, checked on POST (TaskCreate) and on PATCH and PUT (TaskUpdate)."""
    if request.param == "POST":
        return Writer(client, auth(), "POST", TASKS)
    return Writer(client, auth(), request.param, f"{TASKS}/{original['id']}")


# --- title -------------------------------------------------------------------------------


def test_create_without_title_is_refused(creator):
    response = creator.send({"description": "no title", "priority": 3})
    body = assert_error(response, 422, "title")
    assert body["errors"] == {"title": ["Missing data for required field."]}
    creator.assert_nothing_changed()


def test_null_title_is_refused(writer):
    response = writer.send({"title": None})
    body = assert_error(response, 422, "title")
    assert body["errors"] == {"title": ["Field may not be null."]}
    writer.assert_nothing_changed()


@pytest.mark.parametrize("title", [123, True, ["a list"], {"an": "object"}])
def test_title_that_is_not_a_string_is_refused(writer, title):
    assert_error(writer.send({"title": title}), 422, "title")
    writer.assert_nothing_changed()


@pytest.mark.parametrize("sent", ["  Buy milk  ", "\tBuy milk\n", "\u3000Buy milk\u00a0"])
def test_title_is_stripped(writer, sent):
    response = writer.send({"title": sent})
    assert response.status_code in (200, 201), response.json
    assert response.json["title"] == "Buy milk"
    assert writer.stored(response)["title"] == "Buy milk"


@pytest.mark.parametrize("title", ["", " ", "\t\n\r ", "\u3000\u00a0"])
def test_whitespace_only_title_is_refused(writer, title):
    assert_error(writer.send({"title": title}), 422, "title")
    writer.assert_nothing_changed()


def test_title_of_255_characters_after_stripping_is_accepted(writer):
    title = "a" * 255
    response = writer.send({"title": f"   {title}   "})
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["title"] == title


@pytest.mark.parametrize("title", ["a" * 256, f"  {'a' * 256}  "])
def test_title_of_256_characters_after_stripping_is_refused(writer, title):
    assert_error(writer.send({"title": title}), 422, "title")
    writer.assert_nothing_changed()


def test_title_limit_counts_characters_not_bytes(writer):
    # 255 four-byte characters: 1,020 bytes of UTF-8, still 255 characters.
    title = "\U0001f600" * 255
    response = writer.send(raw=json.dumps({"title": title}, ensure_ascii=False).encode())
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["title"] == title


@pytest.mark.parametrize(
    "title",
    [
        "\U0001f389 Launch \U0001f680",  # emoji outside the BMP
        "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # a ZWJ sequence
        "买牛奶 · 牛乳を買う · 우유 사기",  # CJK and Hangul
        "Cafe\u0301 n\u0303 a\u0308\u0304",  # combining marks, not normalized to NFC
        "שלום עולם مرحبا",  # right-to-left scripts
    ],
)
def test_unicode_title_round_trips_exactly(writer, title):
    response = writer.send(raw=json.dumps({"title": title}, ensure_ascii=False).encode())
    assert response.status_code in (200, 201), response.json
    assert response.json["title"] == title
    assert writer.stored(response)["title"] == title


def test_escaped_surrogate_pair_is_one_emoji(writer):
    response = writer.send(raw=b'{"title": "\\ud83d\\ude00"}')
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["title"] == "\U0001f600"


# --- text PostgreSQL cannot store ----------------------------------------------------------


@pytest.mark.parametrize("field", ["title", "description"])
@pytest.mark.parametrize("value", ["a\x00b", "\x00", "ends with NUL\x00"])
def test_nul_character_is_refused_with_422(writer, field, value):
    body = {"title": "ok", field: value}
    response = writer.send(body)
    errors = assert_error(response, 422, field)["errors"]
    assert errors == {field: ["Must not contain NUL characters."]}
    writer.assert_nothing_changed()


@pytest.mark.parametrize("field", ["title", "description"])
@pytest.mark.parametrize("escaped", ["\\ud800", "x\\udfffy", "\\ude00\\ud83d"])
def test_lone_surrogate_in_raw_json_is_refused_with_422(writer, field, escaped):
    raw = '{"title": "ok", "%s": "%s"}' % (field, escaped)  # noqa: UP031 (raw JSON text)
    response = writer.send(raw=raw.encode("ascii"))
    errors = assert_error(response, 422, field)["errors"]
    assert errors == {field: ["Must be valid Unicode text."]}
    writer.assert_nothing_changed()


# --- description ---------------------------------------------------------------------------


def test_description_of_10000_characters_is_accepted(writer):
    description = "d" * 10_000
    response = writer.send({"title": "t", "description": description})
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["description"] == description


def test_description_of_10000_four_byte_characters_is_accepted(writer):
    description = "\U0001f600" * 10_000  # 40,000 bytes of UTF-8
    response = writer.send(
        raw=json.dumps({"title": "t", "description": description}, ensure_ascii=False).encode()
    )
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["description"] == description


def test_description_of_10001_characters_is_refused(writer):
    response = writer.send({"title": "t", "description": "d" * 10_001})
    assert_error(response, 422, "description")
    writer.assert_nothing_changed()


def test_null_description_is_allowed(writer):
    response = writer.send({"title": "t", "description": None})
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["description"] is None


@pytest.mark.parametrize("description", [42, True, ["x"], {"x": 1}])
def test_description_that_is_not_a_string_is_refused(writer, description):
    assert_error(writer.send({"title": "t", "description": description}), 422, "description")
    writer.assert_nothing_changed()


# --- is_completed and priority -----------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_is_completed_accepts_json_booleans(writer, value):
    response = writer.send({"title": "t", "is_completed": value})
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["is_completed"] is value


@pytest.mark.parametrize("value", ["true", "false", 1, 0, None, [], "yes"])
def test_is_completed_refuses_anything_but_a_json_boolean(writer, value):
    response = writer.send({"title": "t", "is_completed": value})
    assert_error(response, 422, "is_completed")
    writer.assert_nothing_changed()


@pytest.mark.parametrize("value", [1, 2, 3, 4, 5])
def test_priority_accepts_json_integers_1_to_5(writer, value):
    response = writer.send({"title": "t", "priority": value})
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["priority"] == value


@pytest.mark.parametrize("value", ["2", 2.5, True, False, 0, 6, -1, None, 2**63])
def test_priority_refuses_anything_but_a_json_integer_1_to_5(writer, value):
    response = writer.send({"title": "t", "priority": value})
    assert_error(response, 422, "priority")
    writer.assert_nothing_changed()


# --- fields a client may not send ----------------------------------------------------------

READ_ONLY_VALUES = [
    ("id", str(uuid.uuid4())),
    ("user_id", "bob"),
    ("user_id", "alice"),
    ("created_at", "2026-01-17T09:30:00.123456Z"),
    ("updated_at", "2026-01-17T09:30:00.123456Z"),
    ("completed_at", "2026-01-17T09:30:00.123456Z"),
    ("completed_at", None),
]


@pytest.mark.parametrize(("field", "value"), READ_ONLY_VALUES)
def test_read_only_field_is_refused(writer, field, value):
    response = writer.send({"title": "t", field: value})
    body = assert_error(response, 422, field)
    assert body["errors"] == {field: ["Read-only field."]}
    writer.assert_nothing_changed()


def test_user_id_in_body_cannot_give_a_task_to_someone_else(writer, client, auth):
    assert_error(writer.send({"title": "t", "user_id": "bob"}), 422, "user_id")
    assert client.get("/api/bob/tasks", headers=auth("bob")).json == []
    writer.assert_nothing_changed()


@pytest.mark.parametrize("field", ["colour", "Title", "is_complete", "owner"])
def test_unknown_field_is_refused_and_named(writer, field):
    response = writer.send({"title": "t", field: "x"})
    body = assert_error(response, 422, field)
    assert body["errors"][field] == ["Unknown field."]
    writer.assert_nothing_changed()


# --- bodies that are not a JSON object ---------------------------------------------------

MALFORMED_JSON = [
    b"{",
    b'{"title": "x",}',
    b"{'title': 'x'}",
    b'{"title": "x"} trailing',
    b'{"title": "\xff"}',  # not UTF-8
    b"undefined",
]


@pytest.mark.parametrize("raw", MALFORMED_JSON)
def test_malformed_json_is_400_with_only_a_detail(writer, raw):
    response = writer.send(raw=raw)
    body = assert_error(response, 400)
    assert set(body) == {"detail"}
    writer.assert_nothing_changed()


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_json_constants_are_malformed_json(writer, constant):
    # RFC 8259 has no NaN or Infinity; Python's json module accepts them by default.
    response = writer.send(raw=b'{"title": "t", "priority": ' + constant + b"}")
    body = assert_error(response, 400)
    assert set(body) == {"detail"}
    writer.assert_nothing_changed()


@pytest.mark.parametrize("raw", [b"[]", b'[{"title": "x"}]', b'"x"', b"1", b"null", b"true"])
def test_json_that_is_not_an_object_is_422(writer, raw):
    body = assert_error(writer.send(raw=raw), 422)
    assert body["errors"]
    writer.assert_nothing_changed()


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "text/json", None],
)
def test_body_with_a_content_type_other_than_json_is_415(writer, content_type):
    response = writer.send({"title": "Sneaky"}, content_type=content_type)
    assert_error(response, 415)
    writer.assert_nothing_changed()


def test_multipart_form_body_is_415(writer):
    response = writer.client.open(
        writer.url, method=writer.method, data={"title": "Sneaky"}, headers=writer.headers
    )
    assert_error(response, 415)
    writer.assert_nothing_changed()


# --- body size ---------------------------------------------------------------------------


def padded(body: dict, size: int) -> bytes:
    """`body` as JSON, padded with insignificant whitespace to exactly `size` bytes."""
    text = json.dumps(body).encode()
    return text + b" " * (size - len(text))


def test_body_of_exactly_64_kib_is_accepted(writer):
    response = writer.send(raw=padded({"title": "Exactly at the limit"}, BODY_LIMIT))
    assert response.status_code in (200, 201), response.json
    assert writer.stored(response)["title"] == "Exactly at the limit"


def test_body_one_byte_over_64_kib_is_413(writer):
    response = writer.send(raw=padded({"title": "Too big"}, BODY_LIMIT + 1))
    assert_error(response, 413)
    writer.assert_nothing_changed()


def test_oversized_body_is_413_not_a_validation_error(writer):
    response = writer.send({"title": "t", "description": "d" * (BODY_LIMIT + 1)})
    assert_error(response, 413)
    writer.assert_nothing_changed()


def test_oversized_chunked_body_is_413(creator, http_server, auth):
    # No Content-Length: the size is only known by reading the stream.
    address = urlsplit(http_server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    headers = {**auth(), "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    body = padded({"title": "Chunked and too big"}, BODY_LIMIT + 4096)
    try:
        connection.request("POST", TASKS, body=iter([body]), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        status, payload = response.status, json.loads(response.read())
    finally:
        connection.close()
    assert status == 413, payload
    assert isinstance(payload["detail"], str)
    creator.assert_nothing_changed()


# --- PATCH /complete -----------------------------------------------------------------------


def test_patch_complete_refuses_is_completed_yes(completer):
    response = completer.send({"is_completed": "yes"})
    body = assert_error(response, 422, "is_completed")
    assert body["errors"] == {"is_completed": ["Not a valid boolean."]}
    completer.assert_nothing_changed()


@pytest.mark.parametrize("value", ["true", 1, 0, None])
def test_patch_complete_refuses_non_boolean_is_completed(completer, value):
    assert_error(completer.send({"is_completed": value}), 422, "is_completed")
    completer.assert_nothing_changed()


@pytest.mark.parametrize("field", ["title", "completed_at", "id"])
def test_patch_complete_refuses_other_fields_instead_of_toggling(completer, field):
    assert_error(completer.send({field: "x"}), 422, field)
    completer.assert_nothing_changed()


def test_patch_complete_refuses_malformed_json_with_400(completer):
    body = assert_error(completer.send(raw=b'{"is_completed": tru'), 400)
    assert set(body) == {"detail"}
    completer.assert_nothing_changed()


@pytest.mark.parametrize("raw", [b"[]", b"true", b"null", b'"x"'])
def test_patch_complete_refuses_json_that_is_not_an_object(completer, raw):
    assert_error(completer.send(raw=raw), 422)
    completer.assert_nothing_changed()


def test_patch_complete_refuses_a_non_json_body_with_415(completer):
    response = completer.send(raw="is_completed=true", content_type="text/plain")
    assert_error(response, 415)
    completer.assert_nothing_changed()


@pytest.mark.parametrize(
    "raw",
    [
        '{"title": "x", "priority": ' + "9" * 5000 + "}",
        '{"title": "x", "description": ' + "[" * 20000 + "]" * 20000 + "}",
    ],
    ids=["integer-past-the-digit-limit", "nesting-past-the-recursion-limit"],
)
def test_unreadable_json_is_400_not_500(writer, raw):
    response = writer.send(raw=raw)
    body = assert_error(response, 400)
    assert body == {"detail": "The request body is not valid JSON."}
    writer.assert_nothing_changed()
