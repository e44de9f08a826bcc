"""A TCP forwarder that tests can cut: a real network outage between a client and a real server."""

from __future__ import annotations

import socket
import threading


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut()` drops every connection and refuses new ones
    until `restore()`; `hang()` keeps connections open but lets no byte through either way (a
    server that stopped answering), until `restore()`."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._hung = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            for s in list(self._open):
                self._close(s)

    def hang(self) -> None:
        self._hung.set()

    def restore(self) -> None:
        if self._hung.is_set():  # what the hang swallowed is lost: close, and clients reconnect cleanly
            with self._lock:
                for s in list(self._open):
                    self._close(s)
        self._hung.clear()
        self._up.set()

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _close(self, s: socket.socket) -> None:
        self._open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if not self._hung.is_set():
                    sink.sendall(chunk)
        except OSError:
            pass
        with self._lock:
            self._close(source)
            self._close(sink)
