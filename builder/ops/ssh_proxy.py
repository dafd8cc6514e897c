"""The socket a `RUN --mount=type=ssh` sees: a proxy to the build's agent.

BuildKit never shows a step the agent's own socket: each mount gets a new
socket, owned by the mount's `uid`/`gid` (default 0) with its `mode`
(default 0600), that forwards every connection to the agent. So a step
running as another user can reach the agent when the Dockerfile says so,
and a step can chmod or replace its socket without touching the host's.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

_BUFFER = 1 << 16


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_BUFFER):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)  # the other side sees the end of this direction
        except OSError:
            pass


class SocketProxy:
    """Listens at `path` (made with the given owner and mode) and joins each
    connection to a new one to `upstream`, until close()."""

    def __init__(self, upstream: str, path: Path, *, uid: int = 0, gid: int = 0, mode: int = 0o600):
        self._upstream = upstream
        self._lock = threading.Lock()
        self._closed = False
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(os.fspath(path))
            os.chown(path, uid, gid)
            os.chmod(path, mode)
            self._server.listen(16)
        except BaseException:
            self._server.close()
            raise
        self._accepting = threading.Thread(target=self._serve, name="pybuild-ssh-proxy", daemon=True)
        self._accepting.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # close() shut the listening socket down
            thread = threading.Thread(target=self._join, args=(client,), name="pybuild-ssh-proxy", daemon=True)
            with self._lock:
                if self._closed:  # accepted just as the step ended
                    client.close()
                    return
                self._threads.append(thread)
            thread.start()

    def _join(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            if self._closed:
                # close() has already shut the open sockets down: joining
                # these now would wait for a client that may never hang up.
                client.close()
                upstream.close()
                return
            self._open.update((client, upstream))
        try:
            upstream.connect(self._upstream)
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            client.close()
            upstream.close()

    def close(self) -> None:
        """Stop listening and end every connection (the step is over)."""
        with self._lock:
            self._closed = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes accept() in _serve
        except OSError:
            pass
        self._server.close()
        self._accepting.join()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join()
