"""The fault-test TCP proxy forwards real connections and cuts them when told to."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from tests.mariadb import MysqlDatabase, connect
from tests.tcpproxy import TcpProxy


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def proxy(mysql_database: MysqlDatabase) -> Iterator[TcpProxy]:
    """A proxy in front of the session's MariaDB server."""
    with TcpProxy("127.0.0.1", mysql_database.server.port) as proxy:
        yield proxy


def connect_via(proxy: TcpProxy, database: MysqlDatabase) -> pymysql.connections.Connection[Any]:
    """Log in as the fresh database's user through the proxy."""
    dsn = database.dsn.replace(f":{database.server.port}/", f":{proxy.port}/")
    return connect(dsn, read_timeout=10)


def query(conn: pymysql.connections.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


class _ByteServer:
    """A TCP server that sends `payload` to each client, then waits for the client to close."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(self.payload)
            conn.settimeout(10)
            while conn.recv(4096):
                pass

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


class _EchoServer:
    """A TCP server that sends every client's bytes back to it, for any number of clients;
    `received` counts the bytes that reached it."""

    def __init__(self) -> None:
        self.received = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                self.received += len(data)
                conn.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def echo_server() -> Iterator[_EchoServer]:
    """An echo server."""
    server = _EchoServer()
    yield server
    server.close()


@pytest.fixture
def echo_proxy(echo_server: _EchoServer) -> Iterator[TcpProxy]:
    """A proxy in front of the echo server."""
    with TcpProxy("127.0.0.1", echo_server.port) as proxy:
        yield proxy


def _echoed(client: socket.socket, payload: bytes, expected: int | None = None) -> bytes:
    """Send ``payload`` and read ``expected`` bytes back (as many as were sent by default)."""
    client.sendall(payload)
    received = b""
    while len(received) < (len(payload) if expected is None else expected):
        chunk = client.recv(65536)
        assert chunk, "the connection ended"
        received += chunk
    return received


def _receive_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_proxy_forwards_a_mariadb_connection(
    proxy: TcpProxy, mysql_database: MysqlDatabase
) -> None:
    """A MariaDB client logs in and runs queries through the proxy, which counts it."""
    with connect_via(proxy, mysql_database) as conn:
        assert query(conn, "SELECT DATABASE(), REPEAT('x', 200000) = REPEAT('x', 200000)") == [
            (mysql_database.name, 1)
        ]
        assert len(query(conn, "SELECT REPEAT('y', 300000)")[0][0]) == 300000
        assert proxy.open_connections == 1
    assert proxy.connections_accepted == 1
    assert proxy.cuts == 0
    _wait_for(lambda: proxy.open_connections == 0, "the proxy to notice the client left")


def test_cut_breaks_open_connections_but_new_ones_work(
    proxy: TcpProxy, mysql_database: MysqlDatabase
) -> None:
    """cut() breaks every open connection at once, and later connections go through."""
    with connect_via(proxy, mysql_database) as first, connect_via(proxy, mysql_database) as second:
        assert proxy.cut() == 2

        for conn in (first, second):
            with pytest.raises(pymysql.err.OperationalError):
                query(conn, "SELECT 1")
        assert proxy.cuts == 2
        with connect_via(proxy, mysql_database) as third:
            assert query(third, "SELECT 1") == [(1,)]
    assert proxy.connections_accepted == 3
    _wait_for(lambda: proxy.open_connections == 0, "the proxy to notice the clients left")
    assert proxy.cut() == 0


def test_cut_after_delivers_exactly_that_many_bytes_then_cuts() -> None:
    """cut_after(n) lets exactly n bytes from the server through, then closes the connection."""
    payload = bytes(range(256)) * 400
    server = _ByteServer(payload)
    try:
        with TcpProxy("127.0.0.1", server.port) as proxy:
            proxy.cut_after(12345)
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
                received = _receive_all(client)
            assert received == payload[:12345]
            assert proxy.cuts == 1
    finally:
        server.close()


def test_cut_after_cuts_a_mariadb_result_midway_and_then_disarms(
    proxy: TcpProxy, mysql_database: MysqlDatabase
) -> None:
    """cut_after(n) breaks a connection in the middle of a result, once; later ones are whole."""
    with connect_via(proxy, mysql_database) as conn:
        query(conn, "SELECT 1")
        proxy.cut_after(50_000)
        with pytest.raises(pymysql.err.OperationalError):
            query(conn, "SELECT REPEAT('z', 200000)")
    assert proxy.cuts == 1

    with connect_via(proxy, mysql_database) as conn:
        assert len(query(conn, "SELECT REPEAT('z', 200000)")[0][0]) == 200000
    assert proxy.cuts == 1


def test_a_client_of_a_proxy_whose_server_is_down_is_closed() -> None:
    """When nothing listens at the target, the proxy accepts and closes the client at once."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    with (
        TcpProxy("127.0.0.1", dead_port) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client,
    ):
        assert client.recv(1) == b""
        assert proxy.connections_accepted == 1


