"""MySQL client protocol packets read straight off a connection's socket.

PyMySQL does the handshake, authentication and ordinary queries. Two kinds of traffic are
read here instead, where PyMySQL's per-packet and per-row work would be the bottleneck: the
binlog stream (:mod:`.binlog`) and the snapshot's one-column result sets of COPY lines
(:func:`result_lines`). Both happen after a command PyMySQL sent, with nothing left unread
in its own buffer (the protocol is request-response), so the socket can be read directly.
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Generator, Iterator
from typing import Any

from pymysql.constants import COMMAND
from pymysql.err import raise_mysql_exception

_U32 = struct.Struct("<I").unpack_from
_MAX = 0xFFFFFF  # a payload this long continues in the next packet
_RECEIVE = 1 << 20
_LENENC_SIZES = {0xFC: 2, 0xFD: 3, 0xFE: 8}  # length-encoded integer: bytes after the first
# A length-encoded string: bytes before the value (the marker and its length).
_PREFIXES = {marker: 1 + size for marker, size in _LENENC_SIZES.items()}


class Packets:
    """Packets read off a socket: 3-byte length, sequence id, payload."""

    def __init__(self, sock: Any) -> None:
        sock.settimeout(None)
        self._sock = sock
        self._buffer = bytearray()
        self._pos = 0  # start of the first unread packet in _buffer
        self._last = time.monotonic()

    def _complete(self) -> int | None:
        """The end offset of the next buffered packet sequence, if it is complete."""
        buffer = self._buffer
        at = self._pos
        size = len(buffer)
        while True:
            if size < at + 4:
                return None
            length: int = _U32(buffer, at)[0] & _MAX
            at += 4 + length
            if size < at:
                return None
            if length < _MAX:
                return at

    def ready(self) -> bool:
        """Whether a whole packet is buffered, or bytes are waiting in the socket."""
        if self._complete() is not None:
            return True
        return bool(select.select([self._sock], [], [], 0)[0])

    def silent_for(self) -> float:
        """Seconds since the last bytes arrived."""
        return time.monotonic() - self._last

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next payload, or None if it did not arrive within ``timeout`` seconds (None:
        wait as long as it takes). An error packet raises PyMySQL's error for it; a closed
        connection raises ConnectionResetError."""
        end = self._complete()
        if end is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while (end := self._complete()) is None:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]:
                        return None
                chunk = self._sock.recv(_RECEIVE)
                if not chunk:
                    raise ConnectionResetError("the server closed the connection")
                del self._buffer[: self._pos]  # once per receive, not once per packet
                self._pos = 0
                self._buffer += chunk
                self._last = time.monotonic()
        buffer = self._buffer
        at = self._pos
        length: int = _U32(buffer, at)[0] & _MAX
        if at + 4 + length == end:
            data = bytes(buffer[at + 4 : end])
        else:
            parts = bytearray()
            while at < end:
                length = _U32(buffer, at)[0] & _MAX
                parts += buffer[at + 4 : at + 4 + length]
                at += 4 + length
            data = bytes(parts)
        self._pos = end
        if data[:1] == b"\xff":
            raise_mysql_exception(data)
        return data

    def read_all(self, timeout: float) -> list[bytes]:
        """Every complete payload buffered (waiting up to ``timeout`` seconds for one); an
        empty list when none arrived. An error packet among them raises, after the payloads
        before it were taken (the caller gets them with the next call)."""
        first = self.read(timeout)
        if first is None:
            return []
        out = [first]
        buffer = self._buffer
        size = len(buffer)
        at = self._pos
        while size >= at + 4:
            length: int = _U32(buffer, at)[0] & _MAX
            end = at + 4 + length
            if size < end or length == _MAX:
                break  # incomplete, or a long payload: the general path assembles it
            data = bytes(buffer[at + 4 : end])
            if data[:1] == b"\xff":
                break  # read() raises it next time
            out.append(data)
            at = end
        self._pos = at
        return out

    def drained(self) -> bool:
        """Whether everything received has been read."""
        return self._pos == len(self._buffer)

    def values(self) -> Iterator[bytes]:
        """The rows of a one-column result set, up to its EOF (see :func:`result_lines`)."""
        return _values(self)


def lenenc(data: bytes, at: int) -> tuple[int, int]:
    """A length-encoded integer at ``at``, and the offset after it."""
    first = data[at]
    if first < 251:
        return first, at + 1
    size = _LENENC_SIZES.get(first)
    if size is None:
        raise ValueError(f"not a length-encoded integer: {first:#x}")
    return int.from_bytes(data[at + 1 : at + 1 + size], "little"), at + 1 + size


def is_eof(packet: bytes) -> bool:
    """Whether a packet is the EOF marker ending a column list or a result set."""
    return packet[:1] == b"\xfe" and len(packet) < 9


def result_lines(conn: Any, statement: str) -> Iterator[bytes]:
    """Run a query returning one non-NULL binary column; yield each row's value.

    The connection is PyMySQL's, idle (no unread result); when the generator ends, the
    result has been read to its end and PyMySQL may use the connection again. If it is
    abandoned halfway, the connection must be closed.
    """
    conn._execute_command(COMMAND.COM_QUERY, statement)
    packets = Packets(conn._sock)
    first = packets.read()
    assert first is not None
    columns, _ = lenenc(first, 0)
    for _ in range(columns):  # column definitions, then the EOF ending them
        packets.read()
    if not is_eof(packets.read() or b""):
        raise ValueError("a result set's column definitions did not end with EOF")
    yield from packets.values()


def _values(packets: Packets) -> Iterator[bytes]:
    """The rows of a one-column result, read off the buffer with one copy each."""
    while True:
        if packets._complete() is not None:
            ended = yield from _buffered_values(packets)
            if ended is None:
                return
            if ended:
                continue
        # Wait for the rest of a row, assemble a long one, or meet an error packet (read()
        # raises it) or a NULL (_strip() raises).
        row = packets.read()
        assert row is not None
        if is_eof(row):
            return
        yield _strip(row)


def _buffered_values(packets: Packets) -> Generator[bytes, None, bool | None]:
    """Yield every whole row already received, without a call per row. Returns True when
    the buffer ran out, None at the end of the result, False at a packet that needs
    :meth:`Packets.read`."""
    buffer = packets._buffer
    at = packets._pos
    size = len(buffer)
    try:
        while size >= at + 4:
            length: int = _U32(buffer, at)[0] & _MAX
            stop = at + 4 + length
            if length == _MAX:
                return False  # continued in the next packet: read() assembles it
            if size < stop:
                return True
            first = buffer[at + 4]
            if first < 251:
                value = bytes(buffer[at + 5 : stop])
            elif first == 0xFE and length < 9:
                at = stop
                return None
            elif first in _PREFIXES:
                value = bytes(buffer[at + 4 + _PREFIXES[first] : stop])
            else:
                return False
            at = stop
            yield value
        return True
    finally:
        packets._pos = at


def _strip(row: bytes) -> bytes:
    """A one-column row's value (its length prefix removed)."""
    if row[:1] == b"\xfb":
        raise ValueError("the copy query returned NULL")
    _, at = lenenc(row, 0)
    return row[at:]
