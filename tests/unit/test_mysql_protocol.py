"""MySQL protocol packets read off a real socket pair: framing, long payloads, errors."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pymysql
import pytest

from replicator.sources.mysql.protocol import Packets

EOF_PACKET = b"\xfe\x00\x00\x02\x00"


def packet(payload: bytes, seq: int = 0) -> bytes:
    """One protocol packet (payloads of 16 MiB - 1 and more continue in the next)."""
    out = b""
    while True:
        part, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
        out += struct.pack("<I", len(part))[:3] + bytes([seq & 0xFF]) + part
        seq += 1
        if len(part) < 0xFFFFFF:
            return out


def lenenc_string(value: bytes) -> bytes:
    """A length-encoded string, as a one-column text row carries it."""
    n = len(value)
    if n < 251:
        return bytes([n]) + value
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n) + value
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3] + value
    return b"\xfe" + struct.pack("<Q", n) + value


def error_packet(code: int, message: str) -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#HY000" + message.encode()


def serve(data: bytes, chunk: int) -> Iterator[Packets]:
    """Packets reading ``data``, sent in pieces of ``chunk`` bytes from another thread."""
    ours, theirs = socket.socketpair()

    def send() -> None:
        for i in range(0, len(data), chunk):
            theirs.sendall(data[i : i + chunk])

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield Packets(ours)
    finally:
        sender.join(30)
        ours.close()
        theirs.close()


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16, 1 << 22])
def test_rows_come_out_whole_however_the_bytes_arrive(chunk: int):
    """Short, long-prefixed and multi-packet (over 16 MiB) values are each yielded exactly
    once and in order, whether the socket delivers a byte or megabytes at a time, and the
    EOF ends the result with nothing left unread."""
    values = [b"a\tb\n", b"", b"x" * 250, b"y" * 251, b"z" * 70_000, b"w" * (17 << 20), b"end"]
    if chunk == 1:
        values = values[:5]  # a byte at a time: keep it quick
    data = b"".join(packet(lenenc_string(v)) for v in values) + packet(EOF_PACKET)
    for packets in serve(data, chunk):
        assert list(packets.values()) == values
        assert packets.drained()


def test_an_error_packet_mid_result_raises_the_servers_error():
    """An error the server sends after some rows (e.g. a SELECT failing halfway) raises
    PyMySQL's error for it, after the rows before it."""
    data = packet(lenenc_string(b"one")) + packet(
        error_packet(1412, "Table definition has changed")
    )
    for packets in serve(data, 1 << 16):
        got = []
        with pytest.raises(pymysql.err.OperationalError) as err:
            for value in packets.values():
                got.append(value)
        assert got == [b"one"]
        assert err.value.args[0] == 1412


def test_a_null_row_is_refused():
    """The copy query never returns NULL; a NULL row is an error, not an empty line."""
    data = packet(b"\xfb") + packet(EOF_PACKET)
    for packets in serve(data, 1 << 16):
        with pytest.raises(ValueError, match="NULL"):
            list(packets.values())


def test_read_waits_no_longer_than_its_timeout():
    """A read with a timeout returns None when nothing arrives, and a closed connection
    is an error rather than an endless wait."""
    ours, theirs = socket.socketpair()
    try:
        packets = Packets(ours)
        assert packets.read(0.05) is None
        theirs.close()
        with pytest.raises(ConnectionResetError):
            packets.read(1.0)
    finally:
        ours.close()