def test_stop_closes_the_listener_and_every_connection() -> None:
    """After stop(), open connections are closed and no new one is accepted."""
    server = _ByteServer(b"hello")
    try:
        proxy = TcpProxy("127.0.0.1", server.port)
        proxy.start()
        port = proxy.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            assert client.recv(5) == b"hello"

            proxy.stop()

            assert client.recv(1) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        proxy.stop()
    finally:
        server.close()


def test_stall_holds_bytes_on_open_connections_only_and_unstall_delivers_them(
    echo_proxy: TcpProxy,
) -> None:
    """stall() silences open connections both ways while new ones go through; unstall()
    delivers what was held, in order, on the same connection."""
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as old:
        assert _echoed(old, b"before") == b"before"
        assert echo_proxy.stall() == 1
        assert echo_proxy.stalled_connections == 1
        old.sendall(b"held ")
        old.sendall(b"in order")
        old.settimeout(0.5)
        with pytest.raises(TimeoutError):
            old.recv(1)
        with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as new:
            assert _echoed(new, b"a new connection flows") == b"a new connection flows"
        _wait_for(lambda: echo_proxy.open_connections == 1, "the new connection to go")
        assert echo_proxy.stall() == 0  # the old one is stalled already
        assert echo_proxy.unstall() == 1
        old.settimeout(10)
        assert _echoed(old, b"!", expected=14) == b"held in order!"
    assert echo_proxy.stalls == 1
    assert echo_proxy.cuts == 0
    _wait_for(lambda: echo_proxy.open_connections == 0, "the proxy to notice the clients left")


def test_a_stalled_connection_passes_no_close_and_a_cut_still_breaks_it(
    echo_proxy: TcpProxy,
) -> None:
    """While stalled, a client's close does not reach the server (the link stays open), and
    cut() breaks stalled connections at once."""
    first = socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10)
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as second:
        assert _echoed(first, b"x") == b"x"
        assert _echoed(second, b"y") == b"y"
        assert echo_proxy.stall() == 2
        first.close()
        time.sleep(0.3)
        assert echo_proxy.open_connections == 2
        assert echo_proxy.cut() == 2
        assert second.recv(1) == b""
    _wait_for(lambda: echo_proxy.open_connections == 0, "the cut links to close")
    assert echo_proxy.stalled_connections == 0


def test_a_stall_of_replies_only_lets_requests_reach_the_server(
    echo_proxy: TcpProxy, echo_server: _EchoServer
) -> None:
    """stall(to_server=False) holds what the server sends while the client's bytes still
    reach it: a request arrives, its answer does not, until unstall()."""
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as client:
        assert _echoed(client, b"warm") == b"warm"
        assert echo_proxy.stall(to_server=False) == 1
        client.sendall(b"ping")
        _wait_for(lambda: echo_server.received == 8, "the request to reach the server")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(1)
        assert echo_proxy.unstall() == 1
        client.settimeout(10)
        assert _echoed(client, b"", expected=4) == b"ping"
