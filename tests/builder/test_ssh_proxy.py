"""The per-step socket of `RUN --mount=type=ssh`: owner and mode as asked,
every byte forwarded both ways, nothing left running after close()."""

from __future__ import annotations

import os
import socket
import stat
import threading

from builder.ops.ssh_proxy import SocketProxy


def _echo_server(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_the_proxy_forwards_with_the_owner_and_mode_asked_for(tmp_path):
    server, serving = _echo_server(tmp_path / "agent.sock")
    proxy = SocketProxy(str(tmp_path / "agent.sock"), tmp_path / "step.sock", uid=1000, gid=1001, mode=0o640)
    try:
        st = os.stat(tmp_path / "step.sock")
        assert stat.S_ISSOCK(st.st_mode) and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o640)
        for word in (b"hello", b"agent" * 50_000):  # one small, one larger than a buffer
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(tmp_path / "step.sock"))
                client.sendall(word)
                client.shutdown(socket.SHUT_WR)
                received = b""
                while data := client.recv(65536):
                    received += data
            assert received == word.upper()
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.connect(str(tmp_path / "step.sock"))  # still open when the step ends
    finally:
        proxy.close()
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        serving.join()
    try:  # closed by the proxy: ended if it was accepted, reset if it was still queued
        assert held.recv(10) == b""
    except ConnectionResetError:
        pass
    held.close()
    assert not [t for t in threading.enumerate() if t.name == "pybuild-ssh-proxy"]


def test_an_agent_that_went_away_only_ends_the_connection(tmp_path):
    proxy = SocketProxy(str(tmp_path / "gone.sock"), tmp_path / "step.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "step.sock"))
            assert client.recv(10) == b""
    finally:
        proxy.close()
    assert stat.S_IMODE(os.stat(tmp_path / "step.sock").st_mode) == 0o600
