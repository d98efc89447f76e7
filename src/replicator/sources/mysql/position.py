"""MySQL and MariaDB stream positions: binlog coordinates, and the GTID state at them.

A resume point is always the end of a transaction (after its XID, or after the COMMIT or
DDL statement that ends it): resuming anywhere inside one would lose its TABLE_MAP events
and with them the rows after the cut (Debezium DBZ-144, python-mysql-replication #314).

Order comes from the coordinates: the binlog file's sequence number, then the offset. An
event's position is its transaction's *start* offset (where the previous transaction ended)
plus its 1-based index in the transaction, so that every event of a transaction orders after
the previous transaction's end and before its own (DESIGN invariant 4). A snapshot taken at
coordinates S holds exactly the transactions ending at or before S, whose events therefore
order before S; the stream's events after S order after it (invariant 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.gtid import Gtid, GtidSet

_FILE_NUMBER = re.compile(r"\.(\d+)$")
_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def file_number(name: str) -> int:
    """The sequence number of a binlog file (``binlog.000042`` → 42)."""
    match = _FILE_NUMBER.search(name)
    if match is None:
        raise ValueError(f"not a binlog file name: {name!r}")
    return int(match.group(1))


@dataclass(slots=True, unsafe_hash=True)
class MysqlPosition:
    """Binlog coordinates (``file``, ``pos``), the GTID state there when GTIDs are in use,
    and for a change event its index within its transaction.

    Never changed once made (not ``frozen`` only because the reader makes one per row, and a
    frozen dataclass takes three times as long to construct).
    """

    file: str
    pos: int
    gtid: str | None = None
    index: int = 0

    def order_key(self) -> tuple[int, ...]:
        """Binlog order: file number, offset, index in the transaction."""
        return (file_number(self.file), self.pos, self.index)

    def to_json(self) -> dict[str, Any]:
        """``{"file": "binlog.000003", "pos": 1234, "gtid": "0-1-57"}``."""
        data: dict[str, Any] = {"file": self.file, "pos": self.pos}
        if self.gtid is not None:
            data["gtid"] = self.gtid
        if self.index:
            data["index"] = self.index
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MysqlPosition:
        """Parse the form written by :meth:`to_json`."""
        try:
            position = cls(
                str(data["file"]),
                int(data["pos"]),
                None if data.get("gtid") is None else str(data["gtid"]),
                int(data.get("index", 0)),
            )
            file_number(position.file)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not a MySQL position: {data!r}") from exc
        return position

    def __str__(self) -> str:
        text = f"{self.file}:{self.pos}"
        if self.index:
            text += f"#{self.index}"
        if self.gtid:
            text += f" (gtid {self.gtid})"
        return text


class GtidState:
    """The set of transactions applied so far, in the server's own GTID notation.

    MariaDB: one ``domain-server-seq`` per replication domain, the last transaction of each
    (what ``@@gtid_binlog_pos`` shows and ``@slave_connect_state`` takes). MySQL: a GTID set
    ``uuid:1-100,uuid2:1-7`` (``@@gtid_executed``; the binlog dump command takes its encoding).
    """

    def __init__(self, mariadb: bool, text: str = "") -> None:
        self.mariadb = mariadb
        self._domains: dict[int, tuple[int, int]] = {}
        self._set: GtidSet | None = None
        self._text: str | None = None
        if mariadb:
            for part in filter(None, (p.strip() for p in text.split(","))):
                match = _MARIADB_GTID.match(part)
                if match is None:
                    raise ValueError(f"not a MariaDB GTID position: {text!r}")
                domain, server, seq = (int(g) for g in match.groups())
                self._domains[domain] = (server, seq)
        else:
            self._set = GtidSet(text.replace("\n", "").strip() or None)

    def add(self, gtid: str) -> None:
        """Record one more transaction (``0-1-58`` or ``uuid:58``)."""
        self._text = None
        if self.mariadb:
            match = _MARIADB_GTID.match(gtid)
            if match is None:
                raise ValueError(f"not a MariaDB GTID: {gtid!r}")
            domain, server, seq = (int(g) for g in match.groups())
            self._domains[domain] = (server, seq)
        else:
            assert self._set is not None
            self._set = self._set + Gtid(gtid)

    def sequences(self) -> dict[int, int]:
        """MariaDB: the last sequence number of each domain."""
        return {domain: seq for domain, (_, seq) in self._domains.items()}

    def copy(self) -> GtidState:
        """An independent copy."""
        return GtidState(self.mariadb, str(self))

    def __str__(self) -> str:
        if self._text is None:
            if self.mariadb:
                self._text = ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(self._domains.items()))
            else:
                self._text = str(self._set)
        return self._text
