"""A TCP forwarder a test puts between the app and a server, to fail the network on cue.

`cut()` drops every connection at once (a reset, with no goodbye from the server)
and then refuses new ones; `hang()` drops them too, then accepts new ones and never
answers (a server or network that stopped responding); `restore()` forwards again,
on the same port. It runs in the test's process, on threads, on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

FORWARD, REFUSE, HANG = "forward", "refuse", "hang"
CHUNK = 64 * 1024


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the peer's next read or write fails at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Wakes our own thread blocked reading it (closing alone would not), and
        # sends the peer nothing: the close that follows is its reset.
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _close_listener(listener: socket.socket | None) -> None:
    """Stop listening: connections are refused from now on."""
    if listener is None:
        return
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
    listener.close()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target` until told otherwise."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = FORWARD
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()  # every open socket but the listener
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.port = self._listen(0)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        self._start(self._accept, listener)
        return listener.getsockname()[1]

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: refusing, or done
                return
            with self._lock:
                self._sockets.add(client)
                mode = self.mode
            if mode == HANG:
                continue  # held open, never read from, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                self._drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.add(upstream)
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        self._drop(source)
        self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _reset(sock)

    def _drop_all(self) -> None:
        with self._lock:
            dropped, self._sockets = self._sockets, set()
        for sock in dropped:
            _reset(sock)

    def cut(self) -> None:
        """Reset every connection, and refuse new ones (nothing listens) until restored."""
        with self._lock:
            self.mode = REFUSE
            listener, self._listener = self._listener, None
        _close_listener(listener)
        self._drop_all()

    def hang(self) -> None:
        """Reset every connection; accept new ones and never answer until restored."""
        with self._lock:
            self.mode = HANG
        self._drop_all()

    def restore(self) -> None:
        """Forward new connections again (those held while hanging are reset)."""
        with self._lock:
            self.mode = FORWARD
            relisten = self._listener is None
        self._drop_all()
        if relisten:
            self._listen(self.port)

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        _close_listener(listener)
        self._drop_all()
        for thread in self._threads:
            thread.join(timeout=10)


@contextlib.contextmanager
def tcp_proxy(target: tuple[str, int]) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
