"""A TCP proxy for fault tests: cut a client's connections to a server on demand.

Point the client at the proxy instead of the server; the proxy forwards both ways until told
to fail::

    with TcpProxy("127.0.0.1", server.port) as proxy:
        dsn = server.dsn("repl", password, "app").replace(f":{server.port}/", f":{proxy.port}/")
        ...
        proxy.cut()              # every open connection breaks now; reconnecting works
        proxy.cut_after(10_000)  # the next 10,000 bytes from the server get through, then
                                 # that connection breaks (e.g. in the middle of a transaction)
        proxy.stall()            # open connections go silent both ways (a blackhole); new
        proxy.unstall()          # connections work meanwhile; unstall() delivers what was held
        proxy.stall(to_server=False)  # only replies are held (a request arrives, its answer not)

A cut closes both sides of a connection at once: the client and the server each see the
connection end, as when a network path fails. A stall keeps both sockets open and forwards
nothing, as when a path dies without a reset: neither end learns anything until a timeout of
its own fires, or the stall ends and the held bytes arrive late. The proxy's kernel still
acknowledges what the peers send, so TCP keepalives and ``tcp_user_timeout`` do not notice a
stall; only application-level timeouts do. The proxy listens on 127.0.0.1 only, on a port
the kernel picks; its threads are daemons, and `stop()` ends them all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["TcpProxy"]

_CHUNK = 65536
# How long the accept loop blocks before looking whether it should stop.
_POLL_INTERVAL = 0.1
_CONNECT_TIMEOUT = 10.0
_JOIN_TIMEOUT = 10.0


class _Link:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        # Bytes from the server the client may still receive before the link is cut; None
        # when no cut_after() is armed for it. Guarded by the proxy's lock.
        self.budget: int | None = None
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._severed = False
        self._pumps_left = 2
        # Per direction (keyed by "from the server"): set while bytes may flow, cleared by a
        # stall. Severing sets both, so that pumps waiting for a stall to end wake and finish.
        self._flowing = {False: threading.Event(), True: threading.Event()}
        for event in self._flowing.values():
            event.set()

    @property
    def severed(self) -> bool:
        """Whether the link was broken."""
        return self._severed

    @property
    def stalled(self) -> bool:
        """Whether some direction is stalled now."""
        return not all(event.is_set() for event in self._flowing.values())

    def stall(self, to_server: bool, to_client: bool) -> bool:
        """Hold every byte from now on in the given directions; False if the link was broken
        or nothing changed."""
        with self._lock:
            if self._severed:
                return False
            changed = False
            for from_server, wanted in ((False, to_server), (True, to_client)):
                if wanted and self._flowing[from_server].is_set():
                    self._flowing[from_server].clear()
                    changed = True
            return changed

    def unstall(self) -> bool:
        """Let the held bytes and later ones through; False if the link was not stalled."""
        with self._lock:
            was_stalled = self.stalled
            for event in self._flowing.values():
                event.set()
            return was_stalled and not self._severed

    def wait_flowing(self, from_server: bool) -> None:
        """Block while the direction is stalled (returns at once when the link is severed)."""
        self._flowing[from_server].wait()

    def sever(self, before: Callable[[], None] | None = None) -> bool:
        """Break both connections now; False if they were already broken.

        `before` runs first, only when this call is the one that breaks them.
        """
        with self._lock:
            if self._severed:
                return False
            self._severed = True
        for event in self._flowing.values():
            event.set()
        if before is not None:
            before()
        # shutdown(), unlike close(), wakes the pump threads blocked in recv() or sendall() on
        # these sockets; the last pump to finish closes them.
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return True

    def pump_finished(self) -> bool:
        """Note that one direction is done; when both are, close the sockets and say True."""
        with self._lock:
            self._pumps_left -= 1
            last = self._pumps_left == 0
        if last:
            self.client.close()
            self.upstream.close()
        return last


class TcpProxy:
    """Forward connections from 127.0.0.1:`port` to `target_host`:`target_port`.

    Counters: `connections_accepted` (clients that came in), `cuts` (connections broken by
    `cut()` or `cut_after()`) and `stalls` (connections stalled by `stall()`). Use as a context
    manager, or call `start()` and `stop()`.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        """Describe a proxy to `target_host`:`target_port`; `start()` opens it."""
        self.target_host = target_host
        self.target_port = target_port
        self.connections_accepted = 0
        self.cuts = 0
        self.stalls = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        # Bytes from the server a cut_after() lets through on each connection; None: disarmed.
        self._cut_after: int | None = None

    def __repr__(self) -> str:
        port = self._listener.getsockname()[1] if self._listener is not None else None
        return f"TcpProxy(port={port}, target={self.target_host}:{self.target_port})"

    def __enter__(self) -> TcpProxy:
        if self._listener is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port clients connect to (on 127.0.0.1)."""
        if self._listener is None:
            raise RuntimeError(f"{self} is not started: call start() first.")
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        """How many client connections are being forwarded now."""
        with self._lock:
            return len(self._links)

    def start(self) -> None:
        """Listen on a free port on 127.0.0.1 and forward every connection that comes in."""
        if self._listener is not None:
            raise RuntimeError(f"{self} is already started.")
        if self._stopping.is_set():
            raise RuntimeError(f"{self} was stopped; make a new TcpProxy.")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(_POLL_INTERVAL)
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"tcpproxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop accepting, break every open connection and wait for the threads to end."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(_JOIN_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.sever()
        for link in links:
            for thread in link.threads:
                thread.join(_JOIN_TIMEOUT)

    def cut(self) -> int:
        """Break every open connection now, both ways; new connections are still accepted.

        Returns how many connections were cut.
        """
        with self._lock:
            links = list(self._links)
        return sum(1 for link in links if link.sever(before=self._count_cut))

    def stall(self, to_server: bool = True, to_client: bool = True) -> int:
        """Stop forwarding on every open connection, keeping the sockets open: both ways by
        default, or only the bytes going `to_server` or `to_client` (e.g. a lost reply).

        A blackhole on the existing connections only: connections that come in later are
        forwarded as usual (a dead path whose routing has recovered), and `cut()` still breaks
        stalled ones. Returns how many connections were stalled.
        """
        with self._lock:
            links = list(self._links)
        stalled = sum(1 for link in links if link.stall(to_server, to_client))
        with self._lock:
            self.stalls += stalled
        return stalled

    def unstall(self) -> int:
        """Resume forwarding on the stalled connections still open, delivering the bytes held
        meanwhile; returns how many resumed."""
        with self._lock:
            links = list(self._links)
        return sum(1 for link in links if link.unstall())

    @property
    def stalled_connections(self) -> int:
        """How many open connections are stalled (in some direction) now."""
        with self._lock:
            return sum(1 for link in self._links if link.stalled)

    def cut_after(self, bytes_from_server: int) -> None:
        """Break a connection once `bytes_from_server` more bytes went from server to client.

        Counting starts now for open connections and at connect for new ones. The client gets
        exactly that many bytes, then the connection is cut. One-shot: the first connection to
        reach the count is cut, and the proxy is disarmed for all of them.
        """
        if bytes_from_server < 0:
            raise ValueError("bytes_from_server must be 0 or more.")
        with self._lock:
            self._cut_after = bytes_from_server
            for link in self._links:
                link.budget = bytes_from_server

    # -- internals -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            with self._lock:
                self.connections_accepted += 1
            self._open_link(client)

    def _open_link(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(
                (self.target_host, self.target_port), timeout=_CONNECT_TIMEOUT
            )
        except OSError:
            # The server is down: the client sees its connection closed at once.
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, upstream)
        link.threads = [
            threading.Thread(target=self._pump, args=(link, client, upstream, False), daemon=True),
            threading.Thread(target=self._pump, args=(link, upstream, client, True), daemon=True),
        ]
        with self._lock:
            link.budget = self._cut_after
            self._links.add(link)
            # Started under the lock, so stop() never sees a link whose threads it cannot join.
            for thread in link.threads:
                thread.start()

    def _pump(
        self, link: _Link, source: socket.socket, sink: socket.socket, from_server: bool
    ) -> None:
        """Copy bytes from `source` to `sink` until either end closes or the link is cut."""
        try:
            while True:
                data = source.recv(_CHUNK)
                # A stalled link holds what it read (an orderly close included) until the
                # stall ends or the link is cut.
                link.wait_flowing(from_server)
                if link.severed:
                    return
                if not data:
                    # An orderly close: pass the half-close on and let the other way finish.
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                if from_server and self._forward_within_budget(link, sink, data):
                    return
                sink.sendall(data)
        except OSError:
            # One way broke (reset, or cut): break the other way too, once any stall is over
            # (a blackhole passes no reset on either).
            link.wait_flowing(from_server)
            link.sever()
        finally:
            if link.pump_finished():
                with self._lock:
                    self._links.discard(link)

    def _forward_within_budget(self, link: _Link, sink: socket.socket, data: bytes) -> bool:
        """Forward `data` up to the cut_after() budget; True if that cut the link."""
        with self._lock:
            budget = link.budget
            if budget is None:
                return False
            if budget > len(data):
                link.budget = budget - len(data)
                return False
            # This link reaches the count first: disarm, for it and for every other link.
            self._cut_after = None
            for other in self._links:
                other.budget = None
        sink.sendall(data[:budget])
        link.sever(before=self._count_cut)
        return True

    def _count_cut(self) -> None:
        # Counted before the sockets are shut down, so a client that sees its connection end
        # also sees it in `cuts`.
        with self._lock:
            self.cuts += 1
