"""Kept-alive connections after an answer given before the request body was read.

Many answers are decided from the headers alone: 401, 403, 404, 405, 415 and 429 come
before a view parses the JSON body, and a 413 refuses a body for its declared size (or
stops reading a chunked one at the limit). On a kept-alive connection the unread bytes
stand before the client's next request. gunicorn reads at most 64 KiB of them, for at
most 5 seconds, and otherwise closes the connection after it has answered
`Connection: keep-alive`: the client's next request on it then fails.

So, once the app has answered a request whose body it has not read to the end:

- a body within MAX_BODY_BYTES is read to its end here, as a view would have read it
  (it costs what the view's own read would have): the connection stays good for the
  next request, and a client that sends the whole body before reading is never cut off
  in the middle of it;
- a body over the limit is not read (refusing to is what the 413 is for): the answer
  says `Connection: close`, and the server closes the connection after it. gunicorn
  closes it gently, reading what the client still sends for a while (up to 64 KiB, or
  2 seconds), so that the answer is not lost to a reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from flask import Flask
from werkzeug.wsgi import get_content_length

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

READ_SIZE = 64 * 1024


class CountedInput:
    """The request body stream (`wsgi.input`), counting what is read of it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.read_bytes = 0
        self.ended = False  # a read found nothing more

    def read(self, size: int = -1) -> bytes:
        return self._counted(self._stream.read(size), size)

    def readline(self, size: int = -1) -> bytes:
        return self._counted(self._stream.readline(size), size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _counted(self, data: bytes, size: int) -> bytes:
        self.read_bytes += len(data)
        if not data and size != 0:
            self.ended = True
        return data


class FinishRequestBodies:
    """WSGI middleware: after the app's answer, the body is read to its end, or the
    connection closes."""

    def __init__(self, wsgi_app: WSGIApplication, max_body_bytes: int) -> None:
        self.wsgi_app = wsgi_app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = get_content_length(environ)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not length and not chunked:
            return self.wsgi_app(environ, start_response)  # no body: nothing to finish
        body = CountedInput(environ["wsgi.input"])
        environ["wsgi.input"] = body

        def answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not self._read_to_the_end(body, length):
                headers = [*headers, *close_after(start_response)]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, answer)

    def _read_to_the_end(self, body: CountedInput, length: int | None) -> bool:
        """Read what is left of a body within the limit; whether it is read to its end."""
        # A chunked body has no length up front: it must end within the limit.
        end = self.max_body_bytes if length is None else length
        if end > self.max_body_bytes:
            return False  # over the limit, and the app has not read it
        try:
            while not body.ended and body.read_bytes < end:
                body.read(min(READ_SIZE, end - body.read_bytes))
            if length is None and not body.ended:
                body.read(1)  # at the limit: the end, or more than the limit
        except Exception:  # the server's own error for a body broken off or garbled
            return False
        return body.ended if length is None else body.read_bytes >= length


def close_after(start_response: Callable[..., Any]) -> list[tuple[str, str]]:
    """Have the server close the connection after this answer; the headers that say so.

    gunicorn drops a `Connection` header an app sends and writes its own: its
    start_response is a method of its response, whose `force_close()` makes that header
    `Connection: close` and the connection close after the answer. Other servers
    (Werkzeug's, for `flask run`) close when the app's answer says so.
    """
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if callable(force_close):
        force_close()
        return []
    return [("Connection", "close")]


def finish_request_bodies(app: Flask) -> None:
    app.wsgi_app = FinishRequestBodies(  # type: ignore[method-assign]
        app.wsgi_app, app.config["MAX_CONTENT_LENGTH"]
    )
