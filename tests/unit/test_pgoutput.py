"""pgoutput and replication-protocol decoding from raw bytes."""

from __future__ import annotations

import struct

import pytest

from replicator.sources.postgres import pgoutput
from replicator.sources.postgres.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Keepalive,
    ProtocolError,
    Relation,
    RelationColumn,
    Truncate,
    Update,
    XLogData,
)


def _string(s: str) -> bytes:
    return s.encode() + b"\0"


def _tuple(*columns: tuple[str, bytes | None]) -> bytes:
    out = struct.pack("!H", len(columns))
    for kind, value in columns:
        out += kind.encode()
        if kind == "t":
            assert value is not None
            out += struct.pack("!i", len(value)) + value
    return out


def test_begin_and_commit_carry_the_lsns_needed_to_resume():
    """BEGIN gives the commit LSN; COMMIT gives the end LSN streaming resumes at."""
    begin = pgoutput.decode_message(b"B" + struct.pack("!QqI", 0x16B3748, 12345, 777))
    assert begin == Begin(final_lsn=0x16B3748, commit_ts=12345, xid=777)
    commit = pgoutput.decode_message(b"C" + struct.pack("!BQQq", 0, 0x16B3748, 0x16B3778, 12345))
    assert commit == Commit(flags=0, commit_lsn=0x16B3748, end_lsn=0x16B3778, commit_ts=12345)


def test_relation_lists_columns_with_key_flags():
    """A Relation message yields columns, types, modifiers and replica identity flags."""
    body = (
        b"R"
        + struct.pack("!I", 16384)
        + _string("sales")
        + _string("orders")
        + b"d"
        + struct.pack("!H", 2)
        + b"\x01"
        + _string("id")
        + struct.pack("!Ii", 23, -1)
        + b"\x00"
        + _string("note")
        + struct.pack("!Ii", 1043, 24)
    )
    relation = pgoutput.decode_message(body)
    assert relation == Relation(
        16384,
        "sales",
        "orders",
        "d",
        (RelationColumn(True, "id", 23, -1), RelationColumn(False, "note", 1043, 24)),
    )


def test_insert_update_delete_tuples_keep_null_and_unchanged_apart():
    """'n' (NULL) and 'u' (unchanged TOAST) stay distinct from each other and from text."""
    insert = pgoutput.decode_message(
        b"I" + struct.pack("!I", 7) + b"N" + _tuple(("t", b"1"), ("n", None), ("u", None))
    )
    assert insert == Insert(7, (("t", b"1"), ("n", None), ("u", None)))
    update = pgoutput.decode_message(
        b"U" + struct.pack("!I", 7) + b"K" + _tuple(("t", b"1")) + b"N" + _tuple(("t", b"2"))
    )
    assert update == Update(7, "K", (("t", b"1"),), (("t", b"2"),))
    plain = pgoutput.decode_message(b"U" + struct.pack("!I", 7) + b"N" + _tuple(("t", b"2")))
    assert plain == Update(7, None, None, (("t", b"2"),))
    delete = pgoutput.decode_message(b"D" + struct.pack("!I", 7) + b"O" + _tuple(("t", b"1")))
    assert delete == Delete(7, "O", (("t", b"1"),))


def test_truncate_lists_every_relation_and_its_options():
    """TRUNCATE of several tables arrives as one message with CASCADE/RESTART flags."""
    message = pgoutput.decode_message(b"T" + struct.pack("!IBII", 2, 3, 10, 11))
    assert message == Truncate(cascade=True, restart_identity=True, relation_ids=(10, 11))


def test_text_values_may_contain_nul_free_utf8_and_newlines():
    """Values are taken by length, so delimiters inside them are harmless."""
    value = "héllo\n\t\\ wörld".encode()
    message = pgoutput.decode_message(b"I" + struct.pack("!I", 1) + b"N" + _tuple(("t", value)))
    assert isinstance(message, Insert) and message.new[0] == ("t", value)


def test_truncated_messages_raise_protocol_errors():
    """A short message is reported as a protocol error, not an IndexError deep inside."""
    with pytest.raises(ProtocolError):
        pgoutput.decode_message(b"I" + struct.pack("!I", 1) + b"N" + b"\x00\x01t\x00\x00\x00\x09ab")
    with pytest.raises(ProtocolError):
        pgoutput.decode_message(b"Z")


def test_copy_data_framing_and_standby_status():
    """XLogData and keepalive frames decode; a status update encodes write/flush/apply."""
    frame = b"w" + struct.pack("!QQq", 10, 20, 30) + b"B..."
    data = pgoutput.decode_copy_data(frame)
    assert isinstance(data, XLogData) and (data.data_start, data.wal_end) == (10, 20)
    assert bytes(data.payload) == b"B..."
    keepalive = pgoutput.decode_copy_data(b"k" + struct.pack("!QqB", 99, 5, 1))
    assert keepalive == Keepalive(99, 5, True)
    status = pgoutput.encode_standby_status(5, 4, 4, 123, reply=False)
    assert status == b"r" + struct.pack("!QQQqB", 5, 4, 4, 123, 0)


def test_lsn_text_round_trip():
    """LSNs print and parse in PostgreSQL's notation."""
    assert pgoutput.format_lsn(0x16B374D848) == "16/B374D848"
    assert pgoutput.parse_lsn("16/B374D848") == 0x16B374D848
    with pytest.raises(ValueError, match="not an LSN"):
        pgoutput.parse_lsn("nonsense")
